"""Benchmark of live job events: many SSE subscribers on one `genstudio serve`, beside the same
changes with nobody listening.

    python bench/bench_events.py                                   # the issue's size
    python bench/bench_events.py --subscribers 100 --seconds 10    # quick

It starts an embedded PostgreSQL in a temporary directory (or uses --admin-url, a conninfo
allowed to CREATE DATABASE; a scratch database is made there and dropped afterwards) and
`genstudio serve` (one process, no background services) on 127.0.0.1, then:

  1. baseline: a writer makes --rate job changes per second for --seconds with no subscriber
     (each change is one transaction, one event: a job created, started, advanced, completed,
     for three users and ownerless jobs, private and shared); server and PostgreSQL CPU time
     and the writer's commit latency are recorded;
  2. --subscribers SSE streams of `GET /api/feed/events?scope=all`, spread over the three
     users, from two client processes that read the raw sockets; the server's memory is read
     before and after they connect;
  3. the same changes again, with every subscriber listening.

It prints the latency from each change's commit to its receipt by every entitled subscriber
(p50, p95, max; the commit time is the event's `created_at`, stamped by the trigger inside
COMMIT, so the figure includes the commit itself), whether each subscriber received exactly
the events row-level security lets its user read (in order, none missing, none extra), the
server's memory per subscriber, and the CPU cost of delivery against the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psutil
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_api import admin_conninfo, cpu_seconds, process_tree, wait_until_listening  # noqa: E402  (bench/ is on sys.path: run as a script)
from genstudio.auth.tokens import TokenIssuer  # noqa: E402
from genstudio.db.migrator import Migrator  # noqa: E402

SECRET = "bench-secret-" + "x" * 40
ID_LINE = re.compile(rb"^id: (\d+)$", re.MULTILINE)
CLIENT_PROCESSES = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(conninfo: str, data_dir: str, port: int, workers: int) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": conninfo, "GENSTUDIO_JWT_SECRET": SECRET, "GENSTUDIO_DATA_DIR": data_dir,
           "GENSTUDIO_SSE_HEARTBEAT_SECONDS": "15"}
    command = [sys.executable, "-m", "genstudio", "serve", "--no-migrate", "--no-access-log", "--no-worker",
               "--workers", str(workers), "--port", str(port)]
    server = subprocess.Popen(command, env=env, cwd=Path(__file__).resolve().parents[1],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return wait_until_listening(server, port)


# ---- the writer --------------------------------------------------------------------------

# Each job goes through four changes, each its own transaction and its own event; none is
# coalesced (a progress event follows a status event). Visibility never changes during the
# run, so what a user may read at the end is what they were entitled to live.
STEPS = (
    "INSERT INTO public.image_jobs (id, user_id, workflow_name, comfy_url, visibility) "
    "VALUES (%(id)s, %(owner)s, 'bench', 'http://comfy.local:8188', %(visibility)s)",
    "UPDATE public.image_jobs SET status = 'processing' WHERE id = %(id)s",
    "UPDATE public.image_jobs SET progress = 50 WHERE id = %(id)s",
    "UPDATE public.image_jobs SET status = 'completed', output_image_urls = ARRAY['out.png'] WHERE id = %(id)s",
)


def write_changes(conninfo: str, owners: list[uuid.UUID | None], rate: float,
                  seconds: float) -> tuple[list[float], float]:
    """`rate` changes per second for `seconds`, paced; returns each commit's duration and the
    CPU time of the writer's PostgreSQL backend (which exits with the connection)."""
    commit_seconds = []
    with psycopg.connect(conninfo) as conn:
        backend = psutil.Process(conn.execute("SELECT pg_backend_pid()").fetchone()[0])
        conn.execute("SET ROLE service_role")
        conn.commit()
        created = 0

        def new_job() -> dict:
            nonlocal created
            created += 1
            return {"id": uuid.uuid4(), "owner": owners[created % len(owners)],
                    "visibility": "shared" if created % 3 == 0 else "private", "step": 0}

        in_flight = [new_job() for _ in range(4)]  # four jobs at a time, their changes interleaved
        started = time.perf_counter()
        for n in range(int(rate * seconds)):
            delay = started + n / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            job = in_flight[n % 4]
            if job["step"] == len(STEPS):
                job = in_flight[n % 4] = new_job()
            conn.execute(STEPS[job["step"]], job)
            job["step"] += 1
            before = time.perf_counter()
            conn.commit()
            commit_seconds.append(time.perf_counter() - before)
        backend_cpu = cpu_seconds([backend])
    return commit_seconds, backend_cpu


