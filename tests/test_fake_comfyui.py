"""The fake ComfyUI checked against the real server's captures (shared/comfyui-protocol/).

Each capture's HTTP requests are replayed against a fresh fake, in order, with the captured
prompt ids passed as `prompt_id` (which ComfyUI 0.13 honours), and every answer is compared
with the captured one: status code, content type and the structure of the body (keys and
value types, not ids, timestamps or sizes). The WebSocket messages the fake sends to each
socket are compared with the captured sequence the same way.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from PIL import Image

from tests.fakes.comfyui import FakeComfyUI

# A copy of shared/comfyui-protocol/ (real ComfyUI 0.13 traffic), kept with the tests.
CAPTURES = Path(__file__).parent / "fakes" / "captures"

ID_KEY = re.compile(r"^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|\d+)$")


def load(name: str) -> dict[str, Any]:
    return json.loads((CAPTURES / name).read_text())


def shape(value: Any) -> Any:
    """The structure of a JSON value: key sets and value types, with id-keyed maps and lists
    reduced to the shape of their first element."""
    if isinstance(value, dict):
        if value and all(ID_KEY.match(k) for k in value):
            return {"<id>": shape(next(iter(value.values())))}
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if value is None:
        return "null"
    return "str"


def png_of_size(size: int) -> bytes:
    """Deterministic bytes per size, so the same captured upload is the same file here."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (size % 256, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue() + bytes(size % 97)


def corrupt_png() -> bytes:
    return b"\x89PNG\r\n\x1a\nthis is not really a png"


class SocketLog:
    def __init__(self, url: str):
        self.url = url
        self.messages: list[dict] = []
        self.binary: list[bytes] = []
        self.task: asyncio.Task | None = None
        self.connection = None

    async def open(self) -> None:
        self.connection = await websockets.connect(self.url, max_size=None)
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for frame in self.connection:
                if isinstance(frame, bytes):
                    self.binary.append(frame)
                else:
                    self.messages.append(json.loads(frame))
        except websockets.ConnectionClosed:
            pass

    async def close(self) -> None:
        await self.connection.close()
        await self.task


def captured_sockets(capture: dict) -> dict[str, str]:
    return {e["socket"]: e["url"] for e in capture["ws"] if e.get("event") == "connected"}


def captured_messages(capture: dict, socket: str) -> list[dict]:
    return [e["msg"] for e in capture["ws"] if e.get("socket") == socket and e.get("frame") == "text"]


def message_types(messages: list[dict], *, drop_status: bool = False) -> list[str]:
    """Message types in order, consecutive `status` and `progress_state` runs collapsed (their
    count depends on timing in the real server too)."""
    out: list[str] = []
    for m in messages:
        kind = m["type"]
        if drop_status and kind == "status":
            continue
        if kind in ("status", "progress_state") and out and out[-1] == kind:
            continue
        out.append(kind)
    return out


async def replay(fake: FakeComfyUI, capture: dict, *, wait_between_prompts: bool = True,
                 before: dict[str, Any] | None = None) -> tuple[list[tuple[dict, httpx.Response]], dict[str, SocketLog]]:
    sockets = {name: SocketLog(fake.url.replace("http", "ws") + url) for name, url in captured_sockets(capture).items()}
    opened_first = [name for name in sockets if name not in (before or {})]
    for name in opened_first:
        await sockets[name].open()
    answers = []
    renamed: dict[str, str] = {}  # captured output file name -> the fake's (counters differ)
    async with httpx.AsyncClient(base_url=fake.url, timeout=30) as http:
        for request in capture["http"]:
            if before and request["label"] in before.values():
                for name, label in before.items():
                    if label == request["label"]:
                        await sockets[name].open()
            for captured, ours in renamed.items():
                request = {**request, "path": request["path"].replace(f"={captured}&", f"={ours}&")}
            running = fake.running.item.prompt_id if fake.running else None
            response = await send(http, request)
            if request["path"] == "/interrupt" and running in (None, (request.get("request_json") or {}).get(
                    "prompt_id", running)):
                await wait_until_not_running(fake, running)  # the capture waited for the end marker
            answers.append((request, response))
            if request["path"].startswith("/history/") and response.status_code == 200:
                renamed.update(zip(output_filenames(request.get("response_json")), output_filenames(response.json())))
            if request["path"] == "/prompt" and request["method"] == "POST" and wait_between_prompts:
                await asyncio.to_thread(fake.wait_idle)
    await asyncio.to_thread(fake.wait_idle)
    await asyncio.sleep(0.05)
    for log in sockets.values():
        await log.close()
    return answers, sockets


