"""Benchmark of the jobs API against PostgreSQL itself, each number beside a baseline from the same run.

    python bench/bench_api.py                                # quick: 30,000 jobs
    python bench/bench_api.py --jobs 300000                   # the size to iterate at
    python bench/bench_api.py --jobs 1000000 --users 1000     # the issue's size

It starts an embedded PostgreSQL in a temporary directory (or uses --admin-url, a conninfo
allowed to CREATE DATABASE; scratch databases are made there and dropped afterwards) and fills
two studios with INSERT ... SELECT generate_series:

  dense   --users users; a fifth of the jobs ownerless (legacy), of the rest ~30% shared;
  sparse  1,000 users who each share 1% of their jobs, nothing ownerless.

It then measures:

  (a) throughput of feed, list, get-by-id, create and complete: `genstudio serve --workers
      <cores>` on 127.0.0.1 driven by `wrk` (a C load generator, so it does not compete with
      the server for the GIL) against `pgbench` (PostgreSQL's own C client, shipped with the
      embedded server's binaries) running the very transaction the API sends for that
      request: the same statements with the same parameters, the same role switch and claims,
      the same batching into round trips, as prepared statements (-M prepared), at the same
      concurrency. Each pair is measured --rounds times, interleaved; the table shows the
      median ratio and its range.
  (b) depth: the statement of a page at depth N (a keyset cursor at the Nth newest job of the
      studio) against the first page, with the index entries each one read (EXPLAIN ANALYZE),
      for the dense feed, the sparse feed (scope=all) and the sparse list with scope=mine and
      a workflow filter; beside the guide-style OFFSET query at the same depth.
  (c) total_count: the list statement at scope=all with each counting choice.
  (d) the server's resident memory under load.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from genstudio.auth.tokens import TokenIssuer  # noqa: E402
from genstudio.db.embedded import EmbeddedPostgres, wheel_install_dir  # noqa: E402
from genstudio.db.migrator import Migrator  # noqa: E402
from genstudio.db.pool import SET_PAGE_READ_CONTEXT, SET_REQUEST_CONTEXT, request_batches  # noqa: E402
from genstudio.jobs.cursor import Cursor  # noqa: E402
from genstudio.jobs.feed import FeedQuery, feed_statement  # noqa: E402
from genstudio.jobs.models import MODELS  # noqa: E402
from genstudio.jobs.output_types import IMAGE  # noqa: E402
from genstudio.jobs.service import ESTIMATED_COUNT_CAP, JobService, PageQuery  # noqa: E402

SECRET = "bench-secret-" + "x" * 40
CONCURRENCY = 16
PAGE = 50
TARGETS = {"feed": 0.6, "create": 0.5}  # the issue's; the others are reported
DEPTH_TARGET = 1.5

# ---- filling the studios -------------------------------------------------------------------

FILL_USERS_SQL = """
INSERT INTO auth.users (email) SELECT 'bench' || g || '@example.com' FROM generate_series(1, {users}) g;
CREATE TEMP TABLE bench_users AS SELECT array_agg(id ORDER BY id) AS ids FROM auth.users;
"""

# One table's share of the jobs, created over the past year, a handful of workflows and statuses.
FILL_TABLE_SQL = """
INSERT INTO public.{table} (user_id, workflow_name, status, created_at, comfy_url, parameters, visibility)
SELECT CASE WHEN r.o < %(ownerless)s THEN NULL ELSE u.ids[1 + floor(r.u * array_length(u.ids, 1))::int] END,
       (ARRAY['wf-a', 'wf-b', 'wf-c', 'wf-d'])[1 + g %% 4],
       (ARRAY['completed', 'completed', 'completed', 'failed', 'pending'])[1 + g %% 5],
       now() - interval '1 day' - r.age * interval '365 days',
       'http://comfy.local:8188', '{{"seed": 1}}'::jsonb,
       CASE WHEN r.s < %(shared)s THEN 'shared' ELSE 'private' END
FROM generate_series(1, %(n)s) g, bench_users u,
     LATERAL (SELECT random() AS o, random() AS u, random() AS s, random() AS age, g AS keep) r
