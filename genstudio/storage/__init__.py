"""Where genstudio keeps files: run outputs, their thumbnails, and uploaded inputs.

`Storage` is the interface; `LocalStorage` (a directory, the default) implements it. Keys are
`/`-separated paths, `{output_type}/{workflow_name}/{job_id}/{filename}` for a job's files and
`uploads/{user_id}/{upload_id}/{filename}` for inputs uploaded ahead of a run. Every path
segment passes `safe_segment`, so nothing ComfyUI or a client names can leave the storage root.
"""

from genstudio.storage.base import (
    FileNotFound,
    InvalidKey,
    Storage,
    StoredFile,
    job_file_key,
    job_id_of_key,
    safe_filename,
    safe_segment,
    thumbnail_key,
    upload_key,
)
from genstudio.storage.local import LocalStorage

__all__ = [
    "FileNotFound",
    "InvalidKey",
    "LocalStorage",
    "Storage",
    "StoredFile",
    "job_file_key",
    "job_id_of_key",
    "safe_filename",
    "safe_segment",
    "thumbnail_key",
    "upload_key",
    "storage_from_settings",
]


def storage_from_settings(settings) -> Storage:
    """The storage a genstudio process uses: the local directory of `GENSTUDIO_STORAGE_DIR`."""
    return LocalStorage(settings.storage_dir)
