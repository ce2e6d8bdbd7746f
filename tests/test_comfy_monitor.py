"""The ComfyUI monitor end to end: a real PostgreSQL, the fake ComfyUI over real HTTP and
WebSocket, the real API (its lifespan runs the monitor) and, for the kill test, a real
`genstudio worker` process.

Runs are set up the way the dispatcher leaves them (job row `pending` with the canonical
prompt id, a `genstudio.workflow_runs` row in state `submitted`, the prompt posted under
genstudio's client id); jobs a client records itself go through `POST /api/image-jobs`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from genstudio.api.app import create_app
from genstudio.comfy.monitor import MonitorSettings, ServerMonitor, Tracked, collect_outputs
from genstudio.db.pool import Database
from genstudio.storage import LocalStorage, job_file_key
from tests.api_support import User, add_user, make_settings
from tests.fakes.comfyui import FakeComfyUI

CLIENT_ID = "genstudio"


def image_prompt(prefix: str = "gs", color: int | None = None) -> dict:
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1,
                                                         "color": color if color is not None else
                                                         uuid.uuid4().int & 0xFFFFFF}},
            "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 2, "sigma": 1.0}},
            "3": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
            "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": prefix}}}


def monitor_overrides(*urls: str, **extra: Any) -> dict[str, Any]:
    # These tests hand runs to the servers themselves, as the dispatcher would: no dispatcher.
    return {"comfyui_urls": list(urls), "run_dispatcher": False, "monitor_poll_seconds": 0.1, "monitor_lost_grace_seconds": 0.2,
            "monitor_progress_interval_seconds": 0.05, "monitor_leader_retry_seconds": 0.2, **extra}


class Studio:
    """The API (with the monitor in its lifespan) and direct database access for a test."""

    def __init__(self, db_url: str, client: httpx.AsyncClient, settings):
        self.db_url = db_url
        self.client = client
        self.settings = settings
        self.storage = LocalStorage(settings.storage_dir)
        self.users: dict[str, User] = {}

    def user(self, name: str) -> User:
        if name not in self.users:
            self.users[name] = add_user(self.db_url, f"{name}-{uuid.uuid4().hex[:6]}@example.com")
        return self.users[name]

    def job(self, job_id: uuid.UUID, table: str = "image_jobs") -> dict[str, Any]:
        with psycopg.connect(self.db_url, row_factory=dict_row) as conn:
            return conn.execute(f"SELECT * FROM public.{table} WHERE id = %s", (job_id,)).fetchone()

    def run_row(self, job_id: uuid.UUID) -> dict[str, Any]:
        with psycopg.connect(self.db_url, row_factory=dict_row) as conn:
            return conn.execute("SELECT * FROM genstudio.workflow_runs WHERE job_id = %s", (job_id,)).fetchone()

    async def wait_for(self, job_id: uuid.UUID, statuses: tuple[str, ...], table: str = "image_jobs",
                       timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            row = await asyncio.to_thread(self.job, job_id, table)
            if row["status"] in statuses:
                return row
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {row['status']} (wanted {statuses}): {row}")
            await asyncio.sleep(0.02)

    async def submit_run(self, fake: FakeComfyUI, prompt: dict, *, user: str = "ann", output_type: str = "image",
                         workflow: str = "image-test", output_nodes: list[str] | None = None,
                         post: bool = True) -> uuid.UUID:
        """What the dispatcher does: a pending job with the canonical prompt id, its run row
        `submitted` to the fake, and the prompt posted under genstudio's client id."""
        prompt_id = str(uuid.uuid4())
        owner = self.user(user)
        with psycopg.connect(self.db_url) as conn:
            job_id = conn.execute(
                f"INSERT INTO public.{output_type}_jobs (user_id, status, workflow_name, comfy_url, comfy_job_id, "
                "parameters) VALUES (%s, 'pending', %s, %s, %s, '{}') RETURNING id",
                (owner.id, workflow, fake.url, prompt_id)).fetchone()[0]
            conn.execute(
                "INSERT INTO genstudio.workflow_runs (job_id, output_type, user_id, workflow_name, prompt, "
                "output_nodes, state, server_url, attempts, submitted_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, 'submitted', %s, 1, now())",
                (job_id, output_type, owner.id, workflow, Jsonb(prompt), output_nodes or [], fake.url))
        if post:
            async with httpx.AsyncClient(base_url=fake.url) as http:
                answer = await http.post("/prompt", json={"prompt": prompt, "client_id": CLIENT_ID,
                                                          "prompt_id": prompt_id})
                assert answer.status_code == 200, answer.text
        return job_id


