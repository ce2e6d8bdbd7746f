"""Background services: started with the app, restarted after a failure, stopped with it."""

from __future__ import annotations

import asyncio

from genstudio import background
from genstudio.db.pool import Database
from tests.api_support import make_settings


async def test_a_failing_service_is_restarted_and_all_stop_together(db_url, tmp_path, monkeypatch):
    calls: list[str] = []

    async def flaky(context: background.ServiceContext) -> None:
        calls.append("flaky")
        if len(calls) == 1:
            raise RuntimeError("first start fails")
        async with context.db.as_service() as conn:
            await conn.execute("SELECT 1")
        await context.stop.wait()
        calls.append("stopped")

    monkeypatch.setattr(background, "registered_services", lambda settings: {"flaky": flaky})
    monkeypatch.setattr(background, "RESTART_PAUSE_SECONDS", 0.05)
    db = Database(db_url, min_size=1, max_size=2)
    await db.open()
    try:
        async with background.running_services(db, make_settings(tmp_path)):
            for _ in range(100):
                if calls.count("flaky") == 2:
                    break
                await asyncio.sleep(0.02)
    finally:
        await db.close()
    assert calls == ["flaky", "flaky", "stopped"]