"""


@dataclass(frozen=True)
class Studio:
    name: str
    users: int
    ownerless: float
    shared: float


def fill(conninfo: str, studio: Studio, jobs: int) -> None:
    started = time.perf_counter()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(FILL_USERS_SQL.format(users=int(studio.users)))
        per_table = jobs // 3
        for i, table in enumerate(("video_jobs", "image_jobs", "text_jobs")):
            n = per_table + (jobs - 3 * per_table if i == 0 else 0)
            conn.execute(FILL_TABLE_SQL.format(table=table),
                         {"n": n, "ownerless": studio.ownerless, "shared": studio.shared})
        conn.execute("VACUUM ANALYZE public.video_jobs, public.image_jobs, public.text_jobs, auth.users")
    print(f"filled the {studio.name} studio: {jobs:,} jobs, {studio.users:,} users, "
          f"{studio.ownerless:.0%} ownerless, {studio.shared:.0%} shared, in {time.perf_counter() - started:.0f} s",
          flush=True)


def pick_user(conninfo: str) -> uuid.UUID:
    """A user with an ordinary number of jobs: the median owner."""
    with psycopg.connect(conninfo) as conn:
        return conn.execute(
            "SELECT user_id FROM (SELECT user_id, count(*) AS n FROM public.image_jobs WHERE user_id IS NOT NULL "
            "GROUP BY user_id) c ORDER BY n, user_id OFFSET (SELECT count(DISTINCT user_id) / 2 FROM public.image_jobs) "
            "LIMIT 1").fetchone()[0]


def claims_for(user_id: uuid.UUID) -> dict:
    return {"sub": str(user_id), "role": "authenticated", "aud": "authenticated", "exp": int(time.time()) + 7200}


# ---- the transactions the API runs ---------------------------------------------------------

@dataclass
class Endpoint:
    """One API request and the database work it does, for wrk and pgbench alike."""

    name: str
    method: str
    path: str  # for `complete`, a format string of the job number
    statements: list[tuple[str, dict[str, Any]]]  # in order, as the service runs them
    body: bytes = b""
    per_request_job: bool = False  # each request completes another pending job
    per_statement: bool = True  # run per_statement_as_user (each statement its own round trip), else as_user
    context: str = SET_REQUEST_CONTEXT  # the statement that sets role and claims

    @property
    def label(self) -> str:
        return f"{self.method} {self.path.replace('{job}', '{id}')}"


COMPLETE_PATH = "/api/image-jobs/{job}/complete"
COMPLETE_BODY = {"status": "completed", "output_image_urls": ["/files/image/img2img/bench.png"],
                 "comfyui_output_filename": "bench.png"}
CREATE_BODY = {"workflow_name": "img2img", "comfy_url": "http://comfy.local:8188",
               "input_image_urls": ["in.png"], "prompt": "bench", "parameters": {}}


def job_uuid(n: int) -> str:
    """The id of the n-th pending job made for the `complete` runs (wrk and pgbench agree on it)."""
    return f"00000000-0000-4000-8000-{n:012d}"


JOB_UUID_SQL = "('00000000-0000-4000-8000-' || lpad(:job::text, 12, '0'))::uuid"


def endpoints(conninfo: str, user_id: uuid.UUID) -> list[Endpoint]:
    service = JobService(IMAGE)
    with psycopg.connect(conninfo) as conn:
        own_job = conn.execute("SELECT id FROM public.image_jobs WHERE user_id = %s LIMIT 1", (user_id,)).fetchone()[0]

    feed = FeedQuery(limit=PAGE, scope="all")
    page = PageQuery(limit=PAGE, scope="all")
    create_payload = MODELS[IMAGE.name].create(**CREATE_BODY)
    results = {k: v for k, v in COMPLETE_BODY.items() if k != "status"}
    return [
        Endpoint("feed", "GET", f"/api/feed?limit={PAGE}&scope=all", [feed_statement(feed)],
                 context=SET_PAGE_READ_CONTEXT),
        Endpoint("list", "GET", f"/api/image-jobs?limit={PAGE}&scope=all",
                 list_statements(conninfo, user_id, service, page), context=SET_PAGE_READ_CONTEXT),
        Endpoint("get", "GET", f"/api/image-jobs/{own_job}", [service.statement("get", {"id": own_job})]),
        Endpoint("create", "POST", "/api/image-jobs", [service.insert_statement(create_payload)],
                 json.dumps(CREATE_BODY).encode()),
        Endpoint("complete", "PUT", COMPLETE_PATH,
                 [service.statement("lock_own", {"id": "$job"}),
                  service.finish_statement("$job", "completed", results)],
                 json.dumps(COMPLETE_BODY).encode(), per_request_job=True, per_statement=False),
    ]


def list_statements(conninfo: str, user_id: uuid.UUID, service: JobService, query: PageQuery) -> list:
    """The list statement, and after it the EXPLAIN the API adds when the page's count is the
    planner's estimate (`estimated`, more matching jobs than the cap)."""
    statements = [service.list_statement(query)]
    with psycopg.connect(conninfo) as conn, conn.transaction():
        conn.execute(SET_PAGE_READ_CONTEXT, {"role": "authenticated", "claims": json.dumps(claims_for(user_id))})
        counted = conn.execute(*statements[0]).fetchone()[1]
    if query.count == "planned" or (query.count == "estimated" and counted > ESTIMATED_COUNT_CAP):
        statements.append(service.plan_count_statement(query))
    return statements


# ---- pgbench -------------------------------------------------------------------------------

def find_pgbench() -> str:
    path = wheel_install_dir() / "bin" / "pgbench"
    if not path.exists():
        raise SystemExit(f"pgbench not found at {path}")
    return str(path)


