"""An async client for one ComfyUI server's HTTP and WebSocket API (ComfyUI 0.13).

Everything genstudio says to ComfyUI goes through `ComfyClient`: the dispatcher submits with
it, the monitor follows prompts with it, and tests drive the fake ComfyUI with it. Failures
come out as one of a few exception types carrying ComfyUI's own message, so callers can act on
the kind of failure (retry later, fail the job, report the validation error) without parsing
HTTP.

Shapes follow the protocol captures in `shared/comfyui-protocol/`: a submit is
`POST /prompt {"prompt", "client_id", "prompt_id"}`; ComfyUI 0.13 keeps a `prompt_id` given in
the body (and does not check it for duplicates, hence `submit_once`); validation errors are 400
with `{"error": {...}, "node_errors": {...}}`; an unparsable body is a 500 with a text/plain
page; `/view` of a missing file is a 404 with an empty body.
"""

from __future__ import annotations

import json
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

DEFAULT_TIMEOUT_SECONDS = 30.0

# Binary WebSocket frames start with a big-endian u32 event type (see capture 10).
PREVIEW_IMAGE = 1
UNENCODED_PREVIEW_IMAGE = 2
TEXT = 3
PREVIEW_IMAGE_WITH_METADATA = 4


class ComfyError(Exception):
    """Anything that went wrong talking to a ComfyUI server."""

    def __init__(self, message: str, *, url: str = ""):
        super().__init__(message)
        self.message = message
        self.url = url


class ComfyUnreachable(ComfyError):
    """The server could not be reached, or the connection broke off."""


class ComfyTimeout(ComfyError):
    """The server did not answer in time."""


class ComfyHTTPError(ComfyError):
    """The server answered with an error status; `body` is its text, as sent."""

    def __init__(self, message: str, *, url: str = "", status: int, body: str = ""):
        super().__init__(message, url=url)
        self.status = status
        self.body = body


class ComfyValidationError(ComfyHTTPError):
    """`POST /prompt` rejected the prompt (HTTP 400): ComfyUI's `error` and `node_errors`."""

    def __init__(self, message: str, *, url: str = "", status: int = 400, body: str = "",
                 error: dict[str, Any], node_errors: dict[str, Any]):
        super().__init__(message, url=url, status=status, body=body)
        self.error = error
        self.node_errors = node_errors


def describe_validation_error(error: dict[str, Any], node_errors: dict[str, Any]) -> str:
    """One readable line from ComfyUI's validation body: the prompt's error, then each node's."""
    parts = [str(error.get("message") or error.get("type") or "invalid prompt")]
    if error.get("details"):
        parts[0] += f": {error['details']}"
    for node_id, node in node_errors.items():
        for e in node.get("errors", []):
            detail = f" ({e['details']})" if e.get("details") else ""
            parts.append(f"node {node_id} ({node.get('class_type', '?')}): {e.get('message', e.get('type'))}{detail}")
    return "; ".join(parts)


@dataclass(frozen=True)
class ComfyMessage:
    """One JSON message from ComfyUI's WebSocket: `{"type": ..., "data": {...}}`."""

    type: str
    data: dict[str, Any]

    @property
    def prompt_id(self) -> str | None:
        return self.data.get("prompt_id")


@dataclass(frozen=True)
class PreviewFrame:
    """A binary WebSocket frame: a preview image (types 1 and 4) or another binary event.

    `metadata` is the JSON header of type 4 frames (node_id, prompt_id, image_type, ...)."""

    event_type: int
    payload: bytes
    image_format: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def type(self) -> str:
        return "binary"

    @property
    def prompt_id(self) -> str | None:
        return self.metadata.get("prompt_id")


def parse_binary_frame(frame: bytes) -> PreviewFrame:
    if len(frame) < 4:
        return PreviewFrame(event_type=-1, payload=frame)
    (event_type,) = struct.unpack(">I", frame[:4])
    if event_type == PREVIEW_IMAGE_WITH_METADATA and len(frame) >= 8:
        (length,) = struct.unpack(">I", frame[4:8])
        try:
            metadata = json.loads(frame[8:8 + length])
        except ValueError:
            metadata = {}
        return PreviewFrame(event_type, frame[8 + length:], metadata=metadata)
    if event_type in (PREVIEW_IMAGE, UNENCODED_PREVIEW_IMAGE) and len(frame) >= 8:
        (image_format,) = struct.unpack(">I", frame[4:8])
        return PreviewFrame(event_type, frame[8:], image_format=image_format)
    return PreviewFrame(event_type, frame[4:])


QueueEntry = list  # [number, prompt_id, prompt, extra_data, outputs_to_execute]
PromptState = Literal["running", "pending", "finished"]


