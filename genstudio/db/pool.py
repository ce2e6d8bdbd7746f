"""The async connection pool and the transaction scopes every request and worker runs in.

A user request runs in one transaction as role `authenticated`, with the caller's verified JWT
claims set transaction-locally in `request.jwt.claims`, exactly as Supabase's PostgREST does;
row-level security is then enforced by PostgreSQL itself. Background work runs as
`service_role`, which bypasses RLS.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

# One round trip sets both; `set_config(..., true)` is `SET LOCAL`, undone at commit/rollback.
_SET_REQUEST_CONTEXT = "SELECT set_config('role', %s, true), set_config('request.jwt.claims', %s, true)"


class Database:
    def __init__(self, conninfo: str, *, min_size: int = 2, max_size: int = 16):
        self.conninfo = conninfo
        self.pool = AsyncConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            open=False,
            kwargs={"autocommit": True, "row_factory": dict_row},
        )

    async def open(self, *, wait: bool = True, timeout: float = 10.0) -> None:
        await self.pool.open(wait=wait, timeout=timeout)

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def as_user(self, claims: Mapping[str, Any]) -> AsyncIterator[psycopg.AsyncConnection]:
        """A transaction in which PostgreSQL sees the caller as Supabase would."""
        role = "anon" if claims.get("role") == "anon" else "authenticated"
        async with self._transaction(role, claims) as conn:
            yield conn

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
            await conn.execute(_SET_REQUEST_CONTEXT, (role, json.dumps(dict(claims))))
            yield conn
