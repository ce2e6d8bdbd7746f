"""Runs end to end through the real API: `POST /api/workflows/{name}/runs` → the dispatcher
submits to one of two fake ComfyUI servers → the monitor follows it → completed, the output
served at `/files/...` to its owner and to nobody else.

The API's lifespan runs the dispatcher and the monitor (as `genstudio serve` does), on a real
PostgreSQL; the fakes speak real HTTP and WebSocket.
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid

from PIL import Image

from tests.test_comfy_monitor import studio_factory  # noqa: F401 - the fixture

# The monitor's own tests run without the dispatcher; these runs go through it.
WITH_DISPATCHER = {"run_dispatcher": True, "health_check_seconds": 0.2}


def png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buffer, format="PNG")
    return buffer.getvalue()


async def run_invert(studio, user, color: tuple[int, int, int]) -> uuid.UUID:
    answer = await studio.client.post("/api/workflows/image-invert/runs", headers=user.headers,
                                      files={"image": ("in.png", png(color), "image/png")},
                                      data={"parameters": json.dumps({})})
    assert answer.status_code == 202, answer.text
    return uuid.UUID(answer.json()["image_job"]["id"])


async def test_runs_go_through_two_servers_to_stored_outputs_only_their_owner_can_fetch(
        studio_factory, fake_comfy_factory) -> None:  # noqa: F811
    one, two = fake_comfy_factory(), fake_comfy_factory()
    studio = await studio_factory(one.url, two.url, **WITH_DISPATCHER)
    ann, bob = studio.user("ann"), studio.user("bob")
    jobs = [await run_invert(studio, ann, (10 * i, 200, 30)) for i in range(6)]
    rows = [await studio.wait_for(job_id, ("completed", "failed"), timeout=60) for job_id in jobs]
    assert [r["status"] for r in rows] == ["completed"] * 6, [r["error_message"] for r in rows]
    assert {r["comfy_url"] for r in rows} == {one.url, two.url}  # both servers got work
    first = rows[0]
    image = await studio.client.get(first["output_image_urls"][0], headers=ann.headers)
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(image.content)).getpixel((0, 0)) == (255, 55, 225)  # inverted
    thumb = await studio.client.get(first["thumbnail_url"], headers=ann.headers)
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    refused = await studio.client.get(first["output_image_urls"][0], headers=bob.headers)
    assert refused.status_code == 404
    assert (await studio.client.get(first["thumbnail_url"], headers=bob.headers)).status_code == 404


async def test_cancel_a_dispatched_run_that_waits_in_the_servers_queue(studio_factory, fake_comfy) -> None:  # noqa: F811
    fake_comfy.node_delays["ImageInvert"] = 2.0
    studio = await studio_factory(fake_comfy.url, **WITH_DISPATCHER)
    ann, bob = studio.user("ann"), studio.user("bob")
    running = await run_invert(studio, bob, (1, 2, 3))
    await studio.wait_for(running, ("processing",), timeout=30)
    waiting = await run_invert(studio, ann, (4, 5, 6))
    for _ in range(200):
        if studio.job(waiting)["comfy_url"]:
            break
        await asyncio.sleep(0.05)
    assert studio.job(waiting)["comfy_url"] == fake_comfy.url  # dispatched: it waits in the server's queue
    assert (await studio.client.post(f"/api/image-jobs/{waiting}/cancel", headers=ann.headers)).status_code == 200
    assert (await studio.wait_for(running, ("completed", "failed", "cancelled"), timeout=30))["status"] == "completed"
    prompt_id = studio.job(waiting)["comfy_job_id"]
    assert prompt_id not in fake_comfy.history  # taken off the queue before it ran
    assert studio.job(waiting)["status"] == "cancelled"
