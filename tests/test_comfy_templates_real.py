"""Opt-in: the built-in CPU templates end to end on a real ComfyUI 0.13 (GENSTUDIO_TEST_COMFYUI_URL,
e.g. `shared/comfyui/start.sh` → http://127.0.0.1:8188), followed by the real monitor into a
real PostgreSQL: run → processing → completed with the output stored and thumbnailed.
Skipped without the variable; CI does not need it. The same runs go through the fake in
test_comfy_monitor.py.

Each run goes once straight to the server as the dispatcher hands it over (inputs uploaded,
the prompt posted under genstudio's client id and the run's prompt id), and once the whole way
through `POST /api/workflows/{name}/runs` and the dispatcher itself; img2img needs a model file
that the CPU server does not have, so it is only checked against the server's node types.
"""

from __future__ import annotations

import io
import os
import uuid

import pytest
from PIL import Image

from genstudio.comfy.client import ComfyClient
from genstudio.comfy.templates import check_against_object_info, load_templates, set_input_file
from tests.test_comfy_monitor import CLIENT_ID, studio_factory  # noqa: F401 - the fixture

REAL_URL = (os.environ.get("GENSTUDIO_TEST_COMFYUI_URL") or "").rstrip("/")
pytestmark = pytest.mark.skipif(not REAL_URL, reason="set GENSTUDIO_TEST_COMFYUI_URL to a real ComfyUI 0.13")

TEMPLATES = load_templates()
CPU_TEMPLATES = [t.name for t in TEMPLATES if t.name != "img2img"]
TABLES = {"image": "image_jobs", "video": "video_jobs", "text": "text_jobs"}


def photo() -> bytes:
    buffer = io.BytesIO()
    Image.radial_gradient("L").convert("RGB").resize((320, 240)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("name", CPU_TEMPLATES)
async def test_a_builtin_template_runs_to_completed_on_real_comfyui(studio_factory, name: str) -> None:  # noqa: F811
    template = TEMPLATES.get(name)
    studio = await studio_factory(REAL_URL, monitor_lost_grace_seconds=5)
    prompt = template.build_prompt(template.validate_parameters({}))
    async with ComfyClient(REAL_URL, CLIENT_ID) as client:
        for spec in template.manifest.inputs:
            uploaded = await client.upload_image(photo(), f"gs_{uuid.uuid4().hex[:8]}.png")
            set_input_file(prompt, spec.node, spec.input, uploaded["name"])
    job_id = await studio.submit_run(_Server(REAL_URL), prompt, output_type=template.output_type,
                                     workflow=template.name, output_nodes=template.manifest.output_nodes)
    table = TABLES[template.output_type]
    row = await studio.wait_for(job_id, ("completed", "failed", "cancelled"), table, timeout=120)
    assert row["status"] == "completed", row["error_message"]
    assert row["started_at"] and row["completed_at"] and row["progress"] == 100
    if template.output_type == "text":
        assert row["output_text"]
    else:
        (url,) = row[f"output_{template.output_type}_urls"]
        assert (studio.settings.storage_dir / url.removeprefix("/files/")).stat().st_size > 0
        assert row["thumbnail_url"]


@pytest.mark.parametrize("name", CPU_TEMPLATES)
async def test_a_builtin_template_runs_through_the_api_and_dispatcher_on_real_comfyui(studio_factory,  # noqa: F811
                                                                                     name: str) -> None:
    """The whole path: `POST /api/workflows/{name}/runs` (defaults, a generated photo for each
    input file), the dispatcher picks the real server, uploads and submits, the monitor
    records the outcome and stores the output, which its owner can fetch."""
    template = TEMPLATES.get(name)
    studio = await studio_factory(REAL_URL, monitor_lost_grace_seconds=5, health_check_seconds=0.5,
                                  run_dispatcher=True)
    user = studio.user("ann")
    files = {spec.name: ("photo.png", photo(), "image/png") for spec in template.manifest.inputs}
    answer = await studio.client.post(f"/api/workflows/{name}/runs", headers=user.headers,
                                      files=files or None, data={"parameters": "{}"} if files else None,
                                      json=None if files else {"parameters": {}})
    assert answer.status_code == 202, answer.text
    job_id = uuid.UUID(answer.json()[f"{template.output_type}_job"]["id"])
    row = await studio.wait_for(job_id, ("completed", "failed", "cancelled"), TABLES[template.output_type],
                                timeout=180)
    assert row["status"] == "completed", row["error_message"]
    assert row["comfy_url"] == REAL_URL
    if template.output_type != "text":
        output = await studio.client.get(row[f"output_{template.output_type}_urls"][0], headers=user.headers)
        assert output.status_code == 200 and len(output.content) > 0


async def test_img2img_matches_the_real_servers_node_types() -> None:
    async with ComfyClient(REAL_URL, CLIENT_ID) as client:
        object_info = await client.object_info()
    problems = check_against_object_info(TEMPLATES.get("img2img"), object_info)
    # The only difference a CPU server without model files may show: no checkpoint to choose.
    assert all("ckpt_name" in p for p in problems), problems


class _Server:
    """What `Studio.submit_run` needs of a server: its URL."""

    def __init__(self, url: str):
        self.url = url
