"""Benchmark of the jobs API and the unified feed, each number beside a baseline from the same run.

    python bench/bench_api.py                                # quick: 30,000 jobs, 100 users
    python bench/bench_api.py --jobs 1000000 --users 1000     # the issue's size

It starts an embedded PostgreSQL in a temporary directory (or uses --admin-url, a conninfo
allowed to CREATE DATABASE; a scratch database is made there and dropped afterwards), fills
the three job tables with INSERT ... SELECT generate_series, starts `genstudio`'s API under
uvicorn in a subprocess on 127.0.0.1, and measures:

  (a) feed latency at depth N (keyset cursor) / first page, beside the guide-style
      OFFSET query at the same depth;
  (b) requests/s of GET /api/feed?limit=50 and POST /api/image-jobs at concurrency 16,
      beside the raw SQL throughput of the same transactions (same role switch, claims and
      statement) from 16 connections;
  (c) the server's resident memory under that load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genstudio.auth.tokens import TokenIssuer  # noqa: E402
from genstudio.db.embedded import EmbeddedPostgres  # noqa: E402
from genstudio.db.migrator import Migrator  # noqa: E402
from genstudio.db.pool import _SET_REQUEST_CONTEXT  # noqa: E402
from genstudio.jobs.cursor import Cursor  # noqa: E402
from genstudio.jobs.feed import FeedQuery, feed_sql  # noqa: E402
from genstudio.jobs.output_types import IMAGE  # noqa: E402
from genstudio.jobs.service import JobService  # noqa: E402

SECRET = "bench-secret-" + "x" * 40
CONCURRENCY = 16

FILL_SQL = """
INSERT INTO auth.users (email) SELECT 'bench' || g || '@example.com' FROM generate_series(1, {users}) g;
CREATE TEMP TABLE bench_users AS SELECT array_agg(id) AS ids FROM auth.users;
"""

# One table's share of the jobs: a fifth ownerless (legacy), of the rest about a third shared,
# created over the past year, a handful of workflows and statuses.
FILL_TABLE_SQL = """
INSERT INTO public.{table} (user_id, workflow_name, status, created_at, comfy_url, parameters, visibility)
SELECT CASE WHEN r.o < 0.2 THEN NULL ELSE u.ids[1 + floor(r.u * array_length(u.ids, 1))::int] END,
       (ARRAY['wf-a', 'wf-b', 'wf-c', 'wf-d'])[1 + g %% 4],
       (ARRAY['completed', 'completed', 'completed', 'failed', 'pending'])[1 + g %% 5],
       now() - r.age * interval '365 days',
       'http://comfy.local:8188', '{{"seed": 1}}'::jsonb,
       CASE WHEN r.s < 0.3 THEN 'shared' ELSE 'private' END
FROM generate_series(1, %(n)s) g, bench_users u,
     LATERAL (SELECT random() AS o, random() AS u, random() AS s, random() AS age, g AS keep) r
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fill(conninfo: str, jobs: int, users: int) -> None:
    started = time.perf_counter()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(FILL_SQL.format(users=int(users)))
        per_table = jobs // 3
        for i, table in enumerate(("video_jobs", "image_jobs", "text_jobs")):
            n = per_table + (jobs - 3 * per_table if i == 0 else 0)
            conn.execute(FILL_TABLE_SQL.format(table=table), {"n": n})
        conn.execute("VACUUM ANALYZE public.video_jobs, public.image_jobs, public.text_jobs, auth.users")
    print(f"filled {jobs:,} jobs for {users:,} users in {time.perf_counter() - started:.1f} s")


def pick_user(conninfo: str) -> uuid.UUID:
    with psycopg.connect(conninfo) as conn:
        return conn.execute("SELECT user_id FROM public.image_jobs WHERE user_id IS NOT NULL LIMIT 1").fetchone()[0]


def claims_for(user_id: uuid.UUID) -> dict:
    return {"sub": str(user_id), "role": "authenticated", "aud": "authenticated", "exp": int(time.time()) + 3600}


# ---- (a) latency -------------------------------------------------------------------------

GUIDE_OFFSET_SQL = """
SELECT * FROM (
    SELECT id, created_at, workflow_name, status, 'video' AS type FROM public.video_jobs
    UNION ALL SELECT id, created_at, workflow_name, status, 'image' FROM public.image_jobs
    UNION ALL SELECT id, created_at, workflow_name, status, 'text' FROM public.text_jobs
) j ORDER BY created_at DESC LIMIT 50 OFFSET %(offset)s
"""


