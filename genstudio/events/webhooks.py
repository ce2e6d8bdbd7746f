"""Webhooks: a user's URL receives their jobs' events, signed per the Standard Webhooks spec.

Three steps, each durable in PostgreSQL so that a crash loses nothing:
1. registration (`WebhookStore`, as the caller, under row-level security);
2. the enqueuer turns new events into `webhook_deliveries` rows, one per matching webhook,
   and moves its cursor in the same transaction;
3. senders lease due deliveries (`FOR UPDATE SKIP LOCKED`, with an expiry, so a sender that
   dies mid-delivery only delays it), POST them with httpx (no redirects followed), record
   every attempt, and schedule retries with backoff until the schedule runs out.
Receivers may see a message twice (at-least-once) and deduplicate on its `webhook-id`.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import secrets
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache
from typing import Any

import httpx
import psycopg
from psycopg import sql
from standardwebhooks import Webhook

from genstudio import __version__
from genstudio.db.pool import Database
from genstudio.db.queries import load_queries
from genstudio.errors import CallerError
from genstudio.events.addresses import RefusedAddress, check_destination
from genstudio.events.log import job_branches

QUERIES = load_queries("webhooks")
log = logging.getLogger(__name__)

MAX_WEBHOOKS_PER_USER = 25
ENQUEUE_BATCH = 1000


class WebhookNotFound(CallerError):
    """No such webhook among the caller's."""


class TooManyWebhooks(CallerError):
    """The caller already has the most webhooks one user may register."""