@pytest.fixture
async def studio_factory(db_url, tmp_path) -> AsyncIterator:
    stacks = []

    async def start(*urls: str, **extra: Any) -> Studio:
        settings = make_settings(tmp_path, **monitor_overrides(*urls, **extra))
        app = create_app(db_url, settings)
        context = app.router.lifespan_context(app)
        await context.__aenter__()
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
        stacks.append((context, client))
        return Studio(db_url, client, settings)

    yield start
    for context, client in reversed(stacks):
        await client.aclose()
        await context.__aexit__(None, None, None)


async def test_a_run_goes_processing_with_progress_then_completed_with_stored_output(studio_factory,
                                                                                    fake_comfy) -> None:
    fake_comfy.node_delay = 0.15
    studio = await studio_factory(fake_comfy.url)
    job_id = await studio.submit_run(fake_comfy, image_prompt())
    seen: list[tuple[str, float | None]] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        row = await asyncio.to_thread(studio.job, job_id)
        seen.append((row["status"], row["progress"]))
        if row["status"] == "completed":
            break
        await asyncio.sleep(0.02)
    row = studio.job(job_id)
    assert row["status"] == "completed", row
    middle = [p for s, p in seen if s == "processing" and p is not None and 0 < p < 100]
    assert middle and middle == sorted(middle), seen  # whole-workflow progress, only forward
    assert row["progress"] == 100 and row["started_at"] and row["completed_at"]
    assert row["processing_time_seconds"] is not None
    (url,) = row["output_image_urls"]
    key = url.removeprefix("/files/")
    assert key == job_file_key("image", "image-test", job_id, "gs_00001_.png")
    assert (studio.settings.storage_dir / key).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    thumb = studio.settings.storage_dir / row["thumbnail_url"].removeprefix("/files/")
    assert thumb.read_bytes()[:3] == b"\xff\xd8\xff"
    assert (row["comfyui_output_filename"], row["comfyui_output_type"]) == ("gs_00001_.png", "output")
    assert studio.run_row(job_id)["state"] == "finished"


