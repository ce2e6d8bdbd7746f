"""`genstudio legacy`: each mapping rule, idempotency, dry run, rollback, archive, follow,
verify and the operator's SQL script, on a real PostgreSQL with the legacy tables as studios
have them (tests/legacy_fixtures.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from genstudio.legacy.install import LegacyError, operator_script
from genstudio.legacy.maps import MapFileError, read_user_map, read_workflow_map
from genstudio.legacy.migration import LegacyMigration
from tests import legacy_fixtures as lf

TARGETS = ("video_jobs", "image_jobs", "text_jobs")


@pytest.fixture
def legacy_db(db_url: str) -> str:
    with psycopg.connect(db_url) as conn:
        lf.create_legacy_tables(conn)
        lf.insert_awkward_rows(conn)
        lf.insert_native_job(conn)
    return db_url


def q(url: str, query: str, params=()) -> list[tuple]:
    with psycopg.connect(url) as conn:
        conn.execute("SET timezone = 'UTC'")
        return conn.execute(query, params).fetchall()


def job(url: str, table: str, legacy_id: str) -> dict:
    with psycopg.connect(url) as conn:
        cur = conn.execute(f"SELECT * FROM {table} WHERE legacy_id = %s", (legacy_id,))
        row = cur.fetchone()
        assert row is not None, f"{legacy_id} not in {table}"
        return dict(zip([d.name for d in cur.description], row))


def snapshot(url: str) -> dict[str, list[tuple]]:
    return {t: q(url, f"SELECT * FROM {t} ORDER BY legacy_table NULLS FIRST, legacy_id, id") for t in TARGETS}


def fix_unknown_statuses(url: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE multitalk_jobs SET status = 'submitted' WHERE job_id = %s", (lf.MT_UNKNOWN,))
        conn.execute("UPDATE style_transfers SET status = 'pending' WHERE status IS NULL")


def cli(url: str | None, *args: str, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    if url:
        env["DATABASE_URL"] = url
    return subprocess.run([sys.executable, "-c", "from genstudio.cli import app; app()", "legacy", *args],
                          env=env, capture_output=True, text=True, timeout=120, **kwargs)


# ---- mapping rules ----------------------------------------------------------------------

def test_no_array_holds_null_and_absent_values_stay_null(legacy_db):
    LegacyMigration(legacy_db).run(progress=False)
    for table, columns in {"video_jobs": ["input_image_urls", "input_audio_urls", "output_video_urls"],
                           "image_jobs": ["input_image_urls", "output_image_urls"],
                           "text_jobs": ["input_image_urls"]}.items():
        for column in columns:
            bad = q(legacy_db, f"SELECT legacy_id FROM {table} WHERE array_position({column}, NULL) IS NOT NULL "
                               f"OR {column} = '{{}}' OR '' = ANY({column})")
            assert bad == [], (table, column)
    submitted = job(legacy_db, "video_jobs", lf.MT_SUBMITTED)
    assert submitted["output_video_urls"] is None
    assert submitted["input_image_urls"] == ["face2.png"]
    assert job(legacy_db, "image_jobs", lf.EI_PENDING)["input_image_urls"] is None  # source was ''


# Each legacy row rebuilt from its target row: the values the target columns reproduce, then
# parameters.legacy on top (it holds exactly what no column reproduces). Equal to the legacy row
# itself, key for key, means no legacy value was lost.
REBUILT = {
    "multitalk_jobs": """jsonb_build_object(
        'job_id', t.legacy_id, 'status', t.status, 'timestamp_submitted', t.created_at,
        'timestamp_completed', t.completed_at, 'filename', t.comfyui_output_filename,
        'subfolder', t.comfyui_output_subfolder, 'image_filename', t.input_image_urls[1],
        'audio_filename', to_jsonb(t) -> 'input_audio_urls' -> 0, 'width', t.width, 'height', t.height,
        'trim_to_audio', t.parameters -> 'trim_to_audio', 'comfy_url', t.comfy_url,
        'error_message', t.error_message,
        'video_url', coalesce(to_jsonb(t) -> 'output_video_urls', to_jsonb(t) -> 'output_image_urls') -> 0)""",
    "style_transfers": """jsonb_build_object(
        'id', t.legacy_id, 'status', t.status, 'source_image_url', t.input_image_urls[1],
        'style_image_url', t.input_image_urls[2], 'prompt', t.prompt, 'result_image_url', t.output_image_urls[1],
        'model_used', t.model_used, 'processing_time_seconds', t.processing_time_seconds, 'user_ip', t.user_ip,
        'error_message', t.error_message)""",
    "edited_images": """jsonb_build_object(
        'id', t.legacy_id, 'status', t.status, 'source_image_url', t.input_image_urls[1], 'prompt', t.prompt,
        'result_image_url', t.output_image_urls[1], 'model_used', t.model_used,
        'processing_time_seconds', t.processing_time_seconds, 'user_ip', t.user_ip)""",
    "datasets": """jsonb_build_object('settings', t.parameters - 'legacy')""",
}


def test_every_legacy_value_is_kept_including_key_and_created_at(legacy_db):
    with psycopg.connect(legacy_db) as conn:  # a column the mapping does not know
        conn.execute("ALTER TABLE edited_images ADD COLUMN seed integer")
        conn.execute("UPDATE edited_images SET seed = 7 WHERE id = %s", (lf.EI_DONE,))
    LegacyMigration(legacy_db).run(progress=False)
    for source, key, table in (("multitalk_jobs", "job_id", "video_jobs"), ("multitalk_jobs", "job_id", "image_jobs"),
                               ("style_transfers", "id", "image_jobs"), ("edited_images", "id", "image_jobs"),
                               ("datasets", "id", "text_jobs")):
        rows = q(legacy_db, f"""
            SELECT s.{key}::text, to_jsonb(s), {REBUILT[source]} || (t.parameters -> 'legacy')
              FROM {source} s JOIN {table} t ON t.legacy_table = %s AND t.legacy_id = s.{key}::text""", (source,))
        assert rows, (source, table)
        differing = [(k, {c: (v, rebuilt.get(c)) for c, v in legacy.items() if rebuilt.get(c, "absent") != v})
                     for k, legacy, rebuilt in rows if legacy != rebuilt]
        assert differing == [], (source, table)
    done = job(legacy_db, "video_jobs", lf.MT_DONE)
    legacy = done["parameters"]["legacy"]
    assert legacy["job_id"] == lf.MT_DONE and legacy["project_id"] == "proj-7"
    assert legacy["created_at"] is not None and done["created_at"].isoformat() == "2024-05-01T10:00:00+00:00"
    assert done["parameters"]["trim_to_audio"] is True
    assert done["legacy_table"] == "multitalk_jobs" and done["legacy_id"] == lf.MT_DONE
    assert job(legacy_db, "image_jobs", lf.EI_DONE)["parameters"]["legacy"]["seed"] == 7
    assert job(legacy_db, "image_jobs", lf.EI_PENDING)["parameters"]["legacy"]["source_image_url"] == ""
    dataset = job(legacy_db, "text_jobs", lf.DS_FULL)
    assert dataset["parameters"]["legacy"]["character_trigger"] == "ALICE_TRG"
    assert dataset["parameters"]["legacy"]["name"] == "Alice"


def test_statuses_map_and_unknown_ones_are_reported_not_pending(legacy_db):
    migration = LegacyMigration(legacy_db)
    report = migration.run(progress=False)
    assert job(legacy_db, "video_jobs", lf.MT_SUBMITTED)["status"] == "pending"
    assert job(legacy_db, "video_jobs", lf.MT_ERROR)["status"] == "failed"
    assert job(legacy_db, "image_jobs", lf.ST_FAILED)["status"] == "failed"
    assert report.not_migrated == {"multitalk_jobs": 1, "style_transfers": 1}
    assert q(legacy_db, "SELECT count(*) FROM video_jobs WHERE legacy_id = %s", (lf.MT_UNKNOWN,)) == [(0,)]
    anomalies = {(a.kind, a.key) for a in migration.plan().anomalies}
    assert ("unknown_status", lf.MT_UNKNOWN) in anomalies
    assert ("unknown_status", lf.ST_NULL_STATUS) in anomalies
    problems = migration.verify().problems
    assert ("not_migrated", "multitalk_jobs", lf.MT_UNKNOWN, None, "unknown status 'queued'") in problems


def test_failure_reasons_survive(legacy_db):
    LegacyMigration(legacy_db).run(progress=False)
    failed_edit = job(legacy_db, "image_jobs", lf.EI_ERROR)
    assert failed_edit["error_message"] == "content policy violation"
    assert failed_edit["model_used"] is None
    assert failed_edit["parameters"]["legacy"]["model_used"] == "Error: content policy violation"
    assert job(legacy_db, "image_jobs", lf.EI_DONE)["model_used"] == "gpt-image-1"
    assert job(legacy_db, "video_jobs", lf.MT_ERROR)["error_message"] == "CUDA out of memory"
    assert job(legacy_db, "image_jobs", lf.ST_FAILED)["error_message"] == "bad style image"


def test_completed_at_only_for_finished_rows(legacy_db):
    LegacyMigration(legacy_db).run(progress=False)
    assert job(legacy_db, "image_jobs", lf.ST_PENDING)["completed_at"] is None  # has an updated_at
    assert job(legacy_db, "video_jobs", lf.MT_SUBMITTED)["completed_at"] is None
    assert job(legacy_db, "video_jobs", lf.MT_COLLIDES)["completed_at"] is None
    done = job(legacy_db, "video_jobs", lf.MT_DONE)
    assert done["completed_at"].isoformat() == "2024-05-01T10:02:30+00:00"
    assert done["processing_time_seconds"] == 150
    assert job(legacy_db, "image_jobs", lf.ST_DONE)["completed_at"].isoformat() == "2024-06-01T09:00:42+00:00"
    assert job(legacy_db, "image_jobs", lf.EI_DONE)["completed_at"].isoformat() == "2024-07-01T08:00:12+00:00"
    assert q(legacy_db, "SELECT count(*) FROM (SELECT status, completed_at FROM video_jobs UNION ALL "
                        "SELECT status, completed_at FROM image_jobs) j "
                        "WHERE status IN ('pending', 'processing') AND completed_at IS NOT NULL") == [(0,)]


def test_image_results_in_multitalk_go_to_image_jobs(legacy_db):
    LegacyMigration(legacy_db).run(progress=False)
    by_file = job(legacy_db, "image_jobs", lf.MT_IMG2IMG)
    assert by_file["workflow_name"] == "img2img"
    assert by_file["output_image_urls"] == ["https://cdn.example.com/i/ComfyUI_00042_.png"]
    assert by_file["comfy_url"] == lf.COMFY and by_file["comfy_job_id"] == lf.MT_IMG2IMG
    assert job(legacy_db, "image_jobs", lf.MT_IMG2IMG_URL_ONLY)["output_image_urls"] == ["https://cdn.example.com/i/x.jpg?v=1"]
    in_video = q(legacy_db, "SELECT legacy_id FROM video_jobs WHERE legacy_id IN (%s, %s)", (lf.MT_IMG2IMG, lf.MT_IMG2IMG_URL_ONLY))
    assert in_video == []
    assert job(legacy_db, "video_jobs", lf.MT_TEMP)["comfyui_output_type"] == "temp"
    assert job(legacy_db, "video_jobs", lf.MT_DONE)["comfyui_output_type"] == "output"


def test_workflow_names_default_as_the_guide_and_follow_the_workflow_map(legacy_db, tmp_path):
    wf = tmp_path / "workflows.csv"
    wf.write_text("legacy_table,column,pattern,workflow_name\n"
                  "style_transfers,workflow_name,^StyleTransferV2$,style-transfer-v2\n"
                  "multitalk_jobs,audio_filename,^voice,lipsync-multi\n")
    LegacyMigration(legacy_db).run(progress=False, workflow_map=read_workflow_map(wf))
    assert job(legacy_db, "image_jobs", lf.ST_FAILED)["workflow_name"] == "style-transfer-v2"
    assert job(legacy_db, "image_jobs", lf.ST_DONE)["workflow_name"] == "style-transfer"
    assert job(legacy_db, "video_jobs", lf.MT_DONE)["workflow_name"] == "lipsync-multi"
    assert job(legacy_db, "video_jobs", lf.MT_SUBMITTED)["workflow_name"] == "lipsync-one"
    assert job(legacy_db, "image_jobs", lf.EI_DONE)["workflow_name"] == "image-edit"
    assert job(legacy_db, "text_jobs", lf.DS_FULL)["workflow_name"] == "character-caption"
    assert LegacyMigration(legacy_db).verify().problem_count == 2  # only the two unknown statuses


def test_comfy_url_only_where_a_comfyui_server_was_used(legacy_db):
    LegacyMigration(legacy_db).run(progress=False, style_transfer_comfy_url="https://comfy.studio")
    assert job(legacy_db, "image_jobs", lf.EI_DONE)["comfy_url"] == ""
    assert job(legacy_db, "video_jobs", lf.MT_DONE)["comfy_url"] == lf.COMFY
    assert job(legacy_db, "image_jobs", lf.ST_DONE)["comfy_url"] == "https://comfy.studio"
    assert job(legacy_db, "image_jobs", lf.ST_PENDING)["comfy_url"] == ""  # never reached ComfyUI
    assert job(legacy_db, "text_jobs", lf.DS_FULL)["comfy_url"] is None


def test_a_dataset_and_its_data_become_one_text_job(legacy_db):
    LegacyMigration(legacy_db).run(progress=False)
    ds = job(legacy_db, "text_jobs", lf.DS_FULL)
    assert ds["workflow_name"] == "character-caption" and ds["status"] == "completed"
    assert ds["input_image_urls"] == ["https://d/a1.png", "https://d/a2.png"]
    assert [(i["name"], i["url"], i["caption"]) for i in ds["output_data"]] == [
        ("a1.png", "https://d/a1.png", "ALICE_TRG smiling"), ("a2.png", "https://d/a2.png", None), ("a3.png", "", None)]
    assert {k: v for k, v in ds["parameters"].items() if k != "legacy"} == lf.CAPTION_SETTINGS
    empty = job(legacy_db, "text_jobs", lf.DS_EMPTY)
    assert empty["output_data"] == [] and empty["input_image_urls"] is None
    assert q(legacy_db, "SELECT count(*) FROM text_jobs") == [(2,)]


def test_owners_stay_null_unless_the_user_map_says(legacy_db, tmp_path):
    alice, bob = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(legacy_db) as conn:
        conn.execute("INSERT INTO auth.users (id, email) VALUES (%s, 'a@x'), (%s, 'b@x')", (alice, bob))
    users = tmp_path / "users.csv"
    users.write_text(f"user_ip,legacy_table,legacy_id,user_id\n10.0.0.1,,,{alice}\n"
                     f",multitalk_jobs,{lf.MT_DONE},{bob}\n,style_transfers,{lf.ST_FAILED},{bob}\n")
    LegacyMigration(legacy_db).run(progress=False, user_map=read_user_map(users))
    assert job(legacy_db, "image_jobs", lf.ST_DONE)["user_id"] == alice  # by IP
    assert job(legacy_db, "image_jobs", lf.EI_DONE)["user_id"] == alice
    assert job(legacy_db, "image_jobs", lf.ST_FAILED)["user_id"] == bob  # key wins over IP 10.0.0.1
    assert job(legacy_db, "video_jobs", lf.MT_DONE)["user_id"] == bob
    owned = q(legacy_db, "SELECT count(*) FROM (SELECT user_id FROM video_jobs WHERE legacy_table IS NOT NULL UNION ALL "
                         "SELECT user_id FROM image_jobs UNION ALL SELECT user_id FROM text_jobs) j WHERE user_id IS NOT NULL")
    assert owned == [(4,)]


def test_a_user_map_naming_unknown_users_or_malformed_writes_nothing(legacy_db, tmp_path):
    before = snapshot(legacy_db)
    users = tmp_path / "users.csv"
    users.write_text(f"user_ip,user_id\n10.0.0.1,{uuid.uuid4()}\n")
    with pytest.raises(LegacyError, match="do not exist in auth.users"):
        LegacyMigration(legacy_db).run(progress=False, user_map=read_user_map(users))
    assert snapshot(legacy_db) == before
    users.write_text("user_ip,user_id\n10.0.0.1,not-a-uuid\n")
    with pytest.raises(MapFileError, match=r"users.csv:2: user_id 'not-a-uuid' is not a UUID"):
        read_user_map(users)
    users.write_text("ip,user\n")
    with pytest.raises(MapFileError, match="unknown column"):
        read_user_map(users)
    result = cli(legacy_db, "run", "--user-map", str(users))
    assert result.returncode == 1 and "unknown column" in result.stderr and "Traceback" not in result.stderr
    assert snapshot(legacy_db) == before
    assert q(legacy_db, "SELECT to_regnamespace('genstudio_legacy')") == [(None,)]


def test_colliding_prompt_ids_are_reported_and_do_not_fail_the_copy(legacy_db):
    migration = LegacyMigration(legacy_db)
    collisions = {a.key for a in migration.plan().anomalies if a.kind == "comfy_id_collision"}
    assert collisions == {lf.MT_COLLIDES, lf.ST_DUP_B}
    migration.run(progress=False, batch_size=2)
    assert job(legacy_db, "video_jobs", lf.MT_COLLIDES)["comfy_job_id"] is None
    assert q(legacy_db, "SELECT count(*) FROM video_jobs WHERE comfy_job_id = %s", (lf.NATIVE_COMFY_ID,)) == [(1,)]
    assert job(legacy_db, "image_jobs", lf.ST_DUP_A)["comfy_job_id"] == "st-dup"
    assert job(legacy_db, "image_jobs", lf.ST_DUP_B)["comfy_job_id"] is None
    assert job(legacy_db, "image_jobs", lf.ST_DUP_B)["parameters"]["legacy"]["comfyui_prompt_id"] == "st-dup"
    fix_unknown_statuses(legacy_db)
    migration.run(progress=False)
    assert migration.verify().ok


# ---- run, dry run, verify, rollback, archive ------------------------------------------

def test_running_twice_changes_nothing(legacy_db):
    migration = LegacyMigration(legacy_db)
    first = migration.run(progress=False, batch_size=3)
    after_first = snapshot(legacy_db)
    second = migration.run(progress=False, batch_size=3)
    assert sum(first.copied.values()) == 20 and second.copied == {}
    assert snapshot(legacy_db) == after_first


def test_dry_run_writes_nothing(legacy_db):
    before = snapshot(legacy_db)
    report = LegacyMigration(legacy_db).run(progress=False, dry_run=True)
    assert report.dry_run and sum(report.copied.values()) == 20
    assert snapshot(legacy_db) == before
    assert q(legacy_db, "SELECT to_regnamespace('genstudio_legacy')") == [(None,)]


def test_verify_passes_on_a_faithful_copy_and_names_every_difference(legacy_db):
    fix_unknown_statuses(legacy_db)
    migration = LegacyMigration(legacy_db)
    migration.run(progress=False)
    report = migration.verify()
    assert report.ok, report.problems
    assert report.totals["video_jobs_count"] == 9 and report.totals["video_jobs_migrated"] == 8
    assert {(c.source, c.legacy_status, c.target, c.status, c.legacy_rows, c.found) for c in report.counts} >= {
        ("multitalk_jobs", "error", "video_jobs", "failed", 1, 1),
        ("datasets", None, "text_jobs", "completed", 2, 2)}
    with psycopg.connect(legacy_db) as conn:
        conn.execute("UPDATE image_jobs SET prompt = 'tampered' WHERE legacy_id = %s", (lf.ST_DONE,))
        conn.execute("DELETE FROM video_jobs WHERE legacy_id = %s", (lf.MT_DONE,))
        conn.execute("INSERT INTO text_jobs (workflow_name, status, legacy_table, legacy_id) "
                     "VALUES ('character-caption', 'completed', 'datasets', 'no-such-dataset')")
        conn.execute("UPDATE style_transfers SET prompt = 'changed at the source' WHERE id = %s", (lf.ST_PENDING,))
    problems = {(p[0], p[2], p[4]) for p in migration.verify().problems}
    assert problems == {("mismatch", lf.ST_DONE, "prompt"), ("missing", lf.MT_DONE, None),
                        ("extra", "no-such-dataset", "no legacy row maps here"),
                        # the prompt lands in the prompt column only (not repeated under parameters.legacy)
                        ("mismatch", lf.ST_PENDING, "prompt")}
    result = cli(legacy_db, "verify")
    assert result.returncode == 1 and "4 problem(s)" in result.stdout and lf.MT_DONE in result.stdout


def test_rollback_removes_exactly_the_migrated_rows(legacy_db):
    before = snapshot(legacy_db)
    migration = LegacyMigration(legacy_db)
    migration.run(progress=False)
    migration.follow()
    with pytest.raises(LegacyError, match="jobs the migration did not write"):
        migration.rollback(drop_tables=True)
    deleted = migration.rollback()
    assert deleted == {"video_jobs": 7, "image_jobs": 11, "text_jobs": 2}
    assert snapshot(legacy_db) == before  # the native job is still there, untouched
    assert q(legacy_db, "SELECT to_regnamespace('genstudio_legacy'), "
                        "(SELECT count(*) FROM pg_trigger WHERE tgname = 'genstudio_legacy_follow')") == [(None, 0)]
    assert q(legacy_db, "SELECT count(*) FROM multitalk_jobs") == [(10,)]


def test_rollback_drop_tables_is_the_guides_step_7_once_only_migrated_jobs_remain(legacy_db):
    with psycopg.connect(legacy_db) as conn:
        conn.execute("DELETE FROM video_jobs")
    migration = LegacyMigration(legacy_db)
    migration.run(progress=False)
    migration.rollback(drop_tables=True)
    assert q(legacy_db, "SELECT to_regclass('public.video_jobs'), to_regclass('public.text_jobs')") == [(None, None)]
    assert q(legacy_db, "SELECT count(*) FROM style_transfers") == [(7,)]


def test_archive_refuses_until_verify_passes_and_unarchive_restores(legacy_db):
    migration = LegacyMigration(legacy_db)
    migration.run(progress=False)
    with pytest.raises(LegacyError, match="verify found 2 problem"):
        migration.archive()
    assert q(legacy_db, "SELECT to_regclass('public.multitalk_jobs') IS NOT NULL") == [(True,)]
    fix_unknown_statuses(legacy_db)
    migration.run(progress=False)
    renamed = migration.archive()
    assert "datasets -> _archived_datasets" in renamed and "data -> _archived_data" in renamed
    assert q(legacy_db, "SELECT to_regclass('public._archived_multitalk_jobs') IS NOT NULL, "
                        "to_regclass('public.multitalk_jobs')") == [(True, None)]
    assert migration.verify().ok  # the mapping reads the archived tables
    with pytest.raises(LegacyError, match="archived; run `genstudio legacy unarchive` first"):
        migration.run(progress=False)
    migration.unarchive()
    assert q(legacy_db, "SELECT to_regclass('public.multitalk_jobs') IS NOT NULL") == [(True,)]


def test_archive_force_archives_despite_verify(legacy_db):
    LegacyMigration(legacy_db).archive(force=True)
    assert q(legacy_db, "SELECT to_regclass('public._archived_style_transfers') IS NOT NULL") == [(True,)]


# ---- follow -----------------------------------------------------------------------------

def test_follow_carries_legacy_writes_into_the_job_tables(legacy_db):
    fix_unknown_statuses(legacy_db)
    migration = LegacyMigration(legacy_db)
    migration.follow()
    migration.run(progress=False)
    with psycopg.connect(legacy_db) as conn:
        # Old code keeps writing: a new job, its completion as an image, a new style transfer,
        # a caption added to a dataset, a deleted edit.
        conn.execute("INSERT INTO multitalk_jobs (job_id, status, width, height, comfy_url, image_filename) "
                     "VALUES ('p-new', 'submitted', 512, 512, 'http://comfy-b:8188', 'new.png')")
    assert job(legacy_db, "video_jobs", "p-new")["status"] == "pending"
    with psycopg.connect(legacy_db) as conn:
        conn.execute("UPDATE multitalk_jobs SET status = 'completed', timestamp_completed = now(), "
                     "filename = 'ComfyUI_9_.png', video_url = 'https://cdn/x/ComfyUI_9_.png' WHERE job_id = 'p-new'")
        conn.execute("UPDATE multitalk_jobs SET status = 'error', error_message = 'OOM' WHERE job_id = %s", (lf.MT_SUBMITTED,))
        conn.execute("INSERT INTO style_transfers (id, created_at, source_image_url, style_image_url, prompt, status, user_ip) "
                     "VALUES (gen_random_uuid(), now(), 'https://s/a.png', 'https://s/b.png', 'live', 'pending', '10.9.9.9')")
        conn.execute("UPDATE data SET caption = 'now captioned' WHERE id = %s", (lf.DATA_2,))
        conn.execute("DELETE FROM edited_images WHERE id = %s", (lf.EI_PENDING,))
    moved = job(legacy_db, "image_jobs", "p-new")
    assert moved["status"] == "completed" and moved["workflow_name"] == "img2img"
    assert q(legacy_db, "SELECT count(*) FROM video_jobs WHERE legacy_id = 'p-new'") == [(0,)]
    failed = job(legacy_db, "video_jobs", lf.MT_SUBMITTED)
    assert failed["status"] == "failed" and failed["error_message"] == "OOM"
    assert q(legacy_db, "SELECT count(*) FROM image_jobs WHERE prompt = 'live'") == [(1,)]
    assert job(legacy_db, "text_jobs", lf.DS_FULL)["output_data"][1]["caption"] == "now captioned"
    assert q(legacy_db, "SELECT count(*) FROM image_jobs WHERE legacy_id = %s", (lf.EI_PENDING,)) == [(0,)]
    assert migration.verify().ok
    migration.unfollow()
    with psycopg.connect(legacy_db) as conn:
        conn.execute("UPDATE multitalk_jobs SET error_message = 'later' WHERE job_id = %s", (lf.MT_ERROR,))
    assert job(legacy_db, "video_jobs", lf.MT_ERROR)["error_message"] == "CUDA out of memory"


def test_a_failing_follow_never_breaks_the_old_code_and_run_catches_up(legacy_db):
    fix_unknown_statuses(legacy_db)
    migration = LegacyMigration(legacy_db)
    migration.run(progress=False)
    migration.follow()
    with psycopg.connect(legacy_db) as conn:
        # A check the job table enforces and the legacy table does not: the write must still commit.
        conn.execute("ALTER TABLE video_jobs ADD CONSTRAINT no_huge CHECK (width < 10000) NOT VALID")
        conn.execute("UPDATE multitalk_jobs SET width = 20000 WHERE job_id = %s", (lf.MT_DONE,))
    assert q(legacy_db, "SELECT width FROM multitalk_jobs WHERE job_id = %s", (lf.MT_DONE,)) == [(20000,)]
    assert q(legacy_db, "SELECT source, legacy_id FROM genstudio_legacy.follow_errors") == [("multitalk_jobs", lf.MT_DONE)]
    with psycopg.connect(legacy_db) as conn:
        conn.execute("ALTER TABLE video_jobs DROP CONSTRAINT no_huge")
    assert migration.run(progress=False).resynced == 1
    assert job(legacy_db, "video_jobs", lf.MT_DONE)["width"] == 20000
    assert migration.verify().ok


# ---- plan, errors, the operator's script ----------------------------------------------

def test_plan_lists_every_anomaly_with_key_and_reason(legacy_db):
    with psycopg.connect(legacy_db) as conn:
        conn.execute("ALTER TABLE edited_images ADD COLUMN seed integer")
    result = cli(legacy_db, "plan", "--json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    found = {(a["kind"], a["key"]) for a in plan["anomalies"]}
    assert {("unknown_status", lf.MT_UNKNOWN), ("completed_without_output", lf.MT_DONE_NO_OUTPUT),
            ("comfy_id_collision", lf.MT_COLLIDES), ("image_in_multitalk", lf.MT_IMG2IMG),
            ("empty_url", lf.DATA_UNFINISHED), ("empty_url", lf.EI_PENDING), ("signed_url", lf.MT_EXPIRED),
            ("signed_url", lf.ST_DONE), ("unknown_columns", "edited_images")} <= found
    multitalk = next(s for s in plan["sources"] if s["source"] == "multitalk_jobs")
    assert multitalk["targets"] == {"video_jobs": 7, "image_jobs": 2} and multitalk["not_migrated"] == 1
    expired = next(a for a in plan["anomalies"] if a["key"] == lf.MT_EXPIRED)
    assert "expired at" in expired["reason"]
    assert q(legacy_db, "SELECT to_regnamespace('genstudio_legacy')") == [(None,)]  # plan wrote nothing


def test_any_subset_of_tables_and_clear_errors_for_missing_ones(db_url):
    with pytest.raises(LegacyError, match="no legacy tables found"):
        LegacyMigration(db_url).plan()
    with psycopg.connect(db_url) as conn:
        lf.create_legacy_tables(conn, ["edited_images"])
        conn.execute("INSERT INTO edited_images (id, created_at, source_image_url, prompt, status) "
                     "VALUES (gen_random_uuid(), now(), 'https://e/1.png', 'p', 'completed')")
        conn.execute("CREATE TABLE datasets (id uuid PRIMARY KEY)")
    with pytest.raises(LegacyError, match="datasets is incomplete: table data is missing"):
        LegacyMigration(db_url).plan()
    with psycopg.connect(db_url) as conn:
        conn.execute("DROP TABLE datasets")
    migration = LegacyMigration(db_url)
    assert [s.source for s in migration.plan().sources] == ["edited_images"]
    migration.run(progress=False)
    assert migration.verify().ok


def test_multitalk_without_project_id_still_migrates(db_url):
    with psycopg.connect(db_url) as conn:
        lf.create_legacy_tables(conn, ["multitalk_jobs"], project_id=False)
        conn.execute("INSERT INTO multitalk_jobs (job_id, status, width, height, comfy_url) "
                     "VALUES ('p1', 'processing', 1, 1, 'http://c')")
    migration = LegacyMigration(db_url)
    migration.run(progress=False)
    assert migration.verify().ok
    assert "project_id" not in job(db_url, "video_jobs", "p1")["parameters"]["legacy"]


def test_unreachable_database_is_one_clear_line(tmp_path):
    result = cli(f"postgresql://nobody@/nodb?host={tmp_path}&connect_timeout=1", "plan")
    assert result.returncode == 1
    assert result.stderr.startswith("genstudio: cannot reach the database") and "Traceback" not in result.stderr


def test_the_operator_script_does_what_run_does(legacy_db, pg_cluster):
    script = operator_script()
    assert script.count("BEGIN;") == 1
    # An identical copy, migrated by `run`, to compare with.
    copy = pg_cluster.create_database(template=conninfo_to_dict(legacy_db)["dbname"])
    try:
        with psycopg.connect(legacy_db, autocommit=True) as conn:
            conn.execute(script)
            conn.execute(script)  # idempotent
        assert LegacyMigration(legacy_db).verify().problem_count == 2  # the unknown statuses, as with run
        copy_url = pg_cluster.conninfo(copy)
        LegacyMigration(copy_url).run(progress=False)
        columns = ("legacy_table, legacy_id, user_id, workflow_name, status, created_at, completed_at, "
                   "processing_time_seconds, input_image_urls, parameters, comfy_job_id, comfy_url, error_message")
        read = lambda url: {t: q(url, f"SELECT {columns} FROM {t} WHERE legacy_id IS NOT NULL ORDER BY legacy_id")
                            for t in TARGETS}
        via_script = read(legacy_db)
        assert sum(len(rows) for rows in via_script.values()) == 20
        assert via_script == read(copy_url)
    finally:
        pg_cluster.drop_database(copy)
