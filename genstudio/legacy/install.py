"""The `genstudio_legacy` schema: finding the legacy tables, installing the mapping, the script.

`schema.sql` holds what every source shares; `sources.sql` one section per legacy table,
installed only for the tables that exist, with the table's current name substituted (so the
mapping still reads a table after `archive` renamed it). The same text, wrapped in existence
checks, is the operator's script (`genstudio legacy sql`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg import sql

SOURCES = ("multitalk_jobs", "style_transfers", "edited_images", "datasets")
TARGETS = ("video_jobs", "image_jobs", "text_jobs")
ARCHIVE_PREFIX = "_archived_"
SCHEMA = "genstudio_legacy"
FOLLOW_TRIGGER = "genstudio_legacy_follow"

# Any constant will do; it only has to differ from the schema migrator's.
ADVISORY_LOCK_KEY = 0x67656C67  # "gelg"

# The legacy table holding each source's key, and the column the follow trigger reads it from.
# `data` rows follow with their dataset's key.
FOLLOWED_TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "multitalk_jobs": (("multitalk_jobs", "job_id"),),
    "style_transfers": (("style_transfers", "id"),),
    "edited_images": (("edited_images", "id"),),
    "datasets": (("datasets", "id"), ("data", "dataset_id")),
}
KEY_COLUMNS = {"multitalk_jobs": "job_id", "style_transfers": "id", "edited_images": "id", "datasets": "id"}

_SECTION = re.compile(r"^-- source: (?P<name>[a-z_]+)\s*$", re.MULTILINE)


class LegacyError(Exception):
    """A legacy-migration request that cannot be carried out; nothing was changed."""


def _read(name: str) -> str:
    return resources.files("genstudio.legacy").joinpath(name).read_text("utf-8")


def schema_sql() -> str:
    return _read("schema.sql")


def source_sections() -> dict[str, str]:
    text = _read("sources.sql")
    matches = list(_SECTION.finditer(text))
    return {
        m["name"]: text[m.end() : (following.start() if following else len(text))].strip()
        for m, following in zip(matches, matches[1:] + [None])
    }


@dataclass(frozen=True)
class SourceTable:
    source: str
    archived: bool

    @property
    def tables(self) -> tuple[str, ...]:
        """The legacy table names of this source as they are now (datasets comes with data)."""
        names = tuple(name for name, _ in FOLLOWED_TABLES[self.source])
        return tuple(ARCHIVE_PREFIX + n if self.archived else n for n in names)

    @property
    def table(self) -> str:
        return self.tables[0]


def find_sources(conn: psycopg.Connection) -> dict[str, SourceTable]:
    """The legacy sources present, live or archived. Errors when the job tables are missing or
    when a source is half there (datasets without data, a table both live and archived)."""
    missing_targets = [
        t for t in TARGETS
        if conn.execute("SELECT to_regclass(%s)", (f"public.{t}",)).fetchone()[0] is None
    ]
    if missing_targets:
        raise LegacyError(
            f"the job tables are missing ({', '.join(missing_targets)}); run `genstudio db upgrade` first"
        )
    found: dict[str, SourceTable] = {}
    for source, tables in FOLLOWED_TABLES.items():
        names = [name for name, _ in tables]
        live = [_exists(conn, n) for n in names]
        archived = [_exists(conn, ARCHIVE_PREFIX + n) for n in names]
        if any(live) and any(archived):
            raise LegacyError(f"{source} exists both live and as {ARCHIVE_PREFIX}{source}; keep one")
        for state, flags in ((False, live), (True, archived)):
            if any(flags) and not all(flags):
                absent = [(ARCHIVE_PREFIX if state else "") + n for n, f in zip(names, flags) if not f]
                raise LegacyError(f"{source} is incomplete: table {', '.join(absent)} is missing")
            if all(flags):
                found[source] = SourceTable(source, state)
    return found


def _exists(conn: psycopg.Connection, table: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"public.{table}",)).fetchone()[0]


def _substitute(section: str, source: SourceTable) -> str:
    tables = source.tables
    text = section.replace("@source_table@", f'public."{tables[0]}"')
    if len(tables) > 1:
        text = text.replace("@data_table@", f'public."{tables[1]}"')
    return text


def _checksum(conn: psycopg.Connection, sources: dict[str, SourceTable]) -> str:
    """Of the mapping's text and of the legacy tables' columns: the views name the columns they
    do not read (expand_other_columns), so a column added to a legacy table needs new views."""
    digest = hashlib.sha256(schema_sql().encode())
    for name, section in source_sections().items():
        if name in sources:
            digest.update(_substitute(section, sources[name]).encode())
            for table in sources[name].tables:
                digest.update(conn.execute(
                    "SELECT string_agg(attname || ' ' || atttypid::regtype::text, ', ' ORDER BY attnum) FROM pg_attribute "
                    "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                    (f'public."{table}"',)).fetchone()[0].encode())
    return digest.hexdigest()


def schema_installed(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT to_regclass('genstudio_legacy.installed') IS NOT NULL").fetchone()[0]


def install(conn: psycopg.Connection, sources: dict[str, SourceTable]) -> bool:
    """Install or refresh the mapping in the caller's transaction; False when it was current."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))
    checksum = _checksum(conn, sources)
    if schema_installed(conn):
        current = conn.execute("SELECT checksum FROM genstudio_legacy.installed").fetchone()
        if current and current[0] == checksum:
            return False
    conn.execute(schema_sql())
    _check_columns(conn, sources)
    # Views are rebuilt from scratch (a new genstudio may change their columns); the
    # functions that use them do so by name, at run time, so nothing else depends on them.
    for (view,) in conn.execute(
        "SELECT viewname FROM pg_views WHERE schemaname = 'genstudio_legacy'"
    ).fetchall():
        conn.execute(sql.SQL("DROP VIEW IF EXISTS genstudio_legacy.{} CASCADE").format(sql.Identifier(view)))
    conn.execute("DELETE FROM genstudio_legacy.routes")
    sections = source_sections()
    for name in SOURCES:
        if name in sources:
            text = conn.execute(
                "SELECT genstudio_legacy.expand_other_columns(%s, %s, %s::regclass)",
                (_substitute(sections[name], sources[name]), name, f'public."{sources[name].table}"'),
            ).fetchone()[0]
            conn.execute(text)
    conn.execute(
        "INSERT INTO genstudio_legacy.installed (checksum) VALUES (%s) "
        "ON CONFLICT (only_row) DO UPDATE SET checksum = EXCLUDED.checksum",
        (checksum,),
    )
    return True