def cursor_at_depth(conninfo: str, user_id: uuid.UUID, depth: int) -> str:
    with psycopg.connect(conninfo) as conn:
        conn.execute(_SET_REQUEST_CONTEXT, ("authenticated", json.dumps(claims_for(user_id))))
        row = conn.execute(
            "SELECT created_at, id FROM (SELECT created_at, id FROM public.video_jobs UNION ALL "
            "SELECT created_at, id FROM public.image_jobs UNION ALL SELECT created_at, id FROM public.text_jobs) j "
            "ORDER BY created_at DESC, id DESC OFFSET %s LIMIT 1", (depth - 1,)).fetchone()
    if row is None:
        raise SystemExit(f"fewer than {depth} jobs visible to the bench user; use more --jobs or a smaller --depth")
    return Cursor(row[0], row[1]).encode()


def timed_sql(conninfo: str, user_id: uuid.UUID, statement: str, params: dict, repeat: int) -> float:
    with psycopg.connect(conninfo) as conn:
        samples = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            with conn.transaction():
                conn.execute(_SET_REQUEST_CONTEXT, ("authenticated", json.dumps(claims_for(user_id))))
                conn.execute(statement, params).fetchall()
            samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def timed_get(port: int, path: str, token: str, repeat: int) -> float:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port)
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        body = response.read()
        samples.append(time.perf_counter() - t0)
        if response.status != 200:
            raise SystemExit(f"GET {path} answered {response.status}: {body[:200]!r}")
    conn.close()
    return statistics.median(samples)


# ---- (b) throughput ----------------------------------------------------------------------

async def http_load(port: int, requests: list[bytes], seconds: float) -> float:
    """Requests/s from CONCURRENCY keep-alive connections, each cycling through `requests`."""
    deadline = time.perf_counter() + seconds
    done = 0

    async def worker(offset: int) -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = offset
        while time.perf_counter() < deadline:
            writer.write(requests[i % len(requests)])
            i += 1
            status = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            if not status.split()[1].startswith(b"2"):
                raise SystemExit(f"load request failed: {status!r}")
            done += 1
        writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(CONCURRENCY)))
    return done / (time.perf_counter() - t0)


async def sql_load(conninfo: str, statement: str, make_params, claims: list[dict], seconds: float) -> float:
    """The same transactions the API runs (role and claims set locally, one statement), raw."""
    deadline = time.perf_counter() + seconds
    done = 0

    async def worker(offset: int) -> None:
        nonlocal done
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            i = offset
            while time.perf_counter() < deadline:
                async with conn.transaction():
                    await conn.execute(_SET_REQUEST_CONTEXT, ("authenticated", json.dumps(claims[i % len(claims)])))
                    await (await conn.execute(statement, make_params())).fetchall()
                i += 1
                done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(CONCURRENCY)))
    return done / (time.perf_counter() - t0)


def http_request(method: str, path: str, token: str, body: bytes = b"") -> bytes:
    head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


class RssSampler:
    """Resident memory of the server: its supervisor and every worker process together."""

    def __init__(self, pid: int):
        self.process = psutil.Process(pid)
        self.peak_kib = 0

    def sample(self) -> int:
        kib = 0
        for process in [self.process, *self.process.children(recursive=True)]:
            try:
                kib += process.memory_info().rss // 1024
            except psutil.NoSuchProcess:
                pass
        self.peak_kib = max(self.peak_kib, kib)
        return kib

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.sample()
            await asyncio.sleep(0.2)


async def throughput(conninfo: str, port: int, tokens: list[str], claims: list[dict], seconds: float,
                     sampler: RssSampler) -> dict[str, float]:
    stop = asyncio.Event()
    sampling = asyncio.create_task(sampler.run(stop))
    body = json.dumps({"workflow_name": "img2img", "comfy_url": "http://comfy.local:8188",
                       "input_image_urls": ["in.png"], "prompt": "bench", "parameters": {}}).encode()
    results = {
        "feed_api": await http_load(port, [http_request("GET", "/api/feed?limit=50", t) for t in tokens], seconds),
        "create_api": await http_load(port, [http_request("POST", "/api/image-jobs", t, body) for t in tokens], seconds),
    }
    stop.set()
    await sampling
    feed_statement = feed_sql(("video", "image", "text"), FeedQuery().filter_key())
    feed_params = FeedQuery().params()
    results["feed_sql"] = await sql_load(conninfo, feed_statement, lambda: feed_params, claims, seconds)
    service = JobService(IMAGE)
    create_params = {c: None for c in service._create_columns}
    create_params.update({"workflow_name": "img2img", "comfy_url": "http://comfy.local:8188", "visibility": "private",
                          "parameters": psycopg.types.json.Jsonb({}), "input_image_urls": ["in.png"], "prompt": "bench"})
    results["create_sql"] = await sql_load(conninfo, service._sql["insert"], lambda: create_params, claims, seconds)
    return results


# ---- driver ------------------------------------------------------------------------------

