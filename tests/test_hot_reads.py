"""The plain-request path of the hot reads (genstudio.api.hot_reads) answers exactly as the
FastAPI routes do, and hands everything that is not plainly valid to them."""

from __future__ import annotations

import uuid

import pytest

import genstudio.api.caller
from tests.api_support import api, image_payload  # noqa: F401


@pytest.fixture
def routed(monkeypatch):
    """Counts the requests that went through FastAPI's caller dependency."""
    calls = []
    original = genstudio.api.caller.verified_claims

    async def counting(request, token):
        calls.append(request.url.path)
        return await original(request, token)

    monkeypatch.setattr(genstudio.api.caller, "verified_claims", counting)
    return calls


async def both_paths(api, routed, url, headers, *, plain: bool = True):
    """The answer through FastAPI (the token not verified yet) and then again (the token
    remembered): the same status, body and headers; `plain`: the second took the plain path."""
    api.app.state.token_verifier._verified.clear()
    routed.clear()
    first = await api.client.get(url, headers=headers)
    second = await api.client.get(url, headers=headers)
    assert len(routed) == (1 if plain else 2), (url, routed)
    assert (second.status_code, second.content) == (first.status_code, first.content), url
    for name in ("content-type", "content-length", "preference-applied", "www-authenticate", "retry-after"):
        assert second.headers.get(name) == first.headers.get(name), (url, name)
    return second


async def test_plain_reads_answer_as_the_routes_do(api, routed):
    alice, bob = api.user("alice"), api.user("bob")
    ids = []
    for i in range(5):
        payload = image_payload(workflow_name="img2img" if i % 2 else "style", visibility="shared" if i == 3 else "private")
        ids.append((await api.client.post("/api/image-jobs", json=payload, headers=alice.headers)).json()["image_job"]["id"])
    await api.client.post("/api/text-jobs", json={"workflow_name": "caption", "input_text": "x"}, headers=bob.headers)
    cursor = (await api.client.get("/api/feed?limit=2", headers=alice.headers)).json()["next_cursor"]
    assert cursor

    plain = [
        "/api/feed", "/api/feed?limit=2", f"/api/feed?limit=2&cursor={cursor}", "/api/feed?scope=all&types=image,text",
        "/api/feed?workflow_name=style&status=pending", "/api/feed?limit=1&limit=3", "/api/feed?unknown=1",
        "/api/feed?types=nothing", "/api/feed?cursor=not-a-cursor", "/api/feed?cursor=",
        "/api/image-jobs", "/api/image-jobs?limit=2&offset=1", f"/api/image-jobs?cursor={cursor}&scope=all",
        "/api/image-jobs?workflow_name=img2img&status=pending", "/api/text-jobs?scope=all", "/api/video-jobs",
        "/api/image-jobs?cursor=bad", f"/api/image-jobs/{ids[0]}", f"/api/image-jobs/{ids[0].upper()}",
        f"/api/image-jobs/{uuid.uuid4()}", f"/api/text-jobs/{ids[0]}",
    ]
    for url in plain:
        await both_paths(api, routed, url, alice.headers)
    for prefer in ("count=exact", "count=planned", "count=estimated", "return=minimal", "count=exact, handling=strict"):
        response = await both_paths(api, routed, "/api/image-jobs", {**alice.headers, "Prefer": prefer})
        assert response.json()["total_count"] == 5 or prefer == "count=planned"  # the planner's guess
    # Bob sees Alice's shared job, and nothing else of hers.
    assert [j["id"] for j in (await both_paths(api, routed, "/api/image-jobs?scope=all", bob.headers)).json()["image_jobs"]] == [ids[3]]
    assert (await both_paths(api, routed, f"/api/image-jobs/{ids[0]}", bob.headers)).status_code == 404

    not_plain = [
        "/api/feed?limit=0", "/api/feed?limit=101", "/api/feed?limit=", "/api/feed?limit=%2B5", "/api/feed?limit=٣",
        "/api/feed?scope=everyone", "/api/feed?status=done", f"/api/feed?cursor={'x' * 501}",
        "/api/image-jobs?offset=-1", "/api/image-jobs?offset=10000001", f"/api/image-jobs?workflow_name={'w' * 201}",
        f"/api/image-jobs/{ids[0].replace('-', '')}", "/api/image-jobs/not-a-uuid",
    ]
    for url in not_plain:  # FastAPI answers each (most with a 422), both times
        await both_paths(api, routed, url, alice.headers, plain=False)
    await both_paths(api, routed, "/api/image-jobs", {**alice.headers, "Prefer": "count=exact" + " " * 500}, plain=False)


async def test_requests_without_a_remembered_bearer_token_go_to_the_routes(api, routed):
    alice = api.user("alice")
    assert (await api.client.get("/api/feed")).status_code == 401
    assert (await api.client.get("/api/feed", headers={"Authorization": "Basic abc"})).status_code == 401
    assert (await api.client.get("/api/feed", headers={"Authorization": "Bearer not-a-jwt"})).status_code == 401
    await api.client.get("/api/feed", headers=alice.headers)  # remembered from here on
    routed.clear()
    r = await api.client.get("/api/feed", headers=[("Authorization", f"Bearer {alice.token}")] * 2)
    assert r.status_code == 200 and routed == ["/api/feed"]  # two Authorization headers: the route decides
    r = await api.client.get("/api/feed", cookies={"genstudio_session": alice.token})
    assert r.status_code == 200 and routed == ["/api/feed"] * 2
    r = await api.client.head("/api/feed", headers=alice.headers)
    assert r.status_code == 405 and routed == ["/api/feed"] * 2  # HEAD: not this path's either
