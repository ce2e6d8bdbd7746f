"""The job event log on a real PostgreSQL: an event for every transition, whoever writes the
job (the API, service_role SQL); none for a rolled-back change; ids in commit order; progress
coalescing; the live visibility rule equal to row-level security; retention pruning."""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest
from psycopg.rows import dict_row

from genstudio.db.pool import Database
from genstudio.events.log import read_batch, read_horizon, prune
from genstudio.events.visibility import may_see_event
from tests.api_support import COMPLETIONS, PAYLOADS, add_user, api  # noqa: F401  (fixture)


def events(db_url: str, after: int = 0) -> list[dict]:
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        return conn.execute("SELECT id, output_type, job_id, user_id, kind, changes FROM job_events "
                            "WHERE id > %s ORDER BY id", (after,)).fetchall()


def max_event_id(db_url: str) -> int:
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT coalesce(max(id), 0) FROM job_events").fetchone()[0]


@pytest.mark.parametrize("output_type", ["video", "image", "text"])
async def test_every_transition_through_the_api_is_an_event(api, output_type):
    alice = api.user("alice")
    base = f"/api/{output_type}-jobs"
    kinds = []

    async def step(method: str, url: str, body: dict | None = None) -> dict:
        before = max_event_id(api.db_url)
        response = await api.client.request(method, url, json=body, headers=alice.headers)
        assert response.status_code in (200, 201), response.text
        kinds.append([(e["kind"], e["changes"]) for e in events(api.db_url, before)])
        return response.json()

    job = (await step("POST", base, PAYLOADS[output_type]()))[f"{output_type}_job"]
    url = f"{base}/{job['id']}"
    await step("PUT", url, {"status": "processing"})
    await step("PUT", url, {"progress": 40})
    await step("PUT", url, {"visibility": "shared"})
    await step("PUT", f"{url}/complete", COMPLETIONS[output_type])
    await step("PUT", f"{url}/complete", COMPLETIONS[output_type])  # identical repeat: a no-op, no event
    await step("DELETE", url)
    workflow = PAYLOADS[output_type]()["workflow_name"]
    assert [[k for k, _ in step_kinds] for step_kinds in kinds] == [
        ["created"], ["status"], ["progress"], ["visibility"], ["completed"], [], ["deleted"]]
    assert kinds[0][0][1] == {"status": "pending", "workflow_name": workflow, "visibility": "private"}
    assert kinds[1][0][1]["status"] == "processing" and "started_at" in kinds[1][0][1]
    assert kinds[2][0][1] == {"progress": 40}
    assert kinds[3][0][1] == {"visibility": "shared"}
    assert kinds[4][0][1]["status"] == "completed" and kinds[4][0][1]["progress"] == 100
    assert kinds[6][0][1] == {"status": "completed", "workflow_name": workflow, "visibility": "shared"}
    everything = events(api.db_url)
    assert {e["job_id"] for e in everything} == {uuid.UUID(job["id"])}
    assert {e["user_id"] for e in everything} == {alice.id}
    assert {e["output_type"] for e in everything} == {output_type}

    for final, call in (("failed", lambda u: ("PUT", f"{u}/complete", {"status": "failed", "error_message": "oom"})),
                        ("cancelled", lambda u: ("POST", f"{u}/cancel", None))):
        job = (await step("POST", base, PAYLOADS[output_type]()))[f"{output_type}_job"]
        await step(*call(f"{base}/{job['id']}"))
        assert [k for k, _ in kinds[-1]] == [final]


async def test_a_refused_request_leaves_no_event(api):
    alice, bob = api.user("alice"), api.user("bob")
    job = (await api.client.post("/api/image-jobs", json=PAYLOADS["image"](), headers=alice.headers)).json()["image_job"]
    await api.client.put(f"/api/image-jobs/{job['id']}/complete", json=COMPLETIONS["image"], headers=alice.headers)
    before = max_event_id(api.db_url)
    refused = [
        await api.client.put(f"/api/image-jobs/{job['id']}", json={"status": "processing"}, headers=alice.headers),
        await api.client.put(f"/api/image-jobs/{job['id']}", json={"visibility": "shared"}, headers=bob.headers),
        await api.client.delete(f"/api/image-jobs/{job['id']}", headers=bob.headers),
    ]
    assert [r.status_code for r in refused] == [409, 404, 404]
    assert events(api.db_url, before) == []


