"""The ComfyClient tests that run against any ComfyUI: the fake (tests/test_comfy_client.py)
and, opt-in, a real ComfyUI 0.13 (tests/test_comfy_client_real.py). Each module provides
the `server` fixture; these cases use nothing but ComfyUI's HTTP and WebSocket API.
"""

from __future__ import annotations

import asyncio
import io
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from PIL import Image

from genstudio.comfy.client import (
    ComfyClient,
    ComfyHTTPError,
    ComfyMessage,
    ComfyValidationError,
    PreviewFrame,
)
from tests.fakes.comfyui import FakeComfyUI


@dataclass
class Server:
    url: str
    fake: FakeComfyUI | None = None

    def slow_prompt(self) -> dict:
        """A prompt that runs for seconds, in four nodes (interrupts act between nodes)."""
        size = 64 if self.fake else 2048
        prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": size, "height": size, "batch_size": 1,
                                                               "color": random.randrange(1 << 24)}}}
        previous = "1"
        for node in ("10", "11", "12"):
            prompt[node] = {"class_type": "ImageBlur", "inputs": {"image": [previous, 0], "blur_radius": 31,
                                                                  "sigma": 10.0}}
            previous = node
        prompt["99"] = {"class_type": "PreviewImage", "inputs": {"images": [previous, 0]}}
        return prompt


def png(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (32, 24)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def tiny_prompt(prefix: str = "gs_test") -> dict:
    """EmptyImage -> ImageInvert -> SaveImage, a new colour each time so nothing is cached."""
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1,
                                                     "color": random.randrange(1 << 24)}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


def new_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
async def client(server: Server) -> AsyncIterator[ComfyClient]:
    async with ComfyClient(server.url, uuid.uuid4().hex, timeout=30) as c:
        yield c


async def until_end(socket, prompt_id: str, timeout: float = 60) -> list[ComfyMessage]:
    """Messages about `prompt_id` up to its end marker, `executing` with node null."""
    seen: list[ComfyMessage] = []

    async def read() -> None:
        async for message in socket:
            if message.prompt_id == prompt_id:
                seen.append(message)
                if message.type == "executing" and message.data.get("node") is None:
                    return

    await asyncio.wait_for(read(), timeout)
    return seen


async def test_system_stats_and_object_info(client: ComfyClient) -> None:
    stats = await client.system_stats()
    assert stats["system"]["comfyui_version"].startswith("0.13")
    everything = await client.object_info()
    assert {"LoadImage", "SaveImage", "SaveVideo", "PreviewAny", "KSampler"} <= set(everything)
    one = await client.object_info("ImageInvert")
    assert one["ImageInvert"]["output"] == ["IMAGE"]
    assert await client.object_info("NoSuchNode") == {}


async def test_submit_follows_over_the_websocket_to_stored_output(client: ComfyClient) -> None:
    prompt_id = new_id()
    async with client.websocket() as socket:
        answer = await client.submit(tiny_prompt(), prompt_id)
        assert answer["prompt_id"] == prompt_id and answer["node_errors"] == {}
        messages = await until_end(socket, prompt_id)
    assert socket.sid == client.client_id
    types = [m.type for m in messages]
    assert types[0] == "execution_start" and "execution_success" in types
    executed = next(m for m in messages if m.type == "executed")
    image = executed.data["output"]["images"][0]
    history = await client.history(prompt_id)
    assert history[prompt_id]["outputs"]["3"]["images"] == [image]
    assert history[prompt_id]["status"]["status_str"] == "success"
    data = await client.view(image["filename"], image["subfolder"], image["type"])
    assert Image.open(io.BytesIO(data)).size == (64, 48)
    async with client.view_stream(image["filename"], image["subfolder"], image["type"]) as response:
        assert response.headers["content-type"] == "image/png"
        streamed = b"".join([chunk async for chunk in response.aiter_bytes()])
    assert streamed == data
    assert await client.prompt_state(prompt_id) == "finished"


async def test_submit_once_never_queues_a_prompt_id_twice(client: ComfyClient) -> None:
    prompt_id = new_id()
    async with client.websocket() as socket:
        first = await client.submit_once(tiny_prompt(), prompt_id)
        again = await client.submit_once(tiny_prompt(), prompt_id)
        await until_end(socket, prompt_id)
    assert first["prompt_id"] == prompt_id and "number" in first
    assert again["already"] in ("pending", "running", "finished")
    later = await client.submit_once(tiny_prompt(), prompt_id)
    assert later["already"] == "finished"
    assert await client.prompt_state(new_id()) is None


