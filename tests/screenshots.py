"""Refresh the README's screenshots: `python3 -m tests.screenshots` (from the repository root).

Starts a throwaway embedded PostgreSQL, the fake ComfyUI (tests/fakes/) and a real `genstudio
serve`; runs a handful of the built-in workflows so the feed holds real outputs with their
thumbnails (and one failure, one run still going); then Chromium photographs the feed, the
img2img page (after a run) and a job page at desktop and phone width into docs/screenshots/.

The feed's jobs are submitted the way the guide's studio does it (the client posts the prompt to
ComfyUI and records the job with its prompt id; genstudio's monitor follows it to the end and
stores the outputs), so they do not depend on the dispatcher; the img2img page submits through
`POST /api/workflows/img2img/runs`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import io
import json
import math
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from PIL import Image, ImageDraw

from genstudio.comfy.templates import load_templates, set_input_file
from genstudio.db.embedded import EmbeddedPostgres
from genstudio.db.migrator import Migrator
from tests.conftest import Cluster
from tests.fakes.comfyui import FakeComfyUI
from tests.web_support import CHROMIUM, CHROMIUM_ARGS, DESKTOP, PHONE, sign_in, start_studio, stop_studio

OUT = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
# Whether this genstudio submits runs itself (the img2img page then shows a finished run).
RUNS_ARE_DISPATCHED = importlib.util.find_spec("genstudio.comfy.dispatcher") is not None


def picture(seed: int, size=(512, 384)) -> bytes:
    """A small landscape: sky gradient, sun, hills; different per seed."""
    w, h = size
    image = Image.new("RGB", size)
    draw = ImageDraw.Draw(image)
    hue = [(255, 170, 90), (120, 180, 255), (250, 120, 160), (140, 220, 170)][seed % 4]
    for y in range(h):
        t = y / h
        draw.line([(0, y), (w, y)], fill=tuple(int(c * (1 - t) + 30 * t) for c in hue))
    draw.ellipse([w * 0.62, h * 0.16, w * 0.8, h * 0.4], fill=(255, 240, 200))
    for layer, shade in enumerate((70, 45, 25)):
        points = [(x, h * (0.55 + 0.12 * layer) + 28 * math.sin(x / (60 + 25 * layer) + seed + layer))
                  for x in range(0, w + 16, 16)]
        draw.polygon([(0, h), *points, (w, h)], fill=(shade, shade + 40 - 10 * layer, shade + 20))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


TEMPLATES = load_templates()


def run(studio, fake, account, workflow: str, parameters: dict, image: bytes | None = None,
        share: bool = False) -> dict:
    """Submit a built-in template to the fake ComfyUI and record the job, as the guide's client does."""
    template = TEMPLATES.get(workflow)
    prompt = template.build_prompt(template.validate_parameters(parameters))
    inputs = []
    if image is not None:
        spec = template.manifest.inputs[0]
        uploaded = httpx.post(f"{fake.url}/upload/image", files={"image": (f"{uuid.uuid4().hex}.png", image, "image/png")},
                              data={"overwrite": "true"}, timeout=15).json()
        set_input_file(prompt, spec.node, spec.input, uploaded["name"])
        inputs = [uploaded["name"]]
    prompt_id = str(uuid.uuid4())
    r = httpx.post(f"{fake.url}/prompt", json={"prompt": prompt, "client_id": "studio-frontend", "prompt_id": prompt_id},
                   timeout=15)
    assert r.status_code == 200, r.text
    body = {"workflow_name": workflow, "comfy_url": fake.url, "comfy_job_id": prompt_id, "parameters": parameters,
            "input_image_urls": inputs, "visibility": "shared" if share else "private"}
    if template.output_type == "image" and "prompt" in parameters:
        body["prompt"] = parameters["prompt"]
    r = studio.api("POST", f"/api/{template.output_type}-jobs", account, json=body)
    assert r.status_code == 201, r.text
    return {**r.json()[f"{template.output_type}_job"], "type": template.output_type}


