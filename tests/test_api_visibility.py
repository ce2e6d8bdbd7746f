"""Row-level security through the API: two users, shared and ownerless rows, and the feed."""

from __future__ import annotations

import asyncio

import psycopg

from tests.api_support import COMPLETIONS, PAYLOADS, api, image_payload, table_snapshot  # noqa: F401


def insert_ownerless(db_url: str, table: str = "image_jobs", n: int = 1) -> list[str]:
    """Legacy rows without an owner, written as the database owner (as the migration would)."""
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            f"INSERT INTO public.{table} (workflow_name, comfy_url, legacy_table, legacy_id) "
            "SELECT 'style-transfer', 'http://legacy', 'style_transfers', g::text FROM generate_series(1, %s) g "
            "RETURNING id", (n,)).fetchall()
    return [str(r[0]) for r in rows]


async def test_another_users_private_job_does_not_exist_for_b(api):
    alice, bob = api.user("alice"), api.user("bob")
    job = (await api.client.post("/api/image-jobs", json=image_payload(), headers=alice.headers)).json()["image_job"]
    url = f"/api/image-jobs/{job['id']}"
    before = table_snapshot(api.db_url)
    attempts = [
        ("GET", url, None), ("GET", f"/api/image-jobs/by-comfy-id/{job['comfy_job_id']}", None),
        ("PUT", url, {"status": "processing"}), ("PUT", f"{url}/complete", COMPLETIONS["image"]),
        ("POST", f"{url}/cancel", None), ("DELETE", url, None),
    ]
    for method, target, body in attempts:
        r = await api.client.request(method, target, json=body, headers=bob.headers)
        assert r.status_code == 404, (method, target, r.text)
        assert r.json() == {"success": False, "error": f"no image job {job['id']}"} or "comfy_job_id" in r.json()["error"]
    assert table_snapshot(api.db_url) == before
    for scope in ("mine", "all"):
        listed = (await api.client.get("/api/image-jobs", params={"scope": scope}, headers=bob.headers)).json()
        assert listed["image_jobs"] == [] and listed["total_count"] == 0
        fed = (await api.client.get("/api/feed", params={"scope": scope}, headers=bob.headers)).json()
        assert fed["items"] == []


async def test_scope_all_shows_shared_and_ownerless_never_others_private(api):
    alice, bob = api.user("alice"), api.user("bob")
    private = (await api.client.post("/api/image-jobs", json=image_payload(), headers=alice.headers)).json()["image_job"]
    shared = (await api.client.post("/api/video-jobs", json=PAYLOADS["video"](visibility="shared"),
                                    headers=alice.headers)).json()["video_job"]
    own = (await api.client.post("/api/text-jobs", json=PAYLOADS["text"](), headers=bob.headers)).json()["text_job"]
    ownerless = insert_ownerless(api.db_url)

    feed_all = (await api.client.get("/api/feed", params={"scope": "all"}, headers=bob.headers)).json()["items"]
    assert {i["id"] for i in feed_all} == {shared["id"], own["id"], *ownerless}
    assert private["id"] not in {i["id"] for i in feed_all}
    feed_mine = (await api.client.get("/api/feed", headers=bob.headers)).json()["items"]
    assert [i["id"] for i in feed_mine] == [own["id"]] and feed_mine[0]["type"] == "text"

    images_all = (await api.client.get("/api/image-jobs", params={"scope": "all"}, headers=bob.headers)).json()
    assert [j["id"] for j in images_all["image_jobs"]] == ownerless and images_all["total_count"] == 1

    # Visible is not writable: shared and ownerless jobs are changed by their owner (or the service) only.
    before = table_snapshot(api.db_url)
    for url in (f"/api/video-jobs/{shared['id']}", f"/api/image-jobs/{ownerless[0]}"):
        assert (await api.client.get(url, headers=bob.headers)).status_code == 200
        for method, path, body in (("PUT", "", {"progress": 5}), ("PUT", "/complete", {"status": "failed"}),
                                   ("POST", "/cancel", None), ("DELETE", "", None)):
            r = await api.client.request(method, url + path, json=body, headers=bob.headers)
            assert r.status_code == 403 and "only its owner" in r.json()["error"], r.text
    assert table_snapshot(api.db_url) == before


async def test_feed_merges_types_newest_first_with_tags(api):
    alice = api.user("alice")
    created = []
    for i in range(9):
        kind = ("video", "image", "text")[i % 3]
        r = await api.client.post(f"/api/{kind}-jobs", json=PAYLOADS[kind](), headers=alice.headers)
        created.append((kind, r.json()[f"{kind}_job"]["id"]))
    newest_first = list(reversed(created))

    seen, cursor = [], None
    while True:
        params = {"limit": 4, **({"cursor": cursor} if cursor else {})}
        page = (await api.client.get("/api/feed", params=params, headers=alice.headers)).json()
        assert page["success"] and len(page["items"]) <= 4
        seen += [(i["type"], i["id"]) for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == newest_first

    images = (await api.client.get("/api/feed", params={"types": "image,text"}, headers=alice.headers)).json()
    assert [(i["type"], i["id"]) for i in images["items"]] == [c for c in newest_first if c[0] != "video"]
    item = images["items"][0]
    assert "input_text" in item if item["type"] == "text" else "prompt" in item
    none = (await api.client.get("/api/feed", params={"workflow_name": "no-such"}, headers=alice.headers)).json()
    assert none == {"success": True, "items": [], "next_cursor": None}
    pending = (await api.client.get("/api/feed", params={"status": "pending", "workflow_name": "img2img"},
                                    headers=alice.headers)).json()
    assert {(i["type"], i["id"]) for i in pending["items"]} == {c for c in created if c[0] == "image"}


async def test_feed_pages_have_no_gaps_or_duplicates_while_jobs_arrive(api):
    alice, bob = api.user("alice"), api.user("bob")
    with psycopg.connect(api.db_url) as conn:
        # Many rows share a created_at, so the id must break ties for the keyset to hold.
        for table, extra in (("video_jobs", "comfy_url"), ("image_jobs", "comfy_url"), ("text_jobs", "comfy_url")):
            conn.execute(
                f"INSERT INTO public.{table} (user_id, workflow_name, {extra}, visibility, created_at) "
                "SELECT %s, 'wf', 'http://c', 'shared', now() - (g / 3) * interval '1 second' "
                "FROM generate_series(1, 120) g", (alice.id,))
        existing = {str(r[0]) for t in ("video_jobs", "image_jobs", "text_jobs")
                    for r in conn.execute(f"SELECT id FROM public.{t}")}

    stop = asyncio.Event()

    async def keep_creating() -> int:
        n = 0
        while not stop.is_set():
            for kind in ("video", "image", "text"):
                r = await api.client.post(f"/api/{kind}-jobs", json=PAYLOADS[kind](visibility="shared"),
                                          headers=bob.headers)
                assert r.status_code == 201
                n += 1
            await asyncio.sleep(0)
        return n

    writer = asyncio.create_task(keep_creating())
    seen, cursor = [], None
    try:
        while True:
            params = {"limit": 25, "scope": "all", **({"cursor": cursor} if cursor else {})}
            page = (await api.client.get("/api/feed", params=params, headers=alice.headers)).json()
            seen += [i["id"] for i in page["items"]]
            cursor = page["next_cursor"]
            await asyncio.sleep(0.01)
            if cursor is None:
                break
    finally:
        stop.set()
        written = await writer
    assert written > 0
    assert len(seen) == len(set(seen)), "a job appeared on two pages"
    assert existing <= set(seen), "a job that existed before paging began was skipped"
