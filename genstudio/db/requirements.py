"""What the API needs from any PostgreSQL, checked before serving, each failure one line
naming the fix: a database that passes migrations can still fail every request later
(`SQL_ASCII` answers 500s to job requests; a role that may not `SET ROLE authenticated`
fails every request with "permission denied to set role").
"""

from __future__ import annotations

import psycopg
from psycopg import sql

MIN_SERVER_VERSION = 140000
# The roles every API transaction switches to (see genstudio/db/pool.py).
API_ROLES = ("anon", "authenticated", "service_role")


class DatabaseUnsuitable(Exception):
    """The database cannot serve the API as it is; the message is one line naming the fix."""


def server_problems(conn: psycopg.Connection) -> list[str]:
    """What is wrong before anything is migrated: the server version and the encoding."""
    problems = []
    version = int(conn.execute("SELECT current_setting('server_version_num')").fetchone()[0])
    if version < MIN_SERVER_VERSION:
        shown = conn.execute("SELECT current_setting('server_version')").fetchone()[0]
        problems.append(f"PostgreSQL {shown} is too old: genstudio needs PostgreSQL 14 or newer")
    # On a SQL_ASCII database psycopg cannot decode text and hands out bytes.
    database, encoding = (_text(v) for v in conn.execute(
        "SELECT current_database(), pg_encoding_to_char(encoding) FROM pg_database "
        "WHERE datname = current_database()").fetchone())
    if encoding != "UTF8":
        problems.append(
            f"database {database} uses encoding {encoding}, but genstudio stores text as UTF8; create a UTF8 "
            f"database (CREATE DATABASE {database}_utf8 ENCODING 'UTF8' TEMPLATE template0) and point "
            "DATABASE_URL at it")
    return problems


def role_problems(conn: psycopg.Connection) -> list[str]:
    """Whether the connecting role may act as each API role, found by trying, as requests do."""
    user = _text(conn.execute("SELECT current_user").fetchone()[0])
    cannot, missing = [], []
    with conn.transaction(force_rollback=True):
        for role in API_ROLES:
            try:
                with conn.transaction():
                    conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
            except psycopg.errors.InsufficientPrivilege:
                cannot.append(role)
            except (psycopg.errors.InvalidParameterValue, psycopg.errors.UndefinedObject):  # no such role
                missing.append(role)
    problems = []
    if missing:
        problems.append(f"the roles {', '.join(missing)} do not exist; run `genstudio db upgrade` (as a role that "
                        "may create roles) first")
    if cannot:
        grant = sql.SQL("GRANT {} TO {}").format(sql.SQL(", ").join(map(sql.Identifier, cannot)),
                                                sql.Identifier(user)).as_string(conn)
        problems.append(f"role {user} may not act as {', '.join(cannot)}, so every API request would fail with "
                        f"'permission denied to set role'; as a superuser (on Supabase: postgres), run: {grant}")
    return problems


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def check(conninfo: str, *, roles: bool = True) -> None:
    """Raise DatabaseUnsuitable with the first problem found, if any."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        problems = server_problems(conn) + (role_problems(conn) if roles else [])
    if problems:
        raise DatabaseUnsuitable(problems[0])


def all_problems(conninfo: str, *, roles: bool = True) -> list[str]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        return server_problems(conn) + (role_problems(conn) if roles else [])