_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%%")


def pgbench_value(value: Any) -> str:
    if isinstance(value, Jsonb):
        return json.dumps(value.obj)
    if isinstance(value, (list, tuple)):
        return "{" + ",".join('"' + str(v).replace('"', '\\"') + '"' for v in value) + "}"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def pgbench_statement(statement: str, params: dict[str, Any], variables: dict[str, str], prefix: str) -> str:
    """psycopg's `%(name)s` placeholders as pgbench variables (bound as parameters under
    -M prepared); a None is the literal NULL, which pgbench variables cannot carry, and an
    int is cast as psycopg types it."""

    def replace(match: re.Match) -> str:
        if match.group(0) == "%%":
            return "%"
        value = params[match.group(1)]
        if value is None:
            return "NULL"
        if value == "$job":
            return JOB_UUID_SQL
        name = f"{prefix}{match.group(1)}"
        variables[name] = pgbench_value(value)
        # psycopg sends a Python int typed; pgbench's parameters are untyped text.
        return f":{name}::int8" if isinstance(value, int) else f":{name}"

    return _pgbench_literals(_PLACEHOLDER.sub(replace, statement))


# String literals, comments and quoted identifiers, found from the left, each whole.
_SQL_TOKEN = re.compile(r"(?:[EeUu]&?)?'(?:[^']|'')*'|--[^\n]*|\"(?:[^\"]|\"\")*\"")


def _pgbench_literals(statement: str) -> str:
    """The same statement with each plain string literal that holds `:name`, which pgbench
    would take for one of its variables (`'{"success":true,...'`, `'HH24:MI:SS'`), written as
    a Unicode-escape literal (U&'...\\003A...'), which pgbench leaves alone and PostgreSQL
    reads as the same text."""
    def escape(match: re.Match) -> str:
        token = match.group(0)
        if not token.startswith("'") or not re.search(r":[A-Za-z_]", token):
            return token
        return "U&" + token.replace("\\", "\\005C").replace(":", "\\003A")

    return _SQL_TOKEN.sub(escape, statement)


def pgbench_script(endpoint: Endpoint, claims: dict, *, one_statement_per_round_trip: bool = False
                   ) -> tuple[str, dict[str, str]]:
    """The endpoint's transaction as pgbench commands, batched into round trips exactly as
    genstudio.db.pool sends them (`request_batches`); or, with `one_statement_per_round_trip`,
    as BEGIN, role and claims, the statements, COMMIT, each waited for (how the issue first
    measured the baseline, and how the API sent it before it pipelined)."""
    variables: dict[str, str] = {"claims": json.dumps(claims)}
    context = pgbench_statement(endpoint.context, {"role": "authenticated", "claims": "x"}, {}, "")
    statements = [pgbench_statement(s, p, variables, f"s{i}_") for i, (s, p) in enumerate(endpoint.statements)]
    lines = []
    if endpoint.per_request_job:
        lines += ["\\set i :i + 1", "\\set job :base + :client_id * :slots + :i"]
    batches = request_batches(context, statements, per_statement=endpoint.per_statement)
    if one_statement_per_round_trip:
        batches = [[s] for s in ["BEGIN", context, *statements, "COMMIT"]]
    for batch in batches:
        pipelined = len(batch) > 1
        if pipelined:
            lines.append("\\startpipeline")
        lines += [s.rstrip().rstrip(";") + ";" for s in batch]
        if pipelined:
            lines.append("\\endpipeline")
    variables["role"] = "authenticated"
    return "\n".join(lines) + "\n", variables


