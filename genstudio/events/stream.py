"""One subscriber's stream: replay from the log after `Last-Event-ID`, then live, gap-free.

The subscriber joins the hub *before* it replays. Every event committed before the replay's
read is in the replay; every event committed after the subscription reaches the queue; ids
are in commit order, so skipping queued events whose id the replay already sent removes the
overlap exactly: no gap, no duplicate.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from sse_starlette import ServerSentEvent

from genstudio.db.pool import Database
from genstudio.events.hub import EventHub, SubscriptionClosed
from genstudio.events.log import BATCH_SIZE, EventFilter, read_batch, read_horizon


@dataclass(frozen=True)
class StreamRequest:
    wanted: EventFilter
    last_event_id: int | None  # from the client: resume after this id
    from_start: bool = False  # without a Last-Event-ID, replay everything the log still holds


def viewer_of(claims: Mapping[str, Any]) -> uuid.UUID | None:
    """Whose events: the token's user; `anon` sees none (as row-level security says)."""
    if claims.get("role") == "anon" or not claims.get("sub"):
        return None
    return uuid.UUID(str(claims["sub"]))


def reset_message(reason: str, last_event_id: int, **details: Any) -> ServerSentEvent:
    return ServerSentEvent(event="reset", data=json.dumps({"reason": reason, "last_event_id": last_event_id, **details}))


async def stream_events(db: Database, hub: EventHub, claims: Mapping[str, Any], request: StreamRequest,
                        *, max_pending: int = 10_000) -> AsyncIterator[ServerSentEvent | bytes]:
    viewer = viewer_of(claims)
    # A stream lives no longer than its token: the client reconnects with a fresh one.
    lifetime = float(claims.get("exp") or time.time() + 86_400) - time.time()
    sub = hub.subscribe(viewer, request.wanted, max_pending=max_pending)
    expiry = asyncio.get_running_loop().call_later(max(0.0, lifetime), sub.close)
    try:
        plan = await plan_replay(db, request)
        if plan.notice is not None:
            yield plan.notice
        sent = 0
        if plan.after is not None:
            sent = plan.after
            while True:
                async with db.as_user(claims) as conn:
                    events = await read_batch(conn, sent, request.wanted)
                if events:
                    yield b"".join(e.message_for(viewer) for e in events)
                    sent = events[-1].id
                if len(events) < BATCH_SIZE:
                    break
        while True:
            try:
                batch = await sub.next_batch()
            except SubscriptionClosed:
                return
            # Whatever arrived meanwhile goes out as one write.
            if batch[0][0] <= sent:  # only right after a replay: drop what it already sent
                batch = [(event_id, message) for event_id, message in batch if event_id > sent]
                if not batch:
                    continue
            sent = batch[-1][0]
            yield b"".join(message for _, message in batch)
    finally:
        expiry.cancel()
        hub.unsubscribe(sub)


@dataclass(frozen=True)
class ReplayPlan:
    after: int | None  # replay the events after this id; None: live only
    notice: ServerSentEvent | None = None  # a `reset` to send first


async def plan_replay(db: Database, request: StreamRequest) -> ReplayPlan:
    if request.last_event_id is None:
        return ReplayPlan(0 if request.from_start else None)
    async with db.as_service() as conn:
        horizon = await read_horizon(conn)
    if request.last_event_id > horizon.newest_id:
        # Not an id of this log (another deployment's, or a restored database): start afresh.
        notice = reset_message("unknown_event_id", request.last_event_id, newest_event_id=horizon.newest_id)
        return ReplayPlan(0 if request.from_start else None, notice)
    if request.last_event_id < horizon.pruned_through:
        # Some events after the id were pruned: say so, then replay what the log still holds.
        notice = reset_message("expired", request.last_event_id, pruned_through=horizon.pruned_through)
        return ReplayPlan(request.last_event_id, notice)
    return ReplayPlan(request.last_event_id)
