"""`/api/healthz`: can the database take writes, and is it at the schema version this code expects."""

from __future__ import annotations

import psycopg
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout

from genstudio.db.migrator import load_migrations
from genstudio.db.queries import load_queries

QUERIES = load_queries("health")
EXPECTED_VERSION = load_migrations()[-1].version

router = APIRouter(tags=["health"])


def _what_failed(exc: Exception) -> str:
    # A lost or refused connection (no SQLSTATE, or class 08 / 57: shut down, terminated) is
    # unreachable; any other answer of the server (read-only, disk full, ...) is not writable.
    sqlstate = getattr(exc, "sqlstate", None)
    return "unreachable" if not sqlstate or sqlstate.startswith(("08", "57")) else "not writable"


@router.get("/api/healthz", summary="Whether the database takes writes, and its schema version")
async def healthz(request: Request) -> JSONResponse:
    db = request.app.state.db
    try:
        async with db.as_owner() as conn:
            row = await (await conn.execute(QUERIES["schema_version"])).fetchone()
            # Reachable is not enough: a full disk or a read-only database still answers reads.
            await conn.execute(QUERIES["create_write_probe"])
            await conn.execute(QUERIES["write_probe"])
    except (psycopg.Error, PoolTimeout) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return JSONResponse(
            {"status": "unavailable", "database": _what_failed(exc), "error": reason,
             "schema_version": None, "expected_schema_version": EXPECTED_VERSION},
            status_code=503,
        )
    version = row["version"]
    return JSONResponse(
        {"status": "ok" if version == EXPECTED_VERSION else "schema_mismatch",
         "database": "reachable", "schema_version": version, "expected_schema_version": EXPECTED_VERSION},
        status_code=200 if version == EXPECTED_VERSION else 503,
    )