def run_async(coroutine):
    """Drive the load generators on uvloop when installed, so that they take less of the CPU
    the server and PostgreSQL also need."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def start_server(conninfo: str, data_dir: str, port: int, workers: int) -> subprocess.Popen:
    """`genstudio serve` itself, as a user would run it, minus the access log."""
    env = {**os.environ, "DATABASE_URL": conninfo, "GENSTUDIO_JWT_SECRET": SECRET, "GENSTUDIO_DATA_DIR": data_dir,
           "GENSTUDIO_POOL_MAX": str(CONCURRENCY)}
    command = [sys.executable, "-m", "genstudio", "serve", "--no-migrate", "--no-access-log",
               "--workers", str(workers), "--port", str(port)]
    server = subprocess.Popen(command, env=env, cwd=Path(__file__).resolve().parents[1],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return server
        except OSError:
            if server.poll() is not None:
                raise SystemExit("the API server exited during start-up")
            time.sleep(0.1)
    server.kill()
    raise SystemExit("the API server did not start")


def run(conninfo: str, args: argparse.Namespace) -> None:
    Migrator(conninfo).upgrade()
    fill(conninfo, args.jobs, args.users)
    user_id = pick_user(conninfo)
    with psycopg.connect(conninfo) as conn:
        others = [r[0] for r in conn.execute("SELECT id FROM auth.users ORDER BY id LIMIT %s", (CONCURRENCY,))]
    issuer = TokenIssuer(SECRET, "authenticated", 3600)
    token = issuer.issue(user_id, "bench@example.com")
    tokens = [issuer.issue(u, "bench@example.com") for u in others]
    depth = args.depth or min(100_000, args.jobs // 4)

    port = free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        server = start_server(conninfo, data_dir, port, args.workers)
        try:
            sampler = RssSampler(server.pid)
            idle_kib = sampler.sample()
            cursor = cursor_at_depth(conninfo, user_id, depth)
            timed_get(port, "/api/feed?limit=50&scope=all", token, 20)  # warm up: prepared statements, caches
            first = timed_get(port, "/api/feed?limit=50&scope=all", token, args.repeat)
            deep = timed_get(port, f"/api/feed?limit=50&scope=all&cursor={cursor}", token, args.repeat)
            offset_first = timed_sql(conninfo, user_id, GUIDE_OFFSET_SQL, {"offset": 0}, max(3, args.repeat // 5))
            offset_deep = timed_sql(conninfo, user_id, GUIDE_OFFSET_SQL, {"offset": depth}, max(3, args.repeat // 5))
            rates = run_async(throughput(conninfo, port, tokens, [claims_for(u) for u in others],
                                         args.seconds, sampler))
            loaded_kib = sampler.sample()
        finally:
            server.terminate()
            server.wait(timeout=30)

    print(f"\n{args.jobs:,} jobs, {args.users:,} users, depth {depth:,}, concurrency {CONCURRENCY}, "
          f"{args.workers} server worker(s)")
    print("(a) feed latency, median of", args.repeat)
    print(f"    keyset  first page {first * 1e3:8.2f} ms   at depth {deep * 1e3:8.2f} ms   "
          f"ratio {deep / first:5.2f}x  (target <= 1.5x)")
    print(f"    guide OFFSET SQL   {offset_first * 1e3:8.2f} ms   at depth {offset_deep * 1e3:8.2f} ms   "
          f"ratio {offset_deep / offset_first:5.2f}x")
    print("(b) throughput, requests/s")
    print(f"    GET /api/feed?limit=50   API {rates['feed_api']:8.0f}   raw SQL {rates['feed_sql']:8.0f}   "
          f"ratio {rates['feed_api'] / rates['feed_sql']:4.2f}x  (target >= 0.5x)")
    print(f"    POST /api/image-jobs     API {rates['create_api']:8.0f}   raw SQL {rates['create_sql']:8.0f}   "
          f"ratio {rates['create_api'] / rates['create_sql']:4.2f}x  (target >= 0.4x)")
    print(f"(c) server RSS: idle {idle_kib / 1024:.0f} MiB, peak under load {sampler.peak_kib / 1024:.0f} MiB, "
          f"after {loaded_kib / 1024:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=30_000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--depth", type=int, default=0, help="feed depth for (a) [min(100000, jobs/4)]")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each throughput run")
    parser.add_argument("--repeat", type=int, default=50, help="samples per latency figure")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="`genstudio serve --workers` [one per core]")
    parser.add_argument("--admin-url", help="conninfo that may CREATE DATABASE [an embedded PostgreSQL]")
    args = parser.parse_args()

    server = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.admin_url:
            admin = args.admin_url
        else:
            server = EmbeddedPostgres(Path(tmp) / "pg")
            server.start()
            admin = server.conninfo("postgres")
        name = f"genstudio_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            run(make_conninfo(admin, dbname=name), args)
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            if server:
                server.stop()


if __name__ == "__main__":
    main()
