"""The three output types. They differ only in data: a table and its columns.

Everything that handles jobs (service, API router, feed, legacy migration) is written once
and parameterised by an `OutputType`, never copied per type.
"""

from __future__ import annotations

from dataclasses import dataclass

# Columns every job table has, with the PostgreSQL type `format_type()` reports for them.
COMMON_COLUMNS: dict[str, str] = {
    "id": "uuid",
    "user_id": "uuid",
    "workflow_name": "text",
    "status": "text",
    "created_at": "timestamp with time zone",
    "started_at": "timestamp with time zone",
    "completed_at": "timestamp with time zone",
    "processing_time_seconds": "integer",
    "parameters": "jsonb",
    "comfy_job_id": "text",
    "error_message": "text",
    "updated_at": "timestamp with time zone",
    # Added by genstudio to the guide's columns.
    "thumbnail_url": "text",
    "progress": "real",
    "visibility": "text",
    "legacy_table": "text",
    "legacy_id": "text",
}

_COMFY_OUTPUT_COLUMNS: dict[str, str] = {
    "comfy_url": "text",
    "comfyui_output_filename": "text",
    "comfyui_output_subfolder": "text",
    "comfyui_output_type": "text",
}

STATUSES = ("pending", "processing", "completed", "failed", "cancelled")
FINAL_STATUSES = ("completed", "failed", "cancelled")
VISIBILITIES = ("private", "shared")


@dataclass(frozen=True)
class OutputType:
    name: str  # "video": the feed's `type` tag and the URL prefix (`/api/video-jobs`)
    table: str  # "video_jobs"
    own_columns: dict[str, str]  # columns beyond COMMON_COLUMNS, name -> PostgreSQL type

    @property
    def columns(self) -> dict[str, str]:
        return {**COMMON_COLUMNS, **self.own_columns}

    @property
    def with_article(self) -> str:
        """"an image", "a video": for sentences about one job of this type."""
        return f"{'an' if self.name[0] in 'aeiou' else 'a'} {self.name}"

    @property
    def item_key(self) -> str:
        """The response key for one job, as the guide names it: `video_job`."""
        return f"{self.name}_job"

    @property
    def list_key(self) -> str:
        """The response key for a list of jobs: `video_jobs`."""
        return self.table

    @property
    def path(self) -> str:
        return f"{self.name}-jobs"


VIDEO = OutputType(
    "video",
    "video_jobs",
    {
        "input_image_urls": "text[]",
        "input_audio_urls": "text[]",
        "input_video_urls": "text[]",
        "output_video_urls": "text[]",
        "width": "integer",
        "height": "integer",
        "fps": "integer",
        "duration_seconds": "double precision",
        **_COMFY_OUTPUT_COLUMNS,
    },
)

IMAGE = OutputType(
    "image",
    "image_jobs",
    {
        "input_image_urls": "text[]",
        "prompt": "text",
        "output_image_urls": "text[]",
        "width": "integer",
        "height": "integer",
        **_COMFY_OUTPUT_COLUMNS,
        "model_used": "text",
        "user_ip": "text",
    },
)

TEXT = OutputType(
    "text",
    "text_jobs",
    {
        "input_image_urls": "text[]",
        "input_text": "text",
        "output_text": "text",
        "output_data": "jsonb",
        "comfy_url": "text",
        "model_used": "text",
    },
)

OUTPUT_TYPES: dict[str, OutputType] = {t.name: t for t in (VIDEO, IMAGE, TEXT)}