async def test_video_and_text_runs_store_their_outputs(studio_factory, fake_comfy) -> None:
    studio = await studio_factory(fake_comfy.url)
    video = {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 6,
                                                          "color": 4210752}},
             "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 6}},
             "3": {"class_type": "SaveVideo", "inputs": {"video": ["2", 0], "filename_prefix": "video/gs",
                                                         "format": "mp4", "codec": "h264"}}}
    text = {"1": {"class_type": "StringConcatenate", "inputs": {"string_a": "a portrait of", "string_b": " a cat",
                                                                "delimiter": ""}},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    video_id = await studio.submit_run(fake_comfy, video, output_type="video", workflow="video-test")
    text_id = await studio.submit_run(fake_comfy, text, output_type="text", workflow="text-test")
    video_row = await studio.wait_for(video_id, ("completed", "failed"), "video_jobs")
    text_row = await studio.wait_for(text_id, ("completed", "failed"), "text_jobs")
    assert video_row["status"] == "completed", video_row
    (video_url,) = video_row["output_video_urls"]
    assert (studio.settings.storage_dir / video_url.removeprefix("/files/")).read_bytes()[4:8] == b"ftyp"
    assert video_row["thumbnail_url"].endswith(".jpg")  # the poster frame
    assert text_row["output_text"] == "a portrait of a cat"
    stored = studio.settings.storage_dir / text_row["output_data"]["text_url"].removeprefix("/files/")
    assert stored.read_text() == "a portrait of a cat"


async def test_a_run_time_error_fails_the_job_with_node_and_message(studio_factory, fake_comfy) -> None:
    fake_comfy.fail_nodes["ImageInvert"] = "CUDA out of memory"
    studio = await studio_factory(fake_comfy.url)
    job_id = await studio.submit_run(fake_comfy, image_prompt())
    row = await studio.wait_for(job_id, ("failed", "completed"))
    assert row["status"] == "failed"
    assert "ImageInvert (node 3)" in row["error_message"] and "CUDA out of memory" in row["error_message"]
    assert fake_comfy.url in row["error_message"]
    assert studio.run_row(job_id)["state"] == "finished"


async def test_an_interrupt_on_the_server_cancels_the_job(studio_factory, fake_comfy) -> None:
    fake_comfy.node_delays["ImageInvert"] = 3.0  # still running when the interrupt comes
    studio = await studio_factory(fake_comfy.url)
    job_id = await studio.submit_run(fake_comfy, image_prompt())
    await studio.wait_for(job_id, ("processing",))
    async with httpx.AsyncClient(base_url=fake_comfy.url) as http:
        await http.post("/interrupt")
    row = await studio.wait_for(job_id, ("cancelled", "completed", "failed"))
    assert row["status"] == "cancelled" and "interrupted" in row["error_message"]


async def test_cancel_takes_only_that_prompt_off_the_server(studio_factory, fake_comfy) -> None:
    """Cancel through the API: a queued prompt leaves the queue, a running one is interrupted;
    another user's job on the same server runs to its end either way."""
    fake_comfy.node_delay = 0.25
    fake_comfy.node_delays["ImageInvert"] = 1.5  # each job runs long enough to be cancelled mid-run
    studio = await studio_factory(fake_comfy.url)
    others = await studio.submit_run(fake_comfy, image_prompt(), user="bob")
    queued = await studio.submit_run(fake_comfy, image_prompt(), user="ann")
    await studio.wait_for(others, ("processing",))
    answer = await studio.client.post(f"/api/image-jobs/{queued}/cancel", headers=studio.user("ann").headers)
    assert answer.status_code == 200, answer.text
    for _ in range(100):
        pending = [e[1] for e in (await asyncio.to_thread(lambda: httpx.get(fake_comfy.url + "/queue").json()))[
            "queue_pending"]]
        if not pending:
            break
        await asyncio.sleep(0.05)
    assert pending == []
    assert (await studio.wait_for(others, ("completed", "failed", "cancelled")))["status"] == "completed"

    running = await studio.submit_run(fake_comfy, image_prompt(), user="ann")
    behind = await studio.submit_run(fake_comfy, image_prompt(), user="bob")
    await studio.wait_for(running, ("processing",))
    answer = await studio.client.post(f"/api/image-jobs/{running}/cancel", headers=studio.user("ann").headers)
    assert answer.status_code == 200
    assert (await studio.wait_for(behind, ("completed", "failed", "cancelled")))["status"] == "completed"
    prompt_id = studio.job(running)["comfy_job_id"]
    entry = httpx.get(f"{fake_comfy.url}/history/{prompt_id}").json()[prompt_id]
    assert [m[0] for m in entry["status"]["messages"]][-1] == "execution_interrupted"
    assert studio.job(running)["status"] == "cancelled"
    assert studio.run_row(running)["state"] == "finished"


async def test_a_restarted_server_gives_never_started_runs_back_and_fails_running_ones(studio_factory,
                                                                                       fake_comfy) -> None:
    fake_comfy.node_delays["ImageInvert"] = 3.0
    studio = await studio_factory(fake_comfy.url)
    running = await studio.submit_run(fake_comfy, image_prompt())
    waiting = await studio.submit_run(fake_comfy, image_prompt())
    await studio.wait_for(running, ("processing",))
    await asyncio.to_thread(fake_comfy.restart)
    row = await studio.wait_for(running, ("failed",))
    assert fake_comfy.url in row["error_message"] and "while it ran" in row["error_message"]
    for _ in range(200):
        run = studio.run_row(waiting)
        if run["state"] == "queued":
            break
        await asyncio.sleep(0.05)
    assert run["state"] == "queued" and run["server_url"] is None
    job = studio.job(waiting)
    assert job["status"] == "pending" and job["comfy_url"] == ""
    assert fake_comfy.url in job["parameters"]["dispatch"]["reason"]

    # Submitted again (as the dispatcher would), and forgotten again before it starts: only
    # once goes a run back, so now it fails.
    blocker = await studio.submit_run(fake_comfy, image_prompt())
    with psycopg.connect(studio.db_url) as conn:
        prompt = conn.execute("SELECT prompt FROM genstudio.workflow_runs WHERE job_id = %s", (waiting,)).fetchone()[0]
        conn.execute("UPDATE genstudio.workflow_runs SET state = 'submitted', server_url = %s, submitted_at = now() "
                     "WHERE job_id = %s", (fake_comfy.url, waiting))
        conn.execute("UPDATE public.image_jobs SET comfy_url = %s WHERE id = %s", (fake_comfy.url, waiting))
    async with httpx.AsyncClient(base_url=fake_comfy.url) as http:
        await http.post("/prompt", json={"prompt": prompt, "client_id": CLIENT_ID, "prompt_id": job["comfy_job_id"]})
    await studio.wait_for(blocker, ("processing",))
    await asyncio.to_thread(fake_comfy.restart)
    row = await studio.wait_for(waiting, ("failed",))
    assert "before it ran" in row["error_message"] and fake_comfy.url in row["error_message"]


async def test_a_client_recorded_job_is_completed_after_the_client_went_away(studio_factory, fake_comfy) -> None:
    """The guide's flow: the client posts to ComfyUI itself (its own client id), records the
    job with comfy_url + comfy_job_id, and leaves. Only /history tells the outcome."""
    studio = await studio_factory(fake_comfy.url)
    user = studio.user("ann")
    async with httpx.AsyncClient(base_url=fake_comfy.url) as http:
        answer = await http.post("/prompt", json={"prompt": image_prompt("client"), "client_id": "browser-tab-1"})
    prompt_id = answer.json()["prompt_id"]
    created = await studio.client.post("/api/image-jobs", headers=user.headers, json={
        "workflow_name": "img2img", "comfy_url": fake_comfy.url + "/", "comfy_job_id": prompt_id,
        "prompt": "a cat", "parameters": {}})
    assert created.status_code in (200, 201), created.text
    job_id = uuid.UUID(created.json()["image_job"]["id"])
    row = await studio.wait_for(job_id, ("completed", "failed"))
    assert row["status"] == "completed", row
    (url,) = row["output_image_urls"]
    assert (studio.settings.storage_dir / url.removeprefix("/files/")).is_file()
    assert row["thumbnail_url"]


async def test_a_comfy_url_that_is_not_configured_is_never_fetched(studio_factory, fake_comfy_factory) -> None:
    configured, elsewhere = fake_comfy_factory(), fake_comfy_factory()
    studio = await studio_factory(configured.url)
    user = studio.user("ann")
    created = await studio.client.post("/api/image-jobs", headers=user.headers, json={
        "workflow_name": "img2img", "comfy_url": elsewhere.url, "comfy_job_id": str(uuid.uuid4()),
        "parameters": {}})
    assert created.status_code in (200, 201)
    await asyncio.sleep(1.0)  # ten poll intervals
    assert elsewhere.requests == []
    assert studio.job(uuid.UUID(created.json()["image_job"]["id"]))["status"] == "pending"
    assert ("GET", "/queue") in configured.requests


async def test_completion_reported_twice_is_recorded_and_stored_once(db_url, tmp_path, fake_comfy) -> None:
    settings = make_settings(tmp_path, **monitor_overrides(fake_comfy.url))
    studio = Studio(db_url, None, settings)
    job_id = await studio.submit_run(fake_comfy, image_prompt("twice"))
    fake_comfy.wait_idle()
    prompt_id = studio.job(job_id)["comfy_job_id"]
    outputs = httpx.get(f"{fake_comfy.url}/history/{prompt_id}").json()[prompt_id]["outputs"]
    db = Database(db_url, min_size=1, max_size=4)
    await db.open()
    try:
        stop = asyncio.Event()
        monitors = [ServerMonitor(fake_comfy.url, db, studio.storage, MonitorSettings.from_settings(settings), stop)
                    for _ in range(2)]
        row = {"comfy_job_id": prompt_id, "output_type": "image", "id": job_id, "workflow_name": "image-test",
               "status": "pending", "is_run": True, "resubmitted": False, "output_nodes": [], "progress": None}
        views_before = fake_comfy.requests.count(("GET", "/view"))
        await asyncio.gather(*(m.complete(Tracked.from_row(row), outputs) for m in monitors))
        for m in monitors:
            await m.client.aclose()
    finally:
        await db.close()
    row = studio.job(job_id)
    assert row["status"] == "completed"
    folder = settings.storage_dir / "image" / "image-test" / str(job_id)
    assert sorted(p.name for p in folder.iterdir()) == ["thumbnails", "twice_00001_.png"]
    assert fake_comfy.requests.count(("GET", "/view")) - views_before <= 2


def test_output_names_from_comfyui_cannot_leave_the_job_folder() -> None:
    files, texts = collect_outputs({"9": {"images": [{"filename": "../../../etc/passwd", "subfolder": "..",
                                                      "type": "output"}]}}, None)
    key = job_file_key("image", "wf", uuid.UUID(int=1), Path(files[0]["filename"]).name)
    assert key == "image/wf/00000000-0000-0000-0000-000000000001/passwd"
    key = job_file_key("image", "wf", uuid.UUID(int=1), "..\\..\\x.png")
    assert key.endswith("/x.png") and ".." not in key


async def test_a_killed_worker_is_replaced_and_the_job_still_completes(db_url, tmp_path, fake_comfy) -> None:
    """`genstudio worker` killed with SIGKILL mid-job; the prompt ends while no genstudio runs;
    a new worker resumes from the database and records the outcome from /history."""
    fake_comfy.node_delay = 0.4
    env = {**os.environ, "DATABASE_URL": db_url, "COMFYUI_URLS": fake_comfy.url,
           "GENSTUDIO_DATA_DIR": str(tmp_path), "GENSTUDIO_MONITOR_POLL_SECONDS": "0.1",
           "GENSTUDIO_MONITOR_LOST_GRACE_SECONDS": "0.2", "GENSTUDIO_MONITOR_LEADER_RETRY": "0.2",
           "GENSTUDIO_JWT_SECRET": "x" * 40}
    studio = Studio(db_url, None, make_settings(tmp_path, **monitor_overrides(fake_comfy.url)))

    def worker() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "genstudio", "worker"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    async def following() -> None:  # the worker's monitor has its socket open
        for _ in range(600):
            if CLIENT_ID in fake_comfy.sockets:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the worker never connected to the fake ComfyUI")

    first = worker()
    try:
        await following()
        job_id = await studio.submit_run(fake_comfy, image_prompt("killed"))
        await studio.wait_for(job_id, ("processing",), timeout=30)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        late = await studio.submit_run(fake_comfy, image_prompt("late"))
        await asyncio.to_thread(fake_comfy.wait_idle, 20)
        assert studio.job(job_id)["status"] == "processing"  # nobody recorded the end
        second = worker()
        try:
            done = await studio.wait_for(job_id, ("completed", "failed"), timeout=30)
            assert done["status"] == "completed", done
            assert (await studio.wait_for(late, ("completed", "failed"), timeout=30))["status"] == "completed"
            assert (tmp_path / "storage" / done["output_image_urls"][0].removeprefix("/files/")).is_file()
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(15)
    finally:
        if first.poll() is None:
            first.kill()


async def test_the_watchdog_ends_a_job_that_makes_no_progress(studio_factory, fake_comfy) -> None:
    fake_comfy.node_delays["ImageInvert"] = 8.0  # a node that says nothing for longer than allowed
    studio = await studio_factory(fake_comfy.url, monitor_stall_seconds=1.0)
    job_id = await studio.submit_run(fake_comfy, image_prompt())
    row = await studio.wait_for(job_id, ("failed", "completed"), timeout=15)
    assert row["status"] == "failed" and "no progress" in row["error_message"]
    prompt_id = row["comfy_job_id"]
    for _ in range(200):  # interrupted at the next node boundary
        entry = httpx.get(f"{fake_comfy.url}/history/{prompt_id}").json().get(prompt_id)
        if entry:
            break
        await asyncio.sleep(0.05)
    assert [m[0] for m in entry["status"]["messages"]][-1] == "execution_interrupted"


async def test_one_process_leads_a_server_and_another_takes_over(db_url, tmp_path, fake_comfy) -> None:
    """Two processes' monitors share one server: one follows it; when it stops, the other
    takes over and finishes what was in flight."""
    fake_comfy.node_delay = 0.3
    settings = make_settings(tmp_path, **monitor_overrides(fake_comfy.url))
    studio = Studio(db_url, None, settings)
    db = Database(db_url, min_size=1, max_size=6)
    await db.open()
    stops = [asyncio.Event(), asyncio.Event()]
    monitors = [ServerMonitor(fake_comfy.url, db, studio.storage, MonitorSettings.from_settings(settings), stop)
                for stop in stops]
    tasks = [asyncio.create_task(m.run()) for m in monitors]
    try:
        await asyncio.wait_for(asyncio.wait([asyncio.create_task(m.connected.wait()) for m in monitors],
                                            return_when=asyncio.FIRST_COMPLETED), 10)
        await asyncio.sleep(0.5)
        assert sum(m.leading.is_set() for m in monitors) == 1
        first = next(i for i, m in enumerate(monitors) if m.leading.is_set())
        job_id = await studio.submit_run(fake_comfy, image_prompt())
        await studio.wait_for(job_id, ("processing",))
        stops[first].set()
        await asyncio.wait_for(tasks[first], 10)
        other = monitors[1 - first]
        await asyncio.wait_for(other.connected.wait(), 10)
        assert (await studio.wait_for(job_id, ("completed", "failed")))["status"] == "completed"
    finally:
        for stop in stops:
            stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await db.close()
