"""Schema migrations on a real PostgreSQL: up, down, up again; adoption of a database that
followed the guide's Step 1; concurrent upgrades; bad requests that change nothing."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import psycopg
import pytest

from genstudio.db.migrator import MigrationError, Migrator, load_migrations, supabase_script
from genstudio.jobs.output_types import OUTPUT_TYPES

SQL_DIR = Path(__file__).parent / "sql"
JOB_TABLES = [t.table for t in OUTPUT_TYPES.values()]


def catalog(conninfo: str) -> dict[str, list[tuple]]:
    """Everything about the job tables that the code depends on, in comparable form."""
    queries = {
        "columns": """
            SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                   pg_get_expr(d.adbin, d.adrelid)
            FROM pg_attribute a
            JOIN pg_class c ON c.oid = a.attrelid
            LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE c.relname = ANY(%(tables)s) AND c.relnamespace = 'public'::regnamespace
              AND a.attnum > 0 AND NOT a.attisdropped""",
        "constraints": """
            SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
            FROM pg_constraint WHERE conrelid::regclass::text = ANY(%(tables)s)""",
        "indexes": """
            SELECT tablename, indexname, indexdef FROM pg_indexes
            WHERE schemaname = 'public' AND tablename = ANY(%(tables)s)""",
        "policies": """
            SELECT tablename, policyname, cmd, roles::text, qual, with_check FROM pg_policies
            WHERE schemaname = 'public' AND tablename = ANY(%(tables)s)""",
        "triggers": """
            SELECT event_object_table, trigger_name, action_timing, event_manipulation, action_statement
            FROM information_schema.triggers WHERE event_object_table = ANY(%(tables)s)""",
        "rls": """
            SELECT relname, relrowsecurity FROM pg_class
            WHERE relname = ANY(%(tables)s) AND relnamespace = 'public'::regnamespace""",
        "grants": """
            SELECT table_name, grantee, privilege_type FROM information_schema.role_table_grants
            WHERE table_schema = 'public' AND table_name = ANY(%(tables)s)
              AND grantee IN ('anon', 'authenticated', 'service_role')""",
    }
    with psycopg.connect(conninfo) as conn:
        return {k: sorted(conn.execute(q, {"tables": JOB_TABLES}).fetchall(), key=repr) for k, q in queries.items()}


def run_sql_file(conninfo: str, name: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute((SQL_DIR / name).read_text())


def test_applied_schema_has_exactly_the_columns_the_code_expects(db_url):
    columns = catalog(db_url)["columns"]
    for output_type in OUTPUT_TYPES.values():
        applied = {name: sqltype for table, name, sqltype, _, _ in columns if table == output_type.table}
        assert applied == output_type.columns, output_type.table


def test_schema_is_a_superset_of_the_guide_target(db_url):
    cat = catalog(db_url)
    constraints = {(t, name): d for t, name, d in cat["constraints"]}
    for t in JOB_TABLES:
        assert "'cancelled'" in constraints[(t, f"{t}_status_check")]
        assert constraints[(t, f"{t}_comfy_job_id_key")] == "UNIQUE (comfy_job_id)"
        assert constraints[(t, f"{t}_legacy_key")] == "UNIQUE (legacy_table, legacy_id)"
        assert "ON DELETE CASCADE" in constraints[(t, f"{t}_user_id_fkey")]
    indexes = {name for _, name, _ in cat["indexes"]}
    for t in JOB_TABLES:
        for suffix in ("user_id", "workflow_name", "status", "created_at", "user_feed", "workflow_feed", "active"):
            assert f"idx_{t}_{suffix}" in indexes
    assert {"idx_video_jobs_comfy_job_id", "idx_image_jobs_comfy_job_id"} <= indexes
    triggers = {(t, name) for t, name, *_ in cat["triggers"]}
    assert triggers == {(t, f"{t}_{kind}_trigger") for t in JOB_TABLES for kind in ("updated_at", "job_events")}
    assert {t: on for t, on in cat["rls"]} == {t: True for t in JOB_TABLES}
    defaults = {(t, c): d for t, c, _, _, d in cat["columns"]}
    assert defaults[("image_jobs", "comfyui_output_type")] == "'output'::text"
    assert defaults[("text_jobs", "visibility")] == "'private'::text"
    assert defaults[("video_jobs", "id")] == "gen_random_uuid()"


def test_updated_at_trigger_moves_updated_at(db_url):
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO image_jobs (workflow_name, comfy_url, updated_at) VALUES ('img2img', 'x', '2001-01-01')")
        conn.execute("UPDATE image_jobs SET status = 'processing'")
        (updated_at,) = conn.execute("SELECT updated_at FROM image_jobs").fetchone()
    assert updated_at.year > 2001


def test_up_down_up_gives_the_same_schema(empty_db):
    migrator = Migrator(empty_db)
    assert [m.version for m in migrator.upgrade()] == [m.version for m in load_migrations()]
    first = catalog(empty_db)
    assert [m.version for m in migrator.downgrade(0)] == [m.version for m in reversed(load_migrations())]
    with psycopg.connect(empty_db) as conn:
        assert conn.execute("SELECT to_regclass('public.video_jobs'), to_regnamespace('auth')").fetchone() == (None, None)
        assert conn.execute("SELECT to_regclass('public.job_events'), to_regclass('genstudio.webhooks')").fetchone() == (None, None)
    migrator.upgrade()
    assert catalog(empty_db) == first
    assert migrator.current_version() == load_migrations()[-1].version


def test_upgrade_and_downgrade_step_by_step(empty_db):
    migrator = Migrator(empty_db)
    assert [m.version for m in migrator.upgrade(to=1)] == [1]
    assert [s.applied_at is not None for s in migrator.status()][:2] == [True, False]
    assert migrator.upgrade(to=1) == []
    migrator.upgrade()
    assert [m.version for m in migrator.downgrade(1)] == list(range(migrator.latest_version, 1, -1))
    assert migrator.current_version() == 1


@pytest.mark.parametrize(
    "action, message",
    [
        (lambda m: m.upgrade(to=99), "unknown version 99"),
        (lambda m: m.downgrade(-1), "versions start at 0"),
        (lambda m: m.downgrade(99), "unknown version 99"),
        (lambda m: m.upgrade(to=0), "use `genstudio db downgrade"),
    ],
)
def test_bad_requests_are_errors_that_change_nothing(db_url, action, message):
    migrator = Migrator(db_url)
    before = (migrator.current_version(), catalog(db_url))
    with pytest.raises(MigrationError, match=message):
        action(migrator)
    assert (migrator.current_version(), catalog(db_url)) == before


def test_downgrade_refuses_to_drop_jobs_unless_forced(db_url):
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO video_jobs (workflow_name, comfy_url) VALUES ('lipsync-one', 'http://c')")
    migrator = Migrator(db_url)
    with pytest.raises(MigrationError, match="hold jobs"):
        migrator.downgrade(1)
    assert migrator.current_version() == 2
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM video_jobs").fetchone() == (1,)
    migrator.downgrade(1, allow_data_loss=True)
    assert migrator.current_version() == 1


def test_concurrent_upgrades_are_serialised(empty_db):
    results: list[list[int]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def upgrade() -> None:
        try:
            barrier.wait()
            results.append([m.version for m in Migrator(empty_db).upgrade()])
        except BaseException as exc:  # surfaced below; a thread cannot raise into pytest
            errors.append(exc)

    threads = [threading.Thread(target=upgrade) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results) == [[], [m.version for m in load_migrations()]]
    with psycopg.connect(empty_db) as conn:
        assert conn.execute("SELECT count(*) FROM genstudio.schema_migrations").fetchone() == (len(load_migrations()),)


def test_adopts_a_database_that_ran_the_guide_step1_by_hand(empty_db, db_url):
    run_sql_file(empty_db, "supabase_like_auth.sql")
    run_sql_file(empty_db, "guide_step1.sql")
    with psycopg.connect(empty_db) as conn:
        user_id = conn.execute("INSERT INTO auth.users (id, email) VALUES (gen_random_uuid(), 'a@x') RETURNING id").fetchone()[0]
        conn.execute(
            "INSERT INTO video_jobs (user_id, workflow_name, status, comfy_url, comfy_job_id, input_audio_urls) "
            "VALUES (%s, 'lipsync-one', 'completed', 'http://c', 'p-1', ARRAY['a.wav'])", (user_id,))
        conn.execute("INSERT INTO image_jobs (workflow_name, status, comfy_url, user_ip) VALUES ('img2img', 'failed', 'http://c', '1.2.3.4')")
        conn.execute("INSERT INTO text_jobs (workflow_name, status, output_data) VALUES ('character-caption', 'pending', '{\"k\": 1}')")

    Migrator(empty_db).upgrade()

    with psycopg.connect(empty_db) as conn:
        assert conn.execute("SELECT user_id, status, comfy_job_id, input_audio_urls, visibility FROM video_jobs").fetchall() == [
            (user_id, "completed", "p-1", ["a.wav"], "private")]
        assert conn.execute("SELECT user_ip, status FROM image_jobs").fetchall() == [("1.2.3.4", "failed")]
        assert conn.execute("SELECT output_data FROM text_jobs").fetchall() == [({"k": 1},)]
        # Supabase's own auth objects are left as they were: no genstudio marker on them.
        assert conn.execute("SELECT obj_description('auth.users'::regclass, 'pg_class')").fetchone() == (None,)
        assert conn.execute("SELECT count(*) FROM information_schema.columns "
                            "WHERE table_schema = 'auth' AND table_name = 'users' AND column_name = 'instance_id'").fetchone() == (1,)

    adopted, fresh = catalog(empty_db), catalog(db_url)
    # The guide's policies are replaced by ours, whatever they were called.
    assert adopted["policies"] == fresh["policies"]
    assert adopted["columns"] == fresh["columns"]
    assert adopted["constraints"] == fresh["constraints"]
    assert adopted["indexes"] == fresh["indexes"]
    assert adopted["triggers"] == fresh["triggers"]

    # Going back below 0001 must not remove what Supabase owns.
    Migrator(empty_db).downgrade(0, allow_data_loss=True)
    with psycopg.connect(empty_db) as conn:
        assert conn.execute("SELECT to_regclass('auth.users') IS NOT NULL, to_regprocedure('auth.uid()') IS NOT NULL").fetchone() == (True, True)


def test_supabase_script_applies_by_hand_and_is_recorded(empty_db, db_url):
    script = supabase_script()
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute(script)
        conn.execute(script)  # pasting it twice is harmless
    migrator = Migrator(empty_db)
    assert migrator.current_version() == migrator.latest_version
    assert migrator.upgrade() == []
    assert catalog(empty_db) == catalog(db_url)


# ---- 0003: workflow runs, ComfyUI servers, uploads ------------------------------------------

RUNNER_COLUMNS = {
    "workflow_runs": {
        "job_id": "uuid", "output_type": "text", "user_id": "uuid", "workflow_name": "text", "prompt": "jsonb",
        "required_node_types": "text[]", "output_nodes": "text[]", "input_files": "jsonb", "state": "text",
        "server_url": "text", "attempts": "integer", "lease_owner": "text",
        "lease_until": "timestamp with time zone", "dispatch_reason": "text",
        "deadline": "timestamp with time zone", "idempotency_key": "text",
        "created_at": "timestamp with time zone", "submitted_at": "timestamp with time zone",
    },
    "comfy_servers": {
        "url": "text", "healthy": "boolean", "checked_at": "timestamp with time zone",
        "queue_remaining": "integer", "node_types": "text[]", "error": "text",
    },
    "uploads": {
        "id": "uuid", "user_id": "uuid", "storage_key": "text", "filename": "text", "content_type": "text",
        "size_bytes": "bigint", "width": "integer", "height": "integer", "duration_seconds": "double precision",
        "created_at": "timestamp with time zone",
    },
}


def runner_catalog(conninfo: str) -> list[tuple]:
    with psycopg.connect(conninfo) as conn:
        return conn.execute("""
            SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, c.relrowsecurity
            FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
            WHERE c.relnamespace = 'genstudio'::regnamespace AND c.relkind = 'r'
              AND c.relname <> 'schema_migrations' AND a.attnum > 0 AND NOT a.attisdropped
            UNION ALL
            SELECT tablename, policyname, cmd, NULL, NULL FROM pg_policies WHERE schemaname = 'genstudio'
            UNION ALL
            SELECT table_name, grantee, privilege_type, NULL, NULL FROM information_schema.role_table_grants
            WHERE table_schema = 'genstudio' AND grantee IN ('anon', 'authenticated', 'service_role')
            ORDER BY 1, 2, 3""").fetchall()


def test_runner_tables_have_the_contracted_columns(db_url):
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("""
            SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod)
            FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
            WHERE c.relnamespace = 'genstudio'::regnamespace AND c.relkind = 'r'
              AND c.relname = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped""", (list(RUNNER_COLUMNS),)).fetchall()
    applied: dict[str, dict[str, str]] = {}
    for table, column, sqltype in rows:
        applied.setdefault(table, {})[column] = sqltype
    assert applied == RUNNER_COLUMNS


def test_runner_tables_up_down_up_and_pasted_twice(db_url):
    before = runner_catalog(db_url)
    migrator = Migrator(db_url)
    migrator.downgrade(2)
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT to_regclass('genstudio.workflow_runs'), to_regclass('genstudio.uploads')").fetchone() == (None, None)
    migrator.upgrade()
    assert runner_catalog(db_url) == before
    up_sql = next(m for m in load_migrations() if m.version == 3).up_sql
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(up_sql)
    assert runner_catalog(db_url) == before


def _as(conn: psycopg.Connection, role: str, user_id=None) -> None:
    claims = '{"role": "%s"%s}' % (role, f', "sub": "{user_id}"' if user_id else "")
    conn.execute("SELECT set_config('role', %s, true), set_config('request.jwt.claims', %s, true)", (role, claims))


def _run_row(user_id) -> dict:
    return {"job_id": uuid.uuid4(), "user_id": user_id, "prompt": '{"1": {"class_type": "X", "inputs": {}}}'}


INSERT_RUN = ("INSERT INTO genstudio.workflow_runs (job_id, output_type, user_id, workflow_name, prompt) "
              "VALUES (%(job_id)s, 'image', %(user_id)s, 'image-invert', %(prompt)s)")


def test_runner_tables_row_level_security(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        alice, bob = (conn.execute("INSERT INTO auth.users (email) VALUES (%s) RETURNING id", (e,)).fetchone()[0]
                      for e in ("alice@x", "bob@x"))
        conn.execute("INSERT INTO genstudio.comfy_servers (url, healthy) VALUES ('http://user:secret@c:8188', true)")

    with psycopg.connect(db_url) as conn:  # alice creates her own run and upload
        _as(conn, "authenticated", alice)
        conn.execute(INSERT_RUN, _run_row(alice))
        conn.execute("INSERT INTO genstudio.uploads (user_id, storage_key, filename, content_type, size_bytes) "
                     "VALUES (%s, 'uploads/a/b/c.png', 'c.png', 'image/png', 3)", (alice,))
        conn.commit()

    for statement, params in [
        (INSERT_RUN, _run_row(bob)),  # for somebody else
        ("UPDATE genstudio.workflow_runs SET state = 'submitted'", None),  # dispatch is not hers to do
        ("SELECT * FROM genstudio.comfy_servers", None),  # server URLs may hold credentials
        ("INSERT INTO genstudio.workflow_runs (job_id, output_type, user_id, workflow_name, prompt, state) "
         "VALUES (gen_random_uuid(), 'image', %s, 'w', '{}', 'submitted')", (alice,)),
    ]:
        with psycopg.connect(db_url) as conn:
            _as(conn, "authenticated", alice)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement, params)

    with psycopg.connect(db_url) as conn:
        _as(conn, "authenticated", bob)
        assert conn.execute("SELECT count(*) FROM genstudio.workflow_runs").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM genstudio.uploads").fetchone() == (0,)
        assert conn.execute("DELETE FROM genstudio.uploads").rowcount == 0
    with psycopg.connect(db_url) as conn:
        _as(conn, "anon")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM genstudio.workflow_runs")
    with psycopg.connect(db_url) as conn:
        _as(conn, "service_role")
        assert conn.execute("UPDATE genstudio.workflow_runs SET state = 'submitted'").rowcount == 1
        assert conn.execute("SELECT count(*) FROM genstudio.comfy_servers").fetchone() == (1,)


def test_queued_runs_are_announced_at_commit(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        user = conn.execute("INSERT INTO auth.users (email) VALUES ('n@x') RETURNING id").fetchone()[0]
    with psycopg.connect(db_url, autocommit=True) as listener, psycopg.connect(db_url) as writer:
        listener.execute("LISTEN genstudio_workflow_runs")
        row = _run_row(user)
        writer.execute(INSERT_RUN, row)
        assert list(listener.notifies(timeout=0.2)) == []  # not before commit
        writer.commit()
        notes = list(listener.notifies(timeout=2, stop_after=1))
        assert [n.payload for n in notes] == [str(row["job_id"])]

def test_job_events_are_written_at_commit_by_deferred_triggers_under_row_level_security(db_url):
    with psycopg.connect(db_url) as conn:
        deferred = conn.execute(
            "SELECT tgrelid::regclass::text, tgdeferrable, tginitdeferred FROM pg_trigger "
            "WHERE tgname LIKE '%%_job_events_trigger' ORDER BY 1").fetchall()
        assert deferred == [(t, True, True) for t in sorted(JOB_TABLES)]
        assert conn.execute("SELECT relrowsecurity FROM pg_class WHERE oid = 'public.job_events'::regclass").fetchone() == (True,)
        grants = conn.execute("SELECT grantee, privilege_type FROM information_schema.role_table_grants "
                              "WHERE table_name = 'job_events' AND grantee IN ('anon', 'authenticated') ORDER BY 1, 2").fetchall()
        assert grants == [("authenticated", "SELECT")]
