"""The job endpoints of all three output types, end to end over the real app and database."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest

from tests.api_support import COMPLETIONS, PAYLOADS, api, count_jobs, image_payload  # noqa: F401

TYPES = ["video", "image", "text"]


@pytest.mark.parametrize("kind", TYPES)
async def test_job_lifecycle(api, kind):
    alice = api.user("alice")
    base = f"/api/{kind}-jobs"
    r = await api.client.post(base, json=PAYLOADS[kind](), headers=alice.headers)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["success"] is True
    job = body[f"{kind}_job"]
    assert job["status"] == "pending" and job["user_id"] == str(alice.id)
    assert job["visibility"] == "private" and "user_ip" not in job

    r = await api.client.get(f"{base}/{job['id']}", headers=alice.headers)
    assert r.status_code == 200 and r.json()[f"{kind}_job"]["id"] == job["id"]
    r = await api.client.get(f"{base}/by-comfy-id/{job['comfy_job_id']}", headers=alice.headers)
    assert r.status_code == 200 and r.json()[f"{kind}_job"]["id"] == job["id"]

    r = await api.client.put(f"{base}/{job['id']}", json={"status": "processing", "progress": 40},
                             headers=alice.headers)
    assert r.status_code == 200, r.text
    running = r.json()[f"{kind}_job"]
    assert running["status"] == "processing" and running["started_at"] and running["progress"] == 40

    r = await api.client.put(f"{base}/{job['id']}/complete", json=COMPLETIONS[kind], headers=alice.headers)
    assert r.status_code == 200, r.text
    done = r.json()[f"{kind}_job"]
    assert done["status"] == "completed" and done["completed_at"] and done["processing_time_seconds"] >= 0
    assert done["progress"] == 100

    again = await api.client.put(f"{base}/{job['id']}/complete", json=COMPLETIONS[kind], headers=alice.headers)
    assert again.status_code == 200 and again.json()[f"{kind}_job"] == done

    failed = await api.client.put(f"{base}/{job['id']}/complete", json={"status": "failed", "error_message": "x"},
                                  headers=alice.headers)
    assert failed.status_code == 409
    assert failed.json() == {"success": False,
                             "error": "the job is already completed; it cannot move from completed to failed"}

    r = await api.client.post(f"{base}/{job['id']}/cancel", headers=alice.headers)
    assert r.status_code == 409 and "completed to cancelled" in r.json()["error"]
    r = await api.client.put(f"{base}/{job['id']}", json={"status": "processing"}, headers=alice.headers)
    assert r.status_code == 409

    r = await api.client.delete(f"{base}/{job['id']}", headers=alice.headers)
    assert r.status_code == 200 and r.json()["success"] is True
    r = await api.client.get(f"{base}/{job['id']}", headers=alice.headers)
    assert r.status_code == 404 and r.json()["success"] is False


async def test_create_is_idempotent_per_comfy_job_id(api):
    alice, bob = api.user("alice"), api.user("bob")
    payload = image_payload()
    first = await api.client.post("/api/image-jobs", json=payload, headers=alice.headers)
    again = await api.client.post("/api/image-jobs", json=payload, headers=alice.headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["image_job"]["id"] == again.json()["image_job"]["id"]
    theirs = await api.client.post("/api/image-jobs", json=payload, headers=bob.headers)
    assert theirs.status_code == 409 and payload["comfy_job_id"] in theirs.json()["error"]
    assert count_jobs(api.db_url)["image_jobs"] == 1


async def test_owner_comes_from_the_token_never_the_body(api):
    alice, bob = api.user("alice"), api.user("bob")
    r = await api.client.post("/api/image-jobs", json=image_payload(user_id=str(bob.id)), headers=alice.headers)
    assert r.status_code == 422 and "'user_id' is not accepted" in r.json()["error"]
    assert count_jobs(api.db_url)["image_jobs"] == 0


async def test_cancel_a_running_job_and_repeat(api):
    alice = api.user("alice")
    job = (await api.client.post("/api/video-jobs", json=PAYLOADS["video"](), headers=alice.headers)).json()["video_job"]
    r = await api.client.post(f"/api/video-jobs/{job['id']}/cancel", headers=alice.headers)
    assert r.status_code == 200 and r.json()["video_job"]["status"] == "cancelled"
    assert r.json()["video_job"]["completed_at"]
    r = await api.client.post(f"/api/video-jobs/{job['id']}/cancel", headers=alice.headers)
    assert r.status_code == 200 and r.json()["video_job"]["status"] == "cancelled"
    r = await api.client.put(f"/api/video-jobs/{job['id']}/complete", json=COMPLETIONS["video"], headers=alice.headers)
    assert r.status_code == 409 and "cancelled to completed" in r.json()["error"]


async def test_repeated_completion_with_other_results_is_a_conflict(api):
    alice = api.user("alice")
    job = (await api.client.post("/api/image-jobs", json=image_payload(), headers=alice.headers)).json()["image_job"]
    url = f"/api/image-jobs/{job['id']}/complete"
    assert (await api.client.put(url, json=COMPLETIONS["image"], headers=alice.headers)).status_code == 200
    other = {**COMPLETIONS["image"], "output_image_urls": ["https://cdn.example.com/out/other.png"]}
    r = await api.client.put(url, json=other, headers=alice.headers)
    assert r.status_code == 409 and "output_image_urls" in r.json()["error"]
    stored = (await api.client.get(f"/api/image-jobs/{job['id']}", headers=alice.headers)).json()["image_job"]
    assert stored["output_image_urls"] == ["https://cdn.example.com/out/i.png"]


async def test_complete_body_job_id_must_match_the_url(api):
    alice = api.user("alice")
    job = (await api.client.post("/api/image-jobs", json=image_payload(), headers=alice.headers)).json()["image_job"]
    r = await api.client.put(f"/api/image-jobs/{job['id']}/complete",
                             json={**COMPLETIONS["image"], "job_id": str(uuid.uuid4())}, headers=alice.headers)
    assert r.status_code == 422 and "not the job in the URL" in r.json()["error"]
    stored = (await api.client.get(f"/api/image-jobs/{job['id']}", headers=alice.headers)).json()["image_job"]
    assert stored["status"] == "pending"


async def test_list_filters_pagination_and_total(api):
    alice = api.user("alice")
    ids = []
    for i in range(7):
        wf = "img2img" if i % 2 == 0 else "style-transfer"
        r = await api.client.post("/api/image-jobs", json=image_payload(workflow_name=wf), headers=alice.headers)
        ids.append(r.json()["image_job"]["id"])
    newest_first = list(reversed(ids))

    r = await api.client.get("/api/image-jobs", params={"limit": 3}, headers=alice.headers)
    page = r.json()
    assert page["success"] and page["total_count"] == 7 and page["next_cursor"]
    assert [j["id"] for j in page["image_jobs"]] == newest_first[:3]

    seen, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await api.client.get("/api/image-jobs", params=params, headers=alice.headers)).json()
        seen += [j["id"] for j in page["image_jobs"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == newest_first

    r = await api.client.get("/api/image-jobs", params={"limit": 2, "offset": 2}, headers=alice.headers)
    assert [j["id"] for j in r.json()["image_jobs"]] == newest_first[2:4]

    r = await api.client.get("/api/image-jobs", params={"workflow_name": "style-transfer"}, headers=alice.headers)
    assert r.json()["total_count"] == 3 and {j["workflow_name"] for j in r.json()["image_jobs"]} == {"style-transfer"}
    r = await api.client.get("/api/image-jobs", params={"workflow_name": "no-such-workflow"}, headers=alice.headers)
    assert r.json() == {"success": True, "image_jobs": [], "total_count": 0, "next_cursor": None}
    r = await api.client.get("/api/image-jobs", params={"status": "completed"}, headers=alice.headers)
    assert r.json()["image_jobs"] == []


async def test_visibility_switch_by_owner(api):
    alice, bob = api.user("alice"), api.user("bob")
    job = (await api.client.post("/api/image-jobs", json=image_payload(), headers=alice.headers)).json()["image_job"]
    url = f"/api/image-jobs/{job['id']}"
    assert (await api.client.get(url, headers=bob.headers)).status_code == 404
    r = await api.client.put(url, json={"visibility": "shared"}, headers=alice.headers)
    assert r.status_code == 200 and r.json()["image_job"]["visibility"] == "shared"
    assert (await api.client.get(url, headers=bob.headers)).status_code == 200
    r = await api.client.put(url, json={"visibility": "private"}, headers=bob.headers)
    assert r.status_code == 403 and "only its owner" in r.json()["error"]
    r = await api.client.put(url, json={"visibility": "private"}, headers=alice.headers)
    assert (await api.client.get(url, headers=bob.headers)).status_code == 404


async def test_database_refusal_is_a_4xx_and_writes_nothing(api):
    alice = api.user("alice")
    r = await api.client.post("/api/image-jobs", json=image_payload(parameters={"bad": "nul\u0000char"}),
                              headers=alice.headers)
    assert r.status_code == 422 and r.json()["success"] is False
    assert count_jobs(api.db_url)["image_jobs"] == 0


async def test_openapi_and_docs(api):
    spec = (await api.client.get("/api/openapi.json")).json()
    names = set(spec["components"]["schemas"])
    for kind in ("Video", "Image", "Text"):
        for model in ("{}Job", "Create{}JobPayload", "Update{}JobPayload", "Complete{}JobPayload",
                      "{}JobResponse", "{}JobListResponse"):
            assert model.format(kind) in names
    assert "/api/feed" in spec["paths"] and "/api/auth/login" in spec["paths"]
    docs = await api.client.get("/api/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


@pytest.mark.parametrize("timezone", ["UTC", "Asia/Kolkata", "America/St_Johns"])
async def test_next_cursor_rendered_by_postgresql_is_the_cursor_of_the_last_job_shown(db_url, timezone):
    """Pages render their `next_cursor` in SQL: it must be exactly the text Cursor.encode gives
    for the page's oldest job (whole seconds, where Python's isoformat leaves the fraction out,
    and a session time zone with a half-hour offset included), and lead to the next page."""
    from psycopg.conninfo import make_conninfo

    from genstudio.db.pool import Database
    from genstudio.jobs.cursor import Cursor
    from genstudio.jobs.feed import FeedQuery, read_feed
    from genstudio.jobs.output_types import IMAGE
    from genstudio.jobs.service import JobService, PageQuery
    from tests.api_support import add_user

    alice = add_user(db_url, "alice@example.com")
    conninfo = make_conninfo(db_url, options=f"-c TimeZone={timezone}")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for stamp in ("2026-01-02 03:04:05+00", "2026-01-02 03:04:05.000001+00", "2026-01-02 03:04:05.5+00",
                      "1999-12-31 23:59:59.999999+00", "1999-12-31 23:59:59.999999+00"):
            conn.execute("INSERT INTO public.image_jobs (user_id, workflow_name, status, created_at, comfy_url) "
                         "VALUES (%s, 'wf', 'pending', %s, 'http://comfy.local:8188')", (alice.id, stamp))
        newest_first = conn.execute("SELECT created_at, id FROM public.image_jobs "
                                    "ORDER BY created_at DESC, id DESC").fetchall()
    claims = {"sub": str(alice.id), "role": "authenticated", "aud": "authenticated"}
    db = Database(conninfo, min_size=1, max_size=1)
    await db.open()
    try:
        for read in ("list", "feed"):
            cursor = None
            for created_at, job_id in newest_first:
                reader = db.per_statement_as_user(claims, page_read=True)
                if read == "list":
                    body = await JobService(IMAGE).list(reader, PageQuery(limit=1, cursor=cursor))
                else:
                    body = await read_feed(reader, FeedQuery(limit=1, cursor=cursor, types=("image",)))
                page = json.loads(body)
                assert [job["id"] for job in page["image_jobs" if read == "list" else "items"]] == [str(job_id)]
                if (created_at, job_id) == newest_first[-1]:
                    assert page["next_cursor"] is None
                else:
                    assert page["next_cursor"] == Cursor(created_at, job_id).encode()
                    cursor = Cursor.decode(page["next_cursor"])
    finally:
        await db.close()