def run_pgbench(pgbench: str, conninfo: str, script: str, variables: dict[str, str], seconds: float,
                workdir: Path) -> tuple[float, int]:
    path = workdir / "script.sql"
    path.write_text(script)
    command = [pgbench, "-n", "-M", "prepared", "-c", str(CONCURRENCY), "-j", "1", "-T", str(int(seconds)),
               "-f", str(path)]
    for name, value in variables.items():
        command += ["-D", f"{name}={value}"]
    result = subprocess.run(command + [conninfo], capture_output=True, text=True)
    match = re.search(r"tps = ([\d.]+) \(without initial connection time\)", result.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", result.stdout)
    if result.returncode != 0 or match is None or (failed and int(failed.group(1))):
        raise SystemExit(f"pgbench failed:\n{script}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    done = int(re.search(r"number of transactions actually processed: (\d+)", result.stdout).group(1))
    return float(match.group(1)), done


# ---- wrk -----------------------------------------------------------------------------------

def find_wrk() -> str:
    """wrk from Debian; installed with apt-get when missing (as root), else a clear stop."""
    path = shutil.which("wrk")
    if path:
        return path
    if shutil.which("apt-get") and os.geteuid() == 0:
        print("installing wrk with apt-get ...", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        path = shutil.which("wrk")
        if path:
            return path
    raise SystemExit("this benchmark needs wrk (a C HTTP load generator): apt-get install wrk, "
                     "or put a wrk binary on PATH")


WRK_SCRIPT = """
local token = "{token}"
local body = {body}
local path = "{path}"
local method = "{method}"
local counter = 0
local base = {base}
wrk.headers["Authorization"] = "Bearer " .. token
wrk.headers["Content-Type"] = "application/json"
request = function()
  local p = path
  if {per_request_job} then
    counter = counter + 1
    p = string.gsub(path, "{{job}}", string.format("00000000-0000-4000-8000-%012d", base + counter))
  end
  return wrk.format(method, p, nil, body)
end
"""


def lua_string(data: bytes) -> str:
    return "nil" if not data else '"' + data.decode().replace("\\", "\\\\").replace('"', '\\"') + '"'


def run_wrk(wrk: str, port: int, endpoint: Endpoint, token: str, seconds: float, base: int,
            workdir: Path) -> tuple[float, int]:
    path = workdir / "script.lua"
    path.write_text(WRK_SCRIPT.format(token=token, body=lua_string(endpoint.body), path=endpoint.path,
                                      method=endpoint.method, base=base,
                                      per_request_job="true" if endpoint.per_request_job else "false"))
    result = subprocess.run([wrk, "-t1", f"-c{CONCURRENCY}", f"-d{int(seconds)}s", "-s", str(path),
                             f"http://127.0.0.1:{port}/"], capture_output=True, text=True)
    match = re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)
    if result.returncode != 0 or match is None:
        raise SystemExit(f"wrk failed: {result.stdout}\n{result.stderr}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", result.stdout)
    errors = re.search(r"Socket errors: (.*)", result.stdout)
    if bad or errors:
        raise SystemExit(f"{endpoint.label}: requests failed under load:\n{result.stdout}")
    return float(match.group(1)), int(re.search(r"(\d+) requests in", result.stdout).group(1))


# ---- the `complete` runs need pending jobs, one per request ----------------------------------

def make_pending_jobs(conninfo: str, user_id: uuid.UUID, numbers: range) -> None:
    """Pending jobs of the bench user with ids job_uuid(n), created long ago so that no page
    the other endpoints read changes."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO public.image_jobs (id, user_id, workflow_name, status, created_at, comfy_url, parameters) "
            "SELECT ('00000000-0000-4000-8000-' || lpad(n::text, 12, '0'))::uuid, %s, 'img2img', 'pending', "
            "'2001-01-01'::timestamptz + n * interval '1 ms', 'http://comfy.local:8188', '{}'::jsonb "
            "FROM generate_series(%s::bigint, %s::bigint) n", (user_id, numbers.start, numbers.stop - 1))


def completed_in(conninfo: str, numbers: range) -> int:
    with psycopg.connect(conninfo) as conn:
        return conn.execute(
            "SELECT count(*) FROM public.image_jobs WHERE status = 'completed' AND id BETWEEN %s AND %s",
            (job_uuid(numbers.start), job_uuid(numbers.stop - 1))).fetchone()[0]


# ---- the server ------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(conninfo: str, data_dir: str, port: int, workers: int, extra: list[str]) -> subprocess.Popen:
    """`genstudio serve` itself, as a user would run it, minus the access log and the
    background services (which are not what is measured here)."""
    env = {**os.environ, "DATABASE_URL": conninfo, "GENSTUDIO_JWT_SECRET": SECRET, "GENSTUDIO_DATA_DIR": data_dir,
           "GENSTUDIO_POOL_MAX": str(CONCURRENCY)}
    command = [sys.executable, "-m", "genstudio", "serve", "--no-migrate", "--no-access-log", "--no-worker",
               "--workers", str(workers), "--port", str(port), *extra]
    server = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return wait_until_listening(server, port)


def wait_until_listening(server: subprocess.Popen, port: int) -> subprocess.Popen:
    """Return `server` once it accepts connections on `port`; exit the bench if it never does."""
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


class RssSampler:
    """Resident memory of the server: its supervisor and every worker process together."""

    def __init__(self, pid: int):
        self.process = psutil.Process(pid)
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        kib = 0
        for process in [self.process, *self.process.children(recursive=True)]:
            try:
                kib += process.memory_info().rss // 1024
            except psutil.NoSuchProcess:
                pass
        self.peak_kib = max(self.peak_kib, kib)
        return kib

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.sample()

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def worker_pids(server: subprocess.Popen) -> list[int]:
    """The processes of `serve --workers N` (not multiprocessing's resource tracker)."""
    return [p.pid for p in psutil.Process(server.pid).children(recursive=True) if "spawn_main" in " ".join(p.cmdline())]


@contextmanager
def admin_conninfo(admin_url: str | None) -> Iterator[str]:
    """A conninfo allowed to CREATE DATABASE: `admin_url`, or a throwaway embedded PostgreSQL
    in a temporary directory, stopped afterwards."""
    if admin_url:
        yield admin_url
        return
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o711)  # as root the server's account must reach its data (README: as root)
        server = EmbeddedPostgres(Path(tmp) / "pg")
        server.start()
        try:
            yield server.conninfo("postgres")
        finally:
            server.stop()


# ---- CPU accounting ----------------------------------------------------------------------------

def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def process_tree(server: psutil.Process) -> list[psutil.Process]:
    """`serve` and, with --workers N, its worker processes."""
    try:
        return [server, *server.children(recursive=True)]
    except psutil.Error:
        return [server]


class CpuMeter:
    """CPU seconds (user + system) spent by PostgreSQL, the API server and the load generators.

    Throughput on a machine shared with other work depends on the share of the cores each
    side gets; the CPU each request costs does not, so it is reported beside it. PostgreSQL's
    backends come and go with their connections: the postmaster's own time plus the time of
    its reaped children plus that of the live ones counts every backend exactly once."""

    def __init__(self, conninfo: str, server: subprocess.Popen | None):
        with psycopg.connect(conninfo) as conn:
            backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
            self.postmaster = psutil.Process(backend).parent()
        self.server = psutil.Process(server.pid) if server else None

    def _postgres(self) -> float:
        times = self.postmaster.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        return total + cpu_seconds(self.postmaster.children())

    def _server(self) -> float:
        return cpu_seconds(process_tree(self.server)) if self.server is not None else 0.0

    @staticmethod
    def _load_generators() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # pgbench and wrk, once they exited
        return usage.ru_utime + usage.ru_stime

    def sample(self) -> tuple[float, float, float]:
        return self._postgres(), self._server(), self._load_generators()

    def backends(self) -> int:
        return len(self.postmaster.children())

    def settled(self, backends: int) -> tuple[float, float, float]:
        """A sample once the postmaster is back to `backends` children: the backends of a
        pgbench run that just ended exit after it, and a backend reaped while the sample is
        taken would be counted in neither the live nor the reaped times."""
        deadline = time.monotonic() + 10
        while self.backends() > backends and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.sample()

    @staticmethod
    def spent(before: tuple[float, float, float], after: tuple[float, float, float]) -> float:
        return sum(a - b for a, b in zip(after, before))


# ---- (a) throughput --------------------------------------------------------------------------

@dataclass
class Pair:
    api: list[float] = field(default_factory=list)  # requests/s
    pgbench: list[float] = field(default_factory=list)  # transactions/s
    pgbench_per_statement: list[float] = field(default_factory=list)  # tps, one round trip per statement
    api_cpu: list[float] = field(default_factory=list)  # CPU µs per request, everything included
    pgbench_cpu: list[float] = field(default_factory=list)  # CPU µs per transaction

    @property
    def ratios(self) -> list[float]:
        return [a / b for a, b in zip(self.api, self.pgbench)]

    @property
    def cpu_ratios(self) -> list[float]:
        """pgbench's CPU per transaction / the API's per request: the throughput ratio the two
        would have on cores of their own."""
        return [p / a for a, p in zip(self.api_cpu, self.pgbench_cpu)]


def throughput(conninfo: str, port: int, user_id: uuid.UUID, token: str, args: argparse.Namespace,
               server: subprocess.Popen) -> dict[str, Pair]:
    pgbench, wrk = find_pgbench(), find_wrk()
    claims = claims_for(user_id)
    table = {e.name: Pair() for e in endpoints(conninfo, user_id)}
    meter = CpuMeter(conninfo, server)
    slots = int(400 * args.seconds)  # pending jobs per pgbench client and round: up to 6,400 completions/s
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for round_ in range(args.rounds):
            for endpoint in endpoints(conninfo, user_id):
                if args.only and endpoint.name not in args.only:
                    continue
                script, variables = pgbench_script(endpoint, claims)
                base_pgbench, base_wrk = (2 * round_ + 1) * 10**9, (2 * round_ + 2) * 10**9
                if endpoint.per_request_job:
                    pgbench_jobs = range(base_pgbench + 1, base_pgbench + CONCURRENCY * slots + 1)
                    wrk_jobs = range(base_wrk + 1, base_wrk + CONCURRENCY * slots + 1)
                    make_pending_jobs(conninfo, user_id, pgbench_jobs)
                    make_pending_jobs(conninfo, user_id, wrk_jobs)
                    variables.update(i="0", base=str(base_pgbench), slots=str(slots))
                backends, before = meter.backends(), meter.sample()
                tps, transactions = run_pgbench(pgbench, conninfo, script, variables, args.seconds, workdir)
                pgbench_cpu = CpuMeter.spent(before, meter.settled(backends)) / transactions * 1e6
                classic_script, classic_variables = pgbench_script(endpoint, claims, one_statement_per_round_trip=True)
                if endpoint.per_request_job:
                    classic_variables.update(i=str(slots // 2), base=str(base_pgbench), slots=str(slots))
                classic_tps, _ = run_pgbench(pgbench, conninfo, classic_script, classic_variables, args.seconds / 2,
                                             workdir)
                profiles = []
                if args.profile and round_ == 0:
                    profiles = start_profiles(server, Path(args.profile), endpoint.name, args.seconds)
                before = meter.settled(backends)  # the second pgbench run's backends gone too
                rate, requests = run_wrk(wrk, port, endpoint, token, args.seconds, base_wrk, workdir)
                api_cpu = CpuMeter.spent(before, meter.sample()) / requests * 1e6
                for profile in profiles:
                    profile.wait()
                if endpoint.per_request_job:
                    done_pgbench, done_wrk = completed_in(conninfo, pgbench_jobs), completed_in(conninfo, wrk_jobs)
                    if done_pgbench < transactions or done_wrk < 0.99 * requests:
                        raise SystemExit(f"complete: pgbench completed {done_pgbench} jobs in {transactions} "
                                         f"transactions, the API {done_wrk} in {requests} requests: some found no "
                                         "pending job")
                pair = table[endpoint.name]
                pair.api.append(rate)
                pair.pgbench.append(tps)
                pair.pgbench_per_statement.append(classic_tps)
                pair.api_cpu.append(api_cpu)
                pair.pgbench_cpu.append(pgbench_cpu)
                print(f"  round {round_ + 1} {endpoint.name:<8} API {rate:7.0f}/s {api_cpu:6.0f} µs CPU/request   "
                      f"pgbench {tps:7.0f} tps {pgbench_cpu:6.0f} µs CPU/transaction   ratio {rate / tps:.2f}, "
                      f"by CPU {pgbench_cpu / api_cpu:.2f}; pgbench a round trip per statement {classic_tps:7.0f} tps",
                      flush=True)
    return table


def start_profiles(server: subprocess.Popen, directory: Path, name: str, seconds: float) -> list[subprocess.Popen]:
    """py-spy on every server worker while wrk loads them (collapsed stacks, idle frames left
    out), one file each: `<name>-<worker>.txt`. (wrk's connections are not spread evenly over
    the workers; one may get few or none.)"""
    directory.mkdir(parents=True, exist_ok=True)
    return [subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--duration", str(int(seconds) - 1),
                              "--rate", "200", "--format", "raw", "--nonblocking",
                              "-o", str(directory / f"{name}-{n}.txt")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for n, pid in enumerate(worker_pids(server) or [server.pid], 1)]


# ---- (b) depth and (c) counting --------------------------------------------------------------

GUIDE_OFFSET_SQL = """
SELECT * FROM (
    SELECT id, created_at, workflow_name, status, 'video' AS type FROM public.video_jobs
    UNION ALL SELECT id, created_at, workflow_name, status, 'image' FROM public.image_jobs
    UNION ALL SELECT id, created_at, workflow_name, status, 'text' FROM public.text_jobs
) j ORDER BY created_at DESC LIMIT 50 OFFSET %(offset)s
"""


def cursor_at_depth(conninfo: str, depth: int) -> Cursor:
    """The (created_at, id) of the studio's depth-th newest job, whoever may see it."""
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            "SELECT created_at, id FROM (SELECT created_at, id FROM public.video_jobs UNION ALL "
            "SELECT created_at, id FROM public.image_jobs UNION ALL SELECT created_at, id FROM public.text_jobs) j "
            "ORDER BY created_at DESC, id DESC OFFSET %s LIMIT 1", (depth - 1,)).fetchone()
    if row is None:
        raise SystemExit(f"fewer than {depth} jobs; use more --jobs or a smaller --depth")
    return Cursor(row[0], row[1])


@dataclass
class Timing:
    median_ms: float
    entries: int  # index entries and heap rows the plan read


def timed_statements(conninfo: str, user_id: uuid.UUID, statements: list[tuple[str, dict]], repeat: int,
                     context: str = SET_PAGE_READ_CONTEXT) -> list[Timing]:
    """Median time of each statement in the API's transaction shape, and what EXPLAIN ANALYZE
    says it read. The statements take turns, so that whatever else the machine is doing
    meanwhile weighs on each alike."""
    claims = json.dumps(claims_for(user_id))
    with psycopg.connect(conninfo) as conn:
        samples: list[list[float]] = [[] for _ in statements]
        for _ in range(repeat):
            for (statement, params), times in zip(statements, samples):
                t0 = time.perf_counter()
                with conn.transaction():
                    conn.execute(context, {"role": "authenticated", "claims": claims})
                    conn.execute(statement, params).fetchall()
                times.append(time.perf_counter() - t0)
        timings = []
        for (statement, params), times in zip(statements, samples):
            with conn.transaction():
                conn.execute(context, {"role": "authenticated", "claims": claims})
                plan = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, params).fetchone()[0]
            timings.append(Timing(statistics.median(times) * 1e3, int(entries_read(plan[0]["Plan"]))))
    return timings


def timed_statement(conninfo: str, user_id: uuid.UUID, statement: str, params: dict, repeat: int,
                    context: str = SET_PAGE_READ_CONTEXT) -> Timing:
    return timed_statements(conninfo, user_id, [(statement, params)], repeat, context)[0]


def entries_read(node: dict) -> int:
    """Rows the scans of tables produced or threw away: the index entries and heap rows read."""
    total = 0
    if "Relation Name" in node:
        loops = node.get("Actual Loops", 1)
        total += (node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)
                  + node.get("Rows Removed by Index Recheck", 0)) * loops
    for child in node.get("Plans", []):
        total += entries_read(child)
    return total


@dataclass
class DepthRow:
    label: str
    first: Timing
    deep: Timing

    @property
    def ratio(self) -> float:
        return self.deep.median_ms / self.first.median_ms


def depth_rows(conninfo: str, user_id: uuid.UUID, depth: int, repeat: int, cases: list[tuple[str, Any]]) -> list[DepthRow]:
    cursor = cursor_at_depth(conninfo, depth)
    rows = []
    for label, make in cases:
        first_stmt, first_params = make(None)
        deep_stmt, deep_params = make(cursor)
        first, deep = timed_statements(conninfo, user_id, [(first_stmt, first_params), (deep_stmt, deep_params)], repeat)
        rows.append(DepthRow(label, first, deep))
    return rows


def feed_case(cursor: Cursor | None) -> tuple[str, dict]:
    return feed_statement(FeedQuery(limit=PAGE, scope="all", cursor=cursor))


def mine_workflow_case(cursor: Cursor | None) -> tuple[str, dict]:
    return JobService(IMAGE).list_statement(PageQuery(limit=PAGE, scope="mine", workflow_name="wf-b", cursor=cursor))


def all_list_case(cursor: Cursor | None) -> tuple[str, dict]:
    return JobService(IMAGE).list_statement(PageQuery(limit=PAGE, scope="all", cursor=cursor))


def counting_rows(conninfo: str, user_id: uuid.UUID, repeat: int) -> list[tuple[str, Timing]]:
    service = JobService(IMAGE)
    rows = []
    for count in ("planned", "estimated", "exact"):  # `planned` counts nothing in the statement
        statement, params = service.list_statement(PageQuery(limit=PAGE, scope="all", count=count))
        rows.append((count, timed_statement(conninfo, user_id, statement, params, repeat)))
    return rows


# ---- driver ----------------------------------------------------------------------------------

def scratch_database(admin: str, name: str) -> str:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    conninfo = make_conninfo(admin, dbname=name)
    Migrator(conninfo).upgrade()
    return conninfo


def run(admin: str, names: list[str], args: argparse.Namespace) -> None:
    dense = Studio("dense", args.users, ownerless=0.2, shared=0.3)
    sparse = Studio("sparse", 1000, ownerless=0.0, shared=0.01)
    depth = args.depth or min(100_000, args.jobs // 4)

    names.append(f"genstudio_bench_{uuid.uuid4().hex[:8]}")
    dense_db = scratch_database(admin, names[-1])
    fill(dense_db, dense, args.jobs)
    sparse_db = None
    if not args.skip_sparse:
        names.append(f"genstudio_bench_{uuid.uuid4().hex[:8]}")
        sparse_db = scratch_database(admin, names[-1])
        fill(sparse_db, sparse, args.jobs)

    user_id = pick_user(dense_db)
    token = TokenIssuer(SECRET, "authenticated", 7200).issue(user_id, "bench@example.com")

    print("(b) depth", flush=True)
    depth_table = [("dense", r) for r in depth_rows(dense_db, user_id, depth, args.repeat,
                                                    [("feed scope=all", feed_case)])]
    offset_first = timed_statement(dense_db, user_id, GUIDE_OFFSET_SQL, {"offset": 0}, max(3, args.repeat // 10),
                                   SET_REQUEST_CONTEXT)
    offset_deep = timed_statement(dense_db, user_id, GUIDE_OFFSET_SQL, {"offset": depth}, max(3, args.repeat // 10),
                                  SET_REQUEST_CONTEXT)
    if sparse_db:
        sparse_user = pick_user(sparse_db)
        depth_table += [("sparse", r) for r in depth_rows(
            sparse_db, sparse_user, depth, args.repeat,
            [("feed scope=all", feed_case), ("image list scope=all", all_list_case),
             ("image list scope=mine&workflow_name", mine_workflow_case)])]
    print("(c) total_count", flush=True)
    counts = counting_rows(dense_db, user_id, max(3, args.repeat // 5))

    table: dict[str, Pair] = {}
    idle_kib = peak_kib = 0
    if not args.skip_throughput:
        print("(a) throughput", flush=True)
        port = free_port()
        with tempfile.TemporaryDirectory() as data_dir:
            server = start_server(dense_db, data_dir, port, args.workers, args.serve_option or [])
            try:
                with RssSampler(server.pid) as sampler:
                    idle_kib = sampler.sample()
                    table = throughput(dense_db, port, user_id, token, args, server)
                peak_kib = sampler.peak_kib
            finally:
                server.terminate()
                server.wait(timeout=30)

    print(f"\n{args.jobs:,} jobs per studio, page {PAGE}, depth {depth:,}, concurrency {CONCURRENCY}, "
          f"{args.workers} server worker(s), {args.rounds} round(s) of {args.seconds:.0f} s")
    if table:
        print("(a) throughput: API (wrk) / pgbench running the same transaction; median [range] of the rounds.\n"
              "    CPU = µs of CPU per request (PostgreSQL + server + load generator); `by CPU` = pgbench's / the API's")
        for name, pair in table.items():
            if not pair.api:
                continue
            ratio, cpu_ratio = statistics.median(pair.ratios), statistics.median(pair.cpu_ratios)
            target = TARGETS.get(name)
            verdict = "" if target is None else f"  target >= {target}: " + (
                "met" if ratio >= target else "met by CPU" if cpu_ratio >= target else "NOT met")
            print(f"    {name:<9} API {statistics.median(pair.api):6.0f}/s {statistics.median(pair.api_cpu):6.0f} µs"
                  f"   pgbench {statistics.median(pair.pgbench):6.0f}/s {statistics.median(pair.pgbench_cpu):5.0f} µs"
                  f"   ratio {ratio:4.2f} [{min(pair.ratios):.2f}-{max(pair.ratios):.2f}]"
                  f"   by CPU {cpu_ratio:4.2f} [{min(pair.cpu_ratios):.2f}-{max(pair.cpu_ratios):.2f}]{verdict}")
        print("    beside pgbench sending one statement per round trip (BEGIN, role and claims, statement, COMMIT):")
        for name, pair in table.items():
            if pair.api:
                classic = [a / c for a, c in zip(pair.api, pair.pgbench_per_statement)]
                print(f"    {name:<9} pgbench {statistics.median(pair.pgbench_per_statement):6.0f}/s   "
                      f"ratio {statistics.median(classic):4.2f} [{min(classic):.2f}-{max(classic):.2f}]")
    print(f"(b) depth {depth:,} / first page, the statement alone (median of {args.repeat}); entries = rows the scans read")
    for studio, row in depth_table:
        print(f"    {studio:<6} {row.label:<37} first {row.first.median_ms:7.2f} ms ({row.first.entries:>6} entries)"
              f"   deep {row.deep.median_ms:7.2f} ms ({row.deep.entries:>6} entries)   ratio {row.ratio:5.2f}x"
              f"  (target <= {DEPTH_TARGET}x: {'met' if row.ratio <= DEPTH_TARGET else 'NOT met'})")
    print(f"    dense  guide's OFFSET query                   first {offset_first.median_ms:7.2f} ms"
          f"                  deep {offset_deep.median_ms:7.2f} ms                  ratio "
          f"{offset_deep.median_ms / offset_first.median_ms:5.2f}x")
    print("(c) image list scope=all, the statement by counting choice (Prefer: count=...), against no count at all;\n"
          "    `planned` and `estimated` beyond the cap add an EXPLAIN of the filter")
    base = counts[0][1].median_ms
    for count, timing in counts:
        print(f"    {count:<10} {timing.median_ms:8.2f} ms  {timing.median_ms / base:6.1f}x  ({timing.entries} entries)")
    if table:
        print(f"(d) server RSS: idle {idle_kib / 1024:.0f} MiB, peak under load {peak_kib / 1024:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=30_000, help="jobs per studio")
    parser.add_argument("--users", type=int, default=100, help="users of the dense studio")
    parser.add_argument("--depth", type=int, default=0, help="depth for (b) [min(100000, jobs/4)]")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each throughput run")
    parser.add_argument("--rounds", type=int, default=3, help="throughput measurements per endpoint")
    parser.add_argument("--repeat", type=int, default=50, help="samples per latency figure")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="`genstudio serve --workers` [one per core]")
    parser.add_argument("--only", nargs="*", help="throughput of these endpoints only (feed list get create complete)")
    parser.add_argument("--profile", help="directory for py-spy profiles of the server workers (first round)")
    parser.add_argument("--serve-option", action="append", help="extra option for `genstudio serve`")
    parser.add_argument("--skip-sparse", action="store_true", help="no sparse studio (no (b) for it)")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--admin-url", help="conninfo that may CREATE DATABASE [an embedded PostgreSQL]")
    args = parser.parse_args()

    names: list[str] = []
    with admin_conninfo(args.admin_url) as admin:
        try:
            run(admin, names, args)
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                for name in names:
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


if __name__ == "__main__":
    main()
