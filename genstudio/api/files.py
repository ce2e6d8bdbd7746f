"""`/files/...`: stored outputs, thumbnails and inputs, only for callers who may see them.

A job's file (`/files/{output_type}/{workflow}/{job_id}/...`) is served to whoever may see the
job (row-level security decides, in the caller's transaction: owner, shared, ownerless); an
upload (`/files/uploads/{user}/...`) to its owner alone. Anyone else gets the same 404 as for a
file that does not exist. The caller is who `caller_claims` says: a bearer token, or the
browser's session cookie. For places that can send neither (an `<img src>` on another site),
`POST /api/files/signed-url` gives a short-lived URL `/files/signed/{expires}/{signature}/{key}`
that works without credentials until it expires.

Video is served with HTTP range requests (seeking); every file with its content type, `nosniff`,
and a sandboxing Content-Security-Policy, so a stored file can never run script in genstudio's
origin.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations.

import hashlib
import hmac
import time
from typing import Annotated, Any
from urllib.parse import quote, unquote, urlsplit

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, Field

from genstudio.api.caller import caller_claims
from genstudio.comfy.runs import QUERIES, job_visible_sql
from genstudio.jobs.errors import InvalidRequest
from genstudio.storage import FileNotFound, InvalidKey, Storage, job_id_of_key
from genstudio.storage.base import UPLOADS_DIR, check_key, content_type_of

Claims = Annotated[dict[str, Any], Depends(caller_claims)]
FileKey = Annotated[str, Path(max_length=1000, description="The stored file's key.")]

router = APIRouter(tags=["files"])

# A stored file is answered as its bytes with the content type its name gives, never as JSON:
# the OpenAPI says so, so that a client (or a schema checker) does not expect a JSON document.
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_FILE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The file's bytes, with the content type its name gives",
          "content": {"image/*": _BINARY, "video/*": _BINARY, "audio/*": _BINARY,
                      "application/octet-stream": _BINARY}},
    206: {"description": "The requested byte range (HTTP Range, for seeking in video)",
          "content": {"image/*": _BINARY, "video/*": _BINARY, "audio/*": _BINARY,
                      "application/octet-stream": _BINARY}},
    404: {"description": "No such file, or not one the caller may see (or an expired link)"},
}

_FILE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox; default-src 'none'; img-src 'self'; media-src 'self'",
    "Cache-Control": "private, max-age=300",
}


class FileSigner:
    """HMAC-SHA256 signatures of (key, expiry), with a key derived from the JWT secret."""

    def __init__(self, secret: str, ttl_seconds: int):
        self._key = hmac.new(secret.encode(), b"genstudio signed file urls", hashlib.sha256).digest()
        self.ttl_seconds = ttl_seconds

    def signature(self, key: str, expires: int) -> str:
        return hmac.new(self._key, f"{expires}\n{key}".encode(), hashlib.sha256).hexdigest()

    def url(self, key: str, now: float | None = None) -> tuple[str, int]:
        expires = int(now if now is not None else time.time()) + self.ttl_seconds
        return f"/files/signed/{expires}/{self.signature(key, expires)}/{quote(key)}", expires

    def verify(self, key: str, expires: int, signature: str) -> bool:
        return expires >= time.time() and hmac.compare_digest(self.signature(key, expires), signature)


async def may_see(request: Request, claims: dict[str, Any], key: str) -> bool:
    """Whether the caller may see the file at `key`, as row-level security decides."""
    job = job_id_of_key(key)
    async with request.app.state.db.as_user(claims) as conn:
        if job is not None:
            output_type, job_id = job
            cur = await conn.execute(job_visible_sql(output_type), {"id": job_id})
            return (await cur.fetchone())["visible"]
        if key.split("/", 1)[0] == UPLOADS_DIR:
            cur = await conn.execute(QUERIES["upload_by_key"], {"storage_key": key})
            return await cur.fetchone() is not None
    return False


async def send_file(request: Request, key: str) -> Response:
    storage: Storage = request.app.state.storage
    stored = await storage.stat(key)
    if stored is None:
        raise FileNotFound("no such file")
    headers = {**_FILE_HEADERS, "Content-Disposition": f"inline; filename=\"{key.rsplit('/', 1)[-1]}\""}
    path = storage.local_path(key)
    if path is not None:  # FileResponse answers Range requests (206) and HEAD itself
        return FileResponse(path, media_type=content_type_of(key), headers=headers)
    return StreamingResponse(storage.open(key), media_type=content_type_of(key),
                             headers={**headers, "Content-Length": str(stored.size)})


def _key(path: str) -> str:
    try:
        return check_key(unquote(path))
    except InvalidKey:
        raise FileNotFound("no such file") from None


@router.head("/files/signed/{expires}/{signature}/{key:path}", include_in_schema=False)
@router.get("/files/signed/{expires}/{signature}/{key:path}", summary="A stored file, by a signed URL",
            response_class=Response, responses=_FILE_RESPONSES)
async def signed_file(request: Request, expires: int, signature: Annotated[str, Path(max_length=64)],
                      key: FileKey) -> Response:
    key = _key(key)
    if not request.app.state.file_signer.verify(key, expires, signature):
        raise FileNotFound("no such file, or the link has expired")
    return await send_file(request, key)


@router.head("/files/{key:path}", include_in_schema=False)
@router.get("/files/{key:path}", summary="A stored file (output, thumbnail or input)",
            response_class=Response, responses=_FILE_RESPONSES)
async def stored_file(request: Request, claims: Claims, key: FileKey) -> Response:
    key = _key(key)
    if not await may_see(request, claims, key):
        raise FileNotFound("no such file")
    return await send_file(request, key)


class SignRequest(BaseModel):
    url: str = Field(max_length=2000, description="A `/files/...` URL (or path) the caller may see.")


@router.post("/api/files/signed-url", summary="A short-lived URL for a stored file, usable without credentials",
             responses={404: {"description": "No such file, or not one the caller may see"}})
async def sign(payload: SignRequest, request: Request, claims: Claims) -> dict[str, Any]:
    path = urlsplit(payload.url).path
    if not path.startswith("/files/") or path.startswith("/files/signed/"):
        raise InvalidRequest("url: not a /files/ URL")  # bad input, unlike a file the caller may not see
    key = _key(path.removeprefix("/files/"))
    if not await may_see(request, claims, key) or not await request.app.state.storage.exists(key):
        raise FileNotFound("no such file")
    url, expires = request.app.state.file_signer.url(key)
    return {"success": True, "url": url, "expires_at": expires}
