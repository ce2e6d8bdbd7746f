"""Browser tests: a real `genstudio serve` in a subprocess and Debian's Chromium driven by Playwright.

Never a downloaded browser: Playwright is pointed at /usr/bin/chromium (installed by `.ci/run`
with apt-get when missing).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from argon2 import PasswordHasher

from genstudio.auth.tokens import TokenIssuer
from tests.api_support import AUDIENCE, SECRET

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
PASSWORD = "correct horse battery staple"
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


@dataclass
class Account:
    id: uuid.UUID
    email: str
    password: str = PASSWORD

    @property
    def token(self) -> str:
        return TokenIssuer(SECRET, AUDIENCE, 3600).issue(self.id, self.email)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_hasher = PasswordHasher()


@dataclass
class Studio:
    """A running `genstudio serve` on its own database."""

    base_url: str
    db_url: str
    process: subprocess.Popen
    port: int
    data_dir: Path
    env: dict[str, str]
    accounts: dict[str, Account] = field(default_factory=dict)

    def restart(self, while_down=None) -> None:
        """Stop the server (every open connection drops), run `while_down()`, start it again on
        the same port and database."""
        stop_studio(self)
        if while_down is not None:
            while_down()
        self.process = start_studio(self.db_url, self.data_dir, port=self.port, **self.env).process

    def account(self, name: str, email: str | None = None) -> Account:
        """A new account (the name gets a unique suffix: tests share the server)."""
        if name not in self.accounts:
            email = email or f"{name}-{uuid.uuid4().hex[:8]}@example.com"
            with psycopg.connect(self.db_url) as conn:
                user_id = conn.execute("INSERT INTO auth.users (email, encrypted_password) VALUES (%s, %s) RETURNING id",
                                       (email, _hasher.hash(PASSWORD))).fetchone()[0]
            self.accounts[name] = Account(user_id, email)
        return self.accounts[name]

    def api(self, method: str, path: str, account: Account | None = None, **kwargs) -> httpx.Response:
        headers = account.headers if account else {}
        return httpx.request(method, self.base_url + path, headers=headers, timeout=15, **kwargs)

    def record_job(self, account: Account | None, type: str = "image", **fields) -> dict:
        """A job recorded through the API (as the guide's client does), or an ownerless one by SQL."""
        body = {"workflow_name": "img2img", "comfy_url": "http://comfy.invalid:8188", "parameters": {}, **fields}
        if type == "text":
            body.pop("comfy_url")
        if account is None:
            return self._ownerless_job(type, body)
        r = self.api("POST", f"/api/{type}-jobs", account, json=body)
        assert r.status_code == 201, r.text
        return r.json()[f"{type}_job"]

    def _ownerless_job(self, type: str, body: dict) -> dict:
        with psycopg.connect(self.db_url) as conn:
            columns = "workflow_name, status, legacy_table, legacy_id" + (", comfy_url" if type != "text" else "")
            values = "%s, 'completed', 'legacy', %s" + (", ''" if type != "text" else "")
            row = conn.execute(f"INSERT INTO public.{type}_jobs ({columns}) VALUES ({values}) RETURNING id",
                               (body["workflow_name"], str(uuid.uuid4()))).fetchone()
        return {"id": str(row[0]), "workflow_name": body["workflow_name"]}


def start_studio(db_url: str, data_dir: Path, port: int | None = None, **env: str) -> Studio:
    port = port or free_port()
    environment = {**os.environ, "DATABASE_URL": db_url, "GENSTUDIO_DATA_DIR": str(data_dir),
                   "SUPABASE_JWT_SECRET": SECRET, "GENSTUDIO_POOL_MIN": "1", "GENSTUDIO_POOL_MAX": "6", **env}
    process = subprocess.Popen([sys.executable, "-m", "genstudio", "serve", "--port", str(port), "--no-access-log"],
                               env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"serve exited early ({process.returncode}):\n{process.stdout.read()}")
        try:
            if httpx.get(base_url + "/api/healthz", timeout=2).status_code == 200:
                return Studio(base_url, db_url, process, port, data_dir, env)
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    pytest.fail(f"serve did not start:\n{process.stdout.read()}")


def stop_studio(studio: Studio) -> None:
    studio.process.terminate()
    try:
        studio.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        studio.process.kill()
        studio.process.wait()


@pytest.fixture(scope="module")
def studio(pg_cluster, migrated_template, tmp_path_factory) -> Iterator[Studio]:
    """One server per test module (starting one takes seconds); tests use their own accounts."""
    name = pg_cluster.create_database(template=migrated_template)
    running = start_studio(pg_cluster.conninfo(name), tmp_path_factory.mktemp("studio"))
    try:
        yield running
    finally:
        stop_studio(running)
        pg_cluster.drop_database(name)


@pytest.fixture(scope="session")
async def browser():
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


async def new_page(browser, studio: Studio, viewport: dict | None = None):
    context = await browser.new_context(base_url=studio.base_url, viewport=viewport or DESKTOP)
    context.set_default_timeout(10_000)
    return await context.new_page()


async def sign_in(page, account: Account, next_path: str = "/") -> None:
    await page.goto(f"/login?next={next_path}")
    await page.get_by_label("Email").fill(account.email)
    await page.get_by_label("Password").fill(account.password)
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await wait_for_path(page, next_path)


async def sign_in_by_keyboard(page, account: Account, path: str) -> None:
    """Open `path` signed out and sign in with the keyboard alone: the sign-in page gives the
    email field the focus on arrival, Tab moves to the password, Enter submits; back at `path`."""
    await page.goto(path)
    await wait_for_focus(page, "email")  # autofocus, once the page has loaded
    await page.keyboard.type(account.email)
    await page.keyboard.press("Tab")
    await page.keyboard.type(account.password)
    await page.keyboard.press("Enter")
    await wait_for_path(page, path)


async def wait_for_focus(page, element_id: str) -> None:
    """Wait until the element with this id has the keyboard focus (typing before it does
    would type into nothing)."""
    await page.wait_for_function("id => document.activeElement && document.activeElement.id === id", arg=element_id)


async def wait_for_path(page, path: str) -> None:
    """Wait until the page is at `path` (with its query, if `path` has one). Not a URL glob:
    `**/run/x` also matches the sign-in page's own `/login?next=/run/x`, so it would not wait."""
    def arrived(url: str) -> bool:
        parts = urlsplit(url)
        return (parts.path + ("?" + parts.query if "?" in path else "")) == path
    await page.wait_for_url(arrived)


async def eventually(check, timeout: float = 10.0, interval: float = 0.05):
    """Wait until an async check returns something truthy, and return it."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(interval)




@pytest.fixture(scope="module")
def comfy():
    """One fake ComfyUI (tests/fakes/) for the module's server."""
    from tests.fakes.comfyui import FakeComfyUI

    fake = FakeComfyUI().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="module")
def live_studio(pg_cluster, migrated_template, tmp_path_factory, comfy) -> Iterator[Studio]:
    """A server whose runs go to the fake ComfyUI."""
    name = pg_cluster.create_database(template=migrated_template)
    running = start_studio(pg_cluster.conninfo(name), tmp_path_factory.mktemp("studio"), COMFYUI_URLS=comfy.url)
    try:
        yield running
    finally:
        stop_studio(running)
        pg_cluster.drop_database(name)


async def open_live_feed(page, path: str = "/") -> None:
    """Open the feed and wait until its event stream is connected; mark the document, so a
    test can tell that later changes arrived without a reload."""
    await page.goto(path)
    await page.wait_for_selector("#live-status[data-state=live]")
    await page.evaluate("window.__sameDocument = true")


async def same_document(page) -> bool:
    return await page.evaluate("window.__sameDocument === true")