async def test_validation_errors_carry_comfyuis_error_and_node_errors(client: ComfyClient) -> None:
    prompt = tiny_prompt()
    prompt["1"]["inputs"]["width"] = 99999
    with pytest.raises(ComfyValidationError) as caught:
        await client.submit(prompt, new_id())
    error = caught.value
    assert error.status == 400
    assert error.error["type"] == "prompt_outputs_failed_validation"
    assert error.node_errors["1"]["errors"][0]["type"] == "value_bigger_than_max"
    assert "Value 99999 bigger than max of 16384" in str(error)

    with pytest.raises(ComfyValidationError) as caught:
        await client.submit({"1": {"class_type": "NoSuchNode", "inputs": {}}}, new_id())
    assert caught.value.error["type"] == "missing_node_type"
    assert "Node 'NoSuchNode' not found" in caught.value.message

    with pytest.raises(ComfyValidationError) as caught:
        await client.submit({"1": {"class_type": "LoadImage", "inputs": {"image": f"missing-{uuid.uuid4().hex}.png"}},
                             "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}, new_id())
    assert caught.value.node_errors["1"]["errors"][0]["type"] == "custom_validation_failed"


async def test_server_errors_and_missing_files_are_http_errors(client: ComfyClient) -> None:
    with pytest.raises(ComfyHTTPError) as caught:
        await client.history(max_items="not a number")  # type: ignore[arg-type]
    assert caught.value.status == 500
    assert "Server got itself in trouble" in caught.value.message
    assert not isinstance(caught.value, ComfyValidationError)
    with pytest.raises(ComfyHTTPError) as caught:
        await client.view(f"missing-{uuid.uuid4().hex}.png")
    assert caught.value.status == 404
    assert await client.history(new_id()) == {}


async def test_upload_image_keeps_or_renames_as_comfyui_does(client: ComfyClient) -> None:
    name = f"gs_{uuid.uuid4().hex[:8]}.png"
    first = await client.upload_image(png((1, 2, 3)), name)
    assert first == {"name": name, "subfolder": "", "type": "input"}
    same = await client.upload_image(png((1, 2, 3)), name, overwrite=False)
    assert same["name"] == name  # the same bytes: spotted as a duplicate
    other = await client.upload_image(png((9, 9, 9)), name, overwrite=False)
    assert other["name"] == name.replace(".png", " (1).png")
    replaced = await client.upload_image(png((9, 9, 9)), name, overwrite=True)
    assert replaced["name"] == name
    nested = await client.upload_image(png(), name, subfolder="gs_sub")
    assert nested == {"name": name, "subfolder": "gs_sub", "type": "input"}
    assert await client.view(name, "", "input") == png((9, 9, 9))


async def test_run_time_error_of_a_corrupt_upload(client: ComfyClient) -> None:
    name = f"gs_corrupt_{uuid.uuid4().hex[:8]}.png"
    uploaded = await client.upload_image(b"this is not an image at all", name)
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": uploaded["name"]}},
              "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
              "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "gs_fail"}}}
    prompt_id = new_id()
    async with client.websocket() as socket:
        await client.submit(prompt, prompt_id)
        messages = await until_end(socket, prompt_id)
    error = next(m for m in messages if m.type == "execution_error").data
    assert (error["node_id"], error["node_type"]) == ("1", "LoadImage")
    assert error["exception_type"] == "PIL.UnidentifiedImageError"
    assert "cannot identify image file" in error["exception_message"]
    entry = (await client.history(prompt_id))[prompt_id]
    assert entry["status"]["status_str"] == "error" and entry["outputs"] == {}


async def test_queue_delete_and_targeted_interrupt(client: ComfyClient, server: Server) -> None:
    running, waiting = new_id(), new_id()
    async with client.websocket() as socket:
        await client.submit(server.slow_prompt(), running)
        await client.submit(server.slow_prompt(), waiting)
        for _ in range(200):
            if await client.prompt_state(running) == "running":
                break
            await asyncio.sleep(0.05)
        queue = await client.queue()
        assert [e[1] for e in queue["queue_running"]] == [running]
        assert [e[1] for e in queue["queue_pending"]] == [waiting]
        entry = queue["queue_pending"][0]
        assert entry[3]["client_id"] == client.client_id and isinstance(entry[4], list)
        await client.delete_from_queue([waiting])
        assert await client.prompt_state(waiting) is None
        await client.interrupt(new_id())  # not running: nothing happens
        assert await client.prompt_state(running) == "running"
        await client.interrupt(running)
        messages = await until_end(socket, running)
    interrupted = next(m for m in messages if m.type == "execution_interrupted").data
    assert set(interrupted) >= {"prompt_id", "node_id", "node_type", "executed"}
    assert (await client.history(running))[running]["status"]["status_str"] == "error"
    assert await client.history(waiting) == {}


async def test_video_output_arrives_under_images_with_animated(client: ComfyClient) -> None:
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 128, "height": 96, "batch_size": 12,
                                                           "color": random.randrange(1 << 24)}},
              "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 3, "sigma": 1.0}},
              "3": {"class_type": "CreateVideo", "inputs": {"images": ["2", 0], "fps": 12}},
              "4": {"class_type": "SaveVideo", "inputs": {"video": ["3", 0], "filename_prefix": "video/gs_test",
                                                          "format": "mp4", "codec": "h264"}}}
    prompt_id = new_id()
    async with client.websocket() as socket:
        await client.submit(prompt, prompt_id)
        await until_end(socket, prompt_id)
    output = (await client.history(prompt_id))[prompt_id]["outputs"]["4"]
    assert output["animated"] == [True]
    video = output["images"][0]
    assert video["subfolder"] == "video" and video["filename"].endswith(".mp4")
    async with client.view_stream(video["filename"], video["subfolder"], video["type"]) as response:
        assert response.headers["content-type"] == "video/mp4"
        head = await response.aread()
    assert head[4:8] == b"ftyp"


