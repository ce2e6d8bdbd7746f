"""Background services: the work a genstudio process does besides answering requests.

Every `genstudio serve` process runs them beside the API (unless `--no-worker`), and
`genstudio worker` runs them alone. Any number of processes may run them at once against one
database: each service coordinates with its peers only through PostgreSQL (row leases with
`FOR UPDATE SKIP LOCKED`, advisory locks, LISTEN/NOTIFY), never through this process.

A service is an async callable `service(context)` that runs until `context.stop` is set. One
that raises is logged and started again after a pause, so a bug or an outage in one service
never takes the others (or the API) down with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from genstudio.config import Settings
from genstudio.db.pool import Database

log = logging.getLogger(__name__)

RESTART_PAUSE_SECONDS = 2.0


@dataclass
class ServiceContext:
    db: Database
    settings: Settings
    stop: asyncio.Event = field(default_factory=asyncio.Event)


Service = Callable[[ServiceContext], Awaitable[None]]


def registered_services(settings: Settings) -> dict[str, Service]:
    """Every background service of this genstudio, by name.

    Each area adds its own here (imported lazily, so that a process that runs none of them
    loads none of their dependencies).
    """
    from genstudio.comfy.dispatcher import dispatcher_service
    from genstudio.comfy.monitor import monitor_service
    from genstudio.events.services import job_events_pruner, webhook_enqueuer, webhook_sender

    services: dict[str, Service] = {
        "job_events_pruner": job_events_pruner,
        "webhook_enqueuer": webhook_enqueuer,
        "webhook_sender": webhook_sender,
        "comfy_monitor": monitor_service,
    }
    if settings.run_dispatcher:
        # On even without COMFYUI_URLS: runs then wait visibly and fail at their deadline.
        services["comfy_dispatcher"] = dispatcher_service
    return services


async def _supervise(name: str, service: Service, context: ServiceContext) -> None:
    while not context.stop.is_set():
        try:
            await service(context)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background service %s failed; restarting it in %.0f s", name, RESTART_PAUSE_SECONDS)
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RESTART_PAUSE_SECONDS):
                    await context.stop.wait()


@asynccontextmanager
async def running_services(db: Database, settings: Settings) -> AsyncIterator[ServiceContext]:
    """Run every registered service while the block runs; stop them all on the way out."""
    context = ServiceContext(db, settings)
    tasks = [
        asyncio.create_task(_supervise(name, service, context), name=f"genstudio:{name}")
        for name, service in registered_services(settings).items()
    ]
    try:
        yield context
    finally:
        context.stop.set()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=10)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def run_until_stopped(db: Database, settings: Settings) -> None:
    """`genstudio worker`: the services without HTTP, until cancelled (Ctrl-C, SIGTERM)."""
    await db.open()
    try:
        async with running_services(db, settings) as context:
            await context.stop.wait()
    finally:
        await db.close()
