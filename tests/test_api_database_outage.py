"""When the database drops the API's connections, requests get a 503 in the usual error
shape (not a 500), and the API recovers by itself once the database is back."""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict

from tests.api_support import api, image_payload  # noqa: F401  (fixture)


def drop_connections(db_url: str) -> int:
    dbname = conninfo_to_dict(db_url)["dbname"]
    with psycopg.connect(db_url, autocommit=True) as conn:
        return len(conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,)).fetchall())


async def test_a_lost_database_connection_is_a_503_and_the_api_recovers(api):
    alice = api.user("alice")
    assert (await api.client.get("/api/image-jobs", headers=alice.headers)).status_code == 200
    assert drop_connections(api.db_url) >= 1

    response = await api.client.post("/api/image-jobs", json=image_payload(), headers=alice.headers)
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