async def test_text_output_arrives_under_text(client: ComfyClient) -> None:
    word = uuid.uuid4().hex[:6]
    prompt = {"1": {"class_type": "StringConcatenate", "inputs": {"string_a": "a portrait of", "string_b": f" {word}",
                                                                  "delimiter": ""}},
              "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    prompt_id = new_id()
    async with client.websocket() as socket:
        await client.submit(prompt, prompt_id)
        messages = await until_end(socket, prompt_id)
    executed = next(m for m in messages if m.type == "executed")
    assert executed.data["output"] == {"text": [f"a portrait of {word}"]}
    assert (await client.history(prompt_id))[prompt_id]["outputs"]["2"] == {"text": [f"a portrait of {word}"]}


async def test_binary_preview_frames_are_typed(client: ComfyClient) -> None:
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 2,
                                                           "color": random.randrange(1 << 24)}},
              "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}}}
    prompt_id = new_id()
    frames: list[PreviewFrame] = []
    async with client.websocket(previews=True) as socket:
        await client.submit(prompt, prompt_id)

        async def read() -> None:
            async for message in socket:
                if isinstance(message, PreviewFrame):
                    frames.append(message)
                elif message.type == "executing" and message.prompt_id == prompt_id and message.data["node"] is None:
                    return

        await asyncio.wait_for(read(), 30)
    assert len(frames) == 2
    assert all(f.event_type == 1 and f.image_format == 2 and f.payload[:8] == b"\x89PNG\r\n\x1a\n" for f in frames)


async def test_prompts_of_other_clients_send_nothing_to_our_socket(client: ComfyClient, server: Server) -> None:
    """Capture 13: a prompt posted under another client id reaches us only as status and
    (without any client id) progress_state; /history tells the outcome."""
    prompt_id = new_id()
    async with ComfyClient(server.url, "someone-else") as other, client.websocket() as socket:
        await other.submit(tiny_prompt(), prompt_id)
        seen: list[str] = []

        async def read() -> None:
            async for message in socket:
                seen.append(message.type)

        reader = asyncio.create_task(read())
        for _ in range(200):
            if await client.prompt_state(prompt_id) == "finished":
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        reader.cancel()
    assert set(seen) <= {"status", "progress_state"}
    assert (await client.history(prompt_id))[prompt_id]["status"]["status_str"] == "success"
