"""A protocol-faithful fake ComfyUI 0.13: real HTTP and WebSocket on a loopback port.

It reproduces what `shared/comfyui-protocol/` recorded from a real server: the WebSocket
greeting, messages routed to the socket whose clientId submitted the prompt (and, for prompts
without one, only `status` and `progress_state` to everybody), the per-node
`progress_state`/`executing`/`executed` sequence ending with `executing{node: null}`,
`execution_cached` for nodes whose inputs did not change, validation errors with ComfyUI's
exact 400 bodies (node types, inputs, min/max and choices come from the real server's
`/object_info`, shipped beside this file), run-time errors (a corrupt uploaded image makes
LoadImage fail, or any node can be told to fail), interrupts at node boundaries (targeted and
global), queue delete/clear, `/history` with `max_items`/`offset`, `/view`, `/upload/image`
with its duplicate-by-hash and rename rules, and a `restart()` that forgets queue and history
and drops every socket, like a restarted ComfyUI.

It runs any workflow of stock nodes: a few nodes compute real images with Pillow (EmptyImage,
LoadImage, ImageInvert, ImageScale, ImageBlur, ...), SaveVideo writes a real mp4 with PyAV,
PreviewAny returns text, the checkpoint/sampler nodes produce a plausible image without any
model file, and every other node passes its first matching input through or makes a
placeholder of its output type.

Use the pytest fixtures `fake_comfy` (one server) and `fake_comfy_factory` (several), or run
it by hand: `python -m tests.fakes.comfyui --port 8189`.
"""

from __future__ import annotations

import asyncio
import copy
import gzip
import hashlib
import io
import json
import mimetypes
import os
import re
import socket
import struct
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from PIL import Image, ImageFilter, ImageOps
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

OBJECT_INFO_FILE = Path(__file__).with_name("object_info.json.gz")
DEFAULT_CHECKPOINT = "v1-5-pruned-emaonly.safetensors"
JSON_TYPE = "application/json; charset=utf-8"
SERVER_ERROR_TEXT = "500 Internal Server Error\n\nServer got itself in trouble"
MAX_HISTORY = 10000


def now_ms() -> int:
    return int(time.time() * 1000)


def load_object_info() -> dict[str, Any]:
    """The real ComfyUI 0.13's `GET /object_info` (589 nodes, CPU install, no model files)."""
    with gzip.open(OBJECT_INFO_FILE, "rt", encoding="utf-8") as f:
        return json.load(f)


def json_response(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data), status_code=status, media_type=JSON_TYPE)


def empty_response(status: int = 200) -> Response:
    return Response(b"", status_code=status)


# --- values flowing between nodes ----------------------------------------------------------

@dataclass
class Latent:
    width: int
    height: int
    batch: int = 1
    source: list[Image.Image] | None = None  # the encoded image, for img2img


@dataclass
class Video:
    frames: list[Image.Image]
    fps: float


@dataclass
class Opaque:
    """A value the fake does not model (MODEL, CLIP, CONDITIONING, ...): only its type."""

    type: str

    def __str__(self) -> str:
        return f"<{self.type}>"


class NodeFailure(Exception):
    """A run-time error of a node, reported as ComfyUI reports it."""

    def __init__(self, message: str, exception_type: str):
        super().__init__(message)
        self.message = message
        self.exception_type = exception_type


class Interrupted(Exception):
    pass


def input_spec(info: dict[str, Any], name: str) -> tuple[str | list, dict[str, Any]] | None:
    """(type, options) of one input of a node, from its object_info entry."""
    for category in ("required", "optional"):
        spec = info["input"].get(category, {}).get(name)
        if spec is not None:
            kind = spec[0]
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            return kind, options
    return None


def combo_choices(kind: Any, options: dict[str, Any]) -> list | None:
    if isinstance(kind, list):
        return kind
    if kind == "COMBO":
        return options.get("options", [])
    return None


def types_match(received: str, wanted: Any) -> bool:
    if not isinstance(wanted, str) or wanted in ("*", "") or received in ("*", ""):
        return True
    if wanted == "COMBO" or isinstance(wanted, list):
        return True
    received_set = set(received.split(","))
    wanted_set = set(wanted.split(","))
    return bool(received_set & wanted_set)


def is_link(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int) and not isinstance(value[1], bool))


# --- validation, as ComfyUI's execution.validate_prompt does it ----------------------------

class Validator:
    def __init__(self, fake: FakeComfyUI, prompt: dict[str, Any]):
        self.fake = fake
        self.prompt = prompt
        self.validated: dict[str, tuple[bool, list[dict], str]] = {}

    def error(self, type_: str, message: str, details: str, extra: dict[str, Any]) -> dict[str, Any]:
        return {"type": type_, "message": message, "details": details, "extra_info": extra}

    def validate_inputs(self, node_id: str) -> tuple[bool, list[dict], str]:
        if node_id in self.validated:
            return self.validated[node_id]
        node = self.prompt[node_id]  # KeyError for a link to a missing node, as in ComfyUI
        class_type = node["class_type"]
        info = self.fake.node_info(class_type)
        inputs = node.get("inputs", {})
        errors: list[dict] = []
        valid = True
        required = info["input"].get("required", {})
        names = list(required) + [n for n in info["input"].get("optional", {}) if n in inputs]
        for name in names:
            kind, options = input_spec(info, name)
            config = [kind, options]
            if name not in inputs:
                if name in required:
                    errors.append(self.error("required_input_missing", "Required input is missing", name,
                                             {"input_name": name}))
                    valid = False
                continue
            value = inputs[name]
            if is_link(value):
                linked_id, slot = value
                # Outside the try, as in ComfyUI: a link to a missing node raises KeyError
                # here, which the node linking to *this* one reports against this one.
                linked_type = self.fake.node_info(self.prompt[linked_id]["class_type"])["output"][slot]
                if not types_match(linked_type, kind):
                    details = f"{name}, received_type({linked_type}) mismatch input_type({kind})"
                    errors.append(self.error("return_type_mismatch", "Return type mismatch between linked nodes",
                                             details, {"input_name": name, "input_config": config,
                                                       "received_type": linked_type, "linked_node": value}))
                    valid = False
                    continue
                try:
                    ok, _, _ = self.validate_inputs(linked_id)
                    if not ok:
                        valid = False
                except Exception as exc:  # noqa: BLE001 - ComfyUI reports any exception here
                    reason = self.error(
                        "exception_during_inner_validation", "Exception when validating inner node", str(exc),
                        {"input_name": name, "input_config": config, "exception_message": str(exc),
                         "exception_type": type(exc).__name__,
                         "traceback": ["<traceback lines removed from this capture>"], "linked_node": value})
                    self.validated[value[0]] = (False, [reason], value[0])
                    valid = False
                continue
            problem = self.check_value(class_type, name, kind, options, value)
            if problem is not None:
                errors.append(problem)
                valid = False
        result = (valid and not errors, errors, node_id)
        self.validated[node_id] = result
        return result

    def check_value(self, class_type: str, name: str, kind: Any, options: dict[str, Any], value: Any) -> dict | None:
        config = [kind, options]
        extra = {"input_name": name, "input_config": config, "received_value": value}
        if class_type in FILE_INPUT_NODES and name == "image":
            if not self.fake.input_file(str(value)).is_file():
                return self.error("custom_validation_failed", "Custom validation failed for node",
                                  f"image - Invalid image file: {value}", {"input_name": name})
            return None
        if kind in ("INT", "FLOAT"):
            try:
                number = int(value) if kind == "INT" else float(value)
            except (TypeError, ValueError) as exc:
                return self.error("invalid_input_type", f"Failed to convert an input value to a {kind} value",
                                  f"{name}, {value}, {exc}", {**extra, "exception_message": str(exc)})
            if "min" in options and number < options["min"]:
                return self.error("value_smaller_than_min", f"Value {number} smaller than min of {options['min']}",
                                  name, extra)
            if "max" in options and number > options["max"]:
                return self.error("value_bigger_than_max", f"Value {number} bigger than max of {options['max']}",
                                  name, extra)
            return None
        choices = combo_choices(kind, options)
        if choices is not None and not options.get("multiselect"):
            if name in self.fake.model_lists:
                choices = self.fake.model_lists[name]
            if value not in choices:
                shown = choices if len(choices) <= 20 else f"(list of length {len(choices)})"
                return self.error("value_not_in_list", "Value not in list", f"{name}: '{value}' not in {shown}",
                                  {"input_name": name, "input_config": [choices if isinstance(kind, list) else kind,
                                                                       options], "received_value": value})
        return None


