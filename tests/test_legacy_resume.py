"""`genstudio legacy run` killed with SIGKILL mid-run, then run again: no duplicates, no gaps."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psycopg

from genstudio.legacy.migration import LegacyMigration
from tests import legacy_fixtures as lf

TOTAL = 30_000


def migrated(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT (SELECT count(*) FROM video_jobs WHERE legacy_id IS NOT NULL)"
            " + (SELECT count(*) FROM image_jobs WHERE legacy_id IS NOT NULL)"
            " + (SELECT count(*) FROM text_jobs WHERE legacy_id IS NOT NULL)").fetchone()[0]


def test_kill_9_mid_run_then_resume_finishes_exactly(db_url):
    with psycopg.connect(db_url) as conn:
        lf.create_legacy_tables(conn)
        counts = lf.insert_bulk(conn, TOTAL)
    expected = counts["multitalk"] + counts["style_transfers"] + counts["edited_images"] + counts["datasets"]

    env = {**os.environ, "DATABASE_URL": db_url}
    command = [sys.executable, "-c", "from genstudio.cli import app; app()", "legacy", "run", "--batch-size", "300"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while migrated(db_url) < 3000 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    # A COMMIT the run had sent still completes on the server after the kill: count once the
    # run's database session is gone.
    with psycopg.connect(db_url, autocommit=True) as conn:
        deadline = time.monotonic() + 30
        while conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND pid <> pg_backend_pid() AND backend_type = 'client backend'").fetchone()[0]:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    at_kill = migrated(db_url)
    assert 0 < at_kill < expected  # committed batches survived, the rest is still to do

    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"copied {expected - at_kill} row(s)" in resumed.stdout

    assert migrated(db_url) == expected
    with psycopg.connect(db_url) as conn:
        duplicates = conn.execute(
            "SELECT legacy_table, legacy_id FROM (SELECT legacy_table, legacy_id FROM video_jobs UNION ALL "
            "SELECT legacy_table, legacy_id FROM image_jobs UNION ALL SELECT legacy_table, legacy_id FROM text_jobs) j "
            "WHERE legacy_id IS NOT NULL GROUP BY 1, 2 HAVING count(*) > 1").fetchall()
    assert duplicates == []
    report = LegacyMigration(db_url).verify()
    assert report.ok, report.problems
    assert report.totals["old_multitalk_jobs_count"] == counts["multitalk"]
    assert report.totals["text_jobs_migrated"] == counts["datasets"]
