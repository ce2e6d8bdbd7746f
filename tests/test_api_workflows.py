"""The workflows API end to end over the real app and a real PostgreSQL: templates with their
JSON Schema, uploads checked by content, run creation (202, job + run row in one transaction,
idempotency key, per-field errors that write nothing), missing node types, and `/files/...`
visible only to who may see the job, with range requests."""

from __future__ import annotations

import asyncio
import io
import json
import uuid

import httpx
import psycopg
import pytest
from PIL import Image

from genstudio.api.app import create_app
from tests.api_support import Api, ServerThread, add_user, make_settings, table_snapshot
from tests.test_storage import mp4_bytes, png_bytes

SERVER = "http://comfy-a.test:8188"


@pytest.fixture
async def api(db_url, tmp_path):
    settings = make_settings(tmp_path, comfyui_urls=[SERVER], run_background=False)
    app = create_app(db_url, settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            api = Api(client, db_url)
            api.app = app
            yield api


def run_rows(db_url) -> list[dict]:
    with psycopg.connect(db_url, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute("SELECT * FROM genstudio.workflow_runs ORDER BY created_at").fetchall()


def set_server(db_url, url=SERVER, *, healthy=True, node_types=None) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO genstudio.comfy_servers (url, healthy, node_types, checked_at) VALUES (%s, %s, %s, now()) "
            "ON CONFLICT (url) DO UPDATE SET healthy = excluded.healthy, node_types = excluded.node_types",
            (url, healthy, node_types or []))


def multipart(parameters: dict | None = None, **files: bytes) -> dict:
    out = {"files": {name: (f"{name}.png", data) for name, data in files.items()}}
    if parameters is not None:
        out["data"] = {"parameters": json.dumps(parameters)}
    return out


async def test_list_and_get_workflows_with_their_schemas(api):
    alice = api.user("alice")
    r = await api.client.get("/api/workflows", headers=alice.headers)
    assert r.status_code == 200
    listed = r.json()["workflows"]
    assert [w["name"] for w in listed] == ["image-blur", "image-invert", "image-resize", "img2img",
                                           "text-concatenate", "video-from-image"]
    blur = next(w for w in listed if w["name"] == "image-blur")
    assert blur["output_type"] == "image"
    assert blur["parameters_schema"]["properties"]["radius"] == {
        "type": "integer", "title": "Radius", "description": "Blur radius in pixels.",
        "minimum": 1, "maximum": 31, "default": 3}
    assert blur["input_files"][0]["name"] == "image"
    r = await api.client.get("/api/workflows/img2img", headers=alice.headers)
    assert r.status_code == 200 and r.json()["workflow"]["parameters_schema"]["required"] == ["prompt"]
    r = await api.client.get("/api/workflows/nope", headers=alice.headers)
    assert r.status_code == 404 and r.json() == {"success": False, "error": "no workflow named 'nope'"}
    assert (await api.client.get("/api/workflows")).status_code == 401


async def test_multipart_run_creates_the_pending_job_and_its_run(api, db_url):
    alice = api.user("alice")
    r = await api.client.post("/api/workflows/image-blur/runs", headers=alice.headers,
                              **multipart({"radius": 5}, image=png_bytes()))
    assert r.status_code == 202, r.text
    job = r.json()["image_job"]
    assert job["status"] == "pending" and job["user_id"] == str(alice.id)
    assert job["workflow_name"] == "image-blur" and job["comfy_url"] == ""
    assert str(uuid.UUID(job["comfy_job_id"])) == job["comfy_job_id"]
    assert job["parameters"]["radius"] == 5 and job["parameters"]["sigma"] == 1.0
    assert job["parameters"]["dispatch"] == {"state": "queued"}
    input_url = f"/files/image/image-blur/{job['id']}/input-image.png"
    assert job["input_image_urls"] == [input_url]

    # The jobs API returns the same job.
    r = await api.client.get(f"/api/image-jobs/{job['id']}", headers=alice.headers)
    assert r.json()["image_job"] == job

    [run] = run_rows(db_url)
    assert str(run["job_id"]) == job["id"] and run["user_id"] == alice.id
    assert (run["state"], run["output_type"], run["server_url"]) == ("queued", "image", None)
    assert run["prompt"]["2"]["inputs"] == {"image": ["1", 0], "blur_radius": 5, "sigma": 1.0}
    assert run["required_node_types"] == ["ImageBlur", "LoadImage", "SaveImage"]
    assert run["output_nodes"] == ["3"]
    assert run["input_files"] == [{"name": "image", "node_id": "1", "input": "image",
                                   "storage_key": input_url.removeprefix("/files/"),
                                   "filename": "input-image.png", "content_type": "image/png"}]
    r = await api.client.get(input_url, headers=alice.headers)
    assert r.status_code == 200 and r.content == png_bytes() and r.headers["content-type"] == "image/png"


async def test_text_run_without_files_and_typed_strings(api, db_url):
    alice = api.user("alice")
    nasty = '"}, "3": {"class_type": "Evil"'
    r = await api.client.post("/api/workflows/text-concatenate/runs", headers=alice.headers,
                              json={"parameters": {"first": nasty, "second": "{x}"}})
    assert r.status_code == 202, r.text
    assert r.json()["text_job"]["status"] == "pending"
    [run] = run_rows(db_url)
    assert run["prompt"] == {
        "1": {"class_type": "StringConcatenate", "inputs": {"string_a": nasty, "string_b": "{x}", "delimiter": " "}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}


async def test_upload_then_run_by_reference(api, db_url):
    alice, bob = api.user("alice"), api.user("bob")
    r = await api.client.post("/api/uploads", headers=alice.headers,
                              files={"file": ("holiday photo.jpg", png_bytes(30, 20))})
    assert r.status_code == 201, r.text
    upload = r.json()["upload"]
    assert (upload["content_type"], upload["width"], upload["height"]) == ("image/png", 30, 20)
    assert upload["filename"] == "holiday photo.jpg" and upload["url"].endswith("/holiday_photo.png")
    assert (await api.client.get(upload["url"], headers=alice.headers)).content == png_bytes(30, 20)
    assert (await api.client.get(upload["url"], headers=bob.headers)).status_code == 404

    r = await api.client.post("/api/workflows/video-from-image/runs", headers=alice.headers,
                              json={"parameters": {"frames": 4}, "inputs": {"image": upload["id"]}})
    assert r.status_code == 202, r.text
    job = r.json()["video_job"]
    assert job["input_image_urls"] == [f"/files/video/video-from-image/{job['id']}/input-image.png"]
    # Someone else's upload is not theirs to use.
    before = table_snapshot(db_url)
    r = await api.client.post("/api/workflows/video-from-image/runs", headers=bob.headers,
                              json={"inputs": {"image": upload["id"]}})
    assert r.status_code == 404 and "no upload" in r.json()["error"]
    assert table_snapshot(db_url) == before and len(run_rows(db_url)) == 1


@pytest.mark.parametrize("content, message", [
    (b"this is text, whatever the name says", "not an image, video or audio file"),
    (png_bytes()[:60], "damaged"),
    (b"", "empty"),
])
async def test_uploads_are_checked_by_content(api, db_url, content, message):
    alice = api.user("alice")
    r = await api.client.post("/api/uploads", headers=alice.headers, files={"file": ("cat.png", content)})
    assert r.status_code == 422 and message in r.json()["error"], r.text
    r = await api.client.post("/api/workflows/image-invert/runs", headers=alice.headers,
                              files={"image": ("cat.png", content)})
    assert r.status_code == 422 and message in r.json()["error"]
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM genstudio.uploads").fetchone() == (0,)
    assert run_rows(db_url) == []


async def test_upload_bounds(api, db_url, tmp_path):
    alice = api.user("alice")
    settings = api.app.state.settings
    settings.upload_max_pixels = 100 * 100
    r = await api.client.post("/api/uploads", headers=alice.headers, files={"file": ("big.png", png_bytes(101, 100))})
    assert r.status_code == 422 and "at most 10000 pixels" in r.json()["error"]
    settings.upload_max_bytes = 100
    r = await api.client.post("/api/uploads", headers=alice.headers, files={"file": ("big.png", png_bytes(50, 50))})
    assert r.status_code == 413 and "at most 100 bytes" in r.json()["error"]
    # A video where an image is wanted is refused by the template.
    settings.upload_max_bytes, settings.upload_max_pixels = 10**7, 10**7
    r = await api.client.post("/api/workflows/image-invert/runs", headers=alice.headers,
                              files={"image": ("x.png", mp4_bytes(frames=2))})
    assert r.status_code == 422 and "its content is video/mp4" in r.json()["error"]


async def test_bad_runs_name_every_field_and_write_nothing(api, db_url, tmp_path):
    alice = api.user("alice")
    before = table_snapshot(db_url)
    cases = [
        (dict(json={"parameters": {"steps": 0, "cfg": "high", "extra": 1}, "inputs": {}}), 422,
         "parameters.prompt: is required; parameters: extra is not a parameter of img2img; "
         "parameters.cfg: 'high' is not of type 'number'; parameters.steps: 0 is less than the minimum of 1"),
        (dict(json={"parameters": {"prompt": "x"}}), 422, "input file image is required (image/png, image/jpeg, image/webp)"),
        (multipart({"prompt": "x"}, image=png_bytes(), mask=png_bytes()), 422, "'mask' is not an input file of img2img (its inputs: image)"),
        (dict(files={"image": ("a.png", png_bytes())}, data={"parameters": "{not json"}), 422, "parameters: not valid JSON (Expecting property name enclosed in double quotes)"),
        (dict(content=b"{", headers={"Content-Type": "application/json"}), 400, "the request body is not valid JSON"),
        (dict(json={"parameters": [1]}), 422, "parameters: must be a JSON object"),
        (dict(json={"parameters": {"prompt": "x"}, "inputs": {"image": "not-a-uuid"}}), 422, "input file image: 'not-a-uuid' is not an upload id"),
        (dict(json={"params": {}}), 422, "field 'params' is not accepted (send parameters and inputs)"),
        (dict(content=b"x=1", headers={"Content-Type": "text/plain"}), 415, "the request body must be JSON or multipart/form-data"),
    ]
    for kwargs, status, message in cases:
        headers = {**alice.headers, **kwargs.pop("headers", {})}
        r = await api.client.post("/api/workflows/img2img/runs", headers=headers, **kwargs)
        assert (r.status_code, r.json()) == (status, {"success": False, "error": message}), r.text
    r = await api.client.post("/api/workflows/nope/runs", headers=alice.headers, json={})
    assert r.status_code == 404
    assert table_snapshot(db_url) == before and run_rows(db_url) == []
    assert [p for p in (tmp_path / "storage").rglob("*") if p.is_file()] == []  # no stored inputs left behind


async def test_idempotency_key_returns_the_same_job(api, db_url):
    alice, bob = api.user("alice"), api.user("bob")
    headers = {**alice.headers, "Idempotency-Key": "order-42"}
    first = await api.client.post("/api/workflows/image-invert/runs", headers=headers, files={"image": ("a.png", png_bytes())})
    again = await api.client.post("/api/workflows/image-invert/runs", headers=headers, files={"image": ("a.png", png_bytes())})
    assert first.status_code == again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["image_job"]["id"] == first.json()["image_job"]["id"]
    # Concurrent retries still make one job.
    key = {**alice.headers, "Idempotency-Key": "order-43"}
    answers = await asyncio.gather(*(api.client.post("/api/workflows/text-concatenate/runs", headers=key, json={})
                                     for _ in range(8)))
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["text_job"]["id"] for a in answers}) == 1
    # Keys are per user; reusing one for another workflow is a conflict.
    r = await api.client.post("/api/workflows/text-concatenate/runs", headers={**bob.headers, "Idempotency-Key": "order-42"}, json={})
    assert r.status_code == 202
    r = await api.client.post("/api/workflows/text-concatenate/runs", headers=headers, json={})
    assert r.status_code == 409 and "image-invert" in r.json()["error"]
    assert len(run_rows(db_url)) == 3
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM image_jobs").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM text_jobs").fetchone() == (2,)