async def wait_until_not_running(fake: FakeComfyUI, prompt_id: str | None, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while fake.running and fake.running.item.prompt_id == prompt_id and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


def output_filenames(history: Any) -> list[str]:
    return [image["filename"] for entry in (history or {}).values() for ui in entry.get("outputs", {}).values()
            for image in ui.get("images", [])]


async def send(http: httpx.AsyncClient, request: dict) -> httpx.Response:
    method, path = request["method"], request["path"]
    if "request_multipart" in request:
        parts = request["request_multipart"]
        files = {name: (f["filename"], png_of_size(f["size"]), f["content_type"]) for name, f in parts["files"].items()}
        return await http.request(method, path, data=parts["fields"], files=files)
    if "request_raw" in request:
        return await http.request(method, path, content=request["request_raw"], headers=request.get("request_headers"))
    body = request.get("request_json")
    if body is not None and path == "/prompt" and request["status"] == 200:
        body = {**body, "prompt_id": request["response_json"]["prompt_id"]}
    if body is None and method == "POST":
        return await http.request(method, path)
    return await http.request(method, path, json=body)


def assert_same_answer(request: dict, response: httpx.Response) -> None:
    label = request["label"]
    assert response.status_code == request["status"], (label, response.text)
    assert response.headers.get("content-type") == request["response_headers"].get("content-type"), label
    if "response_json" in request:
        assert shape(response.json()) == shape(request["response_json"]), label
    elif "response_text" in request:
        assert response.text == request["response_text"], label
    elif "response_body_magic_hex" in request:
        assert response.content.hex().startswith(request["response_body_magic_hex"]), label
    if "content-disposition" in request["response_headers"]:
        filename = re.search(r"filename=([^&]*)", request["path"]).group(1)
        assert response.headers["content-disposition"] == f'filename="{filename}"', label


def preload_inputs(fake: FakeComfyUI) -> None:
    (fake.root / "input" / "comfy_test.png").write_bytes(png_of_size(6363))
    (fake.root / "input" / "corrupt_test.png").write_bytes(corrupt_png())
    (fake.root / "input" / "example.png").write_bytes(png_of_size(1))


@pytest.mark.parametrize("name", [
    "01_basics.json", "02_object_info.json", "03_upload_image.json", "04_run_loadimage_invert_save.json",
    "05_run_emptyimage_scale_save.json", "06_cached_rerun.json", "07_prompt_errors.json",
    "13_observer_no_client_id.json", "14_video_output.json", "15_text_output.json",
])
async def test_capture_replays_the_same(fake_comfy: FakeComfyUI, name: str) -> None:
    capture = load(name)
    if name != "03_upload_image.json":
        preload_inputs(fake_comfy)
    answers, sockets = await replay(fake_comfy, capture)
    for request, response in answers:
        assert_same_answer(request, response)
    for socket_name, log in sockets.items():
        expected = captured_messages(capture, socket_name)
        assert message_types(log.messages) == message_types(expected), socket_name
        for got, want in zip(log.messages, expected):
            if got["type"] == want["type"] and got["type"] != "progress_state":
                assert shape(got) == shape(want), (socket_name, got, want)


async def test_output_files_are_real_media(fake_comfy: FakeComfyUI) -> None:
    preload_inputs(fake_comfy)
    answers, _ = await replay(fake_comfy, load("14_video_output.json"))
    async with httpx.AsyncClient(base_url=fake_comfy.url) as http:
        video = await http.get("/view", params={"filename": "test_00001_.mp4", "subfolder": "video", "type": "output"})
    import av

    with av.open(io.BytesIO(video.content)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == 12
    history = answers[1][1].json()
    assert list(history.values())[0]["outputs"]["4"]["animated"] == [True]


async def test_interrupt_and_queue_operations_follow_capture_08(fake_comfy_factory) -> None:
    fake = fake_comfy_factory(node_delay=0.25)
    capture = load("08_interrupt_queue_ops.json")
    answers, sockets = await replay(fake, capture, wait_between_prompts=False)
    by_label = {request["label"]: (request, response) for request, response in answers}
    for request, response in answers:
        assert response.status_code == request["status"], request["label"]
        assert response.headers.get("content-type") == request["response_headers"].get("content-type")
    running = by_label["queue_1_running_3_pending"][1].json()
    assert [len(running["queue_running"]), len(running["queue_pending"])] == [1, 3]
    assert len(by_label["queue_after_delete"][1].json()["queue_pending"]) == 2
    assert by_label["queue_after_clear"][1].json()["queue_pending"] == []
    assert by_label["history_deleted_B"][1].json() == {}
    for label in ("history_interrupted_A", "history_interrupted_E"):
        entry = next(iter(by_label[label][1].json().values()))
        assert shape(entry) == shape(next(iter(by_label[label][0]["response_json"].values())))
        assert entry["status"]["status_str"] == "error"
        assert [m[0] for m in entry["status"]["messages"]][-1] == "execution_interrupted"
    # Where in its run each prompt is interrupted depends on timing; the shape of each run does not.
    expected = runs(message_types(captured_messages(capture, "main"), drop_status=True))
    got = runs(message_types(sockets["main"].messages, drop_status=True))
    assert len(got) == len(expected) == 2
    for run in got:
        assert run[:4] == ["execution_start", "execution_cached", "progress_state", "executing"]
        assert run[-2:] == ["execution_interrupted", "executing"]
        assert sockets["main"].messages[-1]["data"]["node"] is None


def runs(types: list[str]) -> list[list[str]]:
    out: list[list[str]] = []
    for kind in types:
        if kind == "execution_start":
            out.append([])
        if out:
            out[-1].append(kind)
    return out


async def test_reconnect_mid_run_gets_executing_greeting_and_the_rest(fake_comfy_factory) -> None:
    """Capture 09: a new socket with the same clientId gets `status` + `executing{node}`
    (no prompt_id) and the remaining messages; another client sees only status."""
    fake = fake_comfy_factory(node_delay=0.3)
    capture = load("09_ws_reconnect_during_run.json")
    base = fake.url.replace("http", "ws")
    client_id = "5038610fbee14dc59fd078acb5e51c86"
    first = SocketLog(f"{base}/ws?clientId={client_id}")
    other = SocketLog(f"{base}/ws?clientId=other")
    await first.open()
    await other.open()
    prompt = capture["http"][0]["request_json"]["prompt"]
    async with httpx.AsyncClient(base_url=fake.url) as http:
        await http.post("/prompt", json={"prompt": prompt, "client_id": client_id})
        await asyncio.sleep(0.4)
        await first.close()
        await asyncio.sleep(0.1)
        again = SocketLog(f"{base}/ws?clientId={client_id}")
        await again.open()
        await asyncio.sleep(0.05)
        await http.post("/interrupt")
        await asyncio.to_thread(fake.wait_idle)
    await asyncio.sleep(0.05)
    await again.close()
    await other.close()
    assert again.messages[0]["data"]["sid"] == client_id
    assert again.messages[1]["type"] == "executing" and set(again.messages[1]["data"]) == {"node"}
    assert again.messages[-1] == {"type": "executing", "data": {"node": None,
                                                                "prompt_id": again.messages[-1]["data"]["prompt_id"]}}
    assert "execution_interrupted" in [m["type"] for m in again.messages]
    assert {m["type"] for m in other.messages} == {"status"}


async def test_binary_previews_and_feature_flags(fake_comfy: FakeComfyUI) -> None:
    """Capture 10: SaveImageWebsocket streams PNGs as binary frames (type 1, format 2) with
    `progress`; a client that sends feature_flags gets the server's back."""
    capture = load("10_ws_binary_and_feature_flags.json")
    base = fake_comfy.url.replace("http", "ws")
    log = SocketLog(f"{base}/ws?clientId=legacy")
    await log.open()
    async with websockets.connect(f"{base}/ws?clientId=flags") as flags:
        await flags.send(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
        greeting = json.loads(await flags.recv())
        reply = json.loads(await flags.recv())
    assert greeting["type"] == "status" and reply == captured_messages(capture, "flags")[1]
    async with httpx.AsyncClient(base_url=fake_comfy.url) as http:
        request = capture["http"][0]["request_json"]
        await http.post("/prompt", json={**request, "client_id": "legacy"})
        await asyncio.to_thread(fake_comfy.wait_idle)
    await asyncio.sleep(0.05)
    await log.close()
    assert len(log.binary) == 2
    assert all(frame[:8].hex() == "0000000100000002" and frame[8:16].hex() == "89504e470d0a1a0a"
               for frame in log.binary)
    types = [m["type"] for m in log.messages]
    assert types.count("progress") == 2
    assert types[-1] == "executing"


async def test_history_max_items_and_offset_follow_capture_11(fake_comfy: FakeComfyUI) -> None:
    """`/history?max_items=N` is the last N, oldest first; with `offset`, counted from the start."""
    async with httpx.AsyncClient(base_url=fake_comfy.url) as http:
        ids = []
        for color in range(6):
            prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1,
                                                                   "color": color}},
                      "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
            ids.append((await http.post("/prompt", json={"prompt": prompt})).json()["prompt_id"])
            await asyncio.to_thread(fake_comfy.wait_idle)
        assert list((await http.get("/history", params={"max_items": 5})).json()) == ids[1:]
        assert list((await http.get("/history", params={"max_items": 2, "offset": 1})).json()) == ids[1:3]
        assert list((await http.get("/history")).json()) == ids
        capture = load("11_history_and_jobs.json")
        for request in capture["http"][2:]:
            path = request["path"].replace("21c03b5c-fc9d-435f-bbd7-7823455f494a", ids[-1])
            response = await http.get(path)
            assert response.status_code == request["status"], request["label"]
            assert set(response.json()) <= set(request["response_json"]) | {"outputs", "execution_status", "workflow"}


async def test_restart_forgets_queue_and_history_and_drops_sockets(fake_comfy_factory) -> None:
    fake = fake_comfy_factory(node_delay=0.2)
    log = SocketLog(fake.url.replace("http", "ws") + "/ws?clientId=me")
    await log.open()
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 1}},
              "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
              "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "r"}}}
    async with httpx.AsyncClient(base_url=fake.url) as http:
        done = (await http.post("/prompt", json={"prompt": prompt, "client_id": "me"})).json()["prompt_id"]
        await asyncio.to_thread(fake.wait_idle)
        prompt["1"]["inputs"]["color"] = 2
        await http.post("/prompt", json={"prompt": prompt, "client_id": "me"})
        await http.post("/prompt", json={"prompt": prompt, "client_id": "me"})
        await asyncio.sleep(0.1)
        await asyncio.to_thread(fake.restart)
        await asyncio.wait_for(log.task, 5)  # the socket was dropped
        assert (await http.get(f"/history/{done}")).json() == {}
        assert (await http.get("/queue")).json() == {"queue_running": [], "queue_pending": []}
        assert (await http.get("/view", params={"filename": "r_00001_.png"})).status_code == 200  # files stay


