"""Issue 11, item 5: numbers are numbers (a JSON `true` or `"5"` is not one, as OpenAPI says), and
URLs shown to others are http(s) or genstudio's own `/files/...` paths, never script or data URLs.
"""

from __future__ import annotations

import pytest

from tests.api_support import COMPLETIONS, PAYLOADS, table_snapshot
from tests.security_support import api  # noqa: F401  (fixture)

SCRIPT_URLS = [
    "javascript:alert(document.cookie)",
    "JavaScript:alert(1)",
    " javascript:alert(1)",
    "java\tscript:alert(1)",
    "\x01javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "data:image/svg+xml;base64,PHN2Zz48L3N2Zz4=",
    "vbscript:msgbox(1)",
    "file:///etc/passwd",
]
# Not script URLs, but not links genstudio may render either: other origins without a scheme,
# and relative paths outside /files/.
OTHER_BAD_LINKS = ["//evil.example/x.png", "/\\evil.example/x.png", "http:///no-host.png", "out/i.png",
                   "https://cdn.example.com/a b.png", "ftp://files.example/x.png"]
GOOD_LINKS = ["https://cdn.example.com/out/i.png?sig=abc", "http://comfy.local:8188/view?filename=x.png",
              "/files/image/img2img/5f0c/i.png"]


@pytest.fixture
async def jobs(api):
    """Alice, with one pending job of each type: (api, alice, {type: job id})."""
    alice = api.user("alice")
    ids = {}
    for kind, payload in PAYLOADS.items():
        r = await api.client.post(f"/api/{kind}-jobs", json=payload(), headers=alice.headers)
        assert r.status_code == 201, r.text
        ids[kind] = r.json()[f"{kind}_job"]["id"]
    return api, alice, ids


@pytest.mark.parametrize("field,value", [
    ("width", True), ("height", False), ("width", "512"), ("width", 512.0), ("fps", True),
    ("duration_seconds", True), ("duration_seconds", "2.5"),
])
async def test_booleans_and_strings_are_not_numbers_when_recording(api, field, value):
    alice = api.user("alice")
    before = table_snapshot(api.db_url)
    r = await api.client.post("/api/video-jobs", json=PAYLOADS["video"](**{field: value}), headers=alice.headers)
    assert r.status_code == 422 and f"field '{field}" in r.json()["error"], r.text
    assert table_snapshot(api.db_url) == before


@pytest.mark.parametrize("field,value", [("width", True), ("height", "512"), ("duration_seconds", False)])
async def test_booleans_and_strings_are_not_numbers_when_completing(jobs, field, value):
    api, alice, ids = jobs
    before = table_snapshot(api.db_url)
    body = {**COMPLETIONS["video"], field: value}
    r = await api.client.put(f"/api/video-jobs/{ids['video']}/complete", json=body, headers=alice.headers)
    assert r.status_code == 422 and f"field '{field}" in r.json()["error"], r.text
    assert table_snapshot(api.db_url) == before


async def test_progress_is_a_number_not_a_boolean(jobs):
    api, alice, ids = jobs
    url = f"/api/image-jobs/{ids['image']}"
    for value in (True, "50"):
        r = await api.client.put(url, json={"progress": value}, headers=alice.headers)
        assert r.status_code == 422 and "'progress'" in r.json()["error"], r.text
    for value, stored in ((50, 50), (12.5, 12.5)):  # OpenAPI `number`: integers are numbers
        r = await api.client.put(url, json={"progress": value}, headers=alice.headers)
        assert r.status_code == 200 and r.json()["image_job"]["progress"] == stored, r.text


@pytest.mark.parametrize("kind,field", [("video", "output_video_urls"), ("image", "output_image_urls"),
                                        ("image", "thumbnail_url"), ("video", "thumbnail_url")])
async def test_output_and_thumbnail_urls_are_http_or_own_files_only(jobs, kind, field):
    api, alice, ids = jobs
    url = f"/api/{kind}-jobs/{ids[kind]}/complete"
    before = table_snapshot(api.db_url)
    for bad in SCRIPT_URLS + OTHER_BAD_LINKS:
        value = [bad] if field.endswith("_urls") else bad
        r = await api.client.put(url, json={**COMPLETIONS[kind], field: value}, headers=alice.headers)
        assert r.status_code == 422, (bad, r.text)
        assert f"field '{field}" in r.json()["error"] and "http(s) URL" in r.json()["error"], (bad, r.text)
    assert table_snapshot(api.db_url) == before
    good = GOOD_LINKS if field.endswith("_urls") else GOOD_LINKS[-1]
    r = await api.client.put(url, json={**COMPLETIONS[kind], field: good}, headers=alice.headers)
    assert r.status_code == 200 and r.json()[f"{kind}_job"][field] == good, r.text


async def test_comfy_url_and_inputs_take_no_script_or_data_scheme(api):
    alice = api.user("alice")
    before = table_snapshot(api.db_url)
    for bad in SCRIPT_URLS:
        for field, value in (("comfy_url", bad), ("input_image_urls", [bad])):
            r = await api.client.post("/api/image-jobs", json=PAYLOADS["image"](**{field: value}), headers=alice.headers)
            assert r.status_code == 422 and f"field '{field}" in r.json()["error"], (field, bad, r.text)
    assert table_snapshot(api.db_url) == before
    # What the guide's client sends: ComfyUI file names (annotated or not) and http(s) URLs.
    inputs = ["cat.png", "clipspace/mask-1.png [input]", "https://cdn.example.com/in.png"]
    r = await api.client.post("/api/image-jobs", json=PAYLOADS["image"](input_image_urls=inputs), headers=alice.headers)
    assert r.status_code == 201 and r.json()["image_job"]["input_image_urls"] == inputs
