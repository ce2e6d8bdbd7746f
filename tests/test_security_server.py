"""Issue 11, items 3 and 6, against a real `genstudio serve` process: oversized request headers
are refused with 431 before they are read in full, and X-Forwarded-For is believed only from
the proxies named in GENSTUDIO_TRUSTED_PROXIES (by default from nobody).
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from genstudio.config import Settings
from tests.api_support import SECRET, add_user

HEADER_LIMIT = 32 * 1024  # the default GENSTUDIO_MAX_HEADER_BYTES


def _free_port() -> int:
    # serve refuses port 0, so take one the kernel just handed out.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(db_url: str, tmp_path, **env: str) -> Iterator[str]:
    """`genstudio serve` on an ephemeral loopback port; yields its base URL."""
    environment = {**os.environ, "DATABASE_URL": db_url, "GENSTUDIO_DATA_DIR": str(tmp_path),
                   "GENSTUDIO_JWT_SECRET": SECRET, "GENSTUDIO_HOST": "127.0.0.1", "GENSTUDIO_PORT": str(_free_port()),
                   "GENSTUDIO_POOL_MIN": "1", "GENSTUDIO_POOL_MAX": "4", **env}
    environment.pop("FORWARDED_ALLOW_IPS", None)
    process = subprocess.Popen([sys.executable, "-m", "genstudio", "serve", "--no-worker", "--no-access-log"],
                               env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                pytest.fail("serve exited early:\n" + "".join(output))
            output.append(line)
            if match := re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", line):
                yield match.group(1)
                return
        pytest.fail("serve did not start:\n" + "".join(output))
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _port(base_url: str) -> int:
    return int(base_url.rsplit(":", 1)[1])


def _read_response(sock: socket.socket) -> tuple[int, bytes]:
    """Status and body of the answer; the server closes the connection after it."""
    data = b""
    sock.settimeout(10)
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_an_8_mb_authorization_header_is_refused_after_a_fraction_of_it(db_url, tmp_path):
    with serving(db_url, tmp_path) as base_url:
        with socket.create_connection(("127.0.0.1", _port(base_url))) as sock:
            sock.sendall(b"GET /api/feed HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer ")
            chunk, total, sent = b"a" * 65536, 8 * 1024 * 1024, 0
            answered = False
            while sent < total:
                try:
                    sock.sendall(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += len(chunk)
                # Before the fix the server said nothing until all 8 MB had arrived.
                if select.select([sock], [], [], 0.05)[0]:
                    answered = True
                    break
            assert answered, f"no answer after {sent} header bytes"
            status, body = _read_response(sock)
    assert status == 431
    assert json.loads(body) == {"success": False, "error": f"the request's headers are larger than {HEADER_LIMIT} bytes"}
    # Refused once the limit was crossed: the rest of the 8 MB was never taken in.
    assert sent <= 1024 * 1024, sent


def test_headers_that_arrive_whole_are_measured_exactly(db_url, tmp_path):
    alice = add_user(db_url, "alice@example.com")
    with serving(db_url, tmp_path) as base_url:
        with httpx.Client(base_url=base_url, timeout=10) as client:
            too_big = client.get("/api/feed", headers={**alice.headers, "X-Padding": "p" * HEADER_LIMIT})
            assert too_big.status_code == 431 and too_big.json()["success"] is False, too_big.text
            near_limit = client.get("/api/feed", headers={**alice.headers, "X-Padding": "p" * (HEADER_LIMIT - 2048)})
            assert near_limit.status_code == 200, near_limit.text
            long_url = client.get("/api/feed", params={"workflow_name": "w" * HEADER_LIMIT}, headers=alice.headers)
            assert long_url.status_code == 431


def _login_statuses(base_url: str, forwarded_for: list[str]) -> list[int]:
    statuses = []
    with httpx.Client(base_url=base_url, timeout=10) as client:
        for n, address in enumerate(forwarded_for):
            r = client.post("/api/auth/login", json={"email": f"guess{n}@example.com", "password": "x"},
                            headers={"X-Forwarded-For": address})
            statuses.append(r.status_code)
    return statuses


LIMITS = {"GENSTUDIO_LOGIN_LIMIT_PER_ADDRESS": "3/minute", "GENSTUDIO_LOGIN_LIMIT_PER_ACCOUNT": "100/minute"}


def test_forwarded_for_from_an_untrusted_caller_does_not_reset_the_address_limit(db_url, tmp_path):
    assert Settings(_env_file=None).trusted_proxies == ""  # the default: nobody
    rotating = [f"203.0.113.{n}" for n in range(1, 6)]
    with serving(db_url, tmp_path, **LIMITS) as base_url:
        # 127.0.0.1 is not a configured proxy: every attempt counts against 127.0.0.1.
        assert _login_statuses(base_url, rotating) == [401, 401, 401, 429, 429]


def test_forwarded_for_from_a_configured_proxy_is_believed(db_url, tmp_path):
    with serving(db_url, tmp_path, GENSTUDIO_TRUSTED_PROXIES="10.0.0.0/8, 127.0.0.1", **LIMITS) as base_url:
        # Behind a trusted proxy, attempts count against the address the proxy reports.
        assert _login_statuses(base_url, [f"203.0.113.{n}" for n in range(1, 6)]) == [401] * 5
        assert _login_statuses(base_url, ["198.51.100.7"] * 4) == [401, 401, 401, 429]


def test_trusted_proxies_must_be_addresses_or_networks(db_url, tmp_path):
    env = {**os.environ, "DATABASE_URL": db_url, "GENSTUDIO_DATA_DIR": str(tmp_path),
           "GENSTUDIO_TRUSTED_PROXIES": "127.0.0.1,proxy.internal"}
    result = subprocess.run([sys.executable, "-m", "genstudio", "serve"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1 and "'proxy.internal' is not an IP address or network" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