class ComfySocket:
    """A WebSocket to `/ws?clientId=...`; iterate it for `ComfyMessage`s (and, when asked
    for, `PreviewFrame`s).

    Use `async with client.websocket() as socket: async for message in socket: ...`. The
    greeting's `sid` is kept as `.sid`. A dropped connection ends the iteration with
    `ComfyUnreachable`, so a follower knows to reconcile and reconnect."""

    def __init__(self, url: str, *, open_timeout: float, previews: bool):
        self._url = url
        self._open_timeout = open_timeout
        self._previews = previews
        self._connection: ClientConnection | None = None
        self.sid: str | None = None

    async def __aenter__(self) -> ComfySocket:
        try:
            self._connection = await websockets.connect(
                self._url, open_timeout=self._open_timeout, max_size=None, ping_interval=20, ping_timeout=20,
            )
        except TimeoutError as exc:
            raise ComfyTimeout(f"{self._url}: no WebSocket handshake in {self._open_timeout:g} s", url=self._url) from exc
        except (OSError, websockets.InvalidHandshake, websockets.InvalidURI) as exc:
            raise ComfyUnreachable(f"{self._url}: {exc or type(exc).__name__}", url=self._url) from exc
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def send(self, message: dict[str, Any]) -> None:
        assert self._connection is not None, "use `async with` first"
        await self._connection.send(json.dumps(message))

    def __aiter__(self) -> AsyncIterator[ComfyMessage | PreviewFrame]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[ComfyMessage | PreviewFrame]:
        assert self._connection is not None, "use `async with` first"
        while True:
            try:
                frame = await self._connection.recv()
            except websockets.ConnectionClosedOK:
                return
            except websockets.ConnectionClosed as exc:
                raise ComfyUnreachable(f"{self._url}: the WebSocket closed ({exc})", url=self._url) from exc
            if isinstance(frame, bytes):
                if self._previews:
                    yield parse_binary_frame(frame)
                continue
            try:
                raw = json.loads(frame)
            except ValueError:
                continue  # not a message ComfyUI defines; nothing to act on
            if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
                continue
            message = ComfyMessage(raw["type"], raw.get("data") if isinstance(raw.get("data"), dict) else {})
            if message.type == "status" and "sid" in message.data:
                self.sid = message.data["sid"]
            yield message


