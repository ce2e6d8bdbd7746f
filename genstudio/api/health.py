"""`/api/healthz`: is the database reachable, and at which schema version."""

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


@router.get("/api/healthz", summary="Database reachability and schema version")
async def healthz(request: Request) -> JSONResponse:
    db = request.app.state.db
    try:
        async with db.as_owner() as conn:
            row = await (await conn.execute(QUERIES["schema_version"])).fetchone()
    except (psycopg.Error, PoolTimeout) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return JSONResponse(
            {"status": "unavailable", "database": "unreachable", "error": reason,
             "schema_version": None, "expected_schema_version": EXPECTED_VERSION},
            status_code=503,
        )
    version = row["version"]
    return JSONResponse(
        {"status": "ok" if version == EXPECTED_VERSION else "schema_mismatch",
         "database": "reachable", "schema_version": version, "expected_schema_version": EXPECTED_VERSION},
        status_code=200 if version == EXPECTED_VERSION else 503,
    )
