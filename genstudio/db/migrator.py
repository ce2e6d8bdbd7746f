"""Versioned schema migrations: plain SQL files, applied in order, each with its down step.

Files live in `migrations/` as `NNNN_name.up.sql` and `NNNN_name.down.sql`. Every step runs in
one transaction together with the row that records it in `genstudio.schema_migrations`, so a
crash leaves a migration either wholly applied and recorded or not at all. Concurrent runs
(two `serve` processes starting at once) are serialised with a session advisory lock.

Why not a library: yoyo-migrations, the closest fit, applies a migration on one connection
and records it on another in a second transaction, locks with a polled table instead of an
advisory lock, and keeps four bookkeeping tables in `public`, which Supabase exposes over its
REST API. Alembic needs SQLAlchemy and Python migration scripts, while ours must stay plain
SQL a Supabase user can paste into the SQL editor (`genstudio db sql`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from importlib import resources

import psycopg

# Any constant will do; it only has to be the same for every genstudio process.
ADVISORY_LOCK_KEY = 0x67656E73  # "gens"

_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.(?P<direction>up|down)\.sql$")

BOOKKEEPING_SQL = """
CREATE SCHEMA IF NOT EXISTS genstudio;
CREATE TABLE IF NOT EXISTS genstudio.schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
""".strip()

RECORD_SQL = (
    "INSERT INTO genstudio.schema_migrations (version, name, checksum) "
    "VALUES ({version}, '{name}', '{checksum}') ON CONFLICT (version) DO NOTHING;"
)


class MigrationError(Exception):
    """A migration request that cannot be carried out; nothing was changed."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    up_sql: str
    down_sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.up_sql.encode()).hexdigest()

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


@dataclass(frozen=True)
class MigrationState:
    migration: Migration | None
    version: int
    name: str
    applied_at: datetime | None
    # False when the file changed after it was applied.
    checksum_matches: bool | None


def load_migrations() -> list[Migration]:
    """The migrations shipped with this genstudio, oldest first."""
    directory = resources.files("genstudio.db").joinpath("migrations")
    parts: dict[tuple[int, str], dict[str, str]] = {}
    for entry in directory.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            key = (int(match["version"]), match["name"])
            parts.setdefault(key, {})[match["direction"]] = entry.read_text("utf-8")
    migrations = []
    for (version, name), sql in sorted(parts.items()):
        if set(sql) != {"up", "down"}:
            raise RuntimeError(f"migration {version:04d}_{name} needs both an up and a down file")
        migrations.append(Migration(version, name, sql["up"], sql["down"]))
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(migrations) + 1)):
        raise RuntimeError(f"migration versions must run 1, 2, 3… without gaps; found {versions}")
    return migrations


def supabase_script(migrations: list[Migration] | None = None) -> str:
    """All up steps as one script for Supabase's SQL editor, recording what it applies so that
    a later `genstudio db upgrade` against the same database agrees about the version."""
    migrations = load_migrations() if migrations is None else migrations
    out = [
        "-- genstudio schema, for Supabase's SQL editor (or psql). Safe to run again.",
        "BEGIN;",
        BOOKKEEPING_SQL,
    ]
    for m in migrations:
        out.append(f"\n-- ---- {m.label} " + "-" * max(0, 70 - len(m.label)))
        out.append(m.up_sql.strip())
        out.append(RECORD_SQL.format(version=m.version, name=m.name, checksum=m.checksum))
    out.append("COMMIT;")
    return "\n".join(out) + "\n"


