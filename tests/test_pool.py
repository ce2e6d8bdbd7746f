"""The request plumbing: each transaction runs as the right role with the caller's claims,
and nothing of it outlives the transaction on a pooled connection."""

from __future__ import annotations

import uuid

import pytest

from genstudio.db.pool import Database
from genstudio.db.queries import parse_queries

WHO = "SELECT current_user AS role, auth.uid() AS uid, auth.role() AS claim_role"


@pytest.fixture
async def database(db_url):
    db = Database(db_url, min_size=1, max_size=1)  # one connection: every scope reuses it
    await db.open()
    yield db
    await db.close()


async def who(conn) -> dict:
    return await (await conn.execute(WHO)).fetchone()


async def test_user_service_and_owner_scopes_do_not_leak_into_each_other(database):
    alice = uuid.uuid4()
    async with database.as_user({"sub": str(alice), "role": "authenticated"}) as conn:
        assert await who(conn) == {"role": "authenticated", "uid": alice, "claim_role": "authenticated"}
    async with database.as_owner() as conn:
        seen = await who(conn)
        assert seen["role"] not in ("authenticated", "service_role") and seen["uid"] is None
    async with database.as_service() as conn:
        assert await who(conn) == {"role": "service_role", "uid": None, "claim_role": "service_role"}
    async with database.as_user({"role": "anon"}) as conn:
        assert (await who(conn))["role"] == "anon"


async def test_a_failed_request_rolls_back_and_resets_the_connection(database):
    alice = uuid.uuid4()
    with pytest.raises(RuntimeError):
        async with database.as_service() as conn:
            await conn.execute("INSERT INTO text_jobs (workflow_name) VALUES ('never-kept')")
            raise RuntimeError("the request failed half-way")
    async with database.as_user({"sub": str(alice), "role": "authenticated"}) as conn:
        assert (await who(conn))["uid"] == alice
    async with database.as_service() as conn:
        count = await (await conn.execute("SELECT count(*) AS n FROM text_jobs")).fetchone()
    assert count == {"n": 0}


def test_named_queries_are_split_by_name_and_duplicates_refused():
    text = "-- name: one\nSELECT 1;\n\n-- name: two\n-- a comment kept with its query\nSELECT 2;\n"
    assert parse_queries(text) == {"one": "SELECT 1;", "two": "-- a comment kept with its query\nSELECT 2;"}
    with pytest.raises(ValueError, match="defined twice"):
        parse_queries("-- name: one\nSELECT 1;\n-- name: one\nSELECT 2;")


def test_named_placeholders_become_positional_ones_once():
    from genstudio.db.pool import positional

    text, names = positional("SELECT %(b)s, %(a)s, %(b)s::int, 'x' || '%%', 7 %% 2")
    assert text == "SELECT $1, $2, $1::int, 'x' || '%', 7 % 2" and names == ("b", "a")
    assert positional("SELECT 1") == ("SELECT 1", ())
    with pytest.raises(ValueError, match="lone %"):
        positional("SELECT 7 % 2")


async def test_a_statement_as_the_caller_binds_its_named_parameters_in_order(database):
    alice = uuid.uuid4()
    reader = database.per_statement_as_user({"sub": str(alice), "role": "authenticated"})
    cursor = await reader.execute("SELECT %(b)s::text AS b, %(a)s::int AS a, %(b)s::text = 'x' AS same, "
                                  "auth.uid() AS uid, 7 %% 2 AS rest", {"a": 1, "b": "x", "unused": None})
    assert await cursor.fetchone() == {"b": "x", "a": 1, "same": True, "uid": alice, "rest": 1}