async def test_offline_refuses_connections_and_keeps_state(fake_comfy: FakeComfyUI) -> None:
    async with httpx.AsyncClient(base_url=fake_comfy.url) as http:
        await asyncio.to_thread(fake_comfy.go_offline)
        with pytest.raises(httpx.ConnectError):
            await http.get("/queue")
        await asyncio.to_thread(fake_comfy.go_online)
        assert (await http.get("/queue")).status_code == 200


async def test_img2img_checkpoint_workflow_runs_without_model_files(fake_comfy: FakeComfyUI) -> None:
    """The stock checkpoint nodes validate against the fake's model list and produce an
    image the size of the input, with sampler progress."""
    (fake_comfy.root / "input" / "photo.png").write_bytes(png_of_size(10))
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
        "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["1", 1]}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "6": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 7, "steps": 4, "cfg": 7.0,
                                                   "sampler_name": "euler", "scheduler": "normal",
                                                   "positive": ["4", 0], "negative": ["5", 0],
                                                   "latent_image": ["3", 0], "denoise": 0.6}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "img2img"}},
    }
    log = SocketLog(fake_comfy.url.replace("http", "ws") + "/ws?clientId=me")
    await log.open()
    async with httpx.AsyncClient(base_url=fake_comfy.url) as http:
        answer = await http.post("/prompt", json={"prompt": prompt, "client_id": "me"})
        assert answer.status_code == 200, answer.text
        await asyncio.to_thread(fake_comfy.wait_idle)
        await asyncio.sleep(0.05)
        image = await http.get("/view", params={"filename": "img2img_00001_.png"})
        bad = await http.post("/prompt", json={"prompt": {**prompt, "1": {"class_type": "CheckpointLoaderSimple",
                                                                           "inputs": {"ckpt_name": "nope.ckpt"}}}})
    await log.close()
    assert Image.open(io.BytesIO(image.content)).size == (8, 8)
    assert [m["data"]["value"] for m in log.messages if m["type"] == "progress"] == [1, 2, 3, 4]
    assert bad.status_code == 400 and bad.json()["node_errors"]["1"]["errors"][0]["type"] == "value_not_in_list"


async def test_a_node_told_to_fail_fails_at_run_time(fake_comfy: FakeComfyUI) -> None:
    fake_comfy.fail_nodes["ImageInvert"] = "out of memory"
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 1}},
              "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
              "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "f"}}}
    async with httpx.AsyncClient(base_url=fake_comfy.url) as http:
        prompt_id = (await http.post("/prompt", json={"prompt": prompt})).json()["prompt_id"]
        await asyncio.to_thread(fake_comfy.wait_idle)
        entry = (await http.get(f"/history/{prompt_id}")).json()[prompt_id]
    error = dict(entry["status"]["messages"])["execution_error"]
    assert (error["node_id"], error["node_type"], error["exception_message"]) == ("2", "ImageInvert", "out of memory")
    assert error["executed"] == ["1"]
