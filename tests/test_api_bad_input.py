"""Every class of bad input answers a 4xx with a message in words, and writes nothing."""

from __future__ import annotations

import pytest

from tests.api_support import COMPLETIONS, api, image_payload, table_snapshot  # noqa: F401


@pytest.fixture
async def seeded(api):
    """Alice with one pending image job; returns (api, alice, job id)."""
    alice = api.user("alice")
    r = await api.client.post("/api/image-jobs", json=image_payload(), headers=alice.headers)
    return api, alice, r.json()["image_job"]["id"]


def _cases(job_id: str) -> list[tuple[str, str, dict, int, str]]:
    """(method, url, request kwargs, expected status, words the error must contain)."""
    jobs = "/api/image-jobs"
    return [
        ("GET", f"{jobs}/not-a-uuid", {}, 422, "path parameter 'job_id'"),
        ("PUT", f"{jobs}/1234/complete", {"json": COMPLETIONS["image"]}, 422, "job_id"),
        ("POST", f"{jobs}/xyz/cancel", {}, 422, "job_id"),
        ("DELETE", f"{jobs}/xyz", {}, 422, "job_id"),
        *[("GET", jobs, {"params": {"limit": v}}, 422, "query parameter 'limit'") for v in ("0", "101", "-1", "abc")],
        *[("GET", "/api/feed", {"params": {"limit": v}}, 422, "'limit'") for v in ("0", "101", "-1", "abc")],
        ("GET", jobs, {"params": {"offset": "-5"}}, 422, "'offset'"),
        ("GET", jobs, {"params": {"status": "exploded"}}, 422, "'status'"),
        ("GET", jobs, {"params": {"scope": "everyone"}}, 422, "'scope'"),
        ("GET", "/api/feed", {"params": {"status": "exploded"}}, 422, "'status'"),
        ("GET", "/api/feed", {"params": {"types": "video,audio"}}, 422, "'audio'"),
        ("GET", "/api/feed", {"params": {"types": ","}}, 422, "'types'"),
        ("GET", jobs, {"params": {"cursor": "bm90IGEgY3Vyc29y"}}, 400, "cursor"),
        ("GET", "/api/feed", {"params": {"cursor": "%%%"}}, 400, "cursor"),
        ("GET", "/api/video-jobs-nope", {}, 404, "Not Found"),
        ("PATCH", f"{jobs}/{job_id}", {"json": {}}, 405, "Method Not Allowed"),
        ("POST", jobs, {"json": image_payload(workflow_name="")}, 422, "'workflow_name'"),
        ("POST", jobs, {"json": {"prompt": "no workflow"}}, 422, "'workflow_name': Field required"),
        ("POST", jobs, {"json": image_payload(status="completed")}, 422, "'status' is not accepted"),
        ("POST", jobs, {"json": image_payload(width=0)}, 422, "'width'"),
        ("POST", jobs, {"json": image_payload(width="wide")}, 422, "'width'"),
        ("POST", jobs, {"json": image_payload(input_image_urls="one.png")}, 422, "'input_image_urls'"),
        ("POST", jobs, {"json": image_payload(visibility="public")}, 422, "'visibility'"),
        ("POST", jobs, {"json": [1, 2]}, 422, "body"),
        ("POST", jobs, {"content": b'{"workflow_name": ', "headers": {"Content-Type": "application/json"}},
         400, "not valid JSON"),
        ("POST", jobs, {"content": b"workflow_name=img2img", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
         415, "must be JSON"),
        ("POST", jobs, {"content": b'{"workflow_name": "x"}', "headers": {"Content-Type": "text/plain"}},
         415, "must be JSON"),
        ("POST", jobs, {"content": b'{"a": "' + b"x" * (1024 * 1024) + b'"}',
                        "headers": {"Content-Type": "application/json"}}, 413, "larger than"),
        ("PUT", f"{jobs}/{job_id}", {"json": {"status": "completed"}}, 422, "'status'"),
        ("PUT", f"{jobs}/{job_id}", {"json": {"progress": 101}}, 422, "'progress'"),
        ("PUT", f"{jobs}/{job_id}", {"json": {}}, 422, "nothing to update"),
        ("PUT", f"{jobs}/{job_id}/complete", {"json": {"status": "done"}}, 422, "'status'"),
        ("PUT", f"{jobs}/{job_id}/complete", {"json": {"status": "completed", "output_video_urls": ["v.mp4"]}},
         422, "'output_video_urls' is not accepted"),
        ("PUT", f"{jobs}/{job_id}/complete", {}, 422, "Field required"),
    ]


async def test_bad_input_is_refused_with_words_and_writes_nothing(seeded):
    api, alice, job_id = seeded
    before = table_snapshot(api.db_url)
    for method, url, kwargs, status, words in _cases(job_id):
        headers = {**alice.headers, **kwargs.pop("headers", {})}
        r = await api.client.request(method, url, headers=headers, **kwargs)
        assert r.status_code == status, (method, url, r.status_code, r.text[:300])
        body = r.json()
        assert body["success"] is False and words in body["error"], (method, url, body)
    assert table_snapshot(api.db_url) == before


async def test_invalid_transitions_are_conflicts_that_say_from_what_to_what(seeded):
    api, alice, job_id = seeded
    url = f"/api/image-jobs/{job_id}"
    assert (await api.client.put(url, json={"status": "processing"}, headers=alice.headers)).status_code == 200
    back = await api.client.put(url, json={"status": "pending"}, headers=alice.headers)
    assert back.status_code == 409 and back.json()["error"] == "a job cannot move from processing to pending"
    await api.client.put(f"{url}/complete", json={"status": "failed", "error_message": "oom"}, headers=alice.headers)
    before = table_snapshot(api.db_url)
    for method, path, body in (("PUT", "/complete", COMPLETIONS["image"]), ("POST", "/cancel", None),
                               ("PUT", "", {"progress": 10})):
        r = await api.client.request(method, url + path, json=body, headers=alice.headers)
        assert r.status_code == 409 and "already failed" in r.json()["error"], r.text
    assert table_snapshot(api.db_url) == before
    shared = await api.client.put(url, json={"visibility": "shared"}, headers=alice.headers)
    assert shared.status_code == 200 and shared.json()["image_job"]["status"] == "failed"
