"""The job page in a real browser: what it shows, and its owner's cancel, share and delete."""

from __future__ import annotations

from tests.web_support import browser, eventually, new_page, sign_in, studio  # noqa: F401


async def test_job_page_shows_inputs_parameters_outputs_timings_and_error(browser, studio):
    alice = studio.account("alice")
    job = studio.record_job(alice, "image", workflow_name="img2img", prompt="a lighthouse in fog",
                            input_image_urls=["/files/image/img2img/x/in.png"], parameters={"strength": 0.4})
    studio.api("PUT", f"/api/image-jobs/{job['id']}", alice, json={"status": "processing", "progress": 30})
    studio.api("PUT", f"/api/image-jobs/{job['id']}/complete", alice,
               json={"status": "failed", "error_message": "KSampler: CUDA out of memory"})
    page = await new_page(browser, studio)
    await sign_in(page, alice, f"/jobs/image/{job['id']}")
    main = page.locator("main")
    text = await main.inner_text()
    assert "a lighthouse in fog" in text and '"strength": 0.4' in text and "in.png" in text
    assert "KSampler: CUDA out of memory" in await page.get_by_role("alert").inner_text()
    timings = await page.locator("dl.timings").inner_text()
    for label in ("Queued", "Started", "Finished", "Processing time"):
        assert label in timings
    assert "UTC" in timings
    await page.context.close()


async def test_owner_cancels_a_running_job(browser, studio):
    alice = studio.account("alice")
    job = studio.record_job(alice, "video", workflow_name="lipsync")
    page = await new_page(browser, studio)
    await sign_in(page, alice, f"/jobs/video/{job['id']}")
    await page.locator("#timeline li[data-kind=created]").wait_for()  # the history, from the events API
    await page.get_by_role("button", name="Cancel job").click()
    await page.locator("#job-status", has_text="cancelled").wait_for()
    assert await page.get_by_role("button", name="Cancel job").count() == 0
    await page.locator("#timeline li[data-kind=cancelled]").wait_for()  # and live
    assert await page.locator("#timeline li").evaluate_all("items => items.map(i => i.dataset.kind)") == [
        "created", "cancelled"]
    api_view = studio.api("GET", f"/api/video-jobs/{job['id']}", alice).json()["video_job"]
    assert api_view["status"] == "cancelled"
    await page.context.close()


async def test_owner_switches_visibility_and_deletes_after_confirming(browser, studio):
    alice, bob = studio.account("alice"), studio.account("bob")
    job = studio.record_job(alice, "text", workflow_name="caption")
    page = await new_page(browser, studio)
    await sign_in(page, alice, f"/jobs/text/{job['id']}")
    await page.get_by_label("Shared with everyone in the studio").check()
    await page.locator("#job-visibility", has_text="shared").wait_for()
    assert studio.api("GET", f"/api/text-jobs/{job['id']}", bob).status_code == 200  # bob sees it now
    # Delete asks first; keeping it changes nothing.
    await page.get_by_role("button", name="Delete…").click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_role("button", name="Keep it").click()
    assert not await dialog.is_visible()
    assert studio.api("GET", f"/api/text-jobs/{job['id']}", alice).status_code == 200
    await page.get_by_role("button", name="Delete…").click()
    await dialog.get_by_role("button", name="Delete").click()
    await page.wait_for_url(studio.base_url + "/")
    assert studio.api("GET", f"/api/text-jobs/{job['id']}", alice).status_code == 404
    await page.context.close()


async def test_others_see_a_shared_job_without_the_owners_controls(browser, studio):
    alice, bob = studio.account("alice"), studio.account("bob")
    job = studio.record_job(alice, "image", workflow_name="shared-piece", visibility="shared")
    page = await new_page(browser, studio)
    await sign_in(page, bob, f"/jobs/image/{job['id']}")
    assert "shared-piece" in await page.locator("h1").inner_text()
    for name in ("Cancel job", "Delete…"):
        assert await page.get_by_role("button", name=name).count() == 0
    assert await page.get_by_label("Shared with everyone in the studio").count() == 0
    await page.context.close()


async def test_the_feed_scrolls_on_the_keyset_cursor_without_duplicates(browser, studio):
    carol = studio.account("carol")
    made = [studio.record_job(carol, "image", workflow_name=f"scroll-{i:02d}") for i in range(30)]
    page = await new_page(browser, studio)
    await sign_in(page, carol)
    cards = page.locator(".card")
    assert await cards.count() == 24
    await page.locator(".more").scroll_into_view_if_needed()
    assert await eventually(lambda: _count_is(cards, 30))
    titles = await page.locator(".card .card-title").all_inner_texts()
    assert titles == [f"scroll-{i:02d}" for i in reversed(range(30))]  # newest first, each once
    assert await page.locator(".more").count() == 0
    assert len(made) == 30
    await page.context.close()


async def _count_is(locator, n: int) -> bool:
    return await locator.count() == n