class Migrator:
    """Applies and reverts migrations on one database, holding the advisory lock throughout."""

    def __init__(self, conninfo: str, migrations: list[Migration] | None = None):
        self.conninfo = conninfo
        self.migrations = load_migrations() if migrations is None else migrations
        self._by_version = {m.version: m for m in self.migrations}

    @property
    def latest_version(self) -> int:
        return self.migrations[-1].version if self.migrations else 0

    def status(self) -> list[MigrationState]:
        with self._connect() as conn:
            applied = self._applied(conn)
        states = []
        for m in self.migrations:
            row = applied.get(m.version)
            states.append(
                MigrationState(
                    m, m.version, m.name,
                    row[1] if row else None,
                    (row[2] == m.checksum) if row else None,
                )
            )
        for version, (name, applied_at, _) in sorted(applied.items()):
            if version not in self._by_version:  # applied by a newer genstudio
                states.append(MigrationState(None, version, name, applied_at, None))
        return states

    def current_version(self) -> int:
        with self._connect() as conn:
            applied = self._applied(conn)
        return max(applied, default=0)

    def upgrade(self, to: int | None = None) -> list[Migration]:
        """Apply pending migrations up to and including `to` (default: the latest)."""
        target = self.latest_version if to is None else to
        if target not in self._by_version and target != 0:
            raise MigrationError(f"unknown version {target}; this genstudio knows 0..{self.latest_version}")
        with self._locked() as conn:
            current = max(self._applied(conn), default=0)
            if current > self.latest_version:
                raise MigrationError(
                    f"the database is at version {current}, newer than this genstudio "
                    f"({self.latest_version}); upgrade genstudio instead"
                )
            if target < current:
                raise MigrationError(
                    f"the database is at version {current}; use `genstudio db downgrade --to {target}` to go back"
                )
            done = []
            for m in self.migrations:
                if current < m.version <= target:
                    with conn.transaction():
                        conn.execute(m.up_sql)
                        conn.execute(
                            "INSERT INTO genstudio.schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                            (m.version, m.name, m.checksum),
                        )
                    done.append(m)
            return done

    def downgrade(self, to: int, *, allow_data_loss: bool = False) -> list[Migration]:
        """Revert applied migrations newer than `to`, newest first."""
        if to < 0:
            raise MigrationError(f"cannot downgrade to {to}: versions start at 0 (an empty schema)")
        if to != 0 and to not in self._by_version:
            raise MigrationError(f"unknown version {to}; this genstudio knows 0..{self.latest_version}")
        with self._locked() as conn:
            applied = self._applied(conn)
            current = max(applied, default=0)
            if current > self.latest_version:
                raise MigrationError(
                    f"the database is at version {current}, newer than this genstudio; "
                    "downgrade with the genstudio that applied it"
                )
            if to > current:
                raise MigrationError(
                    f"the database is at version {current}; use `genstudio db upgrade --to {to}` to go forward"
                )
            done = []
            for m in reversed(self.migrations):
                if to < m.version <= current and m.version in applied:
                    with conn.transaction():
                        if allow_data_loss:
                            conn.execute("SELECT set_config('genstudio.allow_data_loss', 'on', true)")
                        try:
                            conn.execute(m.down_sql)
                        except psycopg.errors.RaiseException as exc:
                            raise MigrationError(f"{m.label} refused: {exc.diag.message_primary}") from exc
                        conn.execute("DELETE FROM genstudio.schema_migrations WHERE version = %s", (m.version,))
                    done.append(m)
            return done

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(self.conninfo, autocommit=True)

    @contextmanager
    def _locked(self) -> Iterator[psycopg.Connection]:
        with self._connect() as conn:
            # Session-level: held across the per-migration transactions, released on close.
            conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
            conn.execute(BOOKKEEPING_SQL)
            yield conn

    @staticmethod
    def _applied(conn: psycopg.Connection) -> dict[int, tuple[str, datetime, str]]:
        exists = conn.execute("SELECT to_regclass('genstudio.schema_migrations') IS NOT NULL").fetchone()[0]
        if not exists:
            return {}
        rows = conn.execute("SELECT version, name, applied_at, checksum FROM genstudio.schema_migrations").fetchall()
        return {version: (name, applied_at, checksum) for version, name, applied_at, checksum in rows}
