"""The browser session cookie as an API credential, and the CSRF check that goes with it."""

from __future__ import annotations

import re

import httpx

from genstudio.api.app import create_app
from tests.api_support import api, image_payload, make_settings  # noqa: F401


async def _signed_in(api, name: str) -> tuple[httpx.AsyncClient, str]:
    """A client holding a session cookie (set the way /login sets it) and the page's CSRF token."""
    user = api.user(name)
    api.client.cookies.set("genstudio_session", user.token)
    page = await api.client.get("/")
    assert page.status_code == 200, page.text
    token = re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">', page.text).group(1)
    return api.client, token


async def test_the_session_cookie_authenticates_safe_requests(api):
    client, _ = await _signed_in(api, "alice")
    r = await client.get("/api/feed")
    assert r.status_code == 200 and r.json()["success"] is True
    r = await client.get("/api/image-jobs")
    assert r.status_code == 200


async def test_unsafe_requests_with_the_cookie_need_the_csrf_token_and_this_origin(api):
    client, token = await _signed_in(api, "alice")
    missing = await client.post("/api/image-jobs", json=image_payload())
    assert missing.status_code == 403 and "X-CSRF-Token" in missing.json()["error"]
    forged = await client.post("/api/image-jobs", json=image_payload(), headers={"X-CSRF-Token": "0" * 64})
    assert forged.status_code == 403
    # A token of another session does not fit this one.
    other = api.user("bob")
    foreign = await client.post("/api/image-jobs", json=image_payload(),
                                headers={"X-CSRF-Token": token, "Cookie": f"genstudio_session={other.token}"})
    assert foreign.status_code == 403
    cross_site = await client.post("/api/image-jobs", json=image_payload(),
                                   headers={"X-CSRF-Token": token, "Origin": "https://evil.example"})
    assert cross_site.status_code == 403 and "another site" in cross_site.json()["error"]
    by_referer = await client.post("/api/image-jobs", json=image_payload(),
                                   headers={"X-CSRF-Token": token, "Referer": "https://evil.example/page"})
    assert by_referer.status_code == 403
    ok = await client.post("/api/image-jobs", json=image_payload(),
                           headers={"X-CSRF-Token": token, "Origin": "http://test"})
    assert ok.status_code == 201, ok.text
    job_id = ok.json()["image_job"]["id"]
    assert (await client.delete(f"/api/image-jobs/{job_id}")).status_code == 403
    assert (await client.delete(f"/api/image-jobs/{job_id}", headers={"X-CSRF-Token": token})).status_code == 200


async def test_a_bearer_token_needs_no_csrf_token_and_wins_over_the_cookie(api):
    client, _ = await _signed_in(api, "alice")
    bob = api.user("bob")
    r = await client.post("/api/image-jobs", json=image_payload(), headers=bob.headers)
    assert r.status_code == 201 and r.json()["image_job"]["user_id"] == str(bob.id)


async def test_an_invalid_cookie_is_401_for_the_api_and_a_redirect_for_pages(api):
    api.client.cookies.set("genstudio_session", "not-a-jwt")
    assert (await api.client.get("/api/feed")).status_code == 401
    page = await api.client.get("/jobs/image/00000000-0000-0000-0000-000000000000")
    assert page.status_code == 303 and page.headers["location"].startswith("/login?next=%2Fjobs%2Fimage%2F")
    assert 'genstudio_session=""' in page.headers["set-cookie"]  # the dead session is forgotten


async def _login_form(client: httpx.AsyncClient, next_path: str = "/") -> str:
    page = await client.get(f"/login?next={next_path}")
    return re.search(r'name="csrf_token" value="([0-9a-f]+)"', page.text).group(1)


async def test_login_form_sets_a_secure_cookie_over_https_and_refuses_forged_forms(db_url, tmp_path):
    from genstudio.auth.accounts import add_account

    app = create_app(db_url, make_settings(tmp_path))
    async with app.router.lifespan_context(app):
        async with app.state.db.as_owner() as conn:
            await add_account(conn, "carol@example.com", "correct horse")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://studio.example") as client:
            token = await _login_form(client, "/jobs/image/x")
            # No token (another site's form), or another site's origin: refused, no session.
            no_token = await client.post("/login", data={"email": "carol@example.com", "password": "correct horse"})
            assert no_token.status_code == 403 and "genstudio_session" not in no_token.headers.get("set-cookie", "")
            evil = await client.post("/login", data={"csrf_token": token, "email": "carol@example.com",
                                                     "password": "correct horse"},
                                     headers={"Origin": "https://evil.example"})
            assert evil.status_code == 403
            wrong = await client.post("/login", data={"csrf_token": token, "email": "carol@example.com",
                                                      "password": "nope"})
            assert wrong.status_code == 401 and "wrong" in wrong.text
            ok = await client.post("/login", data={"csrf_token": token, "email": "carol@example.com",
                                                   "password": "correct horse", "next": "/jobs/image/x"})
            assert ok.status_code == 303 and ok.headers["location"] == "/jobs/image/x"
            cookie = ok.headers["set-cookie"]
            assert "genstudio_session=" in cookie and "HttpOnly" in cookie and "Secure" in cookie
            assert "SameSite=lax" in cookie
            # `next` never leaves the site.
            away = await client.post("/login", data={"csrf_token": token, "email": "carol@example.com",
                                                     "password": "correct horse", "next": "//evil.example/"})
            assert away.headers["location"] == "/"


async def test_login_form_is_rate_limited_like_the_api(db_url, tmp_path):
    app = create_app(db_url, make_settings(tmp_path, login_limit_per_account="3/minute"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            token = await _login_form(client)
            form = {"csrf_token": token, "email": "eve@example.com", "password": "x"}
            codes = [(await client.post("/login", data=form)).status_code for _ in range(4)]
            assert codes == [401, 401, 401, 429]
            limited = await client.post("/login", data=form)
            assert "too many sign-in attempts" in limited.text.lower() and int(limited.headers["retry-after"]) >= 1


async def test_a_supabase_access_token_signs_in_on_the_login_page(api):
    user = api.user("dora")
    token = await _login_form(api.client)
    r = await api.client.post("/login", data={"csrf_token": token, "access_token": user.token})
    assert r.status_code == 303
    assert (await api.client.get("/api/feed")).status_code == 200
    bad = await api.client.post("/login", data={"csrf_token": token, "access_token": "eyJ.not.valid"})
    assert bad.status_code == 401


async def test_logout_needs_the_csrf_token(api):
    client, token = await _signed_in(api, "alice")
    forged = await client.post("/logout")
    assert forged.status_code == 303 and "genstudio_session" not in forged.headers.get("set-cookie", "")
    ok = await client.post("/logout", data={"csrf_token": token})
    assert ok.status_code == 303 and ok.headers["location"] == "/login"
    assert 'genstudio_session=""' in ok.headers["set-cookie"]
