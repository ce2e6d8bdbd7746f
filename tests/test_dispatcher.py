"""The dispatcher against the fake ComfyUI (tests/fakes/), a real PostgreSQL and the real API:
submission with the pre-assigned prompt id and uploaded inputs, routing over two servers
(fewest queued, servers lacking a node type skipped), waiting with a visible reason and failing
at the deadline, NOTIFY wake-ups, jobs that are never submitted, a retried submit that does not
run twice, and two `genstudio worker` processes sharing a few hundred runs."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from genstudio.api.app import create_app
from genstudio.comfy.client import ComfyClient
from genstudio.comfy.dispatcher import Dispatcher
from genstudio.db.pool import Database
from tests.api_support import Api, make_settings
from tests.test_storage import png_bytes


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


class Studio:
    """The API (no background services) and a dispatcher driven step by step by the test."""

    def __init__(self, api: Api, dispatcher: Dispatcher, db_url: str):
        self.api, self.dispatcher, self.db_url = api, dispatcher, db_url

    async def run(self, workflow: str, user: str = "alice", **kwargs) -> dict:
        r = await self.api.client.post(f"/api/workflows/{workflow}/runs", headers=self.api.user(user).headers, **kwargs)
        assert r.status_code == 202, r.text
        return next(iter(v for k, v in r.json().items() if k.endswith("_job")))

    def row(self, sql: str, *params) -> dict:
        with psycopg.connect(self.db_url, row_factory=dict_row) as conn:
            return conn.execute(sql, params).fetchone()

    def rows(self, sql: str, *params) -> list[dict]:
        with psycopg.connect(self.db_url, row_factory=dict_row) as conn:
            return conn.execute(sql, params).fetchall()

    def run_row(self, job_id) -> dict:
        return self.row("SELECT * FROM genstudio.workflow_runs WHERE job_id = %s", job_id)

    def job(self, table: str, job_id) -> dict:
        return self.row(f"SELECT * FROM public.{table} WHERE id = %s", job_id)


@pytest.fixture
async def studio_factory(db_url, tmp_path):
    opened = []

    async def make(urls: list[str], **overrides) -> Studio:
        settings = make_settings(tmp_path, **{"comfyui_urls": urls, "run_background": False,
                                              "health_check_seconds": 30, **overrides})
        app = create_app(db_url, settings)
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
        db = Database(db_url, min_size=1, max_size=4)
        await db.open()
        dispatcher = Dispatcher(db, settings)
        opened.append((lifespan, client, db, dispatcher))
        return Studio(Api(client, db_url), dispatcher, db_url)

    yield make
    for lifespan, client, db, dispatcher in opened:
        await dispatcher.close()
        await client.aclose()
        await db.close()
        await lifespan.__aexit__(None, None, None)


def posts(fake) -> int:
    return sum(1 for method, path in fake.requests if method == "POST" and path == "/prompt")


async def test_a_run_is_uploaded_and_submitted_under_its_prompt_id(studio_factory, fake_comfy):
    studio = await studio_factory([fake_comfy.url])
    job = await studio.run("image-blur", files={"image": ("cat.png", png_bytes(40, 30))}, data={"parameters": '{"radius": 4}'})
    await studio.dispatcher.check_servers(force=True)
    assert await studio.dispatcher.dispatch_ready() == 1

    run = studio.run_row(job["id"])
    assert (run["state"], run["server_url"], run["attempts"]) == ("submitted", fake_comfy.url, 1)
    stored = studio.job("image_jobs", job["id"])
    assert stored["comfy_url"] == fake_comfy.url and stored["status"] == "pending"
    assert stored["parameters"]["dispatch"]["state"] == "submitted"
    fake_comfy.wait_idle()
    async with ComfyClient(fake_comfy.url, "test") as client:
        history = await client.history(job["comfy_job_id"])
    prompt = history[job["comfy_job_id"]]["prompt"][2]
    uploaded = prompt["1"]["inputs"]["image"]
    assert uploaded == f"genstudio-{job['id']}-input-image.png"
    assert fake_comfy.input_file(uploaded).read_bytes() == png_bytes(40, 30)
    assert prompt["2"]["inputs"]["blur_radius"] == 4
    assert history[job["comfy_job_id"]]["status"]["status_str"] == "success"
    server = studio.row("SELECT * FROM genstudio.comfy_servers")
    assert server["healthy"] and "ImageBlur" in server["node_types"]
    # Nothing more to do: a second pass submits nothing again.
    assert await studio.dispatcher.dispatch_ready() == 0
    assert posts(fake_comfy) == 1


async def test_routing_fewest_queued_and_node_types(studio_factory, fake_comfy_factory):
    busy, idle = fake_comfy_factory(node_delay=0.5), fake_comfy_factory()
    studio = await studio_factory([busy.url, idle.url])
    async with ComfyClient(busy.url, "other-app") as other:  # somebody else's work on `busy`
        for i in range(3):
            await other.submit({"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": i}},
                                "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}, str(uuid.uuid4()))
    await studio.dispatcher.check_servers(force=True)
    first = await studio.run("text-concatenate", json={"parameters": {"first": "a"}})
    await studio.dispatcher.dispatch_ready()
    assert studio.run_row(first["id"])["server_url"] == idle.url

    # `idle` loses a node type the image templates need: they all go to `busy`.
    del idle.object_info["ImageInvert"]
    await studio.dispatcher.check_servers(force=True)
    jobs = [await studio.run("image-invert", files={"image": ("a.png", png_bytes())}) for _ in range(3)]
    await studio.dispatcher.dispatch_ready()
    assert {studio.run_row(j["id"])["server_url"] for j in jobs} == {busy.url}
    # Text runs spread: each pick counts as one more queued prompt on the server it chose.
    texts = [await studio.run("text-concatenate", json={"parameters": {"first": str(i)}}) for i in range(8)]
    await studio.dispatcher.check_servers(force=True)
    await studio.dispatcher.dispatch_ready()
    chosen = [studio.run_row(j["id"])["server_url"] for j in texts]
    assert chosen.count(idle.url) > chosen.count(busy.url)

    # Every healthy server lacks the node type: the API says which, and writes nothing.
    del busy.object_info["ImageInvert"]
    await studio.dispatcher.check_servers(force=True)
    r = await studio.api.client.post("/api/workflows/image-invert/runs", headers=studio.api.user("alice").headers,
                                     files={"image": ("a.png", png_bytes())})
    assert (r.status_code, r.json()["error"]) == (
        422, "no healthy ComfyUI server can run image-invert: missing node types ImageInvert")


async def test_no_server_reachable_waits_with_a_reason_then_fails_at_the_deadline(studio_factory):
    studio = await studio_factory([closed_port_url()], dispatch_deadline_seconds=1.5, health_check_seconds=0.3)
    job = await studio.run("text-concatenate", json={})
    stop = asyncio.Event()
    service = asyncio.create_task(studio.dispatcher.run(stop))
    try:
        deadline = time.monotonic() + 10
        seen_waiting = False
        while time.monotonic() < deadline:
            row = studio.job("text_jobs", job["id"])
            if row["status"] != "pending":
                break
            if row["parameters"]["dispatch"] == {"state": "waiting", "reason": "no ComfyUI server is reachable"}:
                seen_waiting = True
                assert studio.run_row(job["id"])["dispatch_reason"] == "no ComfyUI server is reachable"
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await service
    assert seen_waiting
    assert row["status"] == "failed"
    assert row["error_message"] == "not started within 1.5 s: no ComfyUI server is reachable"
    assert row["parameters"]["dispatch"] == {"state": "failed", "reason": row["error_message"]}
    assert studio.run_row(job["id"])["state"] == "finished"
    server = studio.row("SELECT healthy, error FROM genstudio.comfy_servers")
    assert server["healthy"] is False and "127.0.0.1" in server["error"]


async def test_a_server_coming_up_and_new_runs_wake_the_dispatcher(studio_factory, fake_comfy):
    fake_comfy.go_offline()
    studio = await studio_factory([fake_comfy.url], health_check_seconds=1)
    waiting = await studio.run("text-concatenate", json={})
    stop = asyncio.Event()
    service = asyncio.create_task(studio.dispatcher.run(stop))
    try:
        await _until(lambda: studio.job("text_jobs", waiting["id"])["parameters"]["dispatch"].get("state") == "waiting")
        fake_comfy.go_online()
        await _until(lambda: studio.run_row(waiting["id"])["state"] == "submitted", timeout=5)
        # A new run is taken at once (NOTIFY), not at the next health check or timer.
        studio.dispatcher.settings.health_check_seconds = 60
        await asyncio.sleep(0.2)
        started = time.monotonic()
        fresh = await studio.run("text-concatenate", json={"parameters": {"first": "now"}})
        await _until(lambda: studio.run_row(fresh["id"])["state"] == "submitted", timeout=5)
        assert time.monotonic() - started < 2
    finally:
        stop.set()
        await service


async def test_cancelled_client_recorded_and_legacy_jobs_are_never_submitted(studio_factory, fake_comfy):
    studio = await studio_factory([fake_comfy.url])
    alice = studio.api.user("alice")
    cancelled = await studio.run("text-concatenate", json={})
    r = await studio.api.client.post(f"/api/text-jobs/{cancelled['id']}/cancel", headers=alice.headers)
    assert r.json()["text_job"]["status"] == "cancelled"
    r = await studio.api.client.post("/api/image-jobs", headers=alice.headers, json={
        "workflow_name": "img2img", "comfy_url": fake_comfy.url, "comfy_job_id": str(uuid.uuid4())})
    assert r.status_code == 201
    with psycopg.connect(studio.db_url) as conn:
        conn.execute("INSERT INTO image_jobs (workflow_name, comfy_url, legacy_table, legacy_id) "
                     "VALUES ('img2img', %s, 'edited_images', '1')", (fake_comfy.url,))
    await studio.dispatcher.check_servers(force=True)
    assert await studio.dispatcher.dispatch_ready() == 1  # only the cancelled run was looked at
    assert studio.run_row(cancelled["id"])["state"] == "finished"
    assert posts(fake_comfy) == 0


async def test_a_retried_submit_never_runs_twice(studio_factory, fake_comfy):
    studio = await studio_factory([fake_comfy.url])
    job = await studio.run("text-concatenate", json={"parameters": {"first": "once"}})
    run = studio.run_row(job["id"])
    # As if an earlier submit reached the server but its answer was lost.
    async with ComfyClient(fake_comfy.url, "genstudio") as client:
        await client.submit(run["prompt"], job["comfy_job_id"])
    await studio.dispatcher.check_servers(force=True)
    await studio.dispatcher.dispatch_ready()
    assert studio.run_row(job["id"])["state"] == "submitted"
    assert studio.job("text_jobs", job["id"])["comfy_url"] == fake_comfy.url
    assert posts(fake_comfy) == 1


async def test_a_prompt_the_server_refuses_fails_the_job_with_comfyuis_message(studio_factory, fake_comfy):
    studio = await studio_factory([fake_comfy.url])
    job = await studio.run("img2img", files={"image": ("a.png", png_bytes())},
                           data={"parameters": '{"prompt": "a cat", "checkpoint": "missing.safetensors"}'})
    await studio.dispatcher.check_servers(force=True)
    await studio.dispatcher.dispatch_ready()
    row = studio.job("image_jobs", job["id"])
    assert row["status"] == "failed" and row["error_message"].startswith("ComfyUI refused the workflow:")
    assert "missing.safetensors" in row["error_message"]
    assert studio.run_row(job["id"])["state"] == "finished"


async def _until(predicate, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.05)


def test_two_worker_processes_submit_each_of_hundreds_of_runs_exactly_once(db_url, tmp_path, fake_comfy_factory):
    fakes = [fake_comfy_factory(), fake_comfy_factory()]
    runs = 300
    settings = make_settings(tmp_path, run_background=False)
    app = create_app(db_url, settings)

    async def create_runs() -> list[str]:
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
                api = Api(client, db_url)
                headers = api.user("alice").headers
                ids = []
                for i in range(runs):
                    r = await client.post("/api/workflows/text-concatenate/runs", headers=headers,
                                          json={"parameters": {"first": f"run {i}"}})
                    assert r.status_code == 202
                    ids.append(r.json()["text_job"]["comfy_job_id"])
                return ids

    started = time.monotonic()
    prompt_ids = asyncio.run(create_runs())
    print(f"created {runs} runs in {time.monotonic() - started:.1f} s")
    env = {**os.environ, "DATABASE_URL": db_url, "COMFYUI_URLS": ",".join(f.url for f in fakes),
           "GENSTUDIO_DATA_DIR": str(tmp_path), "GENSTUDIO_JWT_SECRET": "x" * 40,
           "GENSTUDIO_HEALTH_CHECK_INTERVAL": "1"}
    logs = [tmp_path / f"worker-{i}.log" for i in range(2)]  # files: a full pipe would stall a worker
    workers = [subprocess.Popen([sys.executable, "-m", "genstudio", "worker", "--no-migrate"], env=env,
                                stdout=log.open("w"), stderr=subprocess.STDOUT) for log in logs]
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with psycopg.connect(db_url) as conn:
                # A fast prompt may end (the monitor finishes its run) before the dispatcher has
                # recorded where it went: done when every job has its server.
                left = conn.execute("SELECT count(*) FROM text_jobs WHERE comfy_url = ''").fetchone()[0]
            if left == 0:
                break
            assert all(w.poll() is None for w in workers), [log.read_text() for log in logs]
            time.sleep(0.2)
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(timeout=30)
    outputs = [log.read_text() for log in logs]
    assert left == 0, outputs
    print(f"{runs} runs submitted by two workers in {time.monotonic() - started:.1f} s")
    for fake in fakes:
        fake.wait_idle(30)
    submitted = [path for fake in fakes for method, path in fake.requests if method == "POST" and path == "/prompt"]
    assert len(submitted) == runs, outputs
    with psycopg.connect(db_url) as conn:
        where = dict(conn.execute("SELECT j.comfy_job_id, j.comfy_url FROM text_jobs j").fetchall())
    assert set(where) == set(prompt_ids) and set(where.values()) == {f.url for f in fakes}
    # Each server ran exactly the prompts it was given, once each.
    for fake in fakes:
        ran = [pid for pid, url in where.items() if url == fake.url]
        assert sorted(fake.history) == sorted(ran)
