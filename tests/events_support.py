"""Fixtures for the event tests: the app under a real uvicorn on an ephemeral port, users,
and ways to change jobs (through the API, or as service_role SQL)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest

from genstudio.api.app import create_app
from tests.api_support import SECRET, ServerThread, User, add_user, make_settings


@dataclass
class LiveApi:
    base_url: str
    db_url: str
    client: httpx.AsyncClient
    users: dict[str, User] = field(default_factory=dict)

    def user(self, name: str) -> User:
        if name not in self.users:
            self.users[name] = add_user(self.db_url, f"{name}@example.com")
        return self.users[name]


@pytest.fixture
def live_settings(tmp_path):
    """Overridable per test module: the settings the live server runs with."""
    return make_settings(tmp_path, sse_heartbeat_seconds=0.5, run_background=False)


@pytest.fixture
async def live_api(db_url, live_settings) -> AsyncIterator[LiveApi]:
    with ServerThread(create_app(db_url, live_settings)) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            yield LiveApi(server.base_url, db_url, client)


def sql(db_url: str, statement: str, params=()) -> list[tuple]:
    """One statement as service_role, committed."""
    with psycopg.connect(db_url) as conn:
        conn.execute("SET ROLE service_role")
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def new_job(db_url: str, owner: User | None, table: str = "image_jobs", visibility: str = "private") -> str:
    return str(sql(db_url, f"INSERT INTO {table} (user_id, workflow_name, comfy_url, visibility) "
                           "VALUES (%s, 'w', 'x', %s) RETURNING id", (owner.id if owner else None, visibility))[0][0])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServeProcess:
    process: subprocess.Popen
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_genstudio(args: list[str], db_url: str, data_dir: Path, **env: str) -> subprocess.Popen:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GENSTUDIO_")}
    environment |= {"DATABASE_URL": db_url, "GENSTUDIO_JWT_SECRET": SECRET, "GENSTUDIO_DATA_DIR": str(data_dir), **env}
    return subprocess.Popen([sys.executable, "-m", "genstudio", *args], env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture
def serve_processes(db_url, tmp_path) -> Iterator:
    started: list[ServeProcess] = []

    def start(**env: str) -> ServeProcess:
        port = free_port()
        process = start_genstudio(["serve", "--port", str(port), "--no-access-log"], db_url,
                                  tmp_path / f"serve{len(started)}", **env)
        serve = ServeProcess(process, port)
        started.append(serve)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"serve exited early:\n{process.stdout.read()}")
            try:
                if httpx.get(f"{serve.base_url}/api/healthz", timeout=2).status_code == 200:
                    return serve
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        pytest.fail("serve did not become healthy")

    yield start
    for serve in started:
        serve.process.terminate()
    for serve in started:
        try:
            serve.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            serve.process.kill()