# ---- the subscribers ---------------------------------------------------------------------

def subscriber_process(port: int, tokens: list[tuple[int, str]], ready, go_home, results_path: str,
                       caught_up) -> None:
    """Opens one raw SSE stream per (user index, token) and records (event id, receipt time)."""
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_subscribe_all(port, tokens, ready, go_home, results_path, caught_up))


class StreamProtocol(asyncio.Protocol):
    """One SSE stream read straight off the socket (no StreamReader): the client must cost
    far less than the server, or the benchmark measures the client."""

    def __init__(self, request: bytes):
        self.request = request
        self.received: list[tuple[int, float]] = []
        self.connected = asyncio.get_running_loop().create_future()
        self.headers_done = False
        self.tail = b""

    def connection_made(self, transport: asyncio.Transport) -> None:
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        text = self.tail + data
        if not self.headers_done:
            end = text.find(b"\r\n\r\n")
            if end < 0:
                self.tail = text
                return
            if b" 200 " not in text[:text.find(b"\r\n")]:
                self.connected.set_exception(RuntimeError(text[:200].decode(errors="replace")))
                return
            self.headers_done = True
            self.connected.set_result(None)
            text = text[end + 4:]
        # Only the `id:` lines matter; a line cut between two reads is kept for the next.
        cut = text.rfind(b"\n") + 1
        self.tail = text[cut:]
        for match in ID_LINE.finditer(text, 0, cut):
            self.received.append((int(match[1]), now))

    def connection_lost(self, exc) -> None:
        if not self.connected.done():
            self.connected.set_exception(ConnectionError("closed before the stream started"))


async def _subscribe_all(port: int, tokens: list[tuple[int, str]], ready, go_home, results_path: str,
                         caught_up) -> None:
    loop = asyncio.get_running_loop()
    streams: list[StreamProtocol] = []
    transports = []
    for index, (_, token) in enumerate(tokens):
        request = (f"GET /api/feed/events?scope=all HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
                   f"Authorization: Bearer {token}\r\n\r\n").encode()
        transport, protocol = await loop.create_connection(lambda: StreamProtocol(request), "127.0.0.1", port)
        streams.append(protocol)
        transports.append(transport)
        if index % 50 == 49:
            await asyncio.sleep(0.05)  # do not stampede the accept queue
    await asyncio.gather(*(s.connected for s in streams))
    ready.set()
    while not go_home.is_set():
        # The newest id every stream of this process has.
        caught_up.value = min((s.received[-1][0] if s.received else 0) for s in streams)
        await asyncio.sleep(0.1)
    for transport in transports:
        transport.close()
    with open(results_path, "w") as out:
        json.dump([{"user": user, "received": streams[i].received} for i, (user, _) in enumerate(tokens)], out)


# ---- measuring ---------------------------------------------------------------------------

def memory(server: psutil.Process) -> int:
    total = 0
    for process in process_tree(server):
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def postgres_cpu(postmaster: psutil.Process | None) -> dict[int, float]:
    """CPU seconds of the server and each of its backends, by pid."""
    if postmaster is None:
        return {}
    processes = [postmaster]
    try:
        processes += postmaster.children(recursive=True)
    except psutil.Error:
        pass
    return {p.pid: cpu_seconds([p]) for p in processes}


def find_postmaster(conninfo: str) -> psutil.Process | None:
    with psycopg.connect(conninfo) as conn:
        data_dir = conn.execute("SHOW data_directory").fetchone()[0]
    try:
        return psutil.Process(int((Path(data_dir) / "postmaster.pid").read_text().splitlines()[0]))
    except (OSError, ValueError, psutil.Error):
        return None  # not on this machine (--admin-url elsewhere) or not readable


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def readable_ids(conninfo: str, user_id: uuid.UUID, after: int) -> list[int]:
    claims = json.dumps({"sub": str(user_id), "role": "authenticated"})
    with psycopg.connect(conninfo) as conn:
        conn.execute("SELECT set_config('role', 'authenticated', true), set_config('request.jwt.claims', %s, true)",
                     (claims,))
        return [r[0] for r in conn.execute("SELECT id FROM public.job_events WHERE id > %s ORDER BY id", (after,))]


