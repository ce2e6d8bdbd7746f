"""Creating a run of a workflow template: everything checked first, then one transaction.

A run is a job in the table of the template's output type (`pending`, owned by the caller,
with a pre-assigned canonical ComfyUI prompt id as `comfy_job_id` and `comfy_url = ''`) plus
its `genstudio.workflow_runs` row holding the prompt to post. The dispatcher picks it up from
there. Input files are checked by their content (Pillow / PyAV), their size and pixel count,
stored beside the job's outputs, and uploaded to the chosen server by the dispatcher.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from genstudio.comfy.templates import InputFile, InvalidParameters, Template, missing_node_types
from genstudio.config import Settings
from genstudio.db.queries import load_queries
from genstudio.errors import CallerError
from genstudio.jobs.output_types import OUTPUT_TYPES, OutputType
from genstudio.jobs.service import json_object
from genstudio.storage import Storage, job_file_key, upload_key
from genstudio.storage.media import MediaInfo, UnsupportedMedia, inspect_media

QUERIES = load_queries("runs")

# Which job column lists the URLs of a run's input files of each kind, where the table has it.
_URL_COLUMN_OF_KIND = {"image": "input_image_urls", "video": "input_video_urls", "audio": "input_audio_urls"}


class InvalidInputFile(CallerError):
    """An input file that is missing, of a kind the template does not accept, or damaged."""


class InputFileTooLarge(CallerError):
    """An input file above the template's (or the server's) size limit."""


class UploadNotFound(CallerError):
    """A run refers to an upload the caller does not have."""


class MissingNodeTypes(CallerError):
    """Every healthy ComfyUI server lacks node types the template needs."""

    def __init__(self, workflow: str, missing: list[str]):
        super().__init__(f"no healthy ComfyUI server can run {workflow}: missing node types "
                         f"{', '.join(missing)}")
        self.missing = missing


class MalformedBody(CallerError):
    """A request body that cannot be parsed at all."""


class IdempotencyKeyReused(CallerError):
    """The idempotency key was used before for a run of another workflow."""


@dataclass(frozen=True)
class CheckedFile:
    """An input file whose content has been checked."""

    filename: str
    data: bytes
    media: MediaInfo


@dataclass(frozen=True)
class StoredInput:
    """One input file of a run, stored, with the node input it fills."""

    spec: InputFile
    storage_key: str
    filename: str
    content_type: str
    url: str

    def for_dispatcher(self) -> dict[str, str]:
        return {"name": self.spec.name, "node_id": self.spec.node, "input": self.spec.input,
                "storage_key": self.storage_key, "filename": self.filename, "content_type": self.content_type}


def check_file(filename: str, data: bytes, *, max_bytes: int, max_pixels: int, what: str = "the file") -> CheckedFile:
    """Size first (cheap), then the content: what it really is, whatever its name says."""
    if len(data) > max_bytes:
        raise InputFileTooLarge(f"{what} is {len(data)} bytes; at most {max_bytes} bytes are accepted")
    if not data:
        raise InvalidInputFile(f"{what} is empty")
    try:
        media = inspect_media(data, max_pixels=max_pixels)
    except UnsupportedMedia as exc:
        raise InvalidInputFile(f"{what}: {exc.message}") from None
    return CheckedFile(filename, data, media)


def check_input(spec: InputFile, checked: CheckedFile) -> None:
    if not spec.accepts(checked.media.content_type):
        raise InvalidInputFile(f"input file {spec.name}: its content is {checked.media.content_type}; "
                               f"{', '.join(spec.media_types)} accepted")
    size = len(checked.data)
    if size > spec.max_bytes:
        raise InputFileTooLarge(f"input file {spec.name} is {size} bytes; at most {spec.max_bytes} bytes are accepted")


def _extension(content_type: str) -> str:
    return {"image/jpeg": "jpg", "video/quicktime": "mov", "video/x-matroska": "mkv", "audio/mpeg": "mp3",
            "video/x-msvideo": "avi"}.get(content_type, content_type.split("/", 1)[1])


def input_filename(spec: InputFile, content_type: str) -> str:
    """A run's input file is stored as `input-<name>.<ext>`: the extension from its content,
    never from the name the client gave it."""
    return f"input-{spec.name}.{_extension(content_type)}"


@cache
def _insert_job_sql(type_name: str) -> str:
    t = OUTPUT_TYPES[type_name]
    columns = [c for c in _URL_COLUMN_OF_KIND.values() if c in t.columns]
    return sql.SQL(QUERIES["insert_job"]).format(
        table=sql.Identifier("public", t.table),
        job_json=json_object(t),
        url_columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
        url_values=sql.SQL(", ").join(sql.Placeholder(c) for c in columns),
    ).as_string()


@cache
def job_visible_sql(type_name: str) -> str:
    t = OUTPUT_TYPES[type_name]
    return sql.SQL(QUERIES["job_visible"]).format(table=sql.Identifier("public", t.table)).as_string()


class RunService:
    def __init__(self, settings: Settings, storage: Storage):
        self.settings = settings
        self.storage = storage

    # -- checks before anything is written ------------------------------------------------

    async def check_node_types(self, service_conn: psycopg.AsyncConnection, template: Template) -> None:
        """422 when every healthy configured server lacks node types the template needs. With
        no healthy server known, the run is accepted and waits (the dispatcher says why)."""
        cur = await service_conn.execute(QUERIES["healthy_servers"], {"urls": self.settings.comfyui_urls})
        servers = await cur.fetchall()
        if not servers:
            return
        missing = [missing_node_types(template, row["node_types"]) for row in servers]
        if all(missing):
            raise MissingNodeTypes(template.name, min(missing, key=len))

    async def load_upload(self, conn: psycopg.AsyncConnection, upload_id: str, spec: InputFile) -> CheckedFile:
        try:
            upload_uuid = uuid.UUID(str(upload_id))
        except ValueError:
            raise InvalidInputFile(f"input file {spec.name}: {upload_id!r} is not an upload id") from None
        cur = await conn.execute(QUERIES["get_upload"], {"id": upload_uuid})
        row = await cur.fetchone()
        if row is None:
            raise UploadNotFound(f"input file {spec.name}: no upload {upload_uuid} of yours")
        data = b"".join([chunk async for chunk in self.storage.open(row["storage_key"])])
        media = MediaInfo(row["content_type"], row["width"], row["height"], row["duration_seconds"])
        checked = CheckedFile(row["filename"], data, media)
        check_input(spec, checked)
        return checked

    # -- the run ----------------------------------------------------------------------------

    async def existing_run_job(self, conn: psycopg.AsyncConnection, template: Template,
                               idempotency_key: str | None) -> tuple[OutputType, uuid.UUID] | None:
        if idempotency_key is None:
            return None
        cur = await conn.execute(QUERIES["run_by_idempotency_key"], {"idempotency_key": idempotency_key})
        row = await cur.fetchone()
        if row is None:
            return None
        if row["workflow_name"] != template.name:
            raise IdempotencyKeyReused(f"the Idempotency-Key was already used for a run of {row['workflow_name']}")
        return OUTPUT_TYPES[row["output_type"]], row["job_id"]

    async def store_inputs(self, template: Template, job_id: uuid.UUID,
                           files: Mapping[str, CheckedFile]) -> list[StoredInput]:
        stored = []
        for spec in template.manifest.inputs:
            checked = files.get(spec.name)
            if checked is None:
                continue
            filename = input_filename(spec, checked.media.content_type)
            key = job_file_key(template.output_type, template.name, job_id, filename)
            await self.storage.put(key, checked.data, checked.media.content_type)
            stored.append(StoredInput(spec, key, filename, checked.media.content_type, self.storage.url_for(key)))
        return stored

    async def delete_inputs(self, stored: list[StoredInput]) -> None:
        await asyncio.gather(*(self.storage.delete(s.storage_key) for s in stored), return_exceptions=True)

    async def insert(self, conn: psycopg.AsyncConnection, template: Template, job_id: uuid.UUID,
                     parameters: dict[str, Any], inputs: list[StoredInput], idempotency_key: str | None) -> str | None:
        """The run row and its job, in the caller's transaction. None when a concurrent request
        with the same idempotency key won (the caller then answers with that one's job)."""
        t = OUTPUT_TYPES[template.output_type]
        prompt_id = str(uuid.uuid4())
        cur = await conn.execute(QUERIES["insert_run"], {
            "job_id": job_id, "output_type": t.name, "workflow_name": template.name,
            "prompt": Jsonb(template.build_prompt(parameters)),
            "required_node_types": template.required_node_types,
            "output_nodes": template.manifest.output_nodes,
            "input_files": Jsonb([i.for_dispatcher() for i in inputs]),
            "deadline_seconds": self.settings.dispatch_deadline_seconds,
            "idempotency_key": idempotency_key,
        })
        if await cur.fetchone() is None:
            return None
        job_parameters = {
            **parameters,
            "inputs": {i.spec.name: {"url": i.url, "content_type": i.content_type} for i in inputs},
            "dispatch": {"state": "queued"},
        }
        urls: dict[str, list[str]] = {c: [] for c in _URL_COLUMN_OF_KIND.values() if c in t.columns}
        for i in inputs:
            column = _URL_COLUMN_OF_KIND.get(i.content_type.split("/", 1)[0])
            if column in urls:
                urls[column].append(i.url)
        cur = await conn.execute(_insert_job_sql(t.name), {
            "id": job_id, "workflow_name": template.name, "comfy_job_id": prompt_id,
            "parameters": Jsonb(job_parameters), **{c: (v or None) for c, v in urls.items()},
        })
        return (await cur.fetchone())["job"]

    # -- uploads ----------------------------------------------------------------------------

    async def create_upload(self, conn: psycopg.AsyncConnection, user_id: str, checked: CheckedFile) -> dict[str, Any]:
        upload_id = uuid.uuid4()
        ext = _extension(checked.media.content_type)
        stem = checked.filename.rsplit(".", 1)[0] if "." in checked.filename else checked.filename
        key = upload_key(user_id, upload_id, f"{stem or 'upload'}.{ext}")
        await self.storage.put(key, checked.data, checked.media.content_type)
        try:
            cur = await conn.execute(QUERIES["insert_upload"], {
                "id": upload_id, "storage_key": key, "filename": checked.filename[:255] or "upload",
                "content_type": checked.media.content_type, "size_bytes": len(checked.data),
                "width": checked.media.width, "height": checked.media.height,
                "duration_seconds": checked.media.duration_seconds,
            })
            row = await cur.fetchone()
        except BaseException:
            await self.storage.delete(key)
            raise
        return describe_upload(row, self.storage.url_for(key))


def describe_upload(row: Mapping[str, Any], url: str) -> dict[str, Any]:
    return {"id": str(row["id"]), "filename": row["filename"], "content_type": row["content_type"],
            "size_bytes": row["size_bytes"], "width": row["width"], "height": row["height"],
            "duration_seconds": row["duration_seconds"], "url": url,
            "created_at": row["created_at"].isoformat()}


def parse_parameters_field(text: str | None) -> Any:
    """The multipart `parameters` field: a JSON object (absent = {})."""
    if text is None or text.strip() == "":
        return {}
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidParameters([f"parameters: not valid JSON ({exc.msg})"]) from None
