"""Reading the job event log: batches of events with their jobs, the replay horizon, pruning.

The log is written by PostgreSQL itself (triggers of migration 0004_job_events); genstudio
only reads it, in id order, which is commit order.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

import psycopg
from psycopg import sql

from genstudio.db.queries import load_queries
from genstudio.events.visibility import EventFacts, may_see_event, may_see_job
from genstudio.jobs.output_types import OUTPUT_TYPES
from genstudio.jobs.service import json_object

QUERIES = load_queries("events")

KINDS = ("created", "status", "progress", "completed", "failed", "cancelled", "visibility", "deleted")
BATCH_SIZE = 500


@dataclass(frozen=True)
class EventFilter:
    """Which events a reader wants, besides what it may see."""

    mine: bool = False  # only events of jobs the reader owned when they happened
    types: tuple[str, ...] = tuple(OUTPUT_TYPES)
    job: tuple[str, uuid.UUID] | None = None  # (output type, job id): one job's events

    def matches(self, event: "Event", viewer: uuid.UUID | None) -> bool:
        if event.output_type not in self.types:
            return False
        if self.job is not None and (event.output_type, event.job_id) != self.job:
            return False
        if self.mine and (event.facts.user_id is None or event.facts.user_id != viewer):
            return False
        return True

    def sql_key(self) -> tuple[bool, bool, bool]:
        return (self.mine, self.types != tuple(OUTPUT_TYPES), self.job is not None)

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"types": list(self.types)}
        if self.job is not None:
            params.update(output_type=self.job[0], job_id=self.job[1])
        return params


EVERYTHING = EventFilter()


@dataclass(eq=False)
class Event:
    """One event as read from the log, with its job as it is now."""

    id: int
    output_type: str
    job_id: uuid.UUID
    kind: str
    created_at: datetime
    facts: EventFacts
    event_json: str  # the event's own fields, rendered by PostgreSQL
    job_json: str | None  # the job as the API returns it, or None if it no longer exists
    _messages: dict[bool, bytes] = field(default_factory=dict, repr=False)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Event":
        facts = EventFacts(row["user_id"], row["kind"], row["recorded_visibility"], row["job_exists"],
                           row["owner"], row["visibility"])
        return cls(row["id"], row["output_type"], row["job_id"], row["kind"], row["created_at"], facts,
                   row["event_json"], row["job"])

    def data(self, with_job: bool) -> str:
        """The SSE `data:` JSON: the event's fields plus `job` (null when the job is gone or
        the reader may not see it)."""
        job = self.job_json if with_job and self.job_json is not None else "null"
        return self.event_json[:-1] + ',"job":' + job + "}"

    def message(self, with_job: bool) -> bytes:
        """The whole SSE message, encoded once per variant and shared by every subscriber."""
        with_job = with_job and self.job_json is not None
        encoded = self._messages.get(with_job)
        if encoded is None:
            text = f"id: {self.id}\nevent: {self.kind}\ndata: {self.data(with_job)}\n\n"
            encoded = self._messages[with_job] = text.encode()
        return encoded

    def message_for(self, viewer: uuid.UUID | None) -> bytes:
        """The message as `viewer` receives it: with the job only if they may see the job now."""
        return self.message(may_see_job(self.facts, viewer))

    def visible_to(self, viewer: uuid.UUID | None) -> bool:
        return may_see_event(self.facts, viewer)


@cache
def job_branches() -> sql.Composable:
    """For `LEFT JOIN LATERAL (...) j` on an event `e`: its job as the API renders it, with the
    job's owner and visibility now; no row if the job is gone (or, as a user, not visible)."""
    return sql.SQL("\nUNION ALL\n").join(
        sql.SQL(QUERIES["job_branch"]).format(
            job_json=json_object(t), table=sql.Identifier("public", t.table), output_type=sql.Literal(t.name))
        for t in OUTPUT_TYPES.values()
    )


@cache
def batch_sql(key: tuple[bool, bool, bool]) -> str:
    mine, types, job = key
    filters = [QUERIES["filter_everything"]]
    if mine:
        filters.append(QUERIES["filter_mine"])
    if types:
        filters.append(QUERIES["filter_types"])
    if job:
        filters.append(QUERIES["filter_job"])
    return sql.SQL(QUERIES["batch"]).format(
        job_branches=job_branches(),
        filters=sql.SQL(" AND ").join(sql.SQL(f) for f in filters),
    ).as_string()


async def read_batch(conn: psycopg.AsyncConnection, after: int, wanted: EventFilter = EVERYTHING,
                     limit: int = BATCH_SIZE) -> list[Event]:
    """Events after `after`, oldest first, as the connection's role may read them."""
    cur = await conn.execute(batch_sql(wanted.sql_key()), {"after": after, "limit": limit, **wanted.params()})
    return [Event.from_row(row) for row in await cur.fetchall()]


@dataclass(frozen=True)
class Horizon:
    newest_id: int  # no valid event id is higher
    pruned_through: int  # events up to this id may have been pruned


async def read_horizon(conn: psycopg.AsyncConnection) -> Horizon:
    row = await (await conn.execute(QUERIES["newest_id"])).fetchone()
    return Horizon(row["newest_id"] or 0, row["pruned_through"] or 0)


async def newest_event_id(conn: psycopg.AsyncConnection) -> int:
    return (await (await conn.execute(QUERIES["max_id"])).fetchone())["max_id"]


async def prune(conn_factory, retention_seconds: float, *, batch: int = 10_000) -> int | None:
    """Delete events older than the retention period, in batches of one short transaction
    each. Returns how many, or None when another process is pruning right now."""
    total = 0
    while True:
        async with conn_factory() as conn:
            if not (await (await conn.execute(QUERIES["try_prune_lock"])).fetchone())["locked"]:
                return None if total == 0 else total
            row = await (await conn.execute(QUERIES["prune_batch"],
                                            {"retention_seconds": retention_seconds, "limit": batch})).fetchone()
            deleted = row["deleted"]
            if deleted < batch:
                await conn.execute(QUERIES["prune_deliveries"], {"retention_seconds": retention_seconds})
        total += deleted
        if deleted < batch:
            return total
