"""Server-Sent Events over real HTTP (uvicorn on an ephemeral port, a real PostgreSQL):
live delivery, replay after a disconnect in the middle of a burst, the visibility rule
against row-level security with three users, per-job streams, expired and unknown ids,
heartbeats, and two `serve` processes on one database."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import psycopg
import pytest

from tests.api_support import COMPLETIONS, PAYLOADS
from tests.events_support import live_api, live_settings, new_job, serve_processes, sql  # noqa: F401
from tests.sse_support import SseStream


def event_ids(db_url: str, after: int = 0) -> list[int]:
    return [r[0] for r in sql(db_url, "SELECT id FROM job_events WHERE id > %s ORDER BY id", (after,))]


def max_id(db_url: str) -> int:
    return sql(db_url, "SELECT coalesce(max(id), 0) FROM job_events")[0][0]


async def test_live_events_carry_id_kind_event_and_job(live_api):
    alice = live_api.user("alice")
    async with SseStream(live_api.client, "/api/feed/events", alice.headers) as stream:
        assert stream.status_code == 200 and stream.content_type.startswith("text/event-stream")
        created = await live_api.client.post("/api/image-jobs", json=PAYLOADS["image"](), headers=alice.headers)
        job = created.json()["image_job"]
        await live_api.client.put(f"/api/image-jobs/{job['id']}/complete", json=COMPLETIONS["image"],
                                  headers=alice.headers)
        await stream.wait_for(lambda s: len(s.events) == 2)
        await stream.wait_for(lambda s: len(s.comments) >= 1)  # heartbeats every 0.5 s here
    first, second = stream.events
    assert [first.event, second.event] == ["created", "completed"]
    assert [int(first.id), int(second.id)] == event_ids(live_api.db_url)
    data = second.json
    assert data["id"] == int(second.id) and data["kind"] == "completed" and data["type"] == "image"
    assert data["job_id"] == job["id"] and data["user_id"] == str(alice.id)
    assert data["changes"]["status"] == "completed" and data["changes"]["output_image_urls"] == COMPLETIONS["image"]["output_image_urls"]
    # The job exactly as GET /api/image-jobs/{id} returns it.
    got = (await live_api.client.get(f"/api/image-jobs/{job['id']}", headers=alice.headers)).json()["image_job"]
    assert data["job"] == got


async def test_streams_need_a_token_and_valid_parameters(live_api):
    alice = live_api.user("alice")
    assert (await live_api.client.get("/api/feed/events")).status_code == 401
    bad = await live_api.client.get("/api/feed/events", params={"types": "audio"}, headers=alice.headers)
    assert bad.status_code == 422 and bad.json()["success"] is False
    bad = await live_api.client.get("/api/feed/events", headers={**alice.headers, "Last-Event-ID": "x1"})
    assert bad.status_code == 422 and "Last-Event-ID" in bad.json()["error"]
    missing = await live_api.client.get(f"/api/image-jobs/{uuid.uuid4()}/events", headers=alice.headers)
    assert missing.status_code == 404


async def test_replay_after_a_disconnect_in_the_middle_of_a_burst_has_no_gap_and_no_duplicate(live_api):
    alice = live_api.user("alice")
    job_ids = [new_job(live_api.db_url, alice) for _ in range(5)]
    start = max_id(live_api.db_url)
    done = asyncio.Event()

    async def burst() -> None:
        def write() -> None:
            with psycopg.connect(live_api.db_url, autocommit=True) as conn:
                for i in range(300):
                    table_job = job_ids[i % len(job_ids)]
                    # Alternate kinds, so progress coalescing does not swallow the burst.
                    if i % 2:
                        conn.execute("UPDATE image_jobs SET error_message = %s WHERE id = %s", (f"m{i}", table_job))
                    else:
                        conn.execute("UPDATE image_jobs SET visibility = CASE visibility WHEN 'shared' THEN 'private' "
                                     "ELSE 'shared' END WHERE id = %s", (table_job,))
        await asyncio.to_thread(write)
        done.set()

    received: list[int] = []
    first = SseStream(live_api.client, f"/api/feed/events?last_event_id={start}", alice.headers)
    async with first:
        writer = asyncio.create_task(burst())
        await first.wait_for(lambda s: len(s.events) >= 60, timeout=30)
    received += first.ids
    assert not done.is_set(), "the burst ended before the disconnect; make it longer"
    # Reconnect as EventSource does: the Last-Event-ID header, while the burst goes on.
    second = SseStream(live_api.client, "/api/feed/events", {**alice.headers, "Last-Event-ID": str(received[-1])})
    async with second:
        await writer
        expected = event_ids(live_api.db_url, start)
        await second.wait_for(lambda s: s.ids and s.ids[-1] == expected[-1], timeout=30)
    received += second.ids
    assert len(expected) == 300
    assert received == expected  # every event once, in order


async def test_what_each_of_three_users_receives_is_what_row_level_security_lets_them_read(live_api):
    """Three users watch `scope=all` while jobs are created, shared, made private again,
    given away, deleted. After every step, each user's stream holds exactly the step's
    events that PostgreSQL lets that user read at that moment."""
    db = live_api.db_url
    users = [live_api.user(n) for n in ("ann", "ben", "cat")]
    ann, ben, cat = users
    marker_job = new_job(db, None, "video_jobs")  # ownerless: everyone sees its events

    def readable(user, after: int, before: int) -> list[int]:
        with psycopg.connect(db) as conn:
            conn.execute("SELECT set_config('role', 'authenticated', true), set_config('request.jwt.claims', %s, true)",
                         (f'{{"sub": "{user.id}", "role": "authenticated"}}',))
            return [r[0] for r in conn.execute("SELECT id FROM job_events WHERE id > %s AND id < %s ORDER BY id",
                                               (after, before))]

    jobs: dict[str, str] = {}
    steps = [
        lambda: jobs.update(a=new_job(db, ann), b=new_job(db, ben, "text_jobs", "shared")),
        lambda: sql(db, "UPDATE image_jobs SET status = 'processing' WHERE id = %s", (jobs["a"],)),
        lambda: sql(db, "UPDATE image_jobs SET visibility = 'shared' WHERE id = %s", (jobs["a"],)),
        lambda: sql(db, "UPDATE image_jobs SET progress = 50 WHERE id = %s", (jobs["a"],)),
        lambda: sql(db, "UPDATE image_jobs SET visibility = 'private' WHERE id = %s", (jobs["a"],)),  # back to private
        lambda: sql(db, "UPDATE image_jobs SET status = 'completed', progress = 100 WHERE id = %s", (jobs["a"],)),
        lambda: sql(db, "UPDATE text_jobs SET status = 'processing' WHERE id = %s", (jobs["b"],)),
        lambda: sql(db, "UPDATE text_jobs SET visibility = 'private', progress = 10 WHERE id = %s", (jobs["b"],)),
        lambda: sql(db, "UPDATE text_jobs SET visibility = 'shared' WHERE id = %s", (jobs["b"],)),
        lambda: sql(db, "UPDATE image_jobs SET user_id = %s WHERE id = %s", (cat.id, jobs["a"])),  # given away
        lambda: sql(db, "UPDATE image_jobs SET error_message = 'seen by cat only' WHERE id = %s", (jobs["a"],)),
        lambda: sql(db, "DELETE FROM text_jobs WHERE id = %s", (jobs["b"],)),  # shared when deleted
        lambda: jobs.update(c=new_job(db, cat)),
        lambda: sql(db, "DELETE FROM image_jobs WHERE id = ANY(%s::uuid[])", ([jobs["a"], jobs["c"]],)),  # private
    ]
    streams = [SseStream(live_api.client, "/api/feed/events?scope=all", u.headers) for u in users]
    for s in streams:
        await s.__aenter__()
    try:
        before = max_id(db)
        for number, step in enumerate(steps):
            step()
            # A change everyone sees marks the end of the step: events arrive in id order.
            sql(db, "UPDATE video_jobs SET progress = %s WHERE id = %s", (number, marker_job))
            marker = max_id(db)
            for user, stream in zip(users, streams):
                await stream.wait_for(lambda s: s.ids and s.ids[-1] >= marker)
                got = [i for i in stream.ids if before < i < marker]
                assert got == readable(user, before, marker), (number, user.email)
            before = marker
        # The stream after being switched back to private: ben and cat got nothing more of job a
        # than the event that made it private, which leaves the job out, so that feeds drop it.
        assert {m.json["job_id"] for m in streams[1].events if m.json["kind"] == "completed"} == set()
        made_private = [[(m.json["job_id"], m.json["job"] is None) for m in s.events
                         if m.json["kind"] == "visibility" and m.json["changes"]["visibility"] == "private"]
                        for s in streams]
        assert made_private == [[(jobs["a"], False), (jobs["b"], True)], [(jobs["a"], True), (jobs["b"], False)],
                                [(jobs["a"], True), (jobs["b"], True)]]
    finally:
        for s in streams:
            await s.close()
    # After ann gave job a away (private), its next event reached cat alone.
    given = [[m for m in s.events if m.json["changes"].get("error_message") == "seen by cat only"] for s in streams]
    assert [len(g) for g in given] == [0, 0, 1]
    assert given[2][0].json["job"]["user_id"] == str(cat.id)


async def test_a_job_stream_replays_its_history_then_follows_it(live_api):
    alice, bob = live_api.user("alice"), live_api.user("bob")
    job = (await live_api.client.post("/api/text-jobs", json=PAYLOADS["text"](), headers=alice.headers)).json()["text_job"]
    other = (await live_api.client.post("/api/text-jobs", json=PAYLOADS["text"](), headers=alice.headers)).json()["text_job"]
    await live_api.client.put(f"/api/text-jobs/{job['id']}", json={"status": "processing"}, headers=alice.headers)
    url = f"/api/text-jobs/{job['id']}/events"
    assert (await live_api.client.get(url, headers=bob.headers)).status_code == 404  # private
    assert (await live_api.client.get(f"/api/image-jobs/{job['id']}/events", headers=alice.headers)).status_code == 404
    async with SseStream(live_api.client, url, alice.headers) as stream:
        await stream.wait_for(lambda s: [m.event for m in s.events] == ["created", "status"])
        await live_api.client.put(f"/api/text-jobs/{other['id']}", json={"status": "processing"}, headers=alice.headers)
        await live_api.client.put(f"/api/text-jobs/{job['id']}/complete", json=COMPLETIONS["text"], headers=alice.headers)
        await stream.wait_for(lambda s: len(s.events) == 3)
    assert [m.event for m in stream.events] == ["created", "status", "completed"]
    assert stream.events[-1].json["job"]["output_text"] == "a brave knight"
    assert {m.json["job_id"] for m in stream.events} == {job["id"]}
    # Resuming from the second event replays only the third.
    async with SseStream(live_api.client, f"{url}?last_event_id={stream.ids[1]}", alice.headers) as resumed:
        await resumed.wait_for(lambda s: len(s.events) == 1)
    assert resumed.ids == stream.ids[2:]


async def test_scope_and_types_filter_the_feed(live_api):
    alice, bob = live_api.user("alice"), live_api.user("bob")
    start = max_id(live_api.db_url)
    mine = SseStream(live_api.client, f"/api/feed/events?scope=mine&last_event_id={start}", alice.headers)
    videos = SseStream(live_api.client, f"/api/feed/events?scope=all&types=video&last_event_id={start}", alice.headers)
    async with mine, videos:
        new_job(live_api.db_url, bob, "video_jobs", "shared")
        new_job(live_api.db_url, alice, "image_jobs")
        new_job(live_api.db_url, alice, "video_jobs")
        ids = event_ids(live_api.db_url, start)
        await mine.wait_for_ids(ids[1:])
        await videos.wait_for_ids([ids[0], ids[2]])
        await asyncio.sleep(0.3)
    assert mine.ids == ids[1:] and videos.ids == [ids[0], ids[2]]


@pytest.fixture
def live_settings(tmp_path):  # noqa: F811  (this module's settings)
    from tests.api_support import make_settings
    return make_settings(tmp_path, sse_heartbeat_seconds=0.5, run_background=False, event_retention_days=1)


async def test_a_replay_older_than_retention_says_so_then_replays_what_is_left(live_api):
    from genstudio.db.pool import Database
    from genstudio.events.log import prune

    alice = live_api.user("alice")
    for _ in range(4):
        new_job(live_api.db_url, alice)
    ids = event_ids(live_api.db_url)
    sql(live_api.db_url, "UPDATE job_events SET created_at = now() - interval '2 days' WHERE id <= %s", (ids[1],))
    db = Database(live_api.db_url, min_size=1, max_size=2)
    await db.open()
    try:
        assert await prune(db.as_service, 86_400) == 2
    finally:
        await db.close()
    async with SseStream(live_api.client, f"/api/feed/events?last_event_id={ids[0] - 1}", alice.headers) as stream:
        await stream.wait_for(lambda s: len(s.events) == 2)
    reset = stream.messages[0]
    assert reset.event == "reset" and reset.id is None
    assert reset.json == {"reason": "expired", "last_event_id": ids[0] - 1, "pruned_through": ids[1]}
    assert stream.ids == ids[2:]
    # Resuming exactly at the horizon lost nothing: no reset.
    async with SseStream(live_api.client, f"/api/feed/events?last_event_id={ids[1]}", alice.headers) as stream:
        await stream.wait_for(lambda s: len(s.events) == 2)
    assert [m.event for m in stream.messages] == ["created", "created"]
    # An id this log never handed out.
    async with SseStream(live_api.client, "/api/feed/events?last_event_id=999999", alice.headers) as stream:
        await stream.wait_for(lambda s: len(s.messages) == 1)
    assert stream.messages[0].json["reason"] == "unknown_event_id"


async def test_two_serve_processes_deliver_each_others_events(serve_processes, db_url):
    from tests.api_support import add_user

    first, second = serve_processes(), serve_processes()
    alice = add_user(db_url, "alice@example.com")
    async with httpx.AsyncClient(timeout=30) as client:
        on_second = SseStream(client, f"{second.base_url}/api/feed/events", alice.headers)
        on_first = SseStream(client, f"{first.base_url}/api/feed/events", alice.headers)
        async with on_second, on_first:
            created = await client.post(f"{first.base_url}/api/video-jobs", json=PAYLOADS["video"](), headers=alice.headers)
            job_id = created.json()["video_job"]["id"]
            await client.post(f"{second.base_url}/api/video-jobs/{job_id}/cancel", headers=alice.headers)
            ids = event_ids(db_url)
            await on_second.wait_for_ids(ids)
            await on_first.wait_for_ids(ids)
    assert on_second.ids == on_first.ids == ids
    assert [m.event for m in on_second.events] == ["created", "cancelled"]


async def test_a_stream_ends_when_its_token_expires(live_api):
    from genstudio.auth.tokens import TokenIssuer
    from tests.api_support import AUDIENCE, SECRET

    alice = live_api.user("alice")
    short = TokenIssuer(SECRET, AUDIENCE, 2).issue(alice.id, alice.email)
    async with SseStream(live_api.client, "/api/feed/events", {"Authorization": f"Bearer {short}"}) as stream:
        new_job(live_api.db_url, alice)
        await stream.wait_for(lambda s: len(s.events) == 1)
        await asyncio.wait_for(stream.ended.wait(), 10)  # the client reconnects with a fresh token
    assert stream.status_code == 200