def test_direct_sql_as_service_role_is_recorded_and_a_rollback_is_not(db_url):
    owner = add_user(db_url, "owner@example.com")
    with psycopg.connect(db_url) as conn:
        conn.execute("SET ROLE service_role")
        job_id = conn.execute("INSERT INTO video_jobs (user_id, workflow_name, comfy_url) VALUES (%s, 'wan-i2v', 'x') "
                              "RETURNING id", (owner.id,)).fetchone()[0]
        conn.commit()
        for statement in ("UPDATE video_jobs SET status = 'processing' WHERE id = %s",
                          "UPDATE video_jobs SET progress = 10 WHERE id = %s",
                          "UPDATE video_jobs SET visibility = 'shared' WHERE id = %s",
                          "UPDATE video_jobs SET status = 'failed', error_message = 'boom' WHERE id = %s",
                          "UPDATE video_jobs SET updated_at = now() WHERE id = %s",  # nothing a caller sees changed
                          "DELETE FROM video_jobs WHERE id = %s"):
            conn.execute(statement, (job_id,))
            conn.commit()
        before = max_event_id(db_url)
        conn.execute("INSERT INTO video_jobs (user_id, workflow_name, comfy_url) VALUES (%s, 'wan-i2v', 'x')", (owner.id,))
        conn.execute("UPDATE video_jobs SET status = 'processing'")
        conn.rollback()
        assert events(db_url, before) == []
        # A rolled-back savepoint takes its events with it; the rest of the transaction keeps its own.
        conn.execute("INSERT INTO video_jobs (id, user_id, workflow_name, comfy_url) VALUES (%s, %s, 'wan-i2v', 'x')",
                     (job_id, owner.id))
        with pytest.raises(psycopg.errors.CheckViolation), conn.transaction():
            conn.execute("UPDATE video_jobs SET status = 'processing' WHERE id = %s", (job_id,))
            conn.execute("UPDATE video_jobs SET status = 'bogus' WHERE id = %s", (job_id,))
        conn.commit()
    assert [(e["kind"], e["changes"]) for e in events(db_url)] == [
        ("created", {"status": "pending", "workflow_name": "wan-i2v", "visibility": "private"}),
        ("status", events(db_url)[1]["changes"]),
        ("progress", {"progress": 10}),
        ("visibility", {"visibility": "shared"}),
        ("failed", {"status": "failed", "error_message": "boom"}),
        ("deleted", {"status": "failed", "workflow_name": "wan-i2v", "visibility": "shared"}),
        ("created", {"status": "pending", "workflow_name": "wan-i2v", "visibility": "private"}),
    ]
    assert events(db_url)[1]["changes"].keys() == {"status"}


def test_progress_events_are_coalesced_while_they_are_the_newest_of_their_job(db_url):
    owner = add_user(db_url, "owner@example.com")
    with psycopg.connect(db_url, autocommit=True) as conn:
        job_id = conn.execute("INSERT INTO image_jobs (user_id, workflow_name, comfy_url) VALUES (%s, 'img2img', 'x') "
                              "RETURNING id", (owner.id,)).fetchone()[0]
        other = conn.execute("INSERT INTO image_jobs (user_id, workflow_name, comfy_url) VALUES (%s, 'img2img', 'x') "
                             "RETURNING id", (owner.id,)).fetchone()[0]
        for percent in range(1, 51):
            conn.execute("UPDATE image_jobs SET progress = %s WHERE id = %s", (percent, job_id))
            conn.execute("UPDATE image_jobs SET progress = %s WHERE id = %s", (percent, other))  # interleaved
        conn.execute("UPDATE image_jobs SET thumbnail_url = 't.jpg' WHERE id = %s", (job_id,))
        conn.execute("UPDATE image_jobs SET status = 'processing' WHERE id = %s", (job_id,))
        conn.execute("UPDATE image_jobs SET progress = 60 WHERE id = %s", (job_id,))
    mine = [(e["kind"], e["changes"]) for e in events(db_url) if e["job_id"] == job_id]
    assert mine == [("created", mine[0][1]), ("progress", {"progress": 50, "thumbnail_url": "t.jpg"}),
                    ("status", {"status": "processing"}), ("progress", {"progress": 60})]
    assert [e["kind"] for e in events(db_url) if e["job_id"] == other] == ["created", "progress"]
    ids = [e["id"] for e in events(db_url)]
    assert ids == sorted(ids)


def test_event_ids_follow_commit_order(db_url):
    """A transaction that changed a job first but commits last gets the higher event id, so
    reading 'everything after id N' never skips an event that commits late."""
    owner = add_user(db_url, "owner@example.com")
    with psycopg.connect(db_url) as slow, psycopg.connect(db_url) as fast:
        slow.execute("INSERT INTO text_jobs (user_id, workflow_name) VALUES (%s, 'slow')", (owner.id,))
        fast.execute("INSERT INTO text_jobs (user_id, workflow_name) VALUES (%s, 'fast')", (owner.id,))
        fast.commit()
        slow.commit()
    with psycopg.connect(db_url) as conn:
        order = conn.execute("SELECT changes ->> 'workflow_name' FROM job_events ORDER BY id").fetchall()
    assert order == [("fast",), ("slow",)]


