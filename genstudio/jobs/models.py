"""Pydantic models at the API's edge, named as the guide names them.

The three output types differ only in their columns, so each type's models are generated
from its `OutputType` rather than written out three times; the module still exposes every
name the guide uses (`VideoJob`, `CreateImageJobPayload`, `TextJobListResponse`, ...), and
OpenAPI shows them under those names.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model

from genstudio.jobs.output_types import IMAGE, OUTPUT_TYPES, STATUSES, TEXT, VIDEO, OutputType

Status = Literal[STATUSES]  # type: ignore[valid-type]
Visibility = Literal["private", "shared"]


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold U+0000; refusing it here keeps it a 422, not a database error.
    if "\x00" in value:
        raise ValueError("must not contain the NUL character")
    return value


# Browsers ignore tabs and newlines inside a URL and strip leading controls and spaces, so
# "java\tscript:" is still a script URL; none of these belongs in a URL genstudio stores.
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f\\]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A URL scheme as a browser finds it: letters, digits, + . - before the first colon.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
WEB_SCHEMES = ("http", "https")
# Where genstudio serves stored outputs itself (see genstudio/storage): relative to its origin.
OWN_FILES_PREFIX = "/files/"


def _http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme.lower() in WEB_SCHEMES and bool(parts.hostname)


def _web_link(value: str) -> str:
    # Output and thumbnail URLs are shown to everyone once a job is shared, as links and
    # images: only http(s) and genstudio's own file paths, never javascript:, data:, ...
    if _CONTROL_OR_SPACE.search(value) or not (_http_url(value) or value.startswith(OWN_FILES_PREFIX)):
        raise ValueError(f"must be an http(s) URL or a path under {OWN_FILES_PREFIX} "
                         "(no other scheme, no spaces or control characters)")
    return value


def _server_url(value: str) -> str:
    if _CONTROL_OR_SPACE.search(value) or not _http_url(value):
        raise ValueError("must be an http(s) URL")
    return value


def _input_reference(value: str) -> str:
    # Inputs are ComfyUI file names as the guide's client sends them ("cat.png", "photo.png
    # [input]") or URLs; a scheme other than http(s) is never one of those.
    scheme = _SCHEME.match(value.lstrip(" "))
    if _CONTROL.search(value) or (scheme and scheme.group(1).lower() not in WEB_SCHEMES):
        raise ValueError("must be a file name or an http(s) URL (no other scheme, no control characters)")
    return value


def _no_nul_inside(value: Any) -> Any:
    # jsonb refuses "\u0000" as well; say which field instead of forwarding the database's words.
    if isinstance(value, str):
        _no_nul(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _no_nul(key)
            _no_nul_inside(item)
    elif isinstance(value, list):
        for item in value:
            _no_nul_inside(item)
    return value


Text = Annotated[str, Field(max_length=100_000), AfterValidator(_no_nul)]
JsonData = Annotated[Any, AfterValidator(_no_nul_inside)]
JsonObject = Annotated[dict[str, Any], AfterValidator(_no_nul_inside)]
ShortText = Annotated[str, Field(max_length=2_048), AfterValidator(_no_nul)]
WorkflowName = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_no_nul)]
WebLink = Annotated[str, Field(max_length=2_048), AfterValidator(_web_link)]
ServerUrl = Annotated[str, Field(max_length=2_048), AfterValidator(_server_url)]
InputReference = Annotated[str, Field(max_length=2_048), AfterValidator(_input_reference)]
InputList = Annotated[list[InputReference], Field(max_length=1_000)]
OutputList = Annotated[list[WebLink], Field(max_length=1_000)]
# OpenAPI says integer / number: a JSON true is neither, and "5" is a string (strict: no coercion).
Pixels = Annotated[int, Field(strict=True, ge=1, le=65_536)]
Progress = Annotated[float, Field(strict=True, ge=0, le=100)]

# How each column appears at the edge; shared names mean the same thing in every table.
_FIELD_TYPES: dict[str, Any] = {
    "input_image_urls": InputList,
    "input_audio_urls": InputList,
    "input_video_urls": InputList,
    "output_video_urls": OutputList,
    "output_image_urls": OutputList,
    "prompt": Text,
    "input_text": Text,
    "output_text": Text,
    "output_data": JsonData,
    "width": Pixels,
    "height": Pixels,
    "fps": Annotated[int, Field(strict=True, ge=1, le=1_000)],
    "duration_seconds": Annotated[float, Field(strict=True, ge=0, le=1e7)],
    "model_used": ShortText,
    "comfyui_output_filename": ShortText,
    "comfyui_output_subfolder": ShortText,
    "comfyui_output_type": ShortText,
    "thumbnail_url": WebLink,
    "error_message": Text,
    "comfy_url": ServerUrl,
}

# Columns a client may set when it records a job, and when it reports the job's result.
INPUT_COLUMNS = ("input_image_urls", "input_audio_urls", "input_video_urls", "prompt", "input_text",
                 "width", "height", "fps", "duration_seconds", "model_used")
RESULT_COLUMNS = ("output_video_urls", "output_image_urls", "output_text", "output_data",
                  "comfyui_output_filename", "comfyui_output_subfolder", "comfyui_output_type",
                  "width", "height", "fps", "duration_seconds", "thumbnail_url", "error_message")
# Never shown: a legacy image job's client address is nobody else's business.
HIDDEN_COLUMNS = ("user_ip",)

_PG_TYPES: dict[str, Any] = {
    "uuid": uuid.UUID,
    "text": str,
    "timestamp with time zone": datetime,
    "integer": int,
    "real": float,
    "double precision": float,
    "jsonb": Any,
    "text[]": list[str],
}

_STRICT = ConfigDict(extra="forbid", str_strip_whitespace=False)


def create_columns(t: OutputType) -> tuple[str, ...]:
    return tuple(c for c in INPUT_COLUMNS if c in t.own_columns)


def result_columns(t: OutputType) -> tuple[str, ...]:
    return tuple(c for c in RESULT_COLUMNS if c in t.columns)


def shown_columns(t: OutputType) -> tuple[str, ...]:
    return tuple(c for c in t.columns if c not in HIDDEN_COLUMNS)


def _optional(column: str) -> tuple[Any, Any]:
    return (_FIELD_TYPES[column] | None, None)


@dataclass(frozen=True)
class JobModels:
    job: type[BaseModel]
    create: type[BaseModel]
    update: type[BaseModel]
    complete: type[BaseModel]
    response: type[BaseModel]
    list_response: type[BaseModel]


def _job_model(t: OutputType, prefix: str) -> type[BaseModel]:
    required = {"id", "workflow_name", "status", "created_at"}
    fields: dict[str, Any] = {}
    for column in shown_columns(t):
        py = Status if column == "status" else Visibility if column == "visibility" else _PG_TYPES[t.columns[column]]
        fields[column] = (py, ...) if column in required else (py | None, None)
    return create_model(f"{prefix}Job", __doc__=f"One row of `{t.table}`.", **fields)


def _create_model(t: OutputType, prefix: str) -> type[BaseModel]:
    # The owner is the verified caller, never a body field: `user_id` is not accepted here.
    fields: dict[str, Any] = {
        "workflow_name": (WorkflowName, ...),
        "comfy_url": (ServerUrl, ...) if t is not TEXT else _optional("comfy_url"),
        "comfy_job_id": (Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_no_nul)] | None, None),
        "parameters": (JsonObject, Field(default_factory=dict)),
        "visibility": (Visibility, "private"),
    }
    fields.update({c: _optional(c) for c in create_columns(t)})
    return create_model(f"Create{prefix}JobPayload", __config__=_STRICT,
                        __doc__=f"Records {t.with_article} job; it starts `pending`.", **fields)


def _update_model(prefix: str) -> type[BaseModel]:
    return create_model(
        f"Update{prefix}JobPayload",
        __config__=_STRICT,
        __doc__="Progress while the job runs; moving to `processing` sets `started_at`.",
        status=(Literal["pending", "processing"] | None, None),
        progress=(Progress | None, None),
        error_message=(Text | None, None),
        visibility=(Visibility | None, None),
    )


def _complete_model(t: OutputType, prefix: str) -> type[BaseModel]:
    fields: dict[str, Any] = {
        # The guide's client repeats the path's id in the body; when present it must agree.
        "job_id": (uuid.UUID | None, None),
        "status": (Literal["completed", "failed"], ...),
    }
    fields.update({c: _optional(c) for c in result_columns(t)})
    return create_model(f"Complete{prefix}JobPayload", __config__=_STRICT,
                        __doc__="The job's final state, as the guide's Step 5 reports it.", **fields)


def _models(t: OutputType) -> JobModels:
    prefix = t.name.capitalize()
    job = _job_model(t, prefix)
    response = create_model(f"{prefix}JobResponse", success=(bool, True), **{t.item_key: (job, ...)})
    list_response = create_model(
        f"{prefix}JobListResponse",
        success=(bool, True),
        **{t.list_key: (list[job], ...)},
        total_count=(int, Field(..., description=(
            "Jobs matching the filters: exact up to 1,000, the planner's estimate beyond, unless the request "
            "says `Prefer: count=exact` (or `planned`)."))),
        next_cursor=(str | None, Field(None, description="Pass as `cursor` for the next page; null on the last.")),
    )
    return JobModels(job, _create_model(t, prefix), _update_model(prefix), _complete_model(t, prefix),
                     response, list_response)


MODELS: dict[str, JobModels] = {name: _models(t) for name, t in OUTPUT_TYPES.items()}

VideoJob = MODELS[VIDEO.name].job
CreateVideoJobPayload = MODELS[VIDEO.name].create
UpdateVideoJobPayload = MODELS[VIDEO.name].update
CompleteVideoJobPayload = MODELS[VIDEO.name].complete
VideoJobResponse = MODELS[VIDEO.name].response
VideoJobListResponse = MODELS[VIDEO.name].list_response

ImageJob = MODELS[IMAGE.name].job
CreateImageJobPayload = MODELS[IMAGE.name].create
UpdateImageJobPayload = MODELS[IMAGE.name].update
CompleteImageJobPayload = MODELS[IMAGE.name].complete
ImageJobResponse = MODELS[IMAGE.name].response
ImageJobListResponse = MODELS[IMAGE.name].list_response

TextJob = MODELS[TEXT.name].job
CreateTextJobPayload = MODELS[TEXT.name].create
UpdateTextJobPayload = MODELS[TEXT.name].update
CompleteTextJobPayload = MODELS[TEXT.name].complete
TextJobResponse = MODELS[TEXT.name].response
TextJobListResponse = MODELS[TEXT.name].list_response


class FeedItem(BaseModel):
    """A job of any type, tagged with it; the other fields are that type's job fields."""

    model_config = ConfigDict(extra="allow")
    type: Literal["video", "image", "text"]
    id: uuid.UUID
    workflow_name: str
    status: Status
    created_at: datetime


class FeedResponse(BaseModel):
    success: bool = True
    items: list[FeedItem]
    next_cursor: str | None = None


class ErrorResponse(BaseModel):
    success: bool = False
    error: str