async def test_missing_node_types_are_a_422_naming_them(api, db_url):
    alice = api.user("alice")
    # No healthy server known: accepted, it waits.
    r = await api.client.post("/api/workflows/text-concatenate/runs", headers=alice.headers, json={})
    assert r.status_code == 202
    set_server(db_url, node_types=["StringConcatenate", "LoadImage", "SaveImage"])
    set_server(db_url, "http://comfy-b.test:8188", node_types=["PreviewAny"])  # not configured: ignored
    before = table_snapshot(db_url)
    r = await api.client.post("/api/workflows/text-concatenate/runs", headers=alice.headers, json={})
    assert (r.status_code, r.json()["error"]) == (422, "no healthy ComfyUI server can run text-concatenate: "
                                                       "missing node types PreviewAny")
    assert table_snapshot(db_url) == before
    set_server(db_url, node_types=["StringConcatenate", "PreviewAny"])
    r = await api.client.post("/api/workflows/text-concatenate/runs", headers=alice.headers, json={})
    assert r.status_code == 202
    set_server(db_url, healthy=False)  # only unhealthy servers: accepted, it waits
    r = await api.client.post("/api/workflows/image-invert/runs", headers=alice.headers, files={"image": ("a.png", png_bytes())})
    assert r.status_code == 202