def event_times(conninfo: str, after: int) -> dict[int, float]:
    with psycopg.connect(conninfo) as conn:
        return {i: t for i, t in conn.execute(
            "SELECT id, extract(epoch FROM created_at)::float8 FROM public.job_events WHERE id > %s", (after,))}


def last_shared_event_id(conninfo: str) -> int:
    with psycopg.connect(conninfo) as conn:
        return conn.execute("SELECT coalesce(max(e.id), 0) FROM public.job_events e JOIN public.image_jobs j "
                            "ON j.id = e.job_id WHERE j.visibility = 'shared' OR j.user_id IS NULL").fetchone()[0]


def max_event_id(conninfo: str) -> int:
    with psycopg.connect(conninfo) as conn:
        return conn.execute("SELECT coalesce(max(id), 0) FROM public.job_events").fetchone()[0]


def timed_run(conninfo: str, owners, rate: float, seconds: float, postmaster: psutil.Process | None,
              server: psutil.Process) -> dict:
    cpu_before = {"server": cpu_seconds(process_tree(server)), "postgres": postgres_cpu(postmaster)}
    peak_rss = [memory(server)]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.25):
            peak_rss.append(memory(server))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    commits, writer_cpu = write_changes(conninfo, owners, rate, seconds)
    elapsed = time.perf_counter() - started
    stop.set()
    sampler.join()
    after = postgres_cpu(postmaster)
    # Backends that started during the run count whole; the writer's own has exited.
    pg = writer_cpu + sum(cpu - cpu_before["postgres"].get(pid, 0.0) for pid, cpu in after.items())
    return {"commits": commits, "elapsed": elapsed, "peak_rss": max(peak_rss),
            "server_cpu": cpu_seconds(process_tree(server)) - cpu_before["server"], "postgres_cpu": pg}


