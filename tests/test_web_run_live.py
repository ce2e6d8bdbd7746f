"""Runs from the web UI in a real browser, through the runner to the fake ComfyUI: live progress
and result on the run page, the "no server" notice, per-field errors from the server, cancel,
and a run made with the keyboard alone."""

from __future__ import annotations

import io

from PIL import Image

from tests.web_support import browser, comfy, eventually, live_studio, new_page, same_document, sign_in, sign_in_by_keyboard  # noqa: F401


def png_bytes(size=(96, 64), color=(30, 120, 200)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


async def _attribute(page, selector: str, name: str):
    element = page.locator(selector)
    return await element.get_attribute(name) if await element.count() else None


async def test_img2img_runs_live_on_its_page(browser, live_studio, comfy):
    studio = live_studio
    alice = studio.account("alice")
    comfy.sampler_step_delay = 0.4
    try:
        page = await new_page(browser, studio)
        await sign_in(page, alice, "/run/img2img")
        await page.evaluate("window.__sameDocument = true")
        await page.locator("#f-image").set_input_files({"name": "in.png", "mimeType": "image/png",
                                                        "buffer": png_bytes()})
        await page.get_by_label("Prompt *").fill("a red fox in snow")
        await page.get_by_label("Steps").fill("12")
        await page.get_by_role("button", name="Run Image to image").click()
        card = page.locator("#run-card .card")
        await card.wait_for()
        # Progress moves while it runs (the fake reports each sampler step), then the result.
        seen = set()

        async def progressed():
            value = await _attribute(page, "#run-card .bar", "aria-valuenow")
            if value is not None:
                seen.add(int(value))
            return await card.get_attribute("data-status") == "completed"

        assert await eventually(progressed, 30)
        assert any(0 < v < 100 for v in seen), seen
        image = page.locator("#run-card .card img")
        await image.wait_for()
        assert await eventually(lambda: image.evaluate("img => img.complete && img.naturalWidth > 0"))
        assert await same_document(page)
        await page.context.close()
    finally:
        comfy.sampler_step_delay = 0.0


async def test_a_run_without_a_server_says_it_waits_then_runs(browser, live_studio, comfy):
    studio = live_studio
    alice = studio.account("alice")
    page = await new_page(browser, studio)
    await sign_in(page, alice, "/run/image-invert")
    comfy.go_offline()
    try:
        await page.locator("#f-image").set_input_files({"name": "in.png", "mimeType": "image/png",
                                                        "buffer": png_bytes()})
        await page.get_by_role("button", name="Run Invert colours").click()
        notice = page.locator("#run-dispatch")
        await notice.wait_for(timeout=30_000)
        assert "Waiting for a ComfyUI server" in await notice.inner_text()
    finally:
        comfy.go_online()
    await page.wait_for_selector("#run-card .card.status-completed", timeout=60_000)
    assert not await page.locator("#run-dispatch").is_visible()
    await page.context.close()


async def test_invalid_file_content_is_reported_at_its_field(browser, live_studio):
    studio = live_studio
    alice = studio.account("alice")
    page = await new_page(browser, studio)
    await sign_in(page, alice, "/run/image-invert")
    await page.locator("#f-image").set_input_files({"name": "not-really.png", "mimeType": "image/png",
                                                    "buffer": b"this is text, not a PNG"})
    await page.get_by_role("button", name="Run Invert colours").click()
    error = page.locator("#err-image")
    await error.wait_for()
    assert await error.inner_text()
    assert await page.get_by_label("Image", exact=False).first.get_attribute("aria-invalid") == "true"
    await page.context.close()


async def test_cancel_stops_a_running_run(browser, live_studio, comfy):
    studio = live_studio
    alice = studio.account("alice")
    comfy.sampler_step_delay = 1.0
    try:
        r = studio.api("POST", "/api/workflows/img2img/runs", alice,
                       files={"image": ("in.png", png_bytes(), "image/png")},
                       data={"parameters": '{"prompt": "slow", "steps": 60}'})
        assert r.status_code == 202, r.text
        job = r.json()["image_job"]
        page = await new_page(browser, studio)
        await sign_in(page, alice, f"/jobs/image/{job['id']}")
        await page.locator("#job-status", has_text="processing").wait_for(timeout=30_000)
        await page.get_by_role("button", name="Cancel job").click()
        await page.locator("#job-status", has_text="cancelled").wait_for(timeout=30_000)
        await page.locator("#timeline li[data-kind=cancelled]").wait_for()
        await page.context.close()
    finally:
        comfy.sampler_step_delay = 0.0


async def test_keyboard_only_sign_in_and_run(browser, live_studio):
    studio = live_studio
    alice = studio.account("alice")
    page = await new_page(browser, studio)
    await sign_in_by_keyboard(page, alice, "/run/text-concatenate")
    focused = lambda: page.evaluate("document.activeElement.id || document.activeElement.textContent.trim()")  # noqa: E731
    for _ in range(30):  # Tab through the page to the first field
        await page.keyboard.press("Tab")
        if await focused() == "f-first":
            break
    await page.keyboard.type("keyboard")
    await page.keyboard.press("Tab")
    assert await focused() == "f-second"
    await page.keyboard.type("only")
    for _ in range(5):  # on to the submit button
        if await focused() == "run-submit":
            break
        await page.keyboard.press("Tab")
    assert await focused() == "run-submit"
    await page.keyboard.press("Enter")
    await page.wait_for_selector("#run-card .card.status-completed", timeout=30_000)
    assert "keyboard" in await page.locator("#run-card .text-preview").inner_text()
    await page.context.close()
