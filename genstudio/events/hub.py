"""One listener per process, fanning the job event log out to in-process subscribers.

The hub holds one dedicated connection that LISTENs on `genstudio_job_events`. A notification
only wakes it: it then reads every new event once, in id (= commit) order, with each job's
owner and visibility as they are at that moment, and hands each event to the subscribers
whose filter it matches and who may see it (genstudio.events.visibility). So the database
does one query per batch of events, however many subscribers there are; and because the
job's visibility is read with the batch, a job made private stops reaching others from the
very next event on.

Every genstudio process (each `serve` worker, each `genstudio worker`) runs its own hub, so
every process delivers every event to its own subscribers: processes behind one load
balancer need nothing from each other. A lost listener connection is re-opened and the hub
catches up from the log; a periodic read covers a notification lost in between.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field

import psycopg

from genstudio.db.pool import Database
from genstudio.events.log import EVERYTHING, Event, EventFilter, newest_event_id, read_batch

log = logging.getLogger(__name__)

CHANNEL = "genstudio_job_events"
RECONNECT_PAUSE_SECONDS = 1.0
READ_INTERVAL_SECONDS = 0.01  # the shortest time between two reads of the log


class SubscriptionClosed(Exception):
    """The subscriber fell too far behind (or the hub stopped); it must reconnect and replay."""


Delivery = tuple[int, bytes]  # (event id, the SSE message as this subscriber receives it)


@dataclass(eq=False)
class Subscription:
    """A subscriber's queue of the messages it may receive; bounded, so a stalled reader costs
    memory only up to `max_pending` events before it is cut off (and resumes from the log)."""

    audience: "Audience"
    max_pending: int
    _pending: list[Delivery] = field(default_factory=list)
    _waiter: asyncio.Future | None = None  # set while the subscriber waits for a delivery
    closed: bool = False

    def push(self, deliveries: list[Delivery]) -> None:
        if self.closed:
            return
        if len(self._pending) + len(deliveries) > self.max_pending:
            self.close()
            return
        self._pending.extend(deliveries)
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        # A bare future rather than an asyncio.Event: it is set once per batch per subscriber,
        # a thousand times per event with a thousand subscribers, so the cheaper the better.
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def next_batch(self) -> list[Delivery]:
        """Every delivery waiting (at least one), oldest first. Raises SubscriptionClosed once
        the hub stopped, or at once if the queue overflowed: what it holds no longer follows on
        without a gap, and the subscriber must resume from the log."""
        while not self._pending:
            if self.closed:
                raise SubscriptionClosed()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self.closed:
            raise SubscriptionClosed()
        batch, self._pending = self._pending, []
        return batch


@dataclass(eq=False)
class Audience:
    """The subscribers that share a viewer and a filter. Whether an event reaches them, and the
    bytes it reaches them as, are decided once per audience, not once per subscriber: a studio
    of a thousand open feeds is a handful of audiences."""

    viewer: uuid.UUID | None
    wanted: EventFilter
    members: set[Subscription] = field(default_factory=set)

    def deliver(self, events: list[Event]) -> None:
        deliveries = [(event.id, event.message_for(self.viewer)) for event in events
                      if self.wanted.matches(event, self.viewer) and event.visible_to(self.viewer)]
        if deliveries:
            for sub in list(self.members):
                sub.push(deliveries)


class EventHub:
    def __init__(self, db: Database, *, poll_seconds: float = 5.0, batch_size: int = 500,
                 read_interval: float = READ_INTERVAL_SECONDS):
        self.db = db
        self.poll_seconds = poll_seconds
        self.read_interval = read_interval
        self.batch_size = batch_size
        self.last_id = 0
        self._audiences: dict[tuple[uuid.UUID | None, EventFilter], Audience] = {}
        self._subscriber_count = 0
        self._signals: set[asyncio.Event] = set()
        self._generation = 0  # counts subscriptions, to notice one made during a read
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._stopping = False
        self.listening = asyncio.Event()

    @property
    def subscriber_count(self) -> int:
        return self._subscriber_count

    def subscribe(self, viewer: uuid.UUID | None, wanted: EventFilter = EVERYTHING, *,
                  max_pending: int = 10_000) -> Subscription:
        audience = self._audiences.get((viewer, wanted))
        if audience is None:
            audience = self._audiences[(viewer, wanted)] = Audience(viewer, wanted)
        sub = Subscription(audience, max_pending)
        audience.members.add(sub)
        self._subscriber_count += 1
        self._generation += 1
        return sub

    @contextmanager
    def new_events_signal(self) -> Iterator[asyncio.Event]:
        """An event set whenever this process reads new job events (for internal consumers that
        only need waking, like the webhook enqueuer). Also keeps the hub reading."""
        signal = asyncio.Event()
        self._signals.add(signal)
        self._generation += 1
        try:
            yield signal
        finally:
            self._signals.discard(signal)

    def unsubscribe(self, sub: Subscription) -> None:
        audience = sub.audience
        if sub in audience.members:
            audience.members.discard(sub)
            self._subscriber_count -= 1
            if not audience.members:
                del self._audiences[(audience.viewer, audience.wanted)]
        sub.close()

    async def start(self) -> None:
        async with self.db.as_service() as conn:
            self.last_id = await newest_event_id(conn)
        self._tasks = [asyncio.create_task(self._listen(), name="genstudio:events-listener"),
                       asyncio.create_task(self._fan_out(), name="genstudio:events-fan-out")]

    async def stop(self) -> None:
        # The loops also check the flag: Python 3.11's wait primitives can swallow a
        # cancellation that arrives as their wait ends.
        self._stopping = True
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for audience in list(self._audiences.values()):
            for sub in list(audience.members):
                self.unsubscribe(sub)

    async def _listen(self) -> None:
        while not self._stopping:
            try:
                conn = await psycopg.AsyncConnection.connect(self.db.conninfo, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    self._wake.set()  # catch up on whatever was committed while not listening
                    while not self._stopping:
                        async for _ in conn.notifies(timeout=self.poll_seconds):
                            self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("job event listener lost its connection (%s); reconnecting", exc)
            self.listening.clear()
            await asyncio.sleep(RECONNECT_PAUSE_SECONDS)

    async def _fan_out(self) -> None:
        while not self._stopping:
            try:
                async with asyncio.timeout(self.poll_seconds):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            if self._stopping:
                return
            started = asyncio.get_running_loop().time()
            try:
                await self._catch_up()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("could not read new job events (%s); retrying", exc)
                await asyncio.sleep(RECONNECT_PAUSE_SECONDS)
                self._wake.set()
                continue
            # A studio writing a thousand jobs a second sends as many notifications: read what
            # they announce in batches, at most once per interval, not once per notification.
            elapsed = asyncio.get_running_loop().time() - started
            if elapsed < self.read_interval:
                await asyncio.sleep(self.read_interval - elapsed)

    async def _catch_up(self) -> None:
        while True:
            generation = self._generation
            if not self._audiences and not self._signals:
                # Nobody to deliver to: move past the new events without reading them, unless
                # someone subscribed meanwhile (their replay may not reach that far).
                async with self.db.as_service() as conn:
                    newest = await newest_event_id(conn)
                if self._generation == generation and not self._audiences and not self._signals:
                    self.last_id = max(self.last_id, newest)
                    return
                continue
            async with self.db.as_service() as conn:
                events = await read_batch(conn, self.last_id, limit=self.batch_size)
            if events:
                for audience in list(self._audiences.values()):
                    audience.deliver(events)
            if events:
                self.last_id = events[-1].id
                for signal in self._signals:
                    signal.set()
            if len(events) < self.batch_size:
                return


@dataclass(eq=False)
class _SharedHub:
    hub: EventHub
    started: asyncio.Future
    users: int = 0


_shared: dict[int, _SharedHub] = {}


@asynccontextmanager
async def shared_hub(db: Database, **options) -> AsyncIterator[EventHub]:
    """The process's hub for `db`, started by its first user and stopped after its last: the
    API and the background services of one process share one listener."""
    entry = _shared.get(id(db))
    if entry is None:
        hub = EventHub(db, **options)
        entry = _shared[id(db)] = _SharedHub(hub, asyncio.ensure_future(hub.start()))
    entry.users += 1
    try:
        await asyncio.shield(entry.started)
        yield entry.hub
    finally:
        entry.users -= 1
        if entry.users == 0:
            if _shared.get(id(db)) is entry:
                del _shared[id(db)]
            await entry.hub.stop()
