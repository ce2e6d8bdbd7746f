"""The run pages in a real browser: forms generated from the templates, per-field messages,
keyboard-only use."""

from __future__ import annotations

import io

from PIL import Image

from tests.web_support import browser, new_page, sign_in, sign_in_by_keyboard, studio  # noqa: F401


def png_bytes(size=(64, 48), color=(200, 80, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


async def test_every_template_has_a_run_page_listed_on_run(browser, studio):
    alice = studio.account("alice")
    page = await new_page(browser, studio)
    await sign_in(page, alice, "/run")
    names = await page.locator(".workflow-list h2 a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    assert {"/run/img2img", "/run/image-invert", "/run/video-from-image", "/run/text-concatenate"} <= set(names)
    missing = await page.goto("/run/no-such-workflow")
    assert missing.status == 404
    await page.context.close()


async def test_img2img_form_comes_from_the_parameter_schema(browser, studio):
    alice = studio.account("alice")
    page = await new_page(browser, studio)
    await sign_in(page, alice, "/run/img2img")
    image = page.get_by_label("Image", exact=False).first
    assert await image.get_attribute("type") == "file"
    assert "image/png" in await image.get_attribute("accept")
    prompt = page.get_by_label("Prompt *")
    assert await prompt.evaluate("el => el.tagName") == "TEXTAREA" and await prompt.get_attribute("required") is not None
    strength = page.get_by_label("Strength")
    assert (await strength.get_attribute("min"), await strength.get_attribute("max")) == ("0.0", "1.0")
    assert await strength.input_value() == "0.6"
    steps = page.get_by_label("Steps")
    assert await steps.get_attribute("step") == "1" and await steps.get_attribute("max") == "150"
    # Labelled and described for screen readers: the bounds and the description.
    assert "0.0 to 1.0" in await page.locator("#help-strength").inner_text()
    assert "help-strength" in await strength.get_attribute("aria-describedby")
    await page.context.close()


async def test_invalid_input_is_reported_per_field_before_anything_is_sent(browser, studio):
    alice = studio.account("alice")
    page = await new_page(browser, studio)
    await sign_in(page, alice, "/run/img2img")
    requests = []
    page.on("request", lambda r: requests.append(r.url) if "/api/workflows/" in r.url else None)
    await page.get_by_label("Strength").fill("1.5")
    await page.get_by_role("button", name="Run Image to image").click()
    assert await page.locator("#err-image").is_visible()
    assert await page.locator("#err-prompt").is_visible()
    assert "1" in await page.locator("#err-strength").inner_text()  # "must be less than or equal to 1"
    assert await page.get_by_label("Strength").get_attribute("aria-invalid") == "true"
    assert await page.evaluate("document.activeElement.id") == "f-image"  # focus on the first problem
    assert requests == []
    await page.context.close()


async def test_a_chosen_image_is_previewed(browser, studio):
    alice = studio.account("alice")
    page = await new_page(browser, studio)
    await sign_in(page, alice, "/run/img2img")
    await page.locator("#f-image").set_input_files({"name": "cat.png", "mimeType": "image/png", "buffer": png_bytes()})
    preview = page.locator("#preview-image img")
    await preview.wait_for()
    assert await preview.evaluate("img => img.complete && img.naturalWidth") == 64
    assert "cat.png" in await page.locator("#preview-image").inner_text()
    await page.context.close()


async def test_keyboard_only_sign_in(browser, studio):
    alice = studio.account("alice")
    page = await new_page(browser, studio)
    await sign_in_by_keyboard(page, alice, "/run/img2img")
    # The first Tab reaches the skip link, which moves focus to the content.
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.textContent") == "Skip to content"
    await page.keyboard.press("Enter")
    assert await page.evaluate("document.activeElement.id") == "main"
    await page.context.close()