class ComfyClient:
    """One ComfyUI server. `client_id` names this follower to ComfyUI: execution messages of
    prompts submitted with it arrive on its WebSocket, and only there."""

    def __init__(self, base_url: str, client_id: str, timeout: float = DEFAULT_TIMEOUT_SECONDS, *,
                 transport: httpx.AsyncBaseTransport | None = None):
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self.timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=httpx.Timeout(timeout), transport=transport,
            limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
        )

    async def __aenter__(self) -> ComfyClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- HTTP plumbing ---------------------------------------------------------------------

    def _error(self, exc: httpx.HTTPError, path: str) -> ComfyError:
        where = f"{self.base_url}{path}"
        if isinstance(exc, httpx.TimeoutException):
            return ComfyTimeout(f"{where}: no answer in {self.timeout:g} s", url=self.base_url)
        return ComfyUnreachable(f"{where}: {exc or type(exc).__name__}", url=self.base_url)

    def _raise_for_status(self, response: httpx.Response, path: str) -> None:
        if response.status_code < 400:
            return
        text = response.text
        if response.status_code == 400:
            try:
                body = response.json()
            except ValueError:
                body = None
            if isinstance(body, dict) and isinstance(body.get("error"), dict):
                node_errors = body.get("node_errors") if isinstance(body.get("node_errors"), dict) else {}
                raise ComfyValidationError(
                    f"{self.base_url}{path}: {describe_validation_error(body['error'], node_errors)}",
                    url=self.base_url, body=text, error=body["error"], node_errors=node_errors,
                )
        said = text.strip().replace("\n\n", ": ") or response.reason_phrase
        raise ComfyHTTPError(f"{self.base_url}{path}: HTTP {response.status_code} {said}",
                             url=self.base_url, status=response.status_code, body=text)

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._error(exc, path) from exc
        self._raise_for_status(response, path)
        return response

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise ComfyHTTPError(f"{self.base_url}{path}: the answer is not JSON", url=self.base_url,
                                 status=response.status_code, body=response.text) from exc

    # --- the API -------------------------------------------------------------------------

    async def submit(self, prompt: dict[str, Any], prompt_id: str, *,
                     extra_data: dict[str, Any] | None = None) -> dict[str, Any]:
        """Queue `prompt` (API format) under our client id and the given canonical prompt id.

        Returns ComfyUI's `{"prompt_id", "number", "node_errors"}`. ComfyUI itself does not
        refuse a prompt id it already has: use `submit_once` where a retry is possible."""
        body: dict[str, Any] = {"prompt": prompt, "client_id": self.client_id, "prompt_id": prompt_id}
        if extra_data:
            body["extra_data"] = extra_data
        return await self._json("POST", "/prompt", json=body)

    async def submit_once(self, prompt: dict[str, Any], prompt_id: str, *,
                          extra_data: dict[str, Any] | None = None) -> dict[str, Any]:
        """`submit`, unless the server already has this prompt id queued, running or in its
        history: then nothing is posted and `{"prompt_id", "already": <state>}` comes back.
        So a submit retried after a lost answer can never run the prompt twice."""
        state = await self.prompt_state(prompt_id)
        if state is not None:
            return {"prompt_id": prompt_id, "already": state, "node_errors": {}}
        return await self.submit(prompt, prompt_id, extra_data=extra_data)

    async def prompt_state(self, prompt_id: str) -> PromptState | None:
        """Where the server has this prompt: running, pending, finished (in its history), or
        nowhere (None: never submitted, deleted from the queue, or forgotten by a restart).

        One small request (`GET /api/jobs/{id}`, ComfyUI >= 0.13) rather than the whole queue,
        whose size grows with every waiting prompt; servers without that route are asked
        through `/queue` and `/history`."""
        try:
            job = await self._json("GET", f"/api/jobs/{prompt_id}")
        except ComfyHTTPError as exc:
            if exc.status != 404:
                raise
            if "Job not found" in exc.body:
                return None
        else:
            status = job.get("status") if isinstance(job, dict) else None
            if status == "in_progress":
                return "running"
            if status == "pending":
                return "pending"
            if status in ("completed", "failed", "cancelled"):
                return "finished"
        queue = await self.queue()
        if any(entry[1] == prompt_id for entry in queue.get("queue_running", [])):
            return "running"
        if any(entry[1] == prompt_id for entry in queue.get("queue_pending", [])):
            return "pending"
        if prompt_id in await self.history(prompt_id):
            return "finished"
        return None

    async def upload_image(self, data: bytes, filename: str, *, subfolder: str = "", overwrite: bool = True,
                           image_type: str = "input", content_type: str = "application/octet-stream") -> dict[str, Any]:
        """`POST /upload/image` (multipart). Returns `{"name", "subfolder", "type"}`: `name` may
        differ from `filename` when the server renamed it to keep an existing file."""
        fields = {"type": image_type, "subfolder": subfolder}
        if overwrite:
            fields["overwrite"] = "true"
        return await self._json("POST", "/upload/image", data=fields,
                                files={"image": (filename, data, content_type)})

    async def history(self, prompt_id: str | None = None, *, max_items: int | None = None,
                      offset: int | None = None) -> dict[str, Any]:
        """`GET /history/{id}` (`{}` when unknown) or `GET /history` (the last `max_items`)."""
        if prompt_id is not None:
            return await self._json("GET", f"/history/{prompt_id}")
        params = {k: v for k, v in (("max_items", max_items), ("offset", offset)) if v is not None}
        return await self._json("GET", "/history", params=params)

    @asynccontextmanager
    async def view_stream(self, filename: str, subfolder: str = "", type: str = "output") -> AsyncIterator[httpx.Response]:
        """`GET /view` as a streamed response: `async for chunk in response.aiter_bytes()`."""
        path = "/view"
        params = {"filename": filename, "subfolder": subfolder, "type": type}
        try:
            async with self._http.stream("GET", path, params=params) as response:
                if response.status_code >= 400:
                    await response.aread()
                    self._raise_for_status(response, f"{path}?filename={filename}")
                yield response
        except httpx.HTTPError as exc:
            raise self._error(exc, path) from exc

    async def view(self, filename: str, subfolder: str = "", type: str = "output") -> bytes:
        async with self.view_stream(filename, subfolder, type) as response:
            try:
                return await response.aread()
            except httpx.HTTPError as exc:
                raise self._error(exc, "/view") from exc

    async def queue(self) -> dict[str, list[QueueEntry]]:
        """`{"queue_running": [...], "queue_pending": [...]}` of `[number, prompt_id, prompt,
        extra_data, outputs_to_execute]` entries."""
        return await self._json("GET", "/queue")

    async def delete_from_queue(self, prompt_ids: list[str]) -> None:
        """Remove pending prompts. A running prompt is not affected: interrupt it."""
        await self._request("POST", "/queue", json={"delete": list(prompt_ids)})

    async def clear_queue(self) -> None:
        await self._request("POST", "/queue", json={"clear": True})

    async def interrupt(self, prompt_id: str) -> None:
        """Interrupt `prompt_id` if it is the one running; a no-op otherwise. Never the
        global interrupt: that would stop whatever runs, which may be another user's job."""
        await self._request("POST", "/interrupt", json={"prompt_id": prompt_id})

    async def object_info(self, node_class: str | None = None) -> dict[str, Any]:
        return await self._json("GET", f"/object_info/{node_class}" if node_class else "/object_info")

    async def system_stats(self) -> dict[str, Any]:
        return await self._json("GET", "/system_stats")

    def websocket(self, *, previews: bool = False) -> ComfySocket:
        """A WebSocket for our client id; see `ComfySocket`."""
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        url = urlunsplit((scheme, parts.netloc, f"{parts.path}/ws", f"clientId={self.client_id}", ""))
        return ComfySocket(url, open_timeout=self.timeout, previews=previews)
