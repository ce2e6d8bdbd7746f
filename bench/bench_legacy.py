"""Benchmark of `genstudio legacy run` + `verify` beside the guide's own Step 2 SQL.

    python bench/bench_legacy.py                 # quick: 100,000 legacy rows
    python bench/bench_legacy.py --rows 1000000  # the issue's size

It starts an embedded PostgreSQL in a temporary directory (or uses --admin-url, a conninfo
allowed to CREATE DATABASE), builds one database with the job tables and the legacy tables
filled by generate_series in a realistic mix (tests/legacy_fixtures.py: 55% multitalk_jobs
with an eighth of them img2img, 20% style_transfers, the rest edited_images and caption
datasets with their data rows), then makes two identical copies with CREATE DATABASE ...
TEMPLATE and times, on one, `run` (batched, resumable) followed by `verify` (the full
two-way comparison), and on the other the guide's Step 2 SQL (bench/guide_step2.sql) in one
transaction. Rows/s counts every legacy row (data rows included) for both; the guide's SQL
leaves datasets behind, which only flatters it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genstudio.db.embedded import EmbeddedPostgres  # noqa: E402
from genstudio.db.migrator import Migrator  # noqa: E402
from genstudio.legacy.migration import BATCH_SIZE, LegacyMigration  # noqa: E402
from tests import legacy_fixtures as lf  # noqa: E402

GUIDE_SQL = (Path(__file__).parent / "guide_step2.sql").read_text()


def create_database(admin: str, name: str, template: str | None = None) -> str:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        conn.execute(statement)
    return make_conninfo(admin, dbname=name)


def drop_database(admin: str, name: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def checkpoint(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def bench(admin: str, rows: int, batch_size: int) -> None:
    names = ("bench_legacy_template", "bench_legacy_ours", "bench_legacy_guide")
    try:
        t0 = time.perf_counter()
        template = create_database(admin, names[0])
        Migrator(template).upgrade()
        with psycopg.connect(template) as conn:
            lf.create_legacy_tables(conn)
            counts = lf.insert_bulk(conn, rows)
        with psycopg.connect(template, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
        legacy_rows = sum(counts.values())
        print(f"built {legacy_rows:,} legacy rows in {time.perf_counter() - t0:.1f}s: "
              + ", ".join(f"{k} {v:,}" for k, v in counts.items()), flush=True)
        ours = create_database(admin, names[1], template=names[0])
        guide = create_database(admin, names[2], template=names[0])

        checkpoint(guide)
        start = time.perf_counter()
        with psycopg.connect(guide) as conn:
            conn.execute(GUIDE_SQL)
        guide_seconds = time.perf_counter() - start
        print(f"guide Step 2 SQL:      {guide_seconds:8.2f}s  {legacy_rows / guide_seconds:10,.0f} rows/s", flush=True)

        checkpoint(ours)
        migration = LegacyMigration(ours)
        start = time.perf_counter()
        report = migration.run(batch_size=batch_size, progress=sys.stderr.isatty())
        run_seconds = time.perf_counter() - start
        verify = migration.verify()
        ours_seconds = time.perf_counter() - start
        copied = sum(report.copied.values())
        print(f"genstudio run:         {run_seconds:8.2f}s  ({copied:,} jobs copied)")
        print(f"genstudio run+verify:  {ours_seconds:8.2f}s  {legacy_rows / ours_seconds:10,.0f} rows/s"
              f"  (verify {'OK' if verify.ok else f'FAILED: {verify.problem_count} problems'})")
        print(f"ratio (ours / guide):  {ours_seconds / guide_seconds:8.2f}x  (target <= 1.5x)")
        if not verify.ok:
            sys.exit(1)
    finally:
        for name in names:
            drop_database(admin, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="legacy rows to build (default 100,000)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help=f"run's batch size (default {BATCH_SIZE})")
    parser.add_argument("--admin-url", help="conninfo allowed to CREATE DATABASE (default: an embedded server)")
    args = parser.parse_args()
    if args.admin_url:
        bench(args.admin_url, args.rows, args.batch_size)
        return
    with tempfile.TemporaryDirectory(prefix="genstudio-bench-") as tmp:
        os.chmod(tmp, 0o711)  # as root the server's account must reach its data (README: as root)
        server = EmbeddedPostgres(Path(tmp) / "data")
        server.start()
        try:
            bench(server.conninfo("postgres"), args.rows, args.batch_size)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