async def test_files_only_for_who_may_see_the_job_with_ranges_and_signed_urls(db_url, tmp_path):
    settings = make_settings(tmp_path, run_background=False)
    app = create_app(db_url, settings)
    alice, bob = add_user(db_url, "alice@x.test"), add_user(db_url, "bob@x.test")
    with ServerThread(app) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            r = await client.post("/api/workflows/video-from-image/runs", headers=alice.headers,
                                  files={"image": ("a.png", png_bytes())})
            job = r.json()["video_job"]
            storage = app.state.storage
            video = mp4_bytes(frames=24)
            key = f"video/video-from-image/{job['id']}/out_00001_.mp4"
            await storage.put(key, video)
            url = f"/files/{key}"

            r = await client.get(url, headers=alice.headers)
            assert r.status_code == 200 and r.content == video
            assert r.headers["content-type"] == "video/mp4" and r.headers["accept-ranges"] == "bytes"
            assert r.headers["x-content-type-options"] == "nosniff" and "sandbox" in r.headers["content-security-policy"]
            r = await client.get(url, headers={**alice.headers, "Range": "bytes=100-199"})
            assert r.status_code == 206 and r.content == video[100:200]
            assert r.headers["content-range"] == f"bytes 100-199/{len(video)}"
            r = await client.get(url, headers={**alice.headers, "Range": f"bytes=-10"})
            assert r.status_code == 206 and r.content == video[-10:]
            r = await client.head(url, headers=alice.headers)
            assert r.status_code == 200 and int(r.headers["content-length"]) == len(video)

            # Another user, nobody, a path outside the layout: all the same 404 / 401.
            for headers in (bob.headers,):
                r = await client.get(url, headers=headers)
                assert (r.status_code, r.json()) == (404, {"success": False, "error": "no such file"})
            assert (await client.get(url)).status_code == 401
            for bad in ("/files/video/x/../../../etc/passwd", "/files/%2e%2e/secret", f"/files/video/w/{uuid.uuid4()}/a.mp4",
                        "/files/other/a/b/c"):
                assert (await client.get(bad, headers=alice.headers)).status_code == 404, bad

            # Shared: now bob may see it.
            await client.put(f"/api/video-jobs/{job['id']}", headers=alice.headers, json={"visibility": "shared"})
            assert (await client.get(url, headers=bob.headers)).status_code == 200

            # A signed URL works without credentials, for exactly that file, until it expires.
            await client.put(f"/api/video-jobs/{job['id']}", headers=alice.headers, json={"visibility": "private"})
            r = await client.post("/api/files/signed-url", headers=bob.headers, json={"url": url})
            assert r.status_code == 404
            r = await client.post("/api/files/signed-url", headers=alice.headers, json={"url": server.base_url + url})
            signed = r.json()["url"]
            r = await client.get(signed, headers={"Range": "bytes=0-9"})
            assert r.status_code == 206 and r.content == video[:10]
            assert (await client.get(signed.replace(key, key.replace("out_", "in_")))).status_code == 404
            expired, _ = app.state.file_signer.url(key, now=0)
            assert (await client.get(expired)).status_code == 404
