"""Two gaps real legacy data hits: statuses the mapping does not know (mapped by the operator
with `--status-map`, without touching the legacy tables, honoured by plan, run and verify), and
rows completed before they were submitted (clock skew: no negative processing time)."""

from __future__ import annotations

import psycopg
import pytest

from genstudio.legacy.migration import LegacyMigration
from tests import legacy_fixtures as lf
from tests.test_legacy_migration import cli, job, legacy_db, q  # noqa: F401  (fixture)

LEGACY_TABLES = ("multitalk_jobs", "style_transfers", "edited_images", "datasets", "data")


def legacy_snapshot(url: str) -> dict[str, list[tuple]]:
    return {t: q(url, f"SELECT to_jsonb(x)::text FROM public.{t} x ORDER BY 1") for t in LEGACY_TABLES}


def test_a_status_map_migrates_unknown_and_missing_statuses_without_touching_legacy_rows(legacy_db):
    before = legacy_snapshot(legacy_db)
    plain = cli(legacy_db, "plan")
    assert "unknown_status (2)" in plain.stdout

    preview = cli(legacy_db, "plan", "--status-map", "queued=pending,NULL=failed")
    assert preview.returncode == 0, preview.stderr
    assert "status map: queued=pending (1 rows), NULL=failed (1 rows)" in preview.stdout
    assert "unknown_status" not in preview.stdout

    run = cli(legacy_db, "run", "--status-map", "queued=pending,NULL=failed", "--no-progress")
    assert run.returncode == 0, run.stderr
    assert "not migrated" not in run.stdout
    queued = job(legacy_db, "video_jobs", lf.MT_UNKNOWN)
    assert queued["status"] == "pending" and queued["parameters"]["legacy"]["status"] == "queued"
    missing = job(legacy_db, "image_jobs", lf.ST_NULL_STATUS)
    assert missing["status"] == "failed" and missing["parameters"]["legacy"]["status"] is None

    assert "status map: queued=pending (1 rows), NULL=failed (1 rows)" in cli(legacy_db, "plan").stdout  # stored
    verify = cli(legacy_db, "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert legacy_snapshot(legacy_db) == before  # the old data was not edited
    LegacyMigration(legacy_db).archive()  # refused before, for the two rows


@pytest.mark.parametrize("status_map, words", [
    ("submitted=failed", "'submitted' needs no mapping, it becomes 'pending'"),
    ("queued=done", "'done' is not a job status"),
    ("queued", "'queued' is not LEGACY=STATUS"),
    ("queued=pending,queued=failed", "queued is mapped twice"),
])
def test_a_wrong_status_map_is_one_line_and_writes_nothing(legacy_db, status_map, words):
    result = cli(legacy_db, "run", "--status-map", status_map)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"genstudio: --status-map: {words}"), result.stderr
    assert q(legacy_db, "SELECT count(*) FROM video_jobs WHERE legacy_table IS NOT NULL") == [(0,)]


def test_a_row_completed_before_it_was_submitted_has_no_negative_processing_time(legacy_db):
    key = "p-0099-clock-skew"
    with psycopg.connect(legacy_db) as conn:
        conn.execute(
            "INSERT INTO multitalk_jobs (job_id, status, timestamp_submitted, timestamp_completed, filename, width, "
            "height, comfy_url, video_url) VALUES (%s, 'completed', '2024-05-02 10:00:00+00', "
            "'2024-05-02 09:58:30+00', 'skew_00001.mp4', 512, 512, 'http://gpu-2:8188', 'https://cdn/skew.mp4')", (key,))
    migration = LegacyMigration(legacy_db)
    anomalies = {(a.kind, a.key): a.reason for a in migration.plan().anomalies}
    assert "(clock skew?)" in anomalies[("completed_before_submitted", key)]
    migration.run(progress=False)
    skewed = job(legacy_db, "video_jobs", key)
    assert skewed["processing_time_seconds"] is None
    assert skewed["created_at"].isoformat() == "2024-05-02T10:00:00+00:00"
    assert skewed["completed_at"].isoformat() == "2024-05-02T09:58:30+00:00"
    assert job(legacy_db, "video_jobs", lf.MT_DONE)["processing_time_seconds"] == 150  # the usual case unchanged
    assert ("not_migrated", "multitalk_jobs", key) not in {p[:3] for p in migration.verify().problems}
