"""`genstudio legacy …`: move the legacy feature tables into the output-type tables."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import psycopg
import typer

from genstudio.config import get_settings
from genstudio.db.connection import DatabaseUnreachable, database
from genstudio.db.migrator import MigrationError
from genstudio.legacy.install import LegacyError, operator_script
from genstudio.legacy.maps import parse_status_map, read_user_map, read_workflow_map
from genstudio.legacy.migration import BATCH_SIZE, LegacyMigration, Plan, VerifyReport

legacy_app = typer.Typer(
    help="Migrate multitalk_jobs, style_transfers, edited_images and datasets into the job tables "
    "(plan → follow → run → verify → archive). See docs/legacy-migration.md.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"genstudio: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def _migration() -> Iterator[LegacyMigration]:
    """The migration on the configured database; its errors become one-line CLI errors."""
    try:
        with database(get_settings()) as conninfo:
            yield LegacyMigration(conninfo)
    except (DatabaseUnreachable, MigrationError, LegacyError) as exc:
        _fail(str(exc))
    except psycopg.OperationalError as exc:
        _fail(f"lost the database: {' '.join(str(exc).split())}")
    except psycopg.Error as exc:
        # Every change runs in a transaction, so a failed statement leaves nothing half-written.
        _fail(f"database error, nothing from the failed transaction was kept: {' '.join(str(exc).split())}")


STATUS_MAP_HELP = ("Migrate statuses the mapping does not know, e.g. queued=pending,NULL=failed (NULL: a missing "
                   "status), without editing the legacy tables.")


@legacy_app.command()
def plan(
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON (every anomaly).")] = False,
    limit: Annotated[int, typer.Option(help="Anomalies listed per kind in text output (0: all).")] = 20,
    expiring_within: Annotated[str, typer.Option(help="Report signed URLs that expire within this interval.")] = "7 days",
    status_map: Annotated[str | None, typer.Option(help=STATUS_MAP_HELP + " Previews it; `run` stores it.")] = None,
) -> None:
    """What exists, how many rows go where, and every anomaly with its row's key and reason."""
    try:
        statuses = parse_status_map(status_map) if status_map else None
    except LegacyError as exc:
        _fail(str(exc))
    with _migration() as migration:
        result = migration.plan(expiring_within, statuses)
    if as_json:
        typer.echo(json.dumps(result.as_json(), indent=2))
    else:
        _print_plan(result, limit)


def _print_plan(plan: Plan, limit: int) -> None:
    typer.echo("legacy tables")
    for s in plan.sources:
        where = ", ".join(f"{t} {n}" for t, n in sorted(s.targets.items())) or "nothing"
        extra = f", not migrated {s.not_migrated}" if s.not_migrated else ""
        name = s.table + (" (archived)" if s.archived else "")
        typer.echo(f"  {name:<28} {s.rows:>9} rows -> {where}{extra}; already copied {s.already_copied}")
    for absent in plan.absent:
        typer.echo(f"  {absent:<28} absent")
    typer.echo(f"follow triggers: {', '.join(plan.followed_tables) or 'off'}")
    if plan.status_map:
        typer.echo("status map: " + ", ".join(f"{'NULL' if legacy is None else legacy}={status} ({rows} rows)"
                                             for legacy, status, rows in plan.status_map))
    typer.echo(f"anomalies: {len(plan.anomalies)}")
    by_kind: dict[str, list] = {}
    for a in plan.anomalies:
        by_kind.setdefault(a.kind, []).append(a)
    for kind, items in by_kind.items():
        typer.echo(f"  {kind} ({len(items)})")
        shown = items if limit <= 0 else items[:limit]
        for a in shown:
            typer.echo(f"    {a.source} {a.key}: {a.reason}")
        if len(shown) < len(items):
            typer.echo(f"    … {len(items) - len(shown)} more (--limit 0 or --json lists all)")