def _check_columns(conn: psycopg.Connection, sources: dict[str, SourceTable]) -> None:
    """Every column the mapping reads must exist; a clear error beats a failed CREATE VIEW."""
    for source in sources.values():
        for table, (legacy_name, _) in zip(source.tables, FOLLOWED_TABLES[source.source]):
            missing = [r[0] for r in conn.execute(
                """
                SELECT k.column_name FROM genstudio_legacy.known_columns k
                 WHERE k.legacy_table = %s AND NOT k.optional
                   AND NOT EXISTS (SELECT 1 FROM information_schema.columns c
                                    WHERE c.table_schema = 'public' AND c.table_name = %s
                                      AND c.column_name = k.column_name)
                 ORDER BY 1
                """,
                (legacy_name, table),
            )]
            if missing:
                raise LegacyError(f"table {table} lacks column(s) the mapping reads: {', '.join(missing)}")


def unknown_columns(conn: psycopg.Connection, sources: dict[str, SourceTable]) -> list[tuple[str, list[str]]]:
    """Columns of the legacy tables that the mapping does not know (kept in parameters.legacy)."""
    result = []
    for source in sources.values():
        for table, (legacy_name, _) in zip(source.tables, FOLLOWED_TABLES[source.source]):
            extra = [r[0] for r in conn.execute(
                """
                SELECT c.column_name FROM information_schema.columns c
                 WHERE c.table_schema = 'public' AND c.table_name = %s
                   AND NOT EXISTS (SELECT 1 FROM genstudio_legacy.known_columns k
                                    WHERE k.legacy_table = %s AND k.column_name = c.column_name)
                 ORDER BY c.ordinal_position
                """,
                (table, legacy_name),
            )]
            if extra:
                result.append((legacy_name, extra))
    return result