def test_concurrent_writers_keep_ids_in_commit_order(db_url):
    owner = add_user(db_url, "owner@example.com")

    def writer() -> None:
        with psycopg.connect(db_url) as conn:
            for _ in range(20):
                conn.execute("INSERT INTO text_jobs (user_id, workflow_name) VALUES (%s, 'w')", (owner.id,))
                conn.commit()

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [e["id"] for e in events(db_url)]
    assert len(ids) == 80 and ids == sorted(ids)


# --- the visibility rule ----------------------------------------------------------------

def rls_readable(db_url: str, user) -> set[int]:
    with psycopg.connect(db_url) as conn:
        conn.execute("SELECT set_config('role', 'authenticated', true), set_config('request.jwt.claims', %s, true)",
                     (f'{{"sub": "{user.id}", "role": "authenticated"}}',))
        return {row[0] for row in conn.execute("SELECT id FROM job_events")}


async def test_the_live_visibility_rule_equals_row_level_security(db_url):
    a, b, c = (add_user(db_url, f"{n}@example.com") for n in "abc")
    with psycopg.connect(db_url, autocommit=True) as conn:
        def job(owner, table="image_jobs", visibility="private"):
            return conn.execute(f"INSERT INTO {table} (user_id, workflow_name, comfy_url, visibility) "
                                "VALUES (%s, 'w', 'x', %s) RETURNING id", (owner, visibility)).fetchone()[0]
        private_a, shared_a, ownerless = job(a.id), job(a.id, visibility="shared"), job(None, "video_jobs")
        reprivatised, deleted_shared, deleted_private = job(b.id, "text_jobs", "shared"), job(a.id, visibility="shared"), job(b.id)
        given_away = job(a.id)
        for j in (private_a, shared_a, reprivatised):
            conn.execute("UPDATE image_jobs SET progress = 5 WHERE id = %s", (j,))
        conn.execute("UPDATE text_jobs SET status = 'processing' WHERE id = %s", (reprivatised,))
        conn.execute("UPDATE text_jobs SET visibility = 'private' WHERE id = %s", (reprivatised,))
        conn.execute("DELETE FROM image_jobs WHERE id = ANY(%s)", ([deleted_shared, deleted_private],))
        conn.execute("UPDATE image_jobs SET user_id = %s WHERE id = %s", (c.id, given_away))
        conn.execute("UPDATE image_jobs SET status = 'processing' WHERE id = %s", (given_away,))
        conn.execute("UPDATE video_jobs SET status = 'processing' WHERE id = %s", (ownerless,))
    db = Database(db_url, min_size=1, max_size=2)
    await db.open()
    try:
        async with db.as_service() as conn:
            everything = await read_batch(conn, 0)
    finally:
        await db.close()
    assert len(everything) > 15
    for user in (a, b, c):
        assert {e.id for e in everything if may_see_event(e.facts, user.id)} == rls_readable(db_url, user), user.email
    assert not any(may_see_event(e.facts, None) for e in everything)


# --- retention ----------------------------------------------------------------------------

async def test_pruning_deletes_old_events_and_moves_the_horizon(db_url):
    owner = add_user(db_url, "owner@example.com")
    with psycopg.connect(db_url, autocommit=True) as conn:
        for _ in range(5):
            conn.execute("INSERT INTO text_jobs (user_id, workflow_name) VALUES (%s, 'w')", (owner.id,))
        conn.execute("UPDATE job_events SET created_at = now() - interval '8 days' WHERE id <= 3")
    db = Database(db_url, min_size=1, max_size=3)
    await db.open()
    try:
        assert await prune(db.as_service, 7 * 86_400, batch=2) == 3
        assert await prune(db.as_service, 7 * 86_400) == 0
        async with db.as_service() as conn:
            horizon = await read_horizon(conn)
        assert (horizon.pruned_through, horizon.newest_id) == (3, 5)
        # A second pruner finds the lock taken and leaves the work to the first.
        async with db.as_service() as holder:
            await holder.execute("SELECT pg_advisory_xact_lock(7450857718071812102)")
            assert await prune(db.as_service, 0) is None
    finally:
        await db.close()
    assert [e["id"] for e in events(db_url)] == [4, 5]