@legacy_app.command()
def run(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Do everything in a transaction that is rolled back.")] = False,
    batch_size: Annotated[int, typer.Option(help="Legacy rows per batch (one transaction each).")] = BATCH_SIZE,
    user_map: Annotated[Path | None, typer.Option(help="CSV: user_ip or legacy_table+legacy_id -> user_id.")] = None,
    workflow_map: Annotated[Path | None, typer.Option(help="CSV: legacy_table,column,pattern,workflow_name.")] = None,
    style_transfer_comfy_url: Annotated[str | None, typer.Option(
        help="The ComfyUI server style_transfers ran on (the table never recorded it).")] = None,
    status_map: Annotated[str | None, typer.Option(help=STATUS_MAP_HELP + " Stored: follow and verify use it too.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
) -> None:
    """Copy the legacy rows not yet copied, in key-ordered batches; safe to run again or resume."""
    try:
        users = read_user_map(user_map) if user_map else None
        workflows = read_workflow_map(workflow_map) if workflow_map else None
        statuses = parse_status_map(status_map) if status_map else None
    except LegacyError as exc:
        _fail(str(exc))
    with _migration() as migration:
        report = migration.run(batch_size=batch_size, user_map=users, workflow_map=workflows,
                               style_transfer_comfy_url=style_transfer_comfy_url, status_map=statuses, dry_run=dry_run,
                               progress=progress and sys.stderr.isatty())
    verb = "would copy" if report.dry_run else "copied"
    total = sum(report.copied.values())
    typer.echo(f"{verb} {total} row(s)" + ("" if total else " (everything was copied already)"))
    for (source, target), n in sorted(report.copied.items()):
        typer.echo(f"  {source} -> {target}: {n}")
    if report.resynced:
        typer.echo(f"re-synced {report.resynced} row(s) a follow trigger had failed on")
    for source, n in report.not_migrated.items():
        typer.echo(f"  {source}: {n} row(s) not migrated (unknown status; see `genstudio legacy plan`)")
    if report.dry_run:
        typer.echo("dry run: nothing was written")


@legacy_app.command()
def verify(
    limit: Annotated[int, typer.Option(help="Offending keys to list.")] = 20,
) -> None:
    """Prove every legacy row maps to exactly one target row with the mapped values; exit 1 if not."""
    with _migration() as migration:
        report = migration.verify(limit)
    _print_counts(report)
    if report.ok:
        typer.echo("verify: OK — every legacy row maps to exactly one target row with the mapped values")
        return
    typer.echo(f"verify: {report.problem_count} problem(s); the first {len(report.problems)}:")
    for kind, source, key, target, detail in report.problems:
        where = f" in {target}" if target else ""
        typer.echo(f"  {kind:<12} {source} {key}{where}" + (f": {detail}" if detail else ""))
    raise typer.Exit(1)


def _print_counts(report: VerifyReport) -> None:
    typer.echo("  ".join(f"{k}={v}" for k, v in report.totals.items()))
    typer.echo(f"{'source':<16} {'legacy status':<14} {'target':<11} {'status':<11} {'legacy':>9} {'in target':>10}")
    for c in report.counts:
        found = "-" if c.found is None else str(c.found)
        typer.echo(f"{c.source:<16} {str(c.legacy_status or '∅'):<14} {c.target or 'not migrated':<11} "
                   f"{c.status or '':<11} {c.legacy_rows:>9} {found:>10}")


@legacy_app.command()
def archive(force: Annotated[bool, typer.Option(help="Archive even if verify fails.")] = False) -> None:
    """Rename the legacy tables to _archived_<name> (after verify passes) and stop following them."""
    with _migration() as migration:
        for line in migration.archive(force=force):
            typer.echo(f"renamed {line}")


@legacy_app.command()
def unarchive() -> None:
    """Rename _archived_<name> tables back."""
    with _migration() as migration:
        for line in migration.unarchive():
            typer.echo(f"renamed {line}")


@legacy_app.command()
def rollback(
    drop_tables: Annotated[bool, typer.Option(
        help="Then drop the job tables (the guide's Step 7); refused while they hold non-migrated jobs.")] = False,
) -> None:
    """Delete exactly the rows the migration wrote, and the genstudio_legacy schema."""
    with _migration() as migration:
        deleted = migration.rollback(drop_tables=drop_tables)
    typer.echo("deleted " + ", ".join(f"{t}: {n}" for t, n in deleted.items()) + " migrated row(s)")
    if drop_tables:
        typer.echo("dropped the job tables (schema back at version 1); the legacy tables are untouched")


@legacy_app.command()
def follow() -> None:
    """Carry every later insert, update and delete on the legacy tables into the job tables."""
    with _migration() as migration:
        tables = migration.follow()
    typer.echo(f"following {', '.join(tables)}; run `genstudio legacy run` to copy the existing rows")


@legacy_app.command()
def unfollow() -> None:
    """Remove the follow triggers."""
    with _migration() as migration:
        n = migration.unfollow()
    typer.echo(f"removed {n} follow trigger(s)")


@legacy_app.command("sql")
def sql_script() -> None:
    """Print an equivalent idempotent SQL script (install, copy, verify) for Supabase's SQL editor."""
    sys.stdout.write(operator_script())
