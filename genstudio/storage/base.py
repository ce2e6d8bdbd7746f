"""The storage interface, and the key layout every backend shares."""

from __future__ import annotations

import mimetypes
import re
import unicodedata
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Protocol, runtime_checkable
from urllib.parse import quote

from genstudio.errors import CallerError

OUTPUT_TYPE_DIRS = ("video", "image", "text")
UPLOADS_DIR = "uploads"
MAX_SEGMENT_LENGTH = 120

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

# Formats ComfyUI writes that Python's table may not know on every platform.
for _type, _ext in (("video/mp4", ".mp4"), ("video/webm", ".webm"), ("image/webp", ".webp"),
                    ("image/avif", ".avif"), ("audio/flac", ".flac"), ("video/x-matroska", ".mkv")):
    mimetypes.add_type(_type, _ext)


class InvalidKey(CallerError):
    """A storage key that is not of the layout (or would leave the storage root)."""


class FileNotFound(CallerError):
    """No such file, or not one the caller may see (the two are never told apart)."""


@dataclass(frozen=True)
class StoredFile:
    key: str
    size: int
    content_type: str
    # False when the key already held a file and `put` left it as it was.
    created: bool = True


def content_type_of(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def safe_segment(name: str, *, fallback: str = "file") -> str:
    """One path segment that is safe on every file system and in a URL.

    Whatever comes in (a ComfyUI output name, a client's upload name, a workflow name) loses
    its directories, control and special characters, leading dots and excess length; the
    extension is kept so the content type can still be told from the name."""
    name = unicodedata.normalize("NFKC", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE.sub("_", name).strip("._-") or fallback
    if len(name) > MAX_SEGMENT_LENGTH:
        stem, dot, ext = name.rpartition(".")
        ext = ext[:16] if dot and stem else ""
        name = name[: MAX_SEGMENT_LENGTH - len(ext) - 1].rstrip("._-") + ("." + ext if ext else "")
    return name


safe_filename = safe_segment


def job_file_key(output_type: str, workflow_name: str, job_id: uuid.UUID | str, filename: str) -> str:
    """`{output_type}/{workflow_name}/{job_id}/{filename}`: where a job's file lives."""
    if output_type not in OUTPUT_TYPE_DIRS:
        raise InvalidKey(f"unknown output type {output_type!r}")
    return "/".join((output_type, safe_segment(workflow_name, fallback="workflow"),
                     str(uuid.UUID(str(job_id))), safe_segment(filename)))


def thumbnail_key(key: str) -> str:
    """The thumbnail of the file at `key`: beside it, under `thumbnails/`, always a JPEG."""
    path = PurePosixPath(key)
    return str(path.parent / "thumbnails" / (path.stem + ".jpg"))


def upload_key(user_id: uuid.UUID | str, upload_id: uuid.UUID | str, filename: str) -> str:
    return "/".join((UPLOADS_DIR, str(uuid.UUID(str(user_id))), str(uuid.UUID(str(upload_id))),
                     safe_segment(filename)))


def check_key(key: str) -> str:
    """A key as every backend accepts it: relative, no empty, `.` or `..` segment, each segment
    already safe. Refuses anything else rather than repairing it."""
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") or safe_segment(p) != p for p in parts):
        raise InvalidKey(f"not a storage key: {key!r}")
    return key


def job_id_of_key(key: str) -> tuple[str, uuid.UUID] | None:
    """(output_type, job_id) of a job file's key, or None for any other key."""
    parts = check_key(key).split("/")
    if len(parts) < 4 or parts[0] not in OUTPUT_TYPE_DIRS:
        return None
    try:
        return parts[0], uuid.UUID(parts[2])
    except ValueError:
        return None


def url_path(key: str) -> str:
    """The genstudio URL path that serves `key` (`/files/...`)."""
    return "/files/" + quote(check_key(key))


@runtime_checkable
class Storage(Protocol):
    """What genstudio needs from a place to keep files.

    Kept small so that an S3-compatible object store (Supabase Storage included) can implement
    it: `put` = PutObject with `If-None-Match: *` (or HeadObject first), `open` = GetObject with
    a `Range` header, `stat` = HeadObject, `delete` = DeleteObject, `copy` = CopyObject.
    `local_path` is None for such a backend, and `/files/...` then streams `open` instead of
    sending a file."""

    async def put(self, key: str, data: bytes | AsyncIterable[bytes], content_type: str | None = None) -> StoredFile:
        """Store `data` at `key` unless a file is already there; either way, say what is stored.
        A second `put` of the same key (a completion reported twice) never rewrites it."""
        ...

    def open(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """The bytes of `key` from `start` up to and including `end` (HTTP range semantics)."""
        ...

    async def stat(self, key: str) -> StoredFile | None: ...

    async def exists(self, key: str) -> bool: ...

    async def copy(self, source_key: str, key: str) -> StoredFile:
        """`put` of what `source_key` holds."""
        ...

    async def delete(self, key: str) -> None: ...

    def url_for(self, key: str) -> str:
        """The URL genstudio serves `key` at (relative to the API's base URL)."""
        ...

    def local_path(self, key: str) -> "PurePosixPath | None":
        """The file on this machine, when there is one (sent with sendfile), else None."""
        ...
