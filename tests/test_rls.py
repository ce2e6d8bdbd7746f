"""Row-level security at the SQL level, as Supabase's PostgREST would exercise it: each
statement runs in a transaction as `anon`, `authenticated` (with a user's claims) or
`service_role`, and PostgreSQL alone decides what it may read and write."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import psycopg
import pytest

from genstudio.jobs.output_types import OUTPUT_TYPES

ROW_KINDS = ("own_private", "own_shared", "ownerless", "others_private")


@dataclass
class World:
    conninfo: str
    table: str
    alice: uuid.UUID
    bob: uuid.UUID
    rows: dict[str, uuid.UUID]  # row kind, from alice's point of view -> job id


@pytest.fixture(params=[t.table for t in OUTPUT_TYPES.values()])
def world(request, db_url) -> World:
    table = request.param
    with psycopg.connect(db_url) as conn:
        alice, bob = (conn.execute("INSERT INTO auth.users (email) VALUES (%s) RETURNING id", (e,)).fetchone()[0]
                      for e in ("alice@example.com", "bob@example.com"))
        rows = {}
        for kind, owner, visibility in [("own_private", alice, "private"), ("own_shared", alice, "shared"),
                                        ("ownerless", None, "private"), ("others_private", bob, "private")]:
            rows[kind] = conn.execute(
                f"INSERT INTO {table} (user_id, workflow_name, comfy_url, visibility) VALUES (%s, %s, 'http://c', %s) RETURNING id",
                (owner, kind, visibility)).fetchone()[0]
    return World(db_url, table, alice, bob, rows)


def as_role(conn: psycopg.Connection, role: str, sub: uuid.UUID | None = None) -> None:
    claims = {"role": role} | ({"sub": str(sub)} if sub else {})
    conn.execute("SELECT set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
                 (role, json.dumps(claims)))


def visible(world: World, role: str, sub=None) -> set[str]:
    with psycopg.connect(world.conninfo) as conn:
        as_role(conn, role, sub)
        return {r[0] for r in conn.execute(f"SELECT workflow_name FROM {world.table}")}


def changed(world: World, role: str, sub, statement: str, kind: str) -> int:
    """How many rows `statement` (an UPDATE or DELETE on one row) touched; rolled back."""
    with psycopg.connect(world.conninfo) as conn:
        as_role(conn, role, sub)
        try:
            count = conn.execute(statement.format(table=world.table), (world.rows[kind],)).rowcount
        except psycopg.errors.InsufficientPrivilege:
            count = 0
        conn.rollback()
        return count


def can_insert(world: World, role: str, sub, owner) -> bool:
    with psycopg.connect(world.conninfo) as conn:
        as_role(conn, role, sub)
        try:
            conn.execute(f"INSERT INTO {world.table} (user_id, workflow_name, comfy_url) VALUES (%s, 'new', 'x')", (owner,))
        except psycopg.errors.InsufficientPrivilege:  # RLS violation and missing grant alike
            return False
        finally:
            conn.rollback()
        return True


UPDATE = "UPDATE {table} SET error_message = 'touched' WHERE id = %s"
DELETE = "DELETE FROM {table} WHERE id = %s"


def test_a_user_sees_own_shared_and_ownerless_rows_but_not_others_private(world):
    assert visible(world, "authenticated", world.alice) == {"own_private", "own_shared", "ownerless"}
    # Bob sees alice's shared row, the ownerless one and his own, never alice's private one.
    assert visible(world, "authenticated", world.bob) == {"own_shared", "ownerless", "others_private"}


def test_anon_sees_nothing_and_writes_nothing(world):
    assert visible(world, "anon") == set()
    assert not can_insert(world, "anon", None, None)
    for kind in ROW_KINDS:
        assert changed(world, "anon", None, UPDATE, kind) == 0
        assert changed(world, "anon", None, DELETE, kind) == 0


def test_service_role_sees_and_writes_everything(world):
    assert visible(world, "service_role") == set(ROW_KINDS)
    assert can_insert(world, "service_role", None, None)
    assert can_insert(world, "service_role", None, world.bob)
    for kind in ROW_KINDS:
        assert changed(world, "service_role", None, UPDATE, kind) == 1
        assert changed(world, "service_role", None, DELETE, kind) == 1


@pytest.mark.parametrize("kind, writable", [("own_private", True), ("own_shared", True),
                                            ("ownerless", False), ("others_private", False)])
def test_a_user_updates_and_deletes_only_own_rows(world, kind, writable):
    assert changed(world, "authenticated", world.alice, UPDATE, kind) == int(writable)
    assert changed(world, "authenticated", world.alice, DELETE, kind) == int(writable)


def test_a_user_inserts_only_rows_owned_by_themself(world):
    assert can_insert(world, "authenticated", world.alice, world.alice)
    assert not can_insert(world, "authenticated", world.alice, world.bob)
    assert not can_insert(world, "authenticated", world.alice, None)


def test_a_user_cannot_give_a_row_away_or_make_it_ownerless(world):
    for new_owner in (world.bob, None):
        with psycopg.connect(world.conninfo) as conn:
            as_role(conn, "authenticated", world.alice)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"UPDATE {world.table} SET user_id = %s WHERE id = %s", (new_owner, world.rows["own_private"]))


def test_claims_fall_back_to_the_legacy_per_claim_setting(world):
    with psycopg.connect(world.conninfo) as conn:
        conn.execute("SELECT set_config('role', 'authenticated', true), "
                     "set_config('request.jwt.claim.sub', %s, true)", (str(world.bob),))
        assert conn.execute("SELECT auth.uid()").fetchone() == (world.bob,)
        seen = {r[0] for r in conn.execute(f"SELECT workflow_name FROM {world.table}")}
    assert "own_private" not in seen and "others_private" in seen
