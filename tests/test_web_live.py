"""The live feed in a real browser: it follows the job events stream (SSE), catches up after the
connection drops, and never reloads the page."""

from __future__ import annotations

import uuid

import psycopg

from tests.web_support import browser, eventually, new_page, open_live_feed, same_document, sign_in, studio  # noqa: F401


async def _attribute(page, selector: str, name: str):
    element = page.locator(selector)
    return await element.get_attribute(name) if await element.count() else None


async def test_new_jobs_progress_and_results_arrive_live(browser, studio):
    alice = studio.account("alice")
    page = await new_page(browser, studio)
    await sign_in(page, alice)
    await open_live_feed(page)
    job = studio.record_job(alice, "image", workflow_name="live-arrival")
    card = f"#job-image-{job['id']}"
    await page.wait_for_selector(card)
    assert await page.locator(".card").first.get_attribute("id") == card[1:]  # at the top
    studio.api("PUT", f"/api/image-jobs/{job['id']}", alice, json={"status": "processing", "progress": 55})
    assert await eventually(lambda: _attribute(page, f"{card} .bar", "aria-valuenow"), 10) is not None
    assert await eventually(lambda: _is(page, f"{card} .bar", "aria-valuenow", "55"))
    studio.api("PUT", f"/api/image-jobs/{job['id']}/complete", alice,
               json={"status": "completed", "output_image_urls": [f"{studio.base_url}/static/favicon.svg"]})
    await page.wait_for_selector(f"{card}.status-completed img")
    assert await page.locator(f"{card} .bar").count() == 0
    assert await same_document(page)
    await page.context.close()


async def _is(page, selector: str, name: str, value: str) -> bool:
    return await _attribute(page, selector, name) == value


async def test_changes_made_in_another_browser_appear_live(browser, studio):
    alice, bob = studio.account("alice"), studio.account("bob")
    job = studio.record_job(alice, "video", workflow_name="two-browsers")
    watcher = await new_page(browser, studio)
    await sign_in(watcher, alice)
    await open_live_feed(watcher)
    other = await new_page(browser, studio)
    await sign_in(other, alice, f"/jobs/video/{job['id']}")
    await other.get_by_role("button", name="Cancel job").click()
    await watcher.wait_for_selector(f"#job-video-{job['id']}.status-cancelled")
    # Bob's feed (Show All) sees alice's job once she shares it, and loses it when she deletes it.
    bobs = await new_page(browser, studio)
    await sign_in(bobs, bob)
    await open_live_feed(bobs, "/?scope=all")
    assert await bobs.locator(f"#job-video-{job['id']}").count() == 0
    await other.get_by_label("Shared with everyone in the studio").check()
    await bobs.wait_for_selector(f"#job-video-{job['id']}")
    # Made private again, it leaves bob's open feed; shared once more, it comes back.
    await other.get_by_label("Shared with everyone in the studio").uncheck()
    await bobs.wait_for_selector(f"#job-video-{job['id']}", state="detached")
    await other.get_by_label("Shared with everyone in the studio").check()
    await bobs.wait_for_selector(f"#job-video-{job['id']}")
    studio.api("DELETE", f"/api/video-jobs/{job['id']}", alice)
    await bobs.wait_for_selector(f"#job-video-{job['id']}", state="detached")
    await watcher.wait_for_selector(f"#job-video-{job['id']}", state="detached")
    assert await same_document(watcher) and await same_document(bobs)
    for page in (watcher, other, bobs):
        await page.context.close()


async def test_the_feed_catches_up_after_the_connection_drops(browser, studio):
    alice = studio.account("alice")
    page = await new_page(browser, studio)
    await sign_in(page, alice)
    await open_live_feed(page)
    first = studio.record_job(alice, "text", workflow_name="before-the-drop")
    await page.wait_for_selector(f"#job-text-{first['id']}")
    made_while_down = []

    def change_jobs_while_the_server_is_down():
        with psycopg.connect(studio.db_url) as conn:
            made_while_down.append(conn.execute(
                "INSERT INTO public.text_jobs (user_id, workflow_name) VALUES (%s, 'while-down') RETURNING id",
                (alice.id,)).fetchone()[0])
            conn.execute("UPDATE public.text_jobs SET status = 'completed', output_text = 'done offline' "
                         "WHERE id = %s", (uuid.UUID(first["id"]),))

    studio.restart(while_down=change_jobs_while_the_server_is_down)
    await page.wait_for_selector(f"#job-text-{made_while_down[0]}", timeout=20_000)
    await page.wait_for_selector(f"#job-text-{first['id']}.status-completed")
    assert "done offline" in await page.locator(f"#job-text-{first['id']}").inner_text()
    assert await same_document(page)
    await page.context.close()
