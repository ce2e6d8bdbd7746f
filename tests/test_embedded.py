"""`genstudio serve` with no DATABASE_URL: an embedded PostgreSQL that starts, is reused on
the next start, and stops cleanly on SIGTERM and Ctrl-C; and one clear line when a given
DATABASE_URL cannot be reached."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from genstudio.db.embedded import is_running
from genstudio.db.migrator import load_migrations

LATEST = load_migrations()[-1].version


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "GENSTUDIO_DATA_DIR")}
    return env | extra


def start_serve(data_dir: Path, port: int, user: str | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "genstudio", "serve", "--port", str(port)]
    env = clean_env(GENSTUDIO_DATA_DIR=str(data_dir))
    if user:
        # setpriv execs in place (runuser would sit between us and serve and eat the signal).
        entry = pwd.getpwnam(user)
        command = ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups",
                   "env", f"HOME={data_dir}", *command]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_healthy(process: subprocess.Popen, port: int, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"serve exited early ({process.returncode}):\n{process.stdout.read()}")
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/api/healthz", timeout=2)
            if response.status_code == 200:
                return response.json()
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    pytest.fail(f"serve did not become healthy:\n{process.stdout.read()}")


def stop(process: subprocess.Popen, signum: int) -> tuple[int, str]:
    process.send_signal(signum)
    try:
        output, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return process.returncode, output


def embedded_conninfo(pgdata: Path) -> str:
    socket_dir = (pgdata / "postmaster.pid").read_text().splitlines()[4]
    return f"postgresql://postgres@/genstudio?host={socket_dir}"


def test_serve_starts_reuses_and_stops_the_embedded_server(data_dir):
    pgdata = data_dir / "postgres"
    port = free_port()

    first = start_serve(data_dir, port)
    health = wait_healthy(first, port)
    assert health == {"status": "ok", "database": "reachable", "schema_version": LATEST,
                      "expected_schema_version": LATEST}
    with psycopg.connect(embedded_conninfo(pgdata)) as conn:
        conn.execute("INSERT INTO text_jobs (workflow_name) VALUES ('kept-across-restarts')")
    initialised_at = (pgdata / "PG_VERSION").stat().st_mtime
    code, output = stop(first, signal.SIGTERM)
    assert code == 0, output
    assert not is_running(pgdata), "SIGTERM left PostgreSQL running"
    assert "Traceback" not in output

    second = start_serve(data_dir, port)
    wait_healthy(second, port)
    assert (pgdata / "PG_VERSION").stat().st_mtime == initialised_at  # reused, not re-initialised
    with psycopg.connect(embedded_conninfo(pgdata)) as conn:
        assert conn.execute("SELECT workflow_name FROM text_jobs").fetchall() == [("kept-across-restarts",)]
    code, output = stop(second, signal.SIGINT)
    assert code == 0, output
    assert not is_running(pgdata), "Ctrl-C left PostgreSQL running"
    assert "applied migration" not in output  # nothing pending the second time


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an ordinary user")
def test_serve_runs_as_an_ordinary_user(data_dir):
    # data_dir's parents are searchable by others (see conftest), and nobody owns data_dir.
    data_dir.mkdir()
    os.chown(data_dir, pwd.getpwnam("nobody").pw_uid, -1)
    port = free_port()
    process = start_serve(data_dir, port, user="nobody")
    assert wait_healthy(process, port)["schema_version"] == LATEST
    assert (data_dir / "postgres").stat().st_uid == pwd.getpwnam("nobody").pw_uid
    code, output = stop(process, signal.SIGTERM)
    assert code == 0, output
    assert not is_running(data_dir / "postgres")


@pytest.mark.parametrize("args", [["serve"], ["db", "status"], ["db", "upgrade"]])
def test_unreachable_database_url_is_one_clear_line(args):
    url = "postgresql://someone:s3cret@127.0.0.1:1/nowhere"
    result = subprocess.run([sys.executable, "-m", "genstudio", *args], env=clean_env(DATABASE_URL=url),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("genstudio: cannot reach the database at 127.0.0.1:1/nowhere")
    assert "s3cret" not in result.stderr and "Traceback" not in result.stderr


def test_serve_with_several_workers_shares_one_database_and_stops_cleanly(data_dir):
    port = free_port()
    command = [sys.executable, "-m", "genstudio", "serve", "--port", str(port), "--workers", "2"]
    process = subprocess.Popen(command, env=clean_env(GENSTUDIO_DATA_DIR=str(data_dir)),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert wait_healthy(process, port)["schema_version"] == LATEST
    # Both workers sign and check tokens with the one secret made before they started.
    secret_file = data_dir / "jwt_secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    code, output = stop(process, signal.SIGTERM)
    assert code == 0, output
    assert output.count("Application startup complete") == 2
    assert not is_running(data_dir / "postgres")


def test_an_invalid_setting_is_one_clear_line():
    result = subprocess.run([sys.executable, "-m", "genstudio", "serve"], env=clean_env(GENSTUDIO_PORT="eighty"),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "genstudio: invalid setting in the environment or .env: GENSTUDIO_PORT: "
        "Input should be a valid integer, unable to parse string as an integer"]
