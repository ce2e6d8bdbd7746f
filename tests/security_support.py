"""The `api` fixture of tests/api_support.py without the background services: the security tests
drive the API alone, and a service's shutdown has no business in their teardown."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from genstudio.api.app import create_app
from tests.api_support import Api, make_settings


@pytest.fixture
async def api(db_url, tmp_path) -> AsyncIterator[Api]:
    app = create_app(db_url, make_settings(tmp_path, run_background=False))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Api(client, db_url)
