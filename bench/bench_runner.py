"""Benchmark of the ComfyUI runner over the fake ComfyUI, each number beside its baseline.

    python bench/bench_runner.py                 # the issue's sizes: 200 / 500 / 1,000 jobs
    python bench/bench_runner.py --quick         # 50 / 100 / 200

It starts an embedded PostgreSQL in a temporary directory (or uses --admin-url, a conninfo
allowed to CREATE DATABASE), fake ComfyUI servers on loopback ports (tests/fakes/comfyui.py,
real HTTP + WebSocket), and a real `genstudio worker` process (the monitor), and measures:

  (a) latency from the fake sending `execution_success` to the job being `completed` in the
      database (its `completed_at`; outputs fetched over /view, stored, thumbnailed first),
      p50 and p95 over N jobs one after another — target p50 <= 20 ms;
  (b) N tiny jobs through genstudio over two fake servers, until every job is `completed`
      in the database, versus posting the same prompts straight to the fakes and waiting
      for every `execution_success` — target >= 0.9x;
  (c) resident memory of the worker following N in-flight jobs, beside the same worker
      following none.

In (b) the runs are queued as the runs API queues them and the worker's dispatcher submits
them (when this tree has the dispatcher; otherwise the bench submits them round-robin as the
dispatcher would, and says so). In (a) and (c) the bench submits them itself, so that (a)
times the monitor alone.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from genstudio.comfy.client import ComfyClient  # noqa: E402
from genstudio.db.embedded import EmbeddedPostgres  # noqa: E402
from genstudio.db.migrator import Migrator  # noqa: E402
from tests.fakes.comfyui import FakeComfyUI  # noqa: E402

CLIENT_ID = "genstudio"
HAS_DISPATCHER = importlib.util.find_spec("genstudio.comfy.dispatcher") is not None


def tiny_prompt(n: int) -> dict:
    """EmptyImage 64x64 -> ImageInvert -> SaveImage, a colour per job (nothing cached)."""
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1,
                                                         "color": (n * 7919 + 17) & 0xFFFFFF}},
            "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "bench"}}}


class Bench:
    def __init__(self, conninfo: str, data_dir: Path):
        self.conninfo = conninfo
        self.data_dir = data_dir
        self._watch: psycopg.Connection | None = None  # one connection for watching job states
        with psycopg.connect(conninfo) as conn:
            self.user_id = conn.execute("INSERT INTO auth.users (email) VALUES ('bench@example.com') "
                                        "RETURNING id").fetchone()[0]

    def worker(self, urls: list[str], **env: str) -> subprocess.Popen:
        environment = {**os.environ, "DATABASE_URL": self.conninfo, "COMFYUI_URLS": ",".join(urls),
                       "GENSTUDIO_DATA_DIR": str(self.data_dir), "GENSTUDIO_JWT_SECRET": "b" * 40,
                       "GENSTUDIO_MONITOR_LEADER_RETRY": "0.2", **env}
        return subprocess.Popen([sys.executable, "-m", "genstudio", "worker"], env=environment,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def add_runs(self, urls: list[str], prompts: list[dict]) -> list[tuple[uuid.UUID, str, str]]:
        """(job id, prompt id, server) per prompt, as the dispatcher leaves a submitted run."""
        rows = []
        with psycopg.connect(self.conninfo) as conn:
            for i, prompt in enumerate(prompts):
                url, prompt_id = urls[i % len(urls)], str(uuid.uuid4())
                job_id = conn.execute(
                    "INSERT INTO public.image_jobs (user_id, status, workflow_name, comfy_url, comfy_job_id, "
                    "parameters) VALUES (%s, 'pending', 'bench', %s, %s, '{}') RETURNING id",
                    (self.user_id, url, prompt_id)).fetchone()[0]
                conn.execute(
                    "INSERT INTO genstudio.workflow_runs (job_id, output_type, user_id, workflow_name, prompt, "
                    "output_nodes, state, server_url, attempts, submitted_at) "
                    "VALUES (%s, 'image', %s, 'bench', %s, '{3}', 'submitted', %s, 1, now())",
                    (job_id, self.user_id, Jsonb(prompt), url))
                rows.append((job_id, prompt_id, url))
        return rows

    def queue_runs(self, prompts: list[dict]) -> list[uuid.UUID]:
        """Runs as `POST /api/workflows/{name}/runs` leaves them: job pending without a server,
        run `queued` for the dispatcher (which wakes on the insert's NOTIFY)."""
        ids = []
        with psycopg.connect(self.conninfo) as conn:
            for prompt in prompts:
                job_id = conn.execute(
                    "INSERT INTO public.image_jobs (user_id, status, workflow_name, comfy_url, comfy_job_id, "
                    "parameters) VALUES (%s, 'pending', 'bench', '', %s, '{}') RETURNING id",
                    (self.user_id, str(uuid.uuid4()))).fetchone()[0]
                conn.execute(
                    "INSERT INTO genstudio.workflow_runs (job_id, output_type, user_id, workflow_name, prompt, "
                    "required_node_types, output_nodes, deadline) VALUES (%s, 'image', %s, 'bench', %s, "
                    "%s, '{3}', now() + interval '1 hour')",
                    (job_id, self.user_id, Jsonb(prompt), sorted({n["class_type"] for n in prompt.values()})))
                ids.append(job_id)
        return ids

    def statuses(self, job_ids: list[uuid.UUID]) -> dict[str, int]:
        if self._watch is None:
            self._watch = psycopg.connect(self.conninfo, autocommit=True)
        return dict(self._watch.execute("SELECT status, count(*) FROM public.image_jobs WHERE id = ANY(%s) "
                                        "GROUP BY status", (job_ids,)).fetchall())

    def wait_completed(self, job_ids: list[uuid.UUID], timeout: float = 300, poll: float = 0.02) -> None:
        deadline = time.monotonic() + timeout
        while True:
            counts = self.statuses(job_ids)
            if counts.get("completed", 0) == len(job_ids):
                return
            if time.monotonic() > deadline or counts.get("failed"):
                raise SystemExit(f"jobs did not complete: {counts}")
            time.sleep(poll)


async def post_all(runs: list[tuple[uuid.UUID, str, str]], prompts: list[dict], client_id: str) -> None:
    clients = {url: ComfyClient(url, client_id) for url in {url for _, _, url in runs}}
    try:
        for (_, prompt_id, url), prompt in zip(runs, prompts):
            await clients[url].submit(prompt, prompt_id)
    finally:
        for c in clients.values():
            await c.aclose()


def wait_following(fake: FakeComfyUI) -> None:
    for _ in range(1200):
        if CLIENT_ID in fake.sockets:
            return
        time.sleep(0.05)
    raise SystemExit("the worker never connected to the fake ComfyUI")


def wait_healthy(bench: Bench, urls: list[str]) -> None:
    """Until the worker's dispatcher has checked every server (as wait_following waits for its
    monitor): the clock starts on a running worker, not on its start-up."""
    with psycopg.connect(bench.conninfo, autocommit=True) as conn:
        for _ in range(1200):
            healthy = conn.execute("SELECT count(*) FROM genstudio.comfy_servers WHERE healthy AND url = ANY(%s)",
                                   (urls,)).fetchone()[0]
            if healthy == len(urls):
                return
            time.sleep(0.05)
    raise SystemExit("the worker's dispatcher never found the fake ComfyUI servers healthy")


def latency(bench: Bench, jobs: int) -> None:
    with FakeComfyUI() as fake:
        worker = bench.worker([fake.url])
        try:
            wait_following(fake)
            latencies = []
            for n in range(jobs):
                prompt = tiny_prompt(n)
                ((job_id, prompt_id, url),) = bench.add_runs([fake.url], [prompt])
                asyncio.run(post_all([(job_id, prompt_id, url)], [prompt], CLIENT_ID))
                bench.wait_completed([job_id], timeout=30, poll=0.002)
                with psycopg.connect(bench.conninfo) as conn:
                    completed_at = conn.execute("SELECT extract(epoch FROM completed_at) FROM public.image_jobs "
                                                "WHERE id = %s", (job_id,)).fetchone()[0]
                latencies.append((float(completed_at) - fake.success_sent_at[prompt_id]) * 1000)
        finally:
            worker.terminate()
            worker.wait(20)
    latencies.sort()
    p50, p95 = statistics.median(latencies), latencies[int(0.95 * (len(latencies) - 1))]
    print(f"(a) execution_success -> completed in the database, {jobs} jobs one after another:")
    print(f"    p50 {p50:.1f} ms  p95 {p95:.1f} ms  (target p50 <= 20 ms: {'met' if p50 <= 20 else 'NOT met'})")


async def direct(urls: list[str], prompts: list[dict]) -> float:
    """The baseline: the same prompts posted straight to the fakes, until every one of them
    reported `execution_success` on the poster's own sockets."""
    client_id = uuid.uuid4().hex
    clients = [ComfyClient(url, client_id) for url in urls]
    remaining = set()
    done = asyncio.Event()

    async def listen(socket) -> None:
        async for message in socket:
            if message.type == "execution_success" and message.prompt_id in remaining:
                remaining.discard(message.prompt_id)
                if not remaining:
                    done.set()

    sockets = [c.websocket() for c in clients]
    for s in sockets:
        await s.__aenter__()
    listeners = [asyncio.create_task(listen(s)) for s in sockets]
    ids = [str(uuid.uuid4()) for _ in prompts]
    remaining.update(ids)
    start = time.perf_counter()
    for i, (prompt_id, prompt) in enumerate(zip(ids, prompts)):
        await clients[i % len(clients)].submit(prompt, prompt_id)
    await asyncio.wait_for(done.wait(), 300)
    elapsed = time.perf_counter() - start
    for task in listeners:
        task.cancel()
    for s, c in zip(sockets, clients):
        await s.close()
        await c.aclose()
    return elapsed


def throughput(bench: Bench, jobs: int) -> None:
    with FakeComfyUI() as one, FakeComfyUI() as two:
        urls = [one.url, two.url]
        baseline = asyncio.run(direct(urls, [tiny_prompt(100_000 + n) for n in range(jobs)]))
        worker = bench.worker(urls)
        try:
            wait_following(one)
            wait_following(two)
            if HAS_DISPATCHER:
                wait_healthy(bench, urls)
            prompts = [tiny_prompt(200_000 + n) for n in range(jobs)]
            start = time.perf_counter()
            if HAS_DISPATCHER:
                job_ids = bench.queue_runs(prompts)
            else:
                runs = bench.add_runs(urls, prompts)
                asyncio.run(post_all(runs, prompts, CLIENT_ID))
                job_ids = [r[0] for r in runs]
            bench.wait_completed(job_ids)
            through = time.perf_counter() - start
        finally:
            worker.terminate()
            worker.wait(20)
    print(f"(b) {jobs} tiny jobs over two fake servers:")
    print(f"    straight to the fakes: {baseline:.2f} s ({jobs / baseline:.0f} jobs/s)")
    how = ("queued runs -> dispatcher -> ComfyUI -> monitor" if HAS_DISPATCHER
           else "submitted by the bench as the dispatcher would (no dispatcher in this tree) -> monitor")
    print(f"    through genstudio ({how}; completed, outputs stored): {through:.2f} s ({jobs / through:.0f} jobs/s)")
    ratio = baseline / through
    print(f"    ratio {ratio:.2f}x (target >= 0.9x: {'met' if ratio >= 0.9 else 'NOT met'})")


def rss_mb(process: subprocess.Popen) -> float:
    proc = psutil.Process(process.pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


def memory(bench: Bench, jobs: int) -> None:
    with FakeComfyUI() as fake:
        fake.node_delay = 600.0  # the first prompt runs for ages; the rest wait in the queue
        worker = bench.worker([fake.url], GENSTUDIO_MONITOR_RECONCILE_SECONDS="1")
        try:
            wait_following(fake)
            time.sleep(3)
            idle = rss_mb(worker)
            prompts = [tiny_prompt(300_000 + n) for n in range(jobs)]
            runs = bench.add_runs([fake.url], prompts)
            asyncio.run(post_all(runs, prompts, CLIENT_ID))
            time.sleep(6)  # a few full reconciles over all of them
            following = rss_mb(worker)
            counts = bench.statuses([r[0] for r in runs])
        finally:
            worker.terminate()
            worker.wait(20)
            fake.node_delay = 0
    print(f"(c) worker memory (RSS): following nothing {idle:.1f} MB, following {jobs} in-flight jobs "
          f"{following:.1f} MB (+{(following - idle) * 1024 / jobs:.1f} KB per job); job states {counts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="50 / 100 / 200 jobs instead of 200 / 500 / 1000")
    parser.add_argument("--admin-url", help="conninfo allowed to CREATE DATABASE (default: embedded PostgreSQL)")
    args = parser.parse_args()
    sizes = (50, 100, 200) if args.quick else (200, 500, 1000)
    with tempfile.TemporaryDirectory(prefix="bench-runner-") as tmp:
        os.chmod(tmp, 0o711)  # as root the server's account must reach its data (README: as root)
        server = None
        admin = args.admin_url
        if admin is None:
            server = EmbeddedPostgres(Path(tmp) / "pg")
            server.start()
            admin = server.conninfo("postgres")
        name = f"bench_runner_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        conninfo = make_conninfo(admin, dbname=name)
        try:
            Migrator(conninfo).upgrade()
            bench = Bench(conninfo, Path(tmp) / "data")
            latency(bench, sizes[0])
            throughput(bench, sizes[1])
            memory(bench, sizes[2])
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
