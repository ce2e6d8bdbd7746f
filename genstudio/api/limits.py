"""Request-shape limits applied before any route runs: body size (413) and content type (415).

A plain ASGI middleware rather than Starlette's BaseHTTPMiddleware, which would cost every
request an extra task and a copy of the response.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from genstudio.api.errors import error_response

_METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


def _is_multipart(content_type: bytes | None) -> bool:
    return bool(content_type) and content_type.split(b";", 1)[0].strip().lower() == b"multipart/form-data"


def _is_json(content_type: bytes | None) -> bool:
    if not content_type:
        return False
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


def header_section_bytes(scope: Scope) -> int:
    """The size of the request line and headers as sent (`name: value` and CRLF each)."""
    target = len(scope.get("raw_path") or scope["path"].encode()) + len(scope["query_string"]) + 1
    return len(scope["method"]) + target + 11 + sum(len(n) + len(v) + 4 for n, v in scope["headers"])


def nul_in_url(scope: Scope) -> str | None:
    """Where the URL holds a NUL character (PostgreSQL text cannot), in the caller's terms."""
    if "\x00" in scope["path"]:
        return "the URL path"
    if b"%00" in scope["query_string"]:
        for name, value in parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True):
            if "\x00" in name or "\x00" in value:
                return f"query parameter {name.replace(chr(0), '')!r}"
    return None


class RequestBodyLimits:
    """Headers up to `max_header_bytes` (431) and no NUL in the URL (400); JSON bodies up to
    `max_bytes`; on the paths matching `upload_paths`, also multipart bodies (files) up to
    `upload_max_bytes`. `genstudio serve` also cuts oversized headers off while they arrive
    (genstudio/api/server.py); the header check here is exact and holds under any ASGI server."""

    def __init__(self, app: ASGIApp, max_bytes: int, *, max_header_bytes: int = 32 * 1024,
                 upload_paths: str | None = None, upload_max_bytes: int = 0):
        self.app = app
        self.max_bytes = max_bytes
        self.max_header_bytes = max_header_bytes
        self.upload_paths = re.compile(upload_paths) if upload_paths else None
        self.upload_max_bytes = upload_max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if header_section_bytes(scope) > self.max_header_bytes:
            await self._refuse(scope, receive, send, 431,
                               f"the request's headers are larger than {self.max_header_bytes} bytes")
            return
        if (where := nul_in_url(scope)) is not None:
            await self._refuse(scope, receive, send, 400, f"{where} must not contain the NUL character (%00)")
            return
        if scope["method"] not in _METHODS_WITH_BODY:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        content_type = headers.get(b"content-type")
        uploading = (self.upload_paths is not None and _is_multipart(content_type)
                     and self.upload_paths.fullmatch(scope["path"]) is not None)
        limit = self.upload_max_bytes if uploading else self.max_bytes
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._refuse(scope, receive, send, 413, f"the request body is larger than {limit} bytes")
            return
        body, complete = await self._read_body(receive, limit)
        if not complete:
            await self._refuse(scope, receive, send, 413, f"the request body is larger than {limit} bytes")
            return
        # Only the JSON API insists on JSON; the web UI's forms post form-encoded bodies, and
        # the upload paths take multipart files.
        if body and not uploading and scope["path"].startswith("/api/") and not _is_json(content_type):
            expected = "JSON (Content-Type: application/json)"
            if self.upload_paths is not None and self.upload_paths.fullmatch(scope["path"]):
                expected = "JSON or multipart/form-data"
            await self._refuse(scope, receive, send, 415, f"the request body must be {expected}")
            return
        await self.app(scope, self._replay(body, receive), send)

    async def _read_body(self, receive: Receive, limit: int) -> tuple[bytes, bool]:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"", True
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return b"", False
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), True

    @staticmethod
    def _replay(body: bytes, receive: Receive) -> Receive:
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return replay

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, message: str) -> None:
        await error_response(status, message, {"Connection": "close"})(scope, receive, send)