FILE_INPUT_NODES = {"LoadImage", "LoadImageMask", "LoadImageOutput"}


def validate_prompt(fake: FakeComfyUI, prompt: Any) -> tuple[bool, dict | None, list[str], dict]:
    """(ok, error, good output ids, node_errors) as ComfyUI computes them."""

    def top(type_: str, message: str, details: str = "", extra: dict | None = None) -> dict:
        return {"type": type_, "message": message, "details": details, "extra_info": extra or {}}

    if not isinstance(prompt, dict):
        return False, top("invalid_prompt", "Invalid prompt", "prompt is not an object"), [], {}
    outputs = []
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            return False, top("missing_node_type",
                              f"Node 'ID #{node_id}' has no class_type. The workflow may be corrupted or a custom "
                              "node is missing.", f"Node ID '#{node_id}'",
                              {"node_id": node_id, "class_type": None, "node_title": None}), [], {}
        class_type = node["class_type"]
        if class_type not in fake.object_info:
            return False, top("missing_node_type",
                              f"Node '{class_type}' not found. The custom node may not be installed.",
                              f"Node ID '#{node_id}'",
                              {"node_id": node_id, "class_type": class_type, "node_title": class_type}), [], {}
        if fake.object_info[class_type].get("output_node"):
            outputs.append(node_id)
    if not outputs:
        return False, top("prompt_no_outputs", "Prompt has no outputs"), [], {}

    validator = Validator(fake, prompt)
    good, failed = [], []
    for output_id in outputs:
        try:
            ok, _, _ = validator.validate_inputs(output_id)
        except Exception as exc:  # noqa: BLE001
            validator.validated[output_id] = (False, [validator.error(
                "exception_during_validation", "Exception when validating node", str(exc),
                {"exception_type": type(exc).__name__, "traceback": []})], output_id)
            ok = False
        (good if ok else failed).append(output_id)

    node_errors: dict[str, Any] = {}
    for node_id, (ok, reasons, _) in validator.validated.items():
        if ok or not reasons:
            continue
        dependents = [o for o in failed if node_id == o or node_id in upstream(prompt, o)]
        node_errors[node_id] = {"errors": reasons, "dependent_outputs": dependents,
                                "class_type": prompt.get(node_id, {}).get("class_type")}
    if not good:
        # The details list the errors of the output nodes themselves (not of nodes upstream).
        details = "\n".join(f"{e['message']}: {e['details']}" for o in failed for e in validator.validated[o][1])
        return False, top("prompt_outputs_failed_validation", "Prompt outputs failed validation", details), [], \
            node_errors
    return True, None, sorted(good, key=sort_key), node_errors


def upstream(prompt: dict[str, Any], node_id: str, seen: set[str] | None = None) -> set[str]:
    seen = set() if seen is None else seen
    for value in prompt.get(node_id, {}).get("inputs", {}).values():
        if is_link(value) and value[0] not in seen:
            seen.add(value[0])
            upstream(prompt, value[0], seen)
    return seen


def sort_key(node_id: str) -> tuple[int, str]:
    return (int(node_id), "") if node_id.isdigit() else (1 << 30, node_id)


def execution_order(prompt: dict[str, Any], outputs: list[str]) -> list[str]:
    order: list[str] = []
    done: set[str] = set()

    def visit(node_id: str) -> None:
        if node_id in done:
            return
        done.add(node_id)
        for value in prompt[node_id].get("inputs", {}).values():
            if is_link(value):
                visit(value[0])
        order.append(node_id)

    for output_id in outputs:
        visit(output_id)
    return order


# --- the queue -----------------------------------------------------------------------------

@dataclass
class QueueItem:
    number: int
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]

    def entry(self) -> list:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]

    @property
    def client_id(self) -> str | None:
        return self.extra_data.get("client_id")


@dataclass
class RunState:
    item: QueueItem
    messages: list = field(default_factory=list)
    executed: list[str] = field(default_factory=list)
    ui: dict[str, Any] = field(default_factory=dict)
    progress: dict[str, dict] = field(default_factory=dict)
    current_node: str | None = None