def drop_follow_triggers(conn: psycopg.Connection, sources: dict[str, SourceTable]) -> int:
    dropped = 0
    for source in sources.values():
        for table in source.tables:
            exists = conn.execute(
                "SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass(%s) AND tgname = %s",
                (f'public."{table}"', FOLLOW_TRIGGER),
            ).fetchone()
            if exists:
                conn.execute(sql.SQL("DROP TRIGGER {} ON public.{}").format(
                    sql.Identifier(FOLLOW_TRIGGER), sql.Identifier(table)))
                dropped += 1
    return dropped


def followed_tables(conn: psycopg.Connection) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "WHERE t.tgname = %s ORDER BY 1", (FOLLOW_TRIGGER,),
    )]


def operator_script() -> str:
    """The whole migration as one idempotent script for Supabase's SQL editor or psql: install
    the mapping for whichever legacy tables exist, copy what is not yet copied, verify."""
    out = [
        "-- genstudio legacy migration, for Supabase's SQL editor (or psql).",
        "-- Idempotent: run it again after any failure; rows already copied are skipped.",
        "-- Ownership: before the COPY section, fill genstudio_legacy.user_map_ip (user_ip, user_id)",
        "-- and/or genstudio_legacy.user_map_key (legacy_table, legacy_id, user_id); by default",
        "-- migrated jobs have no owner. Workflow names: genstudio_legacy.workflow_map",
        "-- (position, legacy_table, column_name, pattern, workflow_name), first regex match wins.",
        "-- Unknown statuses: genstudio_legacy.status_map (legacy_status, status); NULL legacy_status",
        "-- stands for a missing one, e.g. INSERT INTO genstudio_legacy.status_map VALUES ('queued', 'pending').",
        "BEGIN;",
        f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK_KEY});",
        schema_sql().strip(),
        "",
        "-- ---- the mapping views, for the legacy tables that exist ----------------------------",
        "DO $drop$ DECLARE v record; BEGIN",
        "    FOR v IN SELECT viewname FROM pg_views WHERE schemaname = 'genstudio_legacy' LOOP",
        "        EXECUTE format('DROP VIEW IF EXISTS genstudio_legacy.%I CASCADE', v.viewname);",
        "    END LOOP;",
        "    DELETE FROM genstudio_legacy.routes;",
        "    DELETE FROM genstudio_legacy.installed;",
        "END $drop$;",
    ]
    sections = source_sections()
    for name in SOURCES:
        live = SourceTable(name, archived=False)
        condition = " AND ".join(f"to_regclass('public.{t}') IS NOT NULL" for t in live.tables)
        body = _substitute(sections[name], live)
        statements = [s.strip() for s in body.split(";\n") if s.strip() and not _only_comments(s)]
        out.append(f"\n-- ---- {name} " + "-" * max(0, 70 - len(name)))
        out.append(f"DO $install$ BEGIN\n    IF {condition} THEN")
        for statement in statements:
            out.append(f"        EXECUTE genstudio_legacy.expand_other_columns($stmt${statement.rstrip(';')}$stmt$, "
                       f"'{name}', 'public.{live.table}');")
        out.append("    END IF;\nEND $install$;")
    out += [
        "",
        "-- ---- copy (in the order `genstudio legacy run` uses) ----------------------------------",
        "DO $copy$ DECLARE s text; BEGIN",
        "    FOREACH s IN ARRAY ARRAY['multitalk_jobs', 'style_transfers', 'edited_images', 'datasets'] LOOP",
        "        IF EXISTS (SELECT 1 FROM genstudio_legacy.routes WHERE source = s) THEN",
        "            RAISE NOTICE '%: % rows copied', s, genstudio_legacy.copy_range(s, NULL, NULL);",
        "        END IF;",
        "    END LOOP;",
        "END $copy$;",
        "COMMIT;",
        "",
        "-- ---- verify: no rows here means every legacy row maps to exactly one equal target row",
        "SELECT * FROM genstudio_legacy.problems() LIMIT 20;",
    ]
    return "\n".join(out) + "\n"


def _only_comments(statement: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in statement.splitlines())
