"""The async connection pool and the transaction scopes every request and worker runs in.

A user request runs in one transaction as role `authenticated`, with the caller's verified JWT
claims set transaction-locally in `request.jwt.claims`, exactly as Supabase's PostgREST does;
row-level security is then enforced by PostgreSQL itself. Background work runs as
`service_role`, which bypasses RLS.

Round trips cost the server more than the statements of a typical request, so requests go out
as pipelines: a transaction's BEGIN and claims travel with its first statement, and a request
that is one statement (`per_statement_as_user`) is one round trip in all.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any

import psycopg
from psycopg import AsyncRawCursor, sql
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

# One statement sets both; `set_config(..., true)` is `SET LOCAL`, undone at commit/rollback.
SET_REQUEST_CONTEXT = "SELECT set_config('role', %(role)s, true), set_config('request.jwt.claims', %(claims)s, true)"

# Page reads (lists and the feed) are written so that each part is read from an index in the
# page's order and stops after a page's worth (db/queries/feed.sql). The `enable_*` settings
# make that plan certain instead of a matter of statistics: right after a bulk load, before
# anything is analysed, the planner's guesses otherwise make sorting all of a user's rows look
# cheaper. (They only rule a plan out where an index plan exists; the small sorts of a page's
# candidates remain.) The plan being the same for any parameters, a prepared statement may
# keep its generic plan instead of planning these long statements again on every execution.
SET_PAGE_READ_CONTEXT = (
    "SELECT set_config('role', %(role)s, true), set_config('request.jwt.claims', %(claims)s, true), "
    "set_config('enable_sort', 'off', true), set_config('enable_seqscan', 'off', true), "
    "set_config('enable_bitmapscan', 'off', true), set_config('plan_cache_mode', 'force_generic_plan', true)"
)


def request_batches(context: str, statements: list[str], *, per_statement: bool) -> list[list[str]]:
    """The round trips of one request, as this module sends them: each inner list goes to the
    server in one batch. `per_statement`: the request runs `per_statement_as_user`, else
    `as_user`. (For benchmarks that replay a request elsewhere.)"""
    if per_statement:
        return [[context, statement] for statement in statements]
    first, *rest = statements
    return [["BEGIN", context, first], *([s] for s in rest), ["COMMIT"]]


_NAMED_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%%|%")


@lru_cache(maxsize=1024)
def positional(statement: str) -> tuple[str, tuple[str, ...]]:
    """`statement` with its `%(name)s` placeholders as PostgreSQL's own `$1, $2, ...`, and the
    names in that order.

    psycopg converts named placeholders on every execution, and caches the conversion only for
    statements up to 4 KiB: the feed's is longer, and parsing it again was a tenth of a page
    request's time in Python. Converted once here, a statement runs on a raw cursor, which
    sends it as it is."""
    names: list[str] = []

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "%%":
            return "%"
        if match.group(1) is None:
            raise ValueError(f"a lone % in a statement (write %% for a literal one): {statement[:200]!r}")
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return _NAMED_PLACEHOLDER.sub(replace, statement), tuple(names)


async def execute_positional(conn: psycopg.AsyncConnection, statement: str | sql.Composable,
                             params: Mapping[str, Any] | None) -> psycopg.AsyncCursor | AsyncRawCursor:
    """Run a statement written with named placeholders, converted once (see `positional`).
    (A statement composed per request, rare, runs as psycopg converts it.)"""
    if not isinstance(statement, str):
        return await conn.execute(statement, params)
    text, names = positional(statement)
    cursor = AsyncRawCursor(conn)
    await cursor.execute(text, [params[name] for name in names] if names else None)  # type: ignore[index]
    return cursor


class StatementsAsUser:
    """Runs each statement in a transaction of its own as the caller, in one round trip.

    The claims and the statement are sent as one pipeline ending in a single Sync. PostgreSQL
    runs everything up to a Sync as one implicit transaction, so the transaction-local claims
    apply to the statement alone, and a failing statement commits nothing."""

    def __init__(self, pool: AsyncConnectionPool, role: str, claims_json: str, context_statement: str):
        self._pool = pool
        self._context = {"role": role, "claims": claims_json}
        self._context_statement = context_statement

    async def execute(self, statement: str | sql.Composable, params: Mapping[str, Any] | None = None
                      ) -> psycopg.AsyncCursor | AsyncRawCursor:
        async with self._pool.connection() as conn:
            async with conn.pipeline():
                await execute_positional(conn, self._context_statement, self._context)
                cursor = await execute_positional(conn, statement, params)
            return cursor  # its rows arrived with the Sync that ended the pipeline


class Database:
    def __init__(self, conninfo: str, *, min_size: int = 2, max_size: int = 16, timeout: float = 5.0):
        self.conninfo = conninfo
        # `timeout`: how long a request waits for a connection before failing (a 503), so that
        # with the database down requests fail in seconds rather than psycopg's default 30 s.
        self.pool = AsyncConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            open=False,
            kwargs={"autocommit": True, "row_factory": dict_row},
        )

    async def open(self, *, wait: bool = True, timeout: float = 10.0) -> None:
        await self.pool.open(wait=wait, timeout=timeout)

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def as_user(self, claims: Mapping[str, Any]) -> AsyncIterator[psycopg.AsyncConnection]:
        """A transaction in which PostgreSQL sees the caller as Supabase would.

        It runs in pipeline mode: BEGIN and the claims are queued and reach the server with
        the first statement whose rows the caller fetches, and COMMIT travels with the final
        Sync. (psycopg's own `transaction()` would add round trips here; no COPY or named
        cursors inside.)"""
        context = {"role": _role(claims), "claims": json.dumps(dict(claims))}
        async with self.pool.connection() as conn:
            try:
                async with conn.pipeline():
                    await conn.execute("BEGIN")
                    await conn.execute(SET_REQUEST_CONTEXT, context)
                    try:
                        yield conn
                    except psycopg.Error:
                        raise  # the server aborted the transaction; it is rolled back below
                    except BaseException:
                        await conn.execute("ROLLBACK")
                        raise
                    await conn.execute("COMMIT")
            finally:
                if conn.info.transaction_status != TransactionStatus.IDLE:
                    await conn.rollback()

    def per_statement_as_user(self, claims: Mapping[str, Any], *, page_read: bool = False) -> StatementsAsUser:
        """For a request that is a single statement (or whose further statements only read
        after a first that wrote nothing): each statement its own transaction as the caller.
        `page_read`: a list or feed page (see SET_PAGE_READ_CONTEXT)."""
        context = SET_PAGE_READ_CONTEXT if page_read else SET_REQUEST_CONTEXT
        return StatementsAsUser(self.pool, _role(claims), json.dumps(dict(claims)), context)

    @asynccontextmanager
    async def as_service(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """A transaction for background work, not bound by row-level security."""
        async with self._transaction("service_role", {"role": "service_role"}) as conn:
            yield conn

    @asynccontextmanager
    async def as_owner(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """A transaction as the connecting role itself (health checks, account management)."""
        async with self.pool.connection() as conn, conn.transaction():
            yield conn

    @asynccontextmanager
    async def _transaction(self, role: str, claims: Mapping[str, Any]) -> AsyncIterator[psycopg.AsyncConnection]:
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(SET_REQUEST_CONTEXT, {"role": role, "claims": json.dumps(dict(claims))})
            yield conn


def _role(claims: Mapping[str, Any]) -> str:
    return "anon" if claims.get("role") == "anon" else "authenticated"