class FakeComfyUI:
    """One fake ComfyUI server, on its own thread and event loop.

    Knobs (settable at any time from the test): `node_delay` (seconds every executed node
    takes), `node_delays` (per class_type or node id), `fail_nodes` (class_type or node id ->
    exception message: the node raises at run time), `sampler_step_delay` (seconds per sampler
    step), `model_lists` (input name -> choices, e.g. `ckpt_name`). `go_offline()` makes it
    unreachable (connections refused, state kept) until `go_online()`; `restart()` forgets
    queue, history and cache and drops every socket, like a restarted ComfyUI.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, node_delay: float = 0.0,
                 root: Path | None = None):
        self.host = host
        self.port = port
        self.node_delay = node_delay
        self.node_delays: dict[str, float] = {}
        self.fail_nodes: dict[str, str] = {}
        self.sampler_step_delay = 0.0
        self.model_lists: dict[str, list[str]] = {"ckpt_name": [DEFAULT_CHECKPOINT]}
        self.object_info = load_object_info()
        self._tmp = None if root is not None else tempfile.TemporaryDirectory(prefix="fake-comfyui-")
        self.root = Path(root or self._tmp.name)
        for name in ("input", "output", "temp"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        self.requests: list[tuple[str, str]] = []  # (method, path) of every HTTP request, for tests
        self.success_sent_at: dict[str, float] = {}  # prompt id -> epoch seconds (for benchmarks)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self._server_task: asyncio.Task | None = None
        self._worker_task: asyncio.Task | None = None
        self._reset_state()

    # --- state ---------------------------------------------------------------------------

    def _reset_state(self) -> None:
        self.number = 0
        self.pending: list[QueueItem] = []
        self.running: RunState | None = None
        self.history: dict[str, dict[str, Any]] = {}
        self.cache: dict[str, tuple[tuple, dict | None]] = {}
        self.sockets: dict[str, WebSocket] = {}
        self.interrupt_flag = False
        self._wake: asyncio.Event | None = None
        self.temp_prefix = uuid.uuid4().hex[:5]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def queue_remaining(self) -> int:
        return len(self.pending) + (1 if self.running else 0)

    def node_info(self, class_type: str) -> dict[str, Any]:
        return self.object_info[class_type]

    def input_file(self, name: str, subfolder: str = "") -> Path:
        name = re.sub(r" \[(input|output|temp)\]$", "", name)
        return self.root / "input" / subfolder / name

    # --- lifecycle (called from the test's thread) ---------------------------------------

    def start(self) -> FakeComfyUI:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._start_async())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name=f"fake-comfyui-{id(self):x}", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def _call(self, coro: Any, timeout: float = 15) -> Any:
        assert self._loop is not None, "start() first"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def stop(self) -> None:
        if self._loop is None:
            return
        self._call(self._stop_async())
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(10)
        self._loop.close()
        self._loop = None
        if self._tmp is not None:
            self._tmp.cleanup()

    def restart(self) -> None:
        """Like a restarted ComfyUI: sockets dropped, queue and history forgotten, files kept."""
        self._call(self._restart_async())

    def go_offline(self) -> None:
        """Stop listening (connections are refused); queue and running work carry on."""
        self._call(self._stop_http())

    def go_online(self) -> None:
        self._call(self._start_http())

    def wait_idle(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while self.queue_remaining and time.monotonic() < deadline:
            time.sleep(0.01)

    def __enter__(self) -> FakeComfyUI:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- lifecycle (on the server's loop) -------------------------------------------------

    async def _start_async(self) -> None:
        self._wake = asyncio.Event()
        self._worker_task = asyncio.create_task(self._worker())
        await self._start_http()

    async def _start_http(self) -> None:
        if self._server is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        sock.listen(128)
        sock.setblocking(False)
        config = uvicorn.Config(self._app(), log_level="warning", lifespan="off", ws="websockets-sansio",
                                timeout_graceful_shutdown=1, ws_ping_interval=None, access_log=False)
        self._server = uvicorn.Server(config)
        self._server_task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._server_task.done():
                self._server_task.result()
            await asyncio.sleep(0.005)

    async def _stop_http(self) -> None:
        if self._server is None:
            return
        for ws in list(self.sockets.values()):
            try:
                await ws.close(1012)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.sockets.clear()
        self._server.should_exit = True
        await self._server_task
        self._server = None

    async def _stop_async(self) -> None:
        await self._stop_http()
        if self._worker_task:
            self._worker_task.cancel()
            try:
                await self._worker_task
            except asyncio.CancelledError:
                pass

    async def _restart_async(self) -> None:
        await self._stop_async()
        self._reset_state()
        await self._start_async()

    # --- messages -------------------------------------------------------------------------

    async def send(self, type_: str, data: dict[str, Any], sid: str | None = None) -> None:
        """To one client id, or (sid None) to every socket, as ComfyUI's send_sync does."""
        text = json.dumps({"type": type_, "data": data})
        targets = [self.sockets.get(sid)] if sid is not None else list(self.sockets.values())
        for ws in targets:
            if ws is None:
                continue
            try:
                await ws.send_text(text)
            except Exception:  # noqa: BLE001 - a socket that went away misses the message
                pass

    async def send_bytes(self, frame: bytes, sid: str | None) -> None:
        ws = self.sockets.get(sid) if sid else None
        if ws is not None:
            try:
                await ws.send_bytes(frame)
            except Exception:  # noqa: BLE001
                pass

    async def send_status(self) -> None:
        await self.send("status", {"status": {"exec_info": {"queue_remaining": self.queue_remaining}}})

    async def send_execution(self, run: RunState, type_: str, data: dict[str, Any], *, record: bool = False) -> None:
        """An execution message: to the prompt's client only, and to nobody if it has none."""
        if record:
            run.messages.append([type_, data])
        if run.item.client_id is not None:
            await self.send(type_, data, run.item.client_id)

    async def send_progress_state(self, run: RunState) -> None:
        # progress_state goes to the prompt's client, or to every socket when it has none.
        await self.send("progress_state", {"prompt_id": run.item.prompt_id, "nodes": copy.deepcopy(run.progress)},
                        run.item.client_id)

    def progress_entry(self, run: RunState, node_id: str, value: float, max_: float, state: str) -> None:
        run.progress[node_id] = {"value": value, "max": max_, "state": state, "node_id": node_id,
                                 "prompt_id": run.item.prompt_id, "display_node_id": node_id,
                                 "parent_node_id": None, "real_node_id": node_id}

    # --- HTTP -----------------------------------------------------------------------------

    def _app(self) -> Starlette:
        routes = [
            Route("/system_stats", self.h_system_stats),
            Route("/features", self.h_features),
            Route("/prompt", self.h_prompt_info, methods=["GET"]),
            Route("/prompt", self.h_post_prompt, methods=["POST"]),
            Route("/queue", self.h_queue, methods=["GET"]),
            Route("/queue", self.h_post_queue, methods=["POST"]),
            Route("/interrupt", self.h_interrupt, methods=["POST"]),
            Route("/history", self.h_history, methods=["GET"]),
            Route("/history", self.h_post_history, methods=["POST"]),
            Route("/history/{prompt_id}", self.h_history_item, methods=["GET"]),
            Route("/object_info", self.h_object_info),
            Route("/object_info/{node_class}", self.h_object_info_one),
            Route("/upload/image", self.h_upload_image, methods=["POST"]),
            Route("/view", self.h_view, methods=["GET", "HEAD"]),
            Route("/api/jobs", self.h_jobs),
            Route("/api/jobs/{job_id}", self.h_job),
            WebSocketRoute("/ws", self.h_ws),
        ]
        # The frontend calls the same routes under /api.
        routes += [Route("/api" + r.path, r.endpoint, methods=r.methods) for r in routes
                   if isinstance(r, Route) and not r.path.startswith("/api/")]
        routes.append(WebSocketRoute("/api/ws", self.h_ws))
        app = Starlette(routes=routes)

        async def record(scope, receive, send):  # noqa: ANN001 - ASGI callable
            if scope["type"] == "http":
                self.requests.append((scope["method"], scope["path"]))
            await app(scope, receive, send)

        return record

    async def h_system_stats(self, request: Request) -> Response:
        return json_response({
            "system": {"os": "linux", "ram_total": 8 << 30, "ram_free": 6 << 30, "comfyui_version": "0.13.0",
                       "required_frontend_version": "1.38.14", "installed_templates_version": "0.8.38",
                       "required_templates_version": "0.8.38", "python_version": "3.11.7 (fake)",
                       "pytorch_version": "2.13.0+cpu", "embedded_python": False,
                       "argv": ["main.py", "--cpu", "--listen", self.host, "--port", str(self.port)]},
            "devices": [{"name": "cpu", "type": "cpu", "index": None, "vram_total": 8 << 30, "vram_free": 6 << 30,
                         "torch_vram_total": 8 << 30, "torch_vram_free": 6 << 30}],
        })

    async def h_features(self, request: Request) -> Response:
        return json_response(FEATURES)

    async def h_prompt_info(self, request: Request) -> Response:
        return json_response({"exec_info": {"queue_remaining": self.queue_remaining}})

    async def h_post_prompt(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return Response(SERVER_ERROR_TEXT, status_code=500, media_type="text/plain; charset=utf-8")
        if not isinstance(body, dict):
            return Response(SERVER_ERROR_TEXT, status_code=500, media_type="text/plain; charset=utf-8")
        number = self.number
        if "number" in body:
            number = float(body["number"])
        else:
            self.number += 1
            if body.get("front"):
                number = -number
        if "prompt" not in body:
            return json_response({"error": {"type": "no_prompt", "message": "No prompt provided",
                                            "details": "No prompt provided", "extra_info": {}},
                                  "node_errors": {}}, 400)
        prompt = body["prompt"]
        prompt_id = str(body.get("prompt_id") or uuid.uuid4())
        ok, error, outputs, node_errors = validate_prompt(self, prompt)
        if not ok:
            return json_response({"error": error, "node_errors": node_errors}, 400)
        extra_data = dict(body.get("extra_data") or {})
        if "client_id" in body:
            extra_data["client_id"] = body["client_id"]
        extra_data["create_time"] = now_ms()
        self.pending.append(QueueItem(number, prompt_id, prompt, extra_data, outputs))
        self.pending.sort(key=lambda i: i.number)
        await self.send_status()
        self._wake.set()
        return json_response({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})

    async def h_queue(self, request: Request) -> Response:
        running = [self.running.item.entry()] if self.running else []
        return json_response({"queue_running": running, "queue_pending": [i.entry() for i in self.pending]})

    async def h_post_queue(self, request: Request) -> Response:
        body = await self._json_or_500(request)
        if isinstance(body, Response):
            return body
        if body.get("clear"):
            self.pending.clear()
        if "delete" in body:
            doomed = set(body["delete"])
            self.pending = [i for i in self.pending if i.prompt_id not in doomed]
        await self.send_status()
        return empty_response()

    async def h_interrupt(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            body = {}  # ComfyUI treats an unreadable body as a global interrupt
        wanted = body.get("prompt_id") if isinstance(body, dict) else None
        if wanted is None or (self.running is not None and self.running.item.prompt_id == wanted):
            self.interrupt_flag = True
        return empty_response()

    async def h_history(self, request: Request) -> Response:
        try:
            max_items = request.query_params.get("max_items")
            max_items = int(max_items) if max_items is not None else None
            offset = int(request.query_params.get("offset", -1))
        except ValueError:
            return Response(SERVER_ERROR_TEXT, status_code=500, media_type="text/plain; charset=utf-8")
        if offset < 0 and max_items is not None:
            offset = len(self.history) - max_items
        out: dict[str, Any] = {}
        for i, (key, entry) in enumerate(self.history.items()):
            if i >= offset:
                out[key] = entry
                if max_items is not None and len(out) >= max_items:
                    break
        return json_response(out)

    async def h_post_history(self, request: Request) -> Response:
        body = await self._json_or_500(request)
        if isinstance(body, Response):
            return body
        if body.get("clear"):
            self.history.clear()
        for prompt_id in body.get("delete", []):
            self.history.pop(prompt_id, None)
        return empty_response()

    async def h_history_item(self, request: Request) -> Response:
        prompt_id = request.path_params["prompt_id"]
        entry = self.history.get(prompt_id)
        return json_response({prompt_id: entry} if entry is not None else {})

    def current_object_info(self, class_type: str) -> dict[str, Any]:
        """A node's object_info with the lists that depend on files (inputs, models) filled in."""
        info = self.object_info[class_type]
        lists = dict(self.model_lists)
        if class_type in FILE_INPUT_NODES:
            lists["image"] = sorted(p.name for p in (self.root / "input").iterdir() if p.is_file())
        patched = None
        for category in ("required", "optional"):
            for name, spec in info["input"].get(category, {}).items():
                if name in lists and isinstance(spec[0], list):
                    patched = patched or copy.deepcopy(info)
                    patched["input"][category][name][0] = list(lists[name])
        return patched or info

    async def h_object_info(self, request: Request) -> Response:
        return json_response({name: self.current_object_info(name) for name in self.object_info})

    async def h_object_info_one(self, request: Request) -> Response:
        name = request.path_params["node_class"]
        return json_response({name: self.current_object_info(name)} if name in self.object_info else {})

    async def h_upload_image(self, request: Request) -> Response:
        form = await request.form()
        image = form.get("image")
        if image is None or isinstance(image, str) or not image.filename:
            return empty_response(400)
        kind = form.get("type") or "input"
        if kind not in ("input", "temp", "output"):
            return empty_response(400)
        base = (self.root / kind).resolve()
        subfolder = str(form.get("subfolder") or "")
        folder = (base / os.path.normpath(subfolder)).resolve() if subfolder else base
        filename = image.filename
        target = (folder / filename).resolve()
        if os.path.commonpath((base, target)) != str(base):
            return empty_response(400)
        data = await image.read()
        overwrite = str(form.get("overwrite") or "").lower() in ("true", "1")
        duplicate = False
        if not overwrite:
            stem, ext = os.path.splitext(filename)
            i = 1
            while target.exists():
                if hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(data).digest():
                    duplicate = True
                    break
                filename = f"{stem} ({i}){ext}"
                target = folder / filename
                i += 1
        if not duplicate:
            folder.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return json_response({"name": filename, "subfolder": subfolder, "type": kind})

    async def h_view(self, request: Request) -> Response:
        filename = request.query_params.get("filename")
        if not filename:
            return empty_response(400)
        if filename.startswith("/") or ".." in filename:
            return empty_response(400)
        kind = request.query_params.get("type") or "output"
        if kind not in ("input", "temp", "output"):
            return empty_response(400)
        base = (self.root / kind).resolve()
        subfolder = request.query_params.get("subfolder") or ""
        path = (base / os.path.normpath(subfolder) / filename).resolve() if subfolder else base / filename
        if os.path.commonpath((base, path)) != str(base):
            return empty_response(403)
        if not path.is_file():
            return empty_response(404)
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        return FileResponse(path, media_type=content_type,
                            headers={"content-disposition": f'filename="{filename}"'})

    async def h_jobs(self, request: Request) -> Response:
        status_filter = request.query_params.get("status")
        valid = ("pending", "in_progress", "completed", "failed", "cancelled")
        if status_filter:
            wanted = status_filter.split(",")
            bad = [s for s in wanted if s not in valid]
            if bad:
                return json_response({"error": f"Invalid status value(s): {', '.join(bad)}. "
                                               f"Valid values: {', '.join(valid)}"}, 400)
        jobs = [self.job_summary(prompt_id) for prompt_id in self.all_prompt_ids()]
        if status_filter:
            jobs = [j for j in jobs if j["status"] in status_filter.split(",")]
        jobs.sort(key=lambda j: j["priority"], reverse=True)
        offset = int(request.query_params.get("offset", 0))
        limit = request.query_params.get("limit")
        page = jobs[offset:offset + int(limit)] if limit else jobs[offset:]
        return json_response({"jobs": page, "pagination": {
            "offset": offset, "limit": int(limit) if limit else None, "total": len(jobs),
            "has_more": offset + len(page) < len(jobs)}})

    async def h_job(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        if job_id not in self.all_prompt_ids():
            return json_response({"error": "Job not found"}, 404)
        summary = self.job_summary(job_id)
        entry = self.history.get(job_id)
        item = self.find_item(job_id)
        summary["outputs"] = entry["outputs"] if entry else {}
        if entry:
            summary["execution_status"] = entry["status"]
        summary["workflow"] = {"prompt": item.prompt, "extra_data": item.extra_data}
        return json_response(summary)

    def all_prompt_ids(self) -> list[str]:
        ids = list(self.history) + [i.prompt_id for i in self.pending]
        if self.running:
            ids.append(self.running.item.prompt_id)
        return ids

    def find_item(self, prompt_id: str) -> QueueItem:
        if self.running and self.running.item.prompt_id == prompt_id:
            return self.running.item
        for item in self.pending:
            if item.prompt_id == prompt_id:
                return item
        number, _, prompt, extra, outputs = self.history[prompt_id]["prompt"]
        return QueueItem(number, prompt_id, prompt, extra, outputs)

    def job_summary(self, prompt_id: str) -> dict[str, Any]:
        item = self.find_item(prompt_id)
        summary: dict[str, Any] = {"id": prompt_id, "priority": item.number,
                                   "create_time": item.extra_data.get("create_time")}
        entry = self.history.get(prompt_id)
        if entry is None:
            summary["status"] = "in_progress" if self.running and self.running.item is item else "pending"
        else:
            messages = dict((m[0], m[1]) for m in entry["status"]["messages"])
            if "execution_interrupted" in messages:
                summary["status"] = "cancelled"
            elif entry["status"]["status_str"] == "error":
                summary["status"] = "failed"
            else:
                summary["status"] = "completed"
            if "execution_start" in messages:
                summary["execution_start_time"] = messages["execution_start"]["timestamp"]
            end = [m[1]["timestamp"] for m in entry["status"]["messages"] if "timestamp" in m[1]]
            if end:
                summary["execution_end_time"] = end[-1]
        summary["outputs_count"] = sum(len(v) for ui in (entry or {}).get("outputs", {}).values()
                                       for k, v in ui.items() if k == "images")
        return summary

    async def _json_or_500(self, request: Request) -> dict | Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return Response(SERVER_ERROR_TEXT, status_code=500, media_type="text/plain; charset=utf-8")
        return body if isinstance(body, dict) else {}

    # --- WebSocket ------------------------------------------------------------------------

    async def h_ws(self, ws: WebSocket) -> None:
        await ws.accept()
        sid = ws.query_params.get("clientId") or uuid.uuid4().hex
        self.sockets[sid] = ws
        try:
            await ws.send_text(json.dumps({"type": "status", "data": {
                "status": {"exec_info": {"queue_remaining": self.queue_remaining}}, "sid": sid}}))
            run = self.running
            if run is not None and run.item.client_id == sid and run.current_node is not None:
                await ws.send_text(json.dumps({"type": "executing", "data": {"node": run.current_node}}))
            while True:
                text = await ws.receive_text()
                try:
                    message = json.loads(text)
                except ValueError:
                    continue
                if isinstance(message, dict) and message.get("type") == "feature_flags":
                    await ws.send_text(json.dumps({"type": "feature_flags", "data": FEATURES}))
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            # As ComfyUI does: the client id leaves the table when *a* socket of it closes,
            # even if a newer socket with the same id replaced it meanwhile.
            self.sockets.pop(sid, None)

    # --- execution ------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            while not self.pending:
                self._wake.clear()
                await self._wake.wait()
            item = self.pending.pop(0)
            self.running = RunState(item)
            await self.send_status()
            try:
                await self._execute(self.running)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a bug of the fake must not stop its queue
                import traceback
                traceback.print_exc()
            finally:
                self.running = None

    def _delay(self, node_id: str, class_type: str) -> float:
        return self.node_delays.get(node_id, self.node_delays.get(class_type, self.node_delay))

    async def _execute(self, run: RunState) -> None:
        item = run.item
        self.interrupt_flag = False
        await self.send_execution(run, "execution_start", {"prompt_id": item.prompt_id, "timestamp": now_ms()},
                                  record=True)
        order = execution_order(item.prompt, item.outputs)
        signatures = {node_id: self.signature(item.prompt, node_id) for node_id in order}
        cached = [n for n in order if signatures[n] in self.cache and self.cacheable(item.prompt[n]["class_type"])]
        await self.send_execution(run, "execution_cached",
                                  {"nodes": cached, "prompt_id": item.prompt_id, "timestamp": now_ms()}, record=True)
        values: dict[str, tuple] = {}
        new_cache: dict = {}
        # Cached output nodes replay their UI output first, last node first, as ComfyUI does.
        for node_id in reversed(cached):
            values[node_id], ui = self.cache[signatures[node_id]]
            new_cache[signatures[node_id]] = self.cache[signatures[node_id]]
            if ui is not None:
                run.ui[node_id] = ui
                await self.send_execution(run, "executed", {"node": node_id, "display_node": node_id,
                                                            "output": ui, "prompt_id": item.prompt_id})
                self.progress_entry(run, node_id, 1, 1, "finished")
                await self.send_progress_state(run)
        outcome = "success"
        for node_id in order:
            class_type = item.prompt[node_id]["class_type"]
            if node_id in cached:
                continue
            self.progress_entry(run, node_id, 0.0, 1.0, "running")
            await self.send_progress_state(run)
            run.current_node = node_id
            await self.send_execution(run, "executing", {"node": node_id, "display_node": node_id,
                                                         "prompt_id": item.prompt_id})
            try:
                if self.interrupt_flag:
                    raise Interrupted()
                inputs = self.resolve_inputs(item.prompt[node_id], values)
                delay = self._delay(node_id, class_type)
                if delay:
                    await asyncio.sleep(delay)
                failure = self.fail_nodes.get(node_id, self.fail_nodes.get(class_type))
                if failure is not None:
                    raise NodeFailure(failure, "RuntimeError")
                values[node_id], ui = await self.run_node(run, node_id, class_type, inputs)
            except Interrupted:
                await self.send_execution(run, "execution_interrupted", {
                    "prompt_id": item.prompt_id, "node_id": node_id, "node_type": class_type,
                    "executed": list(run.executed), "timestamp": now_ms()}, record=True)
                outcome = "error"
                break
            except NodeFailure as exc:
                await self.report_error(run, node_id, class_type, exc.message, exc.exception_type, item)
                outcome = "error"
                break
            except Exception as exc:  # noqa: BLE001 - any node exception is a run-time error
                await self.report_error(run, node_id, class_type, f"{exc}\n",
                                        f"{type(exc).__module__}.{type(exc).__name__}".removeprefix("builtins."),
                                        item)
                outcome = "error"
                break
            if self.cacheable(class_type):
                new_cache[signatures[node_id]] = (values[node_id], ui)
            run.executed.append(node_id)
            if ui is not None:
                run.ui[node_id] = ui
                await self.send_execution(run, "executed", {"node": node_id, "display_node": node_id, "output": ui,
                                                            "prompt_id": item.prompt_id})
            self.progress_entry(run, node_id, run.progress[node_id]["max"], run.progress[node_id]["max"], "finished")
            await self.send_progress_state(run)
        run.current_node = None
        self.cache = new_cache
        if outcome == "success":
            self.success_sent_at[item.prompt_id] = time.time()
            await self.send_execution(run, "execution_success", {"prompt_id": item.prompt_id, "timestamp": now_ms()},
                                      record=True)
        self.history[item.prompt_id] = {
            "prompt": item.entry(),
            "outputs": run.ui if outcome == "success" else {},
            "status": {"status_str": outcome, "completed": outcome == "success", "messages": run.messages},
            "meta": {n: {"node_id": n, "display_node": n, "parent_node": None, "real_node_id": n} for n in run.ui}
            if outcome == "success" else {},
        }
        while len(self.history) > MAX_HISTORY:
            self.history.pop(next(iter(self.history)))
        self.running = None
        await self.send_status()
        if item.client_id is not None:
            await self.send("executing", {"node": None, "prompt_id": item.prompt_id}, item.client_id)

    async def report_error(self, run: RunState, node_id: str, class_type: str, message: str, exception_type: str,
                           item: QueueItem) -> None:
        inputs = {k: [v if not is_link(v) else None] for k, v in item.prompt[node_id].get("inputs", {}).items()
                  if not is_link(v)}
        await self.send_execution(run, "execution_error", {
            "prompt_id": item.prompt_id, "node_id": node_id, "node_type": class_type, "executed": list(run.executed),
            "exception_message": message, "exception_type": exception_type,
            "traceback": ["<traceback lines removed from this capture>"], "current_inputs": inputs,
            "current_outputs": list(item.prompt), "timestamp": now_ms()}, record=True)

    def cacheable(self, class_type: str) -> bool:
        return class_type not in UNCACHED_NODES and class_type not in self.fail_nodes

    def signature(self, prompt: dict[str, Any], node_id: str) -> tuple:
        node = prompt[node_id]
        parts = []
        for name, value in sorted(node.get("inputs", {}).items()):
            if is_link(value):
                parts.append((name, self.signature(prompt, value[0]), value[1]))
            else:
                parts.append((name, json.dumps(value, sort_keys=True)))
        if node["class_type"] in FILE_INPUT_NODES:
            path = self.input_file(str(node.get("inputs", {}).get("image", "")))
            parts.append(("file", hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""))
        return (node["class_type"], tuple(parts))

    def resolve_inputs(self, node: dict[str, Any], values: dict[str, tuple]) -> dict[str, Any]:
        return {name: values[value[0]][value[1]] if is_link(value) else value
                for name, value in node.get("inputs", {}).items()}

    async def run_node(self, run: RunState, node_id: str, class_type: str,
                       inputs: dict[str, Any]) -> tuple[tuple, dict | None]:
        special = NODES.get(class_type)
        if special is not None:
            return await special(self, run, node_id, inputs)
        return await asyncio.to_thread(generic_node, self, class_type, inputs)

    async def report_step(self, run: RunState, node_id: str, value: int, max_: int) -> None:
        """A node's inner progress (sampler steps): `progress` + `progress_state`."""
        self.progress_entry(run, node_id, value, max_, "running")
        await self.send_progress_state(run)
        await self.send_execution(run, "progress", {"value": value, "max": max_, "prompt_id": run.item.prompt_id,
                                                    "node": node_id})

    # --- outputs --------------------------------------------------------------------------

    def save_path(self, prefix: str, kind: str, ext: str) -> tuple[Path, str, str]:
        """(path, filename, subfolder) the way ComfyUI numbers files: `prefix_00001_.ext`."""
        subfolder, _, name = prefix.replace("\\", "/").rpartition("/")
        folder = (self.root / kind / subfolder).resolve()
        base = (self.root / kind).resolve()
        if os.path.commonpath((base, folder)) != str(base):
            raise NodeFailure("Saving image outside the output folder is not allowed.", "Exception")
        folder.mkdir(parents=True, exist_ok=True)
        pattern = re.compile(rf"^{re.escape(name)}_(\d+)_\.")
        counters = [int(m.group(1)) for p in folder.iterdir() if (m := pattern.match(p.name))]
        counter = max(counters, default=0) + 1
        filename = f"{name}_{counter:05}_.{ext}"
        return folder / filename, filename, subfolder

    def save_images(self, images: list[Image.Image], prefix: str, kind: str) -> dict[str, Any]:
        saved = []
        for image in images:
            path, filename, subfolder = self.save_path(prefix, kind, "png")
            image.save(path, format="PNG", compress_level=1)
            saved.append({"filename": filename, "subfolder": subfolder, "type": kind})
        return {"images": saved}


FEATURES = {"supports_preview_metadata": True, "max_upload_size": 104857600,
            "extension": {"manager": {"supports_v4": True}}}

# Nodes ComfyUI re-runs every time (their IS_CHANGED says so).
UNCACHED_NODES = {"SaveImageWebsocket"}


# --- node implementations ------------------------------------------------------------------

def rgb(color: int) -> tuple[int, int, int]:
    return ((color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF)


def as_images(value: Any) -> list[Image.Image]:
    if isinstance(value, list) and value and isinstance(value[0], Image.Image):
        return value
    if isinstance(value, Video):
        return value.frames
    return [Image.new("RGB", (64, 64), (128, 128, 128))]


def plausible_image(width: int, height: int, seed: int) -> Image.Image:
    """A deterministic gradient standing in for a generated image."""
    r, g, b = rgb(seed * 2654435761 & 0xFFFFFF)
    gradient = Image.linear_gradient("L").resize((max(1, width), max(1, height)))
    return Image.merge("RGB", (gradient.point(lambda v: (v + r) % 256), gradient.transpose(Image.Transpose.ROTATE_90)
                               .resize((max(1, width), max(1, height))).point(lambda v: (v + g) % 256),
                               Image.new("L", (max(1, width), max(1, height)), b)))


def load_image(fake: FakeComfyUI, name: str) -> list[Image.Image]:
    path = fake.input_file(name)
    image = Image.open(path)  # PIL.UnidentifiedImageError for a corrupt file, as in ComfyUI
    image.load()
    return [ImageOps.exif_transpose(image).convert("RGB")]


def write_video(path: Path, video: Video) -> None:
    import av

    frames = video.frames or [Image.new("RGB", (64, 64))]
    width, height = (d - d % 2 for d in frames[0].size)
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("h264", rate=max(1, round(video.fps)))
        stream.width, stream.height = max(2, width), max(2, height)
        stream.pix_fmt = "yuv420p"
        for image in frames:
            frame = av.VideoFrame.from_image(image.convert("RGB").resize((stream.width, stream.height)))
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


async def node_save_image(fake: FakeComfyUI, run: RunState, node_id: str, inputs: dict) -> tuple[tuple, dict]:
    ui = await asyncio.to_thread(fake.save_images, as_images(inputs.get("images")),
                                 str(inputs.get("filename_prefix", "ComfyUI")), "output")
    return (), ui


async def node_preview_image(fake: FakeComfyUI, run: RunState, node_id: str, inputs: dict) -> tuple[tuple, dict]:
    prefix = f"ComfyUI_temp_{fake.temp_prefix}"
    ui = await asyncio.to_thread(fake.save_images, as_images(inputs.get("images")), prefix, "temp")
    return (), ui


async def node_save_video(fake: FakeComfyUI, run: RunState, node_id: str, inputs: dict) -> tuple[tuple, dict]:
    video = inputs.get("video")
    if not isinstance(video, Video):
        video = Video(as_images(video), 12.0)
    path, filename, subfolder = fake.save_path(str(inputs.get("filename_prefix", "video/ComfyUI")), "output", "mp4")
    await asyncio.to_thread(write_video, path, video)
    return (), {"images": [{"filename": filename, "subfolder": subfolder, "type": "output"}], "animated": [True]}


async def node_preview_any(fake: FakeComfyUI, run: RunState, node_id: str, inputs: dict) -> tuple[tuple, dict]:
    source = inputs.get("source")
    if isinstance(source, list) and source and isinstance(source[0], Image.Image):
        # The real node prints the tensor; a stable stand-in without memory addresses.
        text = f"tensor(<IMAGE batch={len(source)} size={source[0].width}x{source[0].height}>)"
    elif isinstance(source, (dict, list)):
        text = json.dumps(source, indent=4)
    else:
        text = str(source)
    return (), {"text": [text]}


async def node_save_image_websocket(fake: FakeComfyUI, run: RunState, node_id: str, inputs: dict) -> tuple[tuple, None]:
    images = as_images(inputs.get("images"))
    for i, image in enumerate(images):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        await fake.report_step(run, node_id, i, len(images))
        await fake.send_bytes(struct.pack(">II", 1, 2) + buffer.getvalue(), run.item.client_id)
    fake.progress_entry(run, node_id, len(images), len(images), "running")
    return (), None


async def node_ksampler(fake: FakeComfyUI, run: RunState, node_id: str, inputs: dict) -> tuple[tuple, None]:
    latent = inputs.get("latent_image")
    if not isinstance(latent, Latent):
        latent = Latent(512, 512)
    steps = int(inputs.get("steps", 20))
    for step in range(steps):
        if fake.sampler_step_delay:
            await asyncio.sleep(fake.sampler_step_delay)
        await fake.report_step(run, node_id, step + 1, steps)
    seed = int(inputs.get("seed", inputs.get("noise_seed", 0)))
    denoise = float(inputs.get("denoise", 1.0))
    noise = plausible_image(latent.width, latent.height, seed)
    if latent.source:
        result = [Image.blend(img.resize(noise.size), noise, min(1.0, denoise * 0.6)) for img in latent.source]
    else:
        result = [noise] * latent.batch
    return (Latent(latent.width, latent.height, latent.batch, result),), None


def node_images_only(function):  # noqa: ANN001, ANN201 - decorator for simple Pillow nodes
    async def run(fake: FakeComfyUI, run: RunState, node_id: str, inputs: dict) -> tuple[tuple, None]:
        result = await asyncio.to_thread(function, fake, inputs)
        return (result if isinstance(result, tuple) else (result,)), None

    return run


@node_images_only
def node_empty_image(fake: FakeComfyUI, inputs: dict) -> list[Image.Image]:
    size = (int(inputs["width"]), int(inputs["height"]))
    return [Image.new("RGB", size, rgb(int(inputs.get("color", 0))))] * int(inputs.get("batch_size", 1))


@node_images_only
def node_load_image(fake: FakeComfyUI, inputs: dict) -> tuple:
    images = load_image(fake, str(inputs["image"]))
    return images, Opaque("MASK")


RESAMPLE = {"nearest-exact": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
            "area": Image.Resampling.BOX, "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}


@node_images_only
def node_image_scale(fake: FakeComfyUI, inputs: dict) -> list[Image.Image]:
    method = RESAMPLE.get(inputs.get("upscale_method"), Image.Resampling.BILINEAR)
    out = []
    for image in as_images(inputs["image"]):
        width, height = int(inputs["width"]), int(inputs["height"])
        if width == 0 and height == 0:
            out.append(image)
            continue
        if width == 0:
            width = max(1, round(image.width * height / image.height))
        if height == 0:
            height = max(1, round(image.height * width / image.width))
        out.append(image.resize((width, height), method))
    return out


@node_images_only
def node_image_scale_by(fake: FakeComfyUI, inputs: dict) -> list[Image.Image]:
    method = RESAMPLE.get(inputs.get("upscale_method"), Image.Resampling.BILINEAR)
    factor = float(inputs["scale_by"])
    return [i.resize((max(1, round(i.width * factor)), max(1, round(i.height * factor))), method)
            for i in as_images(inputs["image"])]


@node_images_only
def node_image_invert(fake: FakeComfyUI, inputs: dict) -> list[Image.Image]:
    return [ImageOps.invert(i.convert("RGB")) for i in as_images(inputs["image"])]


@node_images_only
def node_image_blur(fake: FakeComfyUI, inputs: dict) -> list[Image.Image]:
    radius = float(inputs.get("sigma", 1.0)) if int(inputs.get("blur_radius", 1)) else 0
    return [i.filter(ImageFilter.GaussianBlur(radius)) for i in as_images(inputs["image"])]


@node_images_only
def node_create_video(fake: FakeComfyUI, inputs: dict) -> Video:
    return Video(as_images(inputs["images"]), float(inputs.get("fps", 30.0)))


@node_images_only
def node_repeat_image_batch(fake: FakeComfyUI, inputs: dict) -> list[Image.Image]:
    return as_images(inputs["image"]) * int(inputs.get("amount", 1))


@node_images_only
def node_string_concatenate(fake: FakeComfyUI, inputs: dict) -> str:
    return f"{inputs.get('string_a', '')}{inputs.get('delimiter', '')}{inputs.get('string_b', '')}"


@node_images_only
def node_empty_latent(fake: FakeComfyUI, inputs: dict) -> Latent:
    return Latent(int(inputs.get("width", 512)), int(inputs.get("height", 512)), int(inputs.get("batch_size", 1)))


@node_images_only
def node_vae_encode(fake: FakeComfyUI, inputs: dict) -> Latent:
    images = as_images(inputs.get("pixels"))
    return Latent(images[0].width, images[0].height, len(images), images)


@node_images_only
def node_vae_decode(fake: FakeComfyUI, inputs: dict) -> list[Image.Image]:
    latent = inputs.get("samples")
    if isinstance(latent, Latent):
        return latent.source or [plausible_image(latent.width, latent.height, 0)] * latent.batch
    return [plausible_image(512, 512, 0)]


@node_images_only
def node_checkpoint_loader(fake: FakeComfyUI, inputs: dict) -> tuple:
    return Opaque("MODEL"), Opaque("CLIP"), Opaque("VAE")


NODES = {
    "SaveImage": node_save_image,
    "PreviewImage": node_preview_image,
    "SaveVideo": node_save_video,
    "PreviewAny": node_preview_any,
    "SaveImageWebsocket": node_save_image_websocket,
    "KSampler": node_ksampler,
    "KSamplerAdvanced": node_ksampler,
    "EmptyImage": node_empty_image,
    "LoadImage": node_load_image,
    "ImageScale": node_image_scale,
    "ImageScaleBy": node_image_scale_by,
    "ImageInvert": node_image_invert,
    "ImageBlur": node_image_blur,
    "CreateVideo": node_create_video,
    "RepeatImageBatch": node_repeat_image_batch,
    "StringConcatenate": node_string_concatenate,
    "EmptyLatentImage": node_empty_latent,
    "VAEEncode": node_vae_encode,
    "VAEDecode": node_vae_decode,
    "CheckpointLoaderSimple": node_checkpoint_loader,
}


def generic_node(fake: FakeComfyUI, class_type: str, inputs: dict[str, Any]) -> tuple[tuple, dict | None]:
    """Any other stock node: each output is the first input of the same type, else a
    placeholder; an output node that got images saves them as a preview."""
    info = fake.node_info(class_type)
    outputs = []
    for output_type in info.get("output", []):
        value = None
        for name, given in inputs.items():
            spec = input_spec(info, name)
            if spec is not None and spec[0] == output_type:
                value = given
                break
        if value is None:
            value = placeholder(output_type, inputs)
        outputs.append(value)
    ui = None
    if info.get("output_node"):
        images = [v for v in inputs.values() if isinstance(v, list) and v and isinstance(v[0], Image.Image)]
        if images:
            ui = fake.save_images(images[0], f"ComfyUI_temp_{fake.temp_prefix}", "temp")
        else:
            ui = {}
    return tuple(outputs), ui


def placeholder(output_type: str, inputs: dict[str, Any]) -> Any:
    width, height = int(inputs.get("width", 512) or 512), int(inputs.get("height", 512) or 512)
    if output_type == "IMAGE":
        return [plausible_image(width, height, int(inputs.get("seed", 0) or 0))]
    if output_type == "LATENT":
        return Latent(width, height)
    if output_type == "STRING":
        return next((v for v in inputs.values() if isinstance(v, str)), "")
    if output_type == "INT":
        return next((v for v in inputs.values() if isinstance(v, int) and not isinstance(v, bool)), 0)
    if output_type == "FLOAT":
        return next((float(v) for v in inputs.values() if isinstance(v, (int, float)) and not isinstance(v, bool)), 0.0)
    if output_type == "BOOLEAN":
        return False
    return Opaque(output_type)


# --- pytest fixtures -------------------------------------------------------------------------

@pytest.fixture
def fake_comfy_factory() -> Iterator:
    """Start as many fakes as a test needs: `fake = fake_comfy_factory(node_delay=0.1)`."""
    started: list[FakeComfyUI] = []

    def start(**kwargs: Any) -> FakeComfyUI:
        fake = FakeComfyUI(**kwargs).start()
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.stop()


@pytest.fixture
def fake_comfy(fake_comfy_factory) -> FakeComfyUI:  # noqa: ANN001
    """One fake ComfyUI on a loopback ephemeral port; `.url`, `.restart()`, knobs."""
    return fake_comfy_factory()


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Run the fake ComfyUI by hand.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8189)
    parser.add_argument("--node-delay", type=float, default=0.0)
    args = parser.parse_args()
    fake = FakeComfyUI(host=args.host, port=args.port, node_delay=args.node_delay).start()
    print(f"fake ComfyUI at {fake.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