def wait_final(studio, account, job: dict, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = studio.api("GET", f"/api/{job['type']}-jobs/{job['id']}", account).json()[f"{job['type']}_job"]
        if current["status"] in ("completed", "failed", "cancelled"):
            return current
        time.sleep(0.2)
    raise TimeoutError(f"{job['type']} job {job['id']} did not finish")


async def photograph(studio, account, img2img_job: dict, out: Path) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for label, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
            context = await browser.new_context(base_url=studio.base_url, viewport=viewport, color_scheme="light",
                                                device_scale_factor=1)
            page = await context.new_page()
            await sign_in(page, account)
            await page.goto("/?scope=all")
            await page.wait_for_selector("#live-status[data-state=live]")
            await page.wait_for_load_state("networkidle")
            await page.screenshot(path=out / f"feed-{label}.png")
            await page.goto("/run/img2img")
            await page.locator("#f-image").set_input_files({"name": "valley.png", "mimeType": "image/png",
                                                            "buffer": picture(3)})
            await page.get_by_label("Prompt *").fill("the valley at dawn, oil painting, warm light")
            await page.locator("#preview-image img").wait_for()
            if RUNS_ARE_DISPATCHED:
                await page.get_by_role("button", name="Run Image to image").click()
                await page.wait_for_selector("#run-card .card.status-completed img", timeout=60_000)
            await page.wait_for_load_state("networkidle")
            await page.screenshot(path=out / f"img2img-{label}.png", full_page=label == "desktop")
            await page.goto(f"/jobs/image/{img2img_job['id']}")
            await page.wait_for_selector("#timeline li")
            await page.wait_for_load_state("networkidle")
            await page.screenshot(path=out / f"job-{label}.png", full_page=label == "desktop")
            await context.close()
        await browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="genstudio-screenshots-") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "pg")
        server.start()
        fake = FakeComfyUI(node_delay=0.02).start()
        slow = FakeComfyUI().start()  # a second server, busy with one long run
        slow.sampler_step_delay = 3.0
        studio = None
        try:
            cluster = Cluster(server.conninfo("postgres"))
            db_url = cluster.conninfo(cluster.create_database())
            Migrator(db_url).upgrade()
            studio = start_studio(db_url, Path(tmp) / "data", COMFYUI_URLS=f"{fake.url},{slow.url}")
            maya, leo = studio.account("maya", "maya@studio.example"), studio.account("leo", "leo@studio.example")
            owner = {str(maya.id): maya, str(leo.id): leo}
            done = [
                run(studio, fake, leo, "image-blur", {"radius": 6, "sigma": 3.0}, picture(1), share=True),
                run(studio, fake, maya, "video-from-image", {"frames": 24, "fps": 12.0}, picture(2)),
                run(studio, fake, maya, "text-concatenate", {"first": "A lighthouse keeper", "second":
                    "finds a map folded inside the lamp's brass housing.", "delimiter": " "}),
                run(studio, fake, maya, "image-invert", {}, picture(0)),
                run(studio, fake, leo, "image-resize", {"width": 320, "height": 240}, picture(3), share=True),
            ]
            img2img = run(studio, fake, maya, "img2img", {"prompt": "the same hills in winter, snow, soft light",
                                                          "strength": 0.55}, picture(0))
            for job in [*done, img2img]:
                wait_final(studio, owner[job["user_id"]], job)
            fake.fail_nodes["ImageInvert"] = "CUDA out of memory. Tried to allocate 2.00 GiB"
            wait_final(studio, maya, run(studio, fake, maya, "image-invert", {}, picture(1)))
            fake.fail_nodes.clear()
            run(studio, slow, maya, "img2img", {"prompt": "a harbour at night", "steps": 12}, picture(2))
            time.sleep(15)  # some steps done: its progress bar shows
            fake.sampler_step_delay = 0.05
            asyncio.run(photograph(studio, maya, img2img, args.out))
        finally:
            if studio is not None:
                stop_studio(studio)
            fake.stop()
            slow.stop()
            server.stop()
    print(f"screenshots written to {args.out}")


if __name__ == "__main__":
    main()
