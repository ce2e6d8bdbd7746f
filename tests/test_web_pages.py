"""The web UI in a real browser (Debian's Chromium) against a real `genstudio serve`:
sign-in, the feed's visibility and Show Mine / Show All, the job page and its 404."""

from __future__ import annotations

import uuid

from tests.web_support import browser, eventually, new_page, sign_in, studio, wait_for_path  # noqa: F401


async def test_signed_out_pages_go_to_login_and_back_after_signing_in(browser, studio):
    alice = studio.account("alice")
    page = await new_page(browser, studio)
    await page.goto("/?type=image")
    assert "/login?next=" in page.url
    await page.get_by_label("Email").fill(alice.email)
    await page.get_by_label("Password").fill("wrong password")
    await page.get_by_role("button", name="Sign in", exact=True).click()
    assert "wrong" in await page.get_by_role("alert").inner_text()
    await page.get_by_label("Password").fill(alice.password)
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await wait_for_path(page, "/?type=image")
    cookie = next(c for c in await page.context.cookies() if c["name"] == "genstudio_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and not cookie["secure"]  # plain HTTP here
    await page.get_by_role("button", name="Sign out").click()
    await wait_for_path(page, "/login")
    await page.goto("/")
    assert "/login" in page.url
    await page.context.close()


async def test_feed_shows_own_shared_and_ownerless_jobs_never_others_private(browser, studio):
    alice, bob = studio.account("alice"), studio.account("bob")
    own = studio.record_job(alice, "image", workflow_name="alice-own")
    own_text = studio.record_job(alice, "text", workflow_name="alice-text")
    shared = studio.record_job(bob, "video", workflow_name="bob-shared", visibility="shared")
    private = studio.record_job(bob, "image", workflow_name="bob-private")
    legacy = studio.record_job(None, "image", workflow_name="legacy-ownerless")
    ours = {"alice-own", "alice-text", "bob-shared", "bob-private", "legacy-ownerless"}
    page = await new_page(browser, studio)
    await sign_in(page, alice)

    async def titles():
        # The server is shared with other tests of this module: look at this test's jobs.
        return set(await page.locator(".card .card-title").all_inner_texts()) & ours

    assert await titles() == {"alice-own", "alice-text"}  # Show Mine is the default
    await page.get_by_role("link", name="Show All").click()
    await page.wait_for_url("**scope=all**")
    assert await titles() == {"alice-own", "alice-text", "bob-shared", "legacy-ownerless"}
    assert await page.locator(f"#job-image-{private['id']}").count() == 0
    # The type filter.
    await page.get_by_text("Images", exact=True).click()
    await page.wait_for_url("**type=image**")
    assert await titles() == {"alice-own", "legacy-ownerless"}
    # Remembered across visits: a new visit to / still shows all.
    await page.goto("/")
    assert await page.get_by_role("link", name="Show All").get_attribute("aria-current") == "true"
    assert "bob-shared" in await titles()
    await page.get_by_role("link", name="Show Mine").click()
    await page.wait_for_url("**scope=mine**")
    await page.goto("/")
    assert await titles() == {"alice-own", "alice-text"}
    assert own and own_text and shared and legacy
    await page.context.close()


async def test_another_users_private_job_is_the_same_404_as_a_missing_one(browser, studio):
    alice, bob = studio.account("alice"), studio.account("bob")
    private = studio.record_job(alice, "image", workflow_name="secret-work", prompt="my secret prompt")
    page = await new_page(browser, studio)
    await sign_in(page, alice)
    response = await page.goto(f"/jobs/image/{private['id']}")
    assert response.status == 200 and "my secret prompt" in await page.content()
    await page.context.close()

    page = await new_page(browser, studio)
    await sign_in(page, bob)
    theirs = await page.goto(f"/jobs/image/{private['id']}")
    their_body = await page.locator("main").inner_html()
    missing = await page.goto(f"/jobs/image/{uuid.uuid4()}")
    assert theirs.status == missing.status == 404
    assert their_body == await page.locator("main").inner_html()
    assert "secret" not in await page.content()
    await page.context.close()


# Output URLs the API accepts (http(s) or genstudio's own /files/ paths); the page only links them.
CLIP, POSTER = "/files/video/clip/1/clip.mp4", "/files/video/clip/1/poster.jpg"
FULL, THUMB = "/files/image/still/1/full.png", "/files/image/still/1/thumb.jpg"


async def test_cards_show_results_videos_play_on_click_and_images_open_full_size(browser, studio):
    alice = studio.account("alice")
    video = studio.record_job(alice, "video", workflow_name="clip")
    studio.api("PUT", f"/api/video-jobs/{video['id']}/complete", alice,
               json={"status": "completed", "output_video_urls": [CLIP], "thumbnail_url": POSTER})
    image = studio.record_job(alice, "image", workflow_name="still")
    studio.api("PUT", f"/api/image-jobs/{image['id']}/complete", alice,
               json={"status": "completed", "output_image_urls": [FULL], "thumbnail_url": THUMB})
    text = studio.record_job(alice, "text", workflow_name="words")
    studio.api("PUT", f"/api/text-jobs/{text['id']}/complete", alice,
               json={"status": "completed", "output_text": "Once upon a time " * 40})
    page = await new_page(browser, studio)
    await sign_in(page, alice)
    video_card = page.locator(f"#job-video-{video['id']}")
    await video_card.get_by_role("link", name="Play the video result of clip").click()
    player = video_card.locator("video")
    assert await player.get_attribute("src") == CLIP
    assert await page.evaluate("document.activeElement.tagName") == "VIDEO"
    image_link = page.locator(f"#job-image-{image['id']} a.media-link")
    assert await image_link.get_attribute("href") == FULL
    assert await image_link.locator("img").get_attribute("src") == THUMB
    preview = await page.locator(f"#job-text-{text['id']} .text-preview").inner_text()
    assert preview.startswith("Once upon a time") and len(preview) <= 290
    await page.context.close()
