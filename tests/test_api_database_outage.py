"""When the database drops the API's connections, requests get a 503 in the usual error
shape (not a 500), and the API recovers by itself once the database is back."""

from __future__ import annotations

import asyncio
import time

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.api_support import api, image_payload  # noqa: F401  (fixture)


def drop_connections(db_url: str) -> int:
    dbname = conninfo_to_dict(db_url)["dbname"]
    with psycopg.connect(make_conninfo(db_url, dbname="postgres"), autocommit=True) as conn:
        return len(conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,)).fetchall())


async def test_a_lost_database_connection_is_a_503_and_the_api_recovers(api):
    alice = api.user("alice")
    assert (await api.client.get("/api/image-jobs", headers=alice.headers)).status_code == 200
    # Refuse new connections as well as dropping the open ones: otherwise a background service
    # may meet its broken connection first and the pool replace it before the request runs.
    set_connections_allowed(api.db_url, False)
    try:
        assert drop_connections(api.db_url) >= 1
        response = await api.client.post("/api/image-jobs", json=image_payload(), headers=alice.headers)
    finally:
        set_connections_allowed(api.db_url, True)
    assert response.status_code == 503
    assert response.json() == {"success": False, "error": "the database is unavailable right now; try again shortly"}
    assert response.headers["retry-after"] == "5"

    # Each broken connection the pool still holds (the background services and the event
    # listener use the pool too) is discarded by the request that meets it, so the API is
    # back after at most as many more requests as the pool has connections.
    for _ in range(8):
        again = await api.client.post("/api/image-jobs", json=image_payload(), headers=alice.headers)
        if again.status_code != 503:
            break
    assert again.status_code == 201
    listed = (await api.client.get("/api/image-jobs", headers=alice.headers)).json()
    assert listed["total_count"] == 1  # the refused request wrote nothing


def set_connections_allowed(db_url: str, allowed: bool) -> None:
    dbname = conninfo_to_dict(db_url)["dbname"]
    admin = make_conninfo(db_url, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
            sql.Identifier(dbname), sql.SQL("true" if allowed else "false")))


async def test_with_the_database_down_a_request_waits_seconds_not_thirty(api):
    alice = api.user("alice")
    assert (await api.client.get("/api/image-jobs", headers=alice.headers)).status_code == 200
    set_connections_allowed(api.db_url, False)
    try:
        drop_connections(api.db_url)
        started = time.monotonic()
        # Two at once: the pool's one idle connection is broken; the other has to wait for a new one.
        responses = await asyncio.gather(*[api.client.get("/api/image-jobs", headers=alice.headers) for _ in range(2)])
        elapsed = time.monotonic() - started
    finally:
        set_connections_allowed(api.db_url, True)
    assert [r.status_code for r in responses] == [503, 503]
    assert all(r.json()["success"] is False for r in responses)
    assert elapsed < 8, f"requests waited {elapsed:.1f} s for a connection"


async def test_healthz_is_not_ok_when_the_database_refuses_writes(api):
    assert (await api.client.get("/api/healthz")).json()["status"] == "ok"
    dbname = conninfo_to_dict(api.db_url)["dbname"]
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        # What Supabase does to a project whose disk is full; a standby is the same.
        conn.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(sql.Identifier(dbname)))
    drop_connections(api.db_url)  # the setting applies to new sessions
    for _ in range(10):  # each pooled connection that was dropped answers "unreachable" once
        response = await api.client.get("/api/healthz")
        if response.json()["database"] != "unreachable":
            break
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable" and body["database"] == "not writable"
    assert "read-only" in body["error"]
