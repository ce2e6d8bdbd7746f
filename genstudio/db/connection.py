"""Which database genstudio talks to: DATABASE_URL if given, else the embedded server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
from psycopg.conninfo import conninfo_to_dict

from genstudio.config import Settings
from genstudio.db.embedded import EmbeddedPostgres, EmbeddedPostgresError


class DatabaseUnreachable(Exception):
    """The configured database cannot be reached; the message is one line for the user."""


def describe(conninfo: str) -> str:
    """Where a conninfo points, without its password."""
    try:
        parts = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "an unparseable DATABASE_URL"
    host = parts.get("host") or "localhost"
    port = parts.get("port") or "5432"
    return f"{host}:{port}/{parts.get('dbname') or parts.get('user') or ''}"


def check_reachable(conninfo: str, timeout_seconds: int = 5) -> None:
    try:
        with psycopg.connect(conninfo, connect_timeout=timeout_seconds) as conn:
            conn.execute("SELECT 1")
    except (psycopg.Error, ValueError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DatabaseUnreachable(f"cannot reach the database at {describe(conninfo)}: {reason}") from None


@contextmanager
def database(settings: Settings, *, on_embedded_failure: Callable[[str], None] | None = None) -> Iterator[str]:
    """Yield a conninfo for the configured database, running the embedded one if needed.

    Long-running commands pass `on_embedded_failure`: the embedded server is then restarted
    whenever it dies, and the callback gets one line if it cannot be.
    """
    if settings.database_url:
        check_reachable(settings.database_url)
        yield settings.database_url
        return
    server = EmbeddedPostgres(settings.embedded_pgdata)
    try:
        try:
            conninfo = server.start()
        except EmbeddedPostgresError as exc:
            raise DatabaseUnreachable(str(exc)) from None
        if on_embedded_failure is not None:
            server.watch(on_embedded_failure)
        yield conninfo
    finally:
        try:
            server.stop()
        except EmbeddedPostgresError as exc:
            raise DatabaseUnreachable(str(exc)) from None