def run(conninfo: str, args: argparse.Namespace) -> None:
    Migrator(conninfo).upgrade()
    issuer = TokenIssuer(SECRET, "authenticated", 4 * 3600)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        users = [conn.execute("INSERT INTO auth.users (email) VALUES (%s) RETURNING id", (f"bench{i}@example.com",)).fetchone()[0]
                 for i in range(3)]
    owners = [*users, None]  # and ownerless (legacy) jobs, which everyone sees
    tokens = [issuer.issue(u, f"bench{i}@example.com") for i, u in enumerate(users)]

    with tempfile.TemporaryDirectory() as data_dir:
        port = free_port()
        process = start_server(conninfo, data_dir, port, args.workers)
        server = psutil.Process(process.pid)
        watched = find_postmaster(conninfo)
        try:
            time.sleep(1.0)
            print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start "
                  "(shared with other work: figures are indicative); "
                  f"genstudio serve --workers {args.workers}")
            print(f"baseline: {args.rate:g} changes/s for {args.seconds:g} s, no subscriber ...")
            baseline = timed_run(conninfo, owners, args.rate, args.seconds, watched, server)

            rss_idle = memory(server)
            assignments = [(i % 3, tokens[i % 3]) for i in range(args.subscribers)]
            ctx = multiprocessing.get_context("spawn")
            ready_events, go_home, progress = [], ctx.Event(), []
            children, result_files = [], []
            for k in range(CLIENT_PROCESSES):
                share = assignments[k::CLIENT_PROCESSES]
                ready = ctx.Event()
                path = os.path.join(data_dir, f"received{k}.json")
                caught_up = ctx.Value("q", 0)
                progress.append(caught_up)
                child = ctx.Process(target=subscriber_process, args=(port, share, ready, go_home, path, caught_up))
                child.start()
                children.append(child)
                ready_events.append(ready)
                result_files.append(path)
            connect_started = time.perf_counter()
            for ready, child in zip(ready_events, children):
                while not ready.wait(0.5):
                    if not child.is_alive():
                        raise SystemExit("a subscriber process failed to connect")
            connect_seconds = time.perf_counter() - connect_started
            time.sleep(2.0)  # let every stream reach its subscription
            rss_subscribed = memory(server)
            print(f"{args.subscribers} subscribers connected in {connect_seconds:.1f} s; "
                  f"{args.rate:g} changes/s for {args.seconds:g} s ...")
            start_id = max_event_id(conninfo)
            loaded = timed_run(conninfo, owners, args.rate, args.seconds, watched, server)
            # Until every stream has the last event everyone is entitled to (a shared or ownerless
            # job's), or 60 s.
            last_for_all = last_shared_event_id(conninfo)
            deadline = time.monotonic() + 60
            while any(p.value < last_for_all for p in progress) and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)
            go_home.set()
            for child in children:
                child.join(timeout=60)
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()

        subscriptions = []
        for path in result_files:
            with open(path) as f:
                subscriptions += json.load(f)

    expected = {u: readable_ids(conninfo, users[u], start_id) for u in range(3)}
    committed_at = event_times(conninfo, start_id)
    latencies, exact, short, extra = [], 0, 0, 0
    for sub in subscriptions:
        got = [i for i, _ in sub["received"]]
        want = expected[sub["user"]]
        if got == want:
            exact += 1
        else:
            short += len(set(want) - set(got))
            extra += len(got) - len(set(got) & set(want))
        latencies += [(t - committed_at[i]) * 1000 for i, t in sub["received"] if i in committed_at]

    def commit_ms(run_: dict) -> str:
        c = [s * 1000 for s in run_["commits"]]
        return f"p50 {statistics.median(c):.1f} ms, p95 {percentile(c, 95):.1f} ms"

    n = args.subscribers
    total_events = len(committed_at)
    print()
    print(f"events written: {total_events} in {loaded['elapsed']:.1f} s "
          f"({total_events / loaded['elapsed']:.1f}/s); per user entitled: "
          + ", ".join(str(len(expected[u])) for u in range(3)))
    print(f"deliveries: {len(latencies):,} to {n} subscribers "
          f"({len(latencies) / loaded['elapsed']:,.0f}/s)")
    print(f"commit -> receipt latency: p50 {statistics.median(latencies):.1f} ms, "
          f"p95 {percentile(latencies, 95):.1f} ms, max {max(latencies):.1f} ms (target p95 <= 100 ms)")
    print(f"received == entitled (row-level security) for {exact}/{n} subscribers; "
          f"missing {short}, extra or duplicated {extra}")
    print(f"server memory: {rss_idle / 2**20:.1f} MiB before subscribers, {rss_subscribed / 2**20:.1f} MiB with "
          f"{n} idle, peak {loaded['peak_rss'] / 2**20:.1f} MiB under load; "
          f"{(rss_subscribed - rss_idle) / n / 1024:.1f} KiB per subscriber idle, "
          f"{(loaded['peak_rss'] - rss_idle) / n / 1024:.1f} KiB under load")
    print(f"server CPU: {loaded['server_cpu']:.1f} s with subscribers vs {baseline['server_cpu']:.1f} s without "
          f"(delivery costs {(loaded['server_cpu'] - baseline['server_cpu']) / loaded['elapsed'] * 100:.0f}% of a core "
          f"= {(loaded['server_cpu'] - baseline['server_cpu']) / max(1, len(latencies)) * 1e6:.0f} us per delivery)")
    if watched:
        print(f"PostgreSQL CPU: {loaded['postgres_cpu']:.1f} s with subscribers vs {baseline['postgres_cpu']:.1f} s "
              f"without (x{loaded['postgres_cpu'] / max(baseline['postgres_cpu'], 1e-9):.2f}; the listener reads "
              "each batch of events once, whatever the number of subscribers)")
    print(f"writer commit latency: {commit_ms(loaded)} with subscribers vs {commit_ms(baseline)} without")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=50.0, help="job changes per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=1, help="`serve --workers N` (default 1, serve's own default)")
    parser.add_argument("--admin-url", help="conninfo that may CREATE DATABASE [an embedded PostgreSQL]")
    args = parser.parse_args()

    with admin_conninfo(args.admin_url) as admin:
        name = f"genstudio_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            run(make_conninfo(admin, dbname=name), args)
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

if __name__ == "__main__":
    main()
