"""The background services of the event log (registered in genstudio/background.py).

- `job_events_pruner`: deletes events older than the retention period; one process at a
  time (advisory lock), the others find it taken and wait for their next turn.
- `webhook_enqueuer`: turns new events into webhook deliveries; woken by the process's event
  listener, one process at a time (the cursor row's lock).
- `webhook_sender`: sends due deliveries; every process may run one (row leases).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING
from genstudio.events.hub import shared_hub
from genstudio.events.log import prune
from genstudio.events.webhooks import WebhookSender, enqueue_new_events

if TYPE_CHECKING:  # background imports this module, not the other way round
    from genstudio.background import ServiceContext

log = logging.getLogger(__name__)

# Between two checks for work when nothing wakes a service sooner.
ENQUEUE_POLL_SECONDS = 5.0


async def _sleep(context: ServiceContext, seconds: float, wake: asyncio.Event | None = None) -> None:
    """Until `seconds` pass, the service is told to stop, or `wake` is set."""
    waiters = [asyncio.ensure_future(context.stop.wait())]
    if wake is not None:
        waiters.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def job_events_pruner(context: ServiceContext) -> None:
    settings = context.settings
    while not context.stop.is_set():
        deleted = await prune(context.db.as_service, settings.event_retention_seconds)
        if deleted:
            log.info("pruned %d job events older than %g days", deleted, settings.event_retention_days)
        await _sleep(context, settings.event_prune_interval_seconds)


async def webhook_enqueuer(context: ServiceContext) -> None:
    async with shared_hub(context.db) as hub:
        with hub.new_events_signal() as new_events:
            while not context.stop.is_set():
                new_events.clear()
                await enqueue_new_events(context.db)
                await _sleep(context, ENQUEUE_POLL_SECONDS, new_events)


async def webhook_sender(context: ServiceContext) -> None:
    settings = context.settings
    sender = WebhookSender(context.db, retry_delays=settings.webhook_retry_delays,
                           timeout_seconds=settings.webhook_timeout_seconds,
                           allow_private=settings.webhook_allow_private, concurrency=settings.webhook_concurrency)
    try:
        while not context.stop.is_set():
            await sender.send_due()
            due_in = await sender.seconds_until_next_due()
            pause = settings.webhook_poll_seconds if due_in is None else min(due_in, settings.webhook_poll_seconds)
            await _sleep(context, max(pause, 0.01))
    finally:
        await sender.close()
