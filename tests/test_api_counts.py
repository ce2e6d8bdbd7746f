"""`total_count` of list pages: exact while small, never a full count unless asked for.

The guide's field stays on every list page. A client chooses how it is counted with
PostgREST's `Prefer: count=exact|planned|estimated`; without one, `estimated` counts exactly up
to ESTIMATED_COUNT_CAP matching jobs and gives the planner's estimate beyond.
"""

from __future__ import annotations

import psycopg

from genstudio.jobs.service import ESTIMATED_COUNT_CAP
from tests.api_support import api, image_payload  # noqa: F401

MANY = ESTIMATED_COUNT_CAP + 500


def bulk_jobs(db_url: str, user_id, n: int, workflow: str) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO public.image_jobs (user_id, workflow_name, comfy_url) "
            "SELECT %s, %s, 'http://comfy.local:8188' FROM generate_series(1, %s)", (user_id, workflow, n))
        conn.execute("ANALYZE public.image_jobs")


async def list_page(api, user, prefer: str | None = None, **params):
    headers = {**user.headers, **({"Prefer": prefer} if prefer else {})}
    r = await api.client.get("/api/image-jobs", params={"limit": 5, **params}, headers=headers)
    assert r.status_code == 200, r.text
    return r


async def test_small_lists_are_counted_exactly_without_asking(api):
    alice = api.user("alice")
    for _ in range(3):
        await api.client.post("/api/image-jobs", json=image_payload(), headers=alice.headers)
    r = await list_page(api, alice)
    assert r.json()["total_count"] == 3 and "preference-applied" not in r.headers
    r = await list_page(api, alice, prefer="count=exact")
    assert r.json()["total_count"] == 3 and r.headers["preference-applied"] == "count=exact"


async def test_beyond_the_cap_the_default_is_the_planners_estimate(api):
    alice, bob = api.user("alice"), api.user("bob")
    bulk_jobs(api.db_url, alice.id, MANY, "img2img")
    bulk_jobs(api.db_url, bob.id, 40, "img2img")  # private: never counted for alice

    exact = (await list_page(api, alice, prefer="count=exact", scope="all")).json()["total_count"]
    assert exact == MANY
    planned = await list_page(api, alice, prefer="count=planned", scope="all")
    assert planned.headers["preference-applied"] == "count=planned"
    assert 0 < planned.json()["total_count"] <= 3 * (MANY + 40)  # a guess, but of this table
    default = (await list_page(api, alice, scope="all")).json()
    # Beyond the cap: the planner's guess, and never less than what the bounded count proved.
    assert default["total_count"] == max(planned.json()["total_count"], ESTIMATED_COUNT_CAP + 1)
    assert default["image_jobs"] == planned.json()["image_jobs"]


async def test_counts_follow_the_filters_and_other_preferences_are_ignored(api):
    alice = api.user("alice")
    bulk_jobs(api.db_url, alice.id, 30, "img2img")
    bulk_jobs(api.db_url, alice.id, 20, "style-transfer")
    r = await list_page(api, alice, prefer="return=minimal, count=exact", workflow_name="style-transfer")
    assert r.json()["total_count"] == 20 and r.headers["preference-applied"] == "count=exact"
    r = await list_page(api, alice, prefer="count=everything", workflow_name="img2img")
    assert r.json()["total_count"] == 30 and "preference-applied" not in r.headers