def new_secret() -> str:
    """A Standard Webhooks signing secret: `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@cache
def _sql(name: str) -> str:
    return sql.SQL(QUERIES[name]).format(webhook_json=sql.SQL(QUERIES["webhook_json"]),
                                         job_branches=job_branches()).as_string()


class WebhookStore:
    """A user's webhooks and their delivery log, on the caller's transaction."""

    def __init__(self, allow_private: bool):
        self.allow_private = allow_private

    async def register(self, conn: psycopg.AsyncConnection, url: str, events: list[str]) -> tuple[str, str]:
        """Check the URL, store the webhook; returns its JSON and its secret (shown only now)."""
        await check_destination(url, self.allow_private)
        count = (await (await conn.execute(_sql("count_own"))).fetchone())["n"]
        if count >= MAX_WEBHOOKS_PER_USER:
            raise TooManyWebhooks(f"you already have {count} webhooks, the most one user may have; delete one first")
        secret = new_secret()
        row = await (await conn.execute(_sql("insert"), {"url": url, "events": events, "secret": secret})).fetchone()
        return row["webhook"], secret

    async def list(self, conn: psycopg.AsyncConnection) -> str:
        return (await (await conn.execute(_sql("list"))).fetchone())["webhooks"]

    async def get(self, conn: psycopg.AsyncConnection, webhook_id: uuid.UUID) -> str:
        row = await (await conn.execute(_sql("get"), {"id": webhook_id})).fetchone()
        if row is None:
            raise WebhookNotFound(f"no webhook {webhook_id}")
        return row["webhook"]

    async def delete(self, conn: psycopg.AsyncConnection, webhook_id: uuid.UUID) -> None:
        if await (await conn.execute(_sql("delete"), {"id": webhook_id})).fetchone() is None:
            raise WebhookNotFound(f"no webhook {webhook_id}")

    async def deliveries(self, conn: psycopg.AsyncConnection, webhook_id: uuid.UUID, limit: int) -> str:
        await self.get(conn, webhook_id)
        return (await (await conn.execute(_sql("deliveries"), {"id": webhook_id, "limit": limit})).fetchone())["deliveries"]


async def enqueue_new_events(db: Database) -> int | None:
    """Turn the events after the cursor into deliveries, until caught up. Returns how many
    deliveries were made, or None if another process is doing this right now."""
    made = 0
    while True:
        async with db.as_service() as conn:
            cursor = await (await conn.execute(_sql("lock_cursor"))).fetchone()
            if cursor is None:
                return None if made == 0 else made
            row = await (await conn.execute(_sql("enqueue"), {"after": cursor["last_event_id"],
                                                             "limit": ENQUEUE_BATCH})).fetchone()
            if row["events"]:
                await conn.execute(_sql("move_cursor"), {"last_id": row["last_id"]})
        made += row["deliveries"]
        if row["events"] < ENQUEUE_BATCH:
            return made


@dataclass(frozen=True)
class Attempt:
    status_code: int | None
    latency_ms: int
    error: str | None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def signed_headers(secret: str, message_id: str, payload: str) -> dict[str, str]:
    now = datetime.now(timezone.utc)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, now, payload),
        "content-type": "application/json",
        "user-agent": f"genstudio-webhooks/{__version__}",
    }


class WebhookSender:
    """Leases due deliveries and sends them; any number of senders may share one database."""

    def __init__(self, db: Database, *, retry_delays: tuple[float, ...], timeout_seconds: float,
                 allow_private: bool, concurrency: int = 16):
        self.db = db
        self.retry_delays = retry_delays
        self.timeout_seconds = timeout_seconds
        self.allow_private = allow_private
        self.concurrency = concurrency
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # Long enough for one attempt; if the sender dies, another takes over after this.
        self.lease_seconds = 2 * timeout_seconds
        self.client = httpx.AsyncClient(follow_redirects=False, timeout=timeout_seconds, trust_env=False)

    async def close(self) -> None:
        await self.client.aclose()

    async def send_due(self) -> int:
        """Send every delivery due now (in rounds of `concurrency`); returns how many."""
        sent = 0
        while True:
            async with self.db.as_service() as conn:
                cur = await conn.execute(_sql("lease_due"), {"owner": self.owner, "lease_seconds": self.lease_seconds,
                                                             "limit": self.concurrency})
                leased = await cur.fetchall()
            if not leased:
                return sent
            outcomes = await asyncio.gather(*(self._deliver(d) for d in leased), return_exceptions=True)
            for delivery, outcome in zip(leased, outcomes):
                if isinstance(outcome, Exception):
                    # Its lease runs out and it is tried again; the others are not held up.
                    log.warning("could not record webhook delivery %s: %s", delivery["message_id"], outcome)
            sent += len(leased)

    async def seconds_until_next_due(self) -> float | None:
        async with self.db.as_service() as conn:
            wait = (await (await conn.execute(_sql("next_due"))).fetchone())["wait"]
        return None if wait is None else max(0.0, wait.total_seconds())

    async def _deliver(self, delivery: dict[str, Any]) -> None:
        attempt = await self.attempt(delivery["url"], delivery["secret"], delivery["message_id"], delivery["payload"])
        number = delivery["attempts"] + 1
        if attempt.succeeded:
            state, retry_in = "succeeded", 0.0
        elif number > len(self.retry_delays):
            state, retry_in = "failed", 0.0
        else:
            state, retry_in = "pending", self.retry_delays[number - 1]
        async with self.db.as_service() as conn:
            await conn.execute(_sql("finish_attempt"), {"id": delivery["id"], "owner": self.owner, "state": state,
                                                        "retry_in_seconds": retry_in,
                                                        "status_code": attempt.status_code, "error": attempt.error})
            await conn.execute(_sql("record_attempt"), {"id": delivery["id"], "user_id": delivery["user_id"],
                                                        "status_code": attempt.status_code,
                                                        "latency_ms": attempt.latency_ms, "error": attempt.error})

    async def attempt(self, url: str, secret: str, message_id: str, payload: str) -> Attempt:
        started = time.perf_counter()
        status, error = None, None
        try:
            target = await check_destination(url, self.allow_private)
            headers = signed_headers(secret, message_id, payload)
            extensions = {}
            if target.host_header:
                headers["host"] = target.host_header
                extensions["sni_hostname"] = target.tls_server_name
            response = await self.client.post(target.url, content=payload.encode(), headers=headers,
                                              extensions=extensions)
            status = response.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}" + (" (redirects are not followed)" if 300 <= status < 400 else "")
        except RefusedAddress as exc:
            error = exc.message
        except httpx.TimeoutException:
            error = f"no answer within {self.timeout_seconds:g} s"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        latency_ms = round((time.perf_counter() - started) * 1000)
        return Attempt(status, latency_ms, error)
