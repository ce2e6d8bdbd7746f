"""ComfyClient against the fake ComfyUI: every method (tests/comfy_client_cases.py, which also
run against a real ComfyUI in test_comfy_client_real.py) and every failure type."""

from __future__ import annotations

import asyncio
import socket
import uuid

import pytest

from genstudio.comfy.client import ComfyClient, ComfyTimeout, ComfyUnreachable
from tests.comfy_client_cases import *  # noqa: F403 - the shared cases are collected here too
from tests.comfy_client_cases import Server, new_id, tiny_prompt
from tests.fakes.comfyui import FakeComfyUI


@pytest.fixture
def server(fake_comfy_factory) -> Server:  # noqa: ANN001
    fake = fake_comfy_factory()
    fake.node_delays["ImageBlur"] = 0.3
    return Server(fake.url, fake)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_nothing_listening_is_unreachable() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    async with ComfyClient(url, "me", timeout=2) as client:
        with pytest.raises(ComfyUnreachable) as caught:
            await client.system_stats()
        assert url in caught.value.message and caught.value.url == url
        with pytest.raises(ComfyUnreachable):
            await client.submit(tiny_prompt(), new_id())
        with pytest.raises(ComfyUnreachable):
            async with client.websocket():
                pass


async def test_a_server_that_never_answers_times_out() -> None:
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        async with ComfyClient(url, "me", timeout=0.3) as client:
            with pytest.raises(ComfyTimeout) as caught:
                await client.queue()
            assert "no answer in 0.3 s" in caught.value.message
            with pytest.raises(ComfyTimeout):
                async with client.websocket():
                    pass


async def test_a_restart_ends_the_websocket_with_unreachable_and_forgets_prompts(fake_comfy: FakeComfyUI) -> None:
    fake_comfy.node_delay = 0.3
    async with ComfyClient(fake_comfy.url, uuid.uuid4().hex) as client:
        prompt_id = new_id()
        async with client.websocket() as ws:
            await client.submit(tiny_prompt(), prompt_id)

            async def read_all() -> None:
                async for _ in ws:
                    pass

            reader = asyncio.create_task(read_all())
            await asyncio.sleep(0.2)
            await asyncio.to_thread(fake_comfy.restart)
            with pytest.raises(ComfyUnreachable):
                await asyncio.wait_for(reader, 5)
        assert await client.prompt_state(prompt_id) is None


async def test_offline_server_is_unreachable_then_back(fake_comfy: FakeComfyUI) -> None:
    async with ComfyClient(fake_comfy.url, "me", timeout=2) as client:
        await asyncio.to_thread(fake_comfy.go_offline)
        with pytest.raises(ComfyUnreachable):
            await client.queue()
        await asyncio.to_thread(fake_comfy.go_online)
        assert await client.queue() == {"queue_running": [], "queue_pending": []}
