"""The dispatcher: submits queued workflow runs to the ComfyUI servers of `COMFYUI_URLS`.

Two loops per genstudio process, coordinated with every other process only through PostgreSQL:

* Health checks. Every `GENSTUDIO_HEALTH_CHECK_INTERVAL` seconds each server is checked by one
  process (whoever moves its `checked_at` first): `/system_stats` (is it up), `/queue` (how
  much it has to do) and `/object_info` (which node types it has) go to
  `genstudio.comfy_servers`. A server that becomes usable wakes every dispatcher.
* Dispatch. Woken by NOTIFY on `genstudio_workflow_runs` (a run was queued, a server became
  usable) and otherwise only to retry waiting runs, it leases queued runs oldest first
  (`FOR UPDATE SKIP LOCKED`), picks the healthy server with the fewest queued prompts that has
  every node type the run needs, uploads the run's input files to it, and submits the prompt
  under the run's pre-assigned prompt id with `submit_once`, which first asks the server
  whether it already has that id: a submit retried after a lost answer never runs twice.
  Then the job gets `comfy_url` and the run becomes `submitted`; the monitor follows it.

A run no server can take waits, with the reason in `workflow_runs.dispatch_reason` and in the
job's `parameters.dispatch`, and fails once its deadline (`GENSTUDIO_DISPATCH_DEADLINE`) has
passed. Only runs are ever submitted: a job recorded by a client or migrated from a legacy
table has no run row.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from genstudio.comfy.client import ComfyClient, ComfyError, ComfyTimeout, ComfyUnreachable, ComfyValidationError
from genstudio.comfy.templates import set_input_file
from genstudio.config import Settings
from genstudio.db.pool import Database
from genstudio.db.queries import load_queries
from genstudio.jobs.errors import InvalidTransition, JobNotFound
from genstudio.jobs.models import MODELS
from genstudio.jobs.output_types import OUTPUT_TYPES
from genstudio.jobs.service import JobService
from genstudio.storage import Storage, storage_from_settings

log = logging.getLogger(__name__)

QUERIES = load_queries("dispatch")
RUN_QUERIES = load_queries("runs")
CHANNEL = "genstudio_workflow_runs"
CLAIM_BATCH = 16
# After a server failed a submit, the run tries again this soon (or on the next wake-up).
RETRY_SECONDS = 2.0

NO_SERVER = "no ComfyUI server is reachable"
NO_SERVER_CONFIGURED = "no ComfyUI server is configured (COMFYUI_URLS)"


@cache
def _job_sql(name: str, type_name: str) -> str:
    table = sql.Identifier("public", OUTPUT_TYPES[type_name].table)
    return sql.SQL(QUERIES[name]).format(table=table).as_string()


@dataclass(frozen=True)
class Health:
    url: str
    healthy: bool
    queue_remaining: int | None = None
    node_types: list[str] | None = None
    error: str | None = None


ClientFactory = Callable[[str], ComfyClient]


class Dispatcher:
    def __init__(self, db: Database, settings: Settings, storage: Storage | None = None,
                 client_factory: ClientFactory | None = None):
        self.db = db
        self.settings = settings
        self.storage = storage or storage_from_settings(settings)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._client_factory = client_factory or (
            lambda url: ComfyClient(url, settings.comfy_client_id, settings.comfy_timeout_seconds))
        self._clients: dict[str, ComfyClient] = {}
        self._wake = asyncio.Event()

    def client(self, url: str) -> ComfyClient:
        if url not in self._clients:
            self._clients[url] = self._client_factory(url)
        return self._clients[url]

    async def close(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self._clients.values()), return_exceptions=True)
        self._clients.clear()

    # ---------------------------------------------------------------- the service

    async def run(self, stop: asyncio.Event) -> None:
        """Health checks, NOTIFY listening and dispatching until `stop` is set."""
        tasks = [asyncio.create_task(self._health_loop(stop)), asyncio.create_task(self._listen(stop))]
        try:
            while not stop.is_set():
                self._wake.clear()
                await self.dispatch_ready()
                await _wait_any(stop, self._wake, timeout=self.settings.health_check_seconds)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.close()

    async def _listen(self, stop: asyncio.Event) -> None:
        """Wake the dispatch loop on every NOTIFY; reconnect after losing the connection."""
        while not stop.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(self.db.conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self._wake.set()  # anything queued while we were not listening
                    async for _ in conn.notifies():
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database went away: the dispatch loop still retries on its timer
                log.warning("dispatcher: lost the LISTEN connection (%s); reconnecting", exc)
                await _wait_any(stop, timeout=1.0)

    # ---------------------------------------------------------------- health checks

    async def _health_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.check_servers()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("dispatcher: health check failed")
            await _wait_any(stop, timeout=self.settings.health_check_seconds / 2)

    async def check_servers(self, *, force: bool = False) -> None:
        """Check each configured server this process claims for this interval."""
        await asyncio.gather(*(self._check_server(url, force) for url in self.settings.comfyui_urls))

    async def _check_server(self, url: str, force: bool) -> None:
        async with self.db.as_service() as conn:
            cur = await conn.execute(QUERIES["claim_health_check"],
                                     {"url": url, "interval": 0 if force else self.settings.health_check_seconds * 0.9})
            claimed = await cur.fetchone()
        if claimed is None:
            return  # another process checks it this interval
        health = await self.probe(url)
        async with self.db.as_service() as conn:
            await conn.execute(QUERIES["record_health"], {
                "url": url, "healthy": health.healthy, "queue_remaining": health.queue_remaining,
                "node_types": health.node_types, "error": health.error})
            if health.healthy and not claimed["was_healthy"]:
                await conn.execute(QUERIES["end_waits"])
                await conn.execute(QUERIES["notify_dispatchers"], {"payload": f"server {url}"})
        if health.healthy != claimed["was_healthy"]:
            log.info("ComfyUI server %s is %s%s", url, "up" if health.healthy else "down",
                     f": {health.error}" if health.error else "")

    async def probe(self, url: str) -> Health:
        client = self.client(url)
        try:
            await client.system_stats()
            queue = await client.queue()
            node_types = sorted(await client.object_info())
        except ComfyError as exc:
            return Health(url, False, error=str(exc))
        remaining = len(queue.get("queue_running", [])) + len(queue.get("queue_pending", []))
        return Health(url, True, remaining, node_types)

    # ---------------------------------------------------------------- dispatching

    async def dispatch_ready(self) -> int:
        """Lease and dispatch queued runs until none is ready; how many were looked at.

        Up to CLAIM_BATCH runs are in flight at once, and a slot that frees up is refilled at
        once: one slow submit never holds back the runs leased beside it."""
        total = 0
        in_flight: dict[asyncio.Task, dict[str, Any]] = {}
        try:
            while True:
                if len(in_flight) < CLAIM_BATCH:
                    runs = await self._claim(CLAIM_BATCH - len(in_flight))
                    total += len(runs)
                    for run in runs:
                        in_flight[asyncio.create_task(self.dispatch(run))] = run
                if not in_flight:
                    return total
                done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    run = in_flight.pop(task)
                    if task.exception() is not None:
                        log.error("dispatcher: run %s failed to dispatch", run["job_id"], exc_info=task.exception())
                        await self._wait(run, f"dispatch failed: {task.exception()}", RETRY_SECONDS, None)
        finally:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)

    async def _claim(self, limit: int) -> list[dict[str, Any]]:
        async with self.db.as_service() as conn:
            cur = await conn.execute(QUERIES["claim_runs"], {
                "owner": self.owner, "lease_seconds": self.settings.dispatch_lease_seconds, "limit": limit})
            return await cur.fetchall()

    async def dispatch(self, run: dict[str, Any]) -> None:
        job, url = await self._job_and_server(run)
        if job is None or job["status"] != "pending" or job["legacy_table"] is not None:
            await self._finish(run, "the job is no longer pending")
            return
        if url is None:
            await self._no_server(run)
            return
        try:
            prompt = await self._with_inputs(run, url)
            run["prompt_id"] = job["comfy_job_id"]
            answer = await self.client(url).submit_once(run["prompt"] if prompt is None else prompt, job["comfy_job_id"])
        except ComfyValidationError as exc:
            await self._fail(run, f"ComfyUI refused the workflow: {exc}")
            return
        except ComfyTimeout as exc:
            # The server may have the prompt already: only that server is asked again (and
            # submit_once finds it there rather than posting it a second time).
            await self._wait(run, f"{url} did not answer: {exc}", RETRY_SECONDS, url)
            return
        except ComfyUnreachable as exc:
            await self._server_down(url, str(exc))
            await self._wait(run, NO_SERVER if not self.settings.comfyui_urls else f"{url} is unreachable",
                             RETRY_SECONDS, None)
            return
        except ComfyError as exc:
            await self._wait(run, f"{url} failed: {exc}", RETRY_SECONDS, None)
            return
        await self._submitted(run, url, answer)

    async def _job_and_server(self, run: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
        """The run's job and, while it is still pending, the server to submit it to (None: none
        can take it): one transaction rather than two per run."""
        async with self.db.as_service() as conn:
            cur = await conn.execute(_job_sql("job_state", run["output_type"]), {"id": run["job_id"]})
            job = await cur.fetchone()
            if job is None or job["status"] != "pending" or job["legacy_table"] is not None:
                return job, None
            cur = await conn.execute(QUERIES["pick_server"], {
                "urls": self.settings.comfyui_urls, "required": run["required_node_types"],
                "only": run["server_url"]})  # a run whose submit timed out stays with that server
            row = await cur.fetchone()
        return job, (row["url"] if row else None)

    async def _with_inputs(self, run: dict[str, Any], url: str) -> dict[str, Any] | None:
        """Upload the run's input files to the server; the prompt pointing at them."""
        if not run["input_files"]:
            return None
        prompt = run["prompt"]
        for item in run["input_files"]:
            data = b"".join([chunk async for chunk in self.storage.open(item["storage_key"])])
            # One name per run and input: two runs never overwrite each other's inputs.
            name = f"genstudio-{run['job_id']}-{item['filename']}"
            uploaded = await self.client(url).upload_image(data, name, overwrite=True,
                                                           content_type=item["content_type"])
            where = f"{uploaded['subfolder']}/{uploaded['name']}" if uploaded.get("subfolder") else uploaded["name"]
            set_input_file(prompt, item["node_id"], item["input"], where)
        return prompt

    async def _submitted(self, run: dict[str, Any], url: str, answer: dict[str, Any]) -> None:
        # The job row first, then the run row: the monitor locks them in that order too.
        async with self.db.as_service() as conn:
            cur = await conn.execute(_job_sql("job_submitted", run["output_type"]), {"id": run["job_id"], "url": url})
            job = await cur.fetchone()
            await conn.execute(QUERIES["mark_submitted"], {"job_id": run["job_id"], "url": url, "owner": self.owner})
        if job is not None and job["status"] == "cancelled":
            # Cancelled while we were submitting: take the prompt back off the server's queue.
            try:
                await self.client(url).delete_from_queue([run["prompt_id"]])
            except ComfyError:
                log.warning("dispatcher: could not remove cancelled run %s from %s", run["job_id"], url)
        log.info("dispatcher: run %s (%s) submitted to %s%s", run["job_id"], run["workflow_name"], url,
                 " (it was already there)" if answer.get("already") else "")

    async def _no_server(self, run: dict[str, Any]) -> None:
        reason = await self._why_no_server(run)
        if run["past_deadline"]:
            await self._fail(run, f"not started within {self.settings.dispatch_deadline_seconds:g} s: {reason}")
            return
        # Look again when a server becomes usable (NOTIFY), at the latest at the next health
        # check, and no later than the deadline.
        retry = max(0.1, min(self.settings.health_check_seconds, float(run["seconds_left"] or 0) + 0.05))
        await self._wait(run, reason, retry, None, unless_usable=True)

    async def _why_no_server(self, run: dict[str, Any]) -> str:
        if not self.settings.comfyui_urls:
            return NO_SERVER_CONFIGURED
        async with self.db.as_service() as conn:
            cur = await conn.execute(RUN_QUERIES["healthy_servers"], {"urls": self.settings.comfyui_urls})
            servers = await cur.fetchall()
        if not servers:
            return NO_SERVER
        required = run["required_node_types"]
        missing = min(([t for t in required if t not in set(s["node_types"])] for s in servers), key=len)
        if run["server_url"] and missing == []:
            return f"waiting for {run['server_url']}, which did not answer the last submit"
        return f"no reachable ComfyUI server has the node types {', '.join(missing)}"

    async def _server_down(self, url: str, error: str) -> None:
        async with self.db.as_service() as conn:
            await conn.execute(QUERIES["record_health"], {
                "url": url, "healthy": False, "queue_remaining": None, "node_types": None, "error": error})

    async def _wait(self, run: dict[str, Any], reason: str, retry_seconds: float, sticky_url: str | None, *,
                    unless_usable: bool = False) -> None:
        """`unless_usable`: not if a server that can take the run became usable meanwhile."""
        if run["past_deadline"]:
            await self._fail(run, f"not started within {self.settings.dispatch_deadline_seconds:g} s: {reason}")
            return
        async with self.db.as_service() as conn:
            if unless_usable:
                cur = await conn.execute(QUERIES["usable_server_locked"], {
                    "urls": self.settings.comfyui_urls, "required": run["required_node_types"]})
                if (await cur.fetchone())["usable"]:
                    retry_seconds = 0
            await conn.execute(QUERIES["wait"], {"job_id": run["job_id"], "owner": self.owner, "reason": reason,
                                                 "retry_seconds": retry_seconds, "sticky_url": sticky_url})
            await conn.execute(_job_sql("job_waiting", run["output_type"]), {
                "id": run["job_id"], "dispatch": Jsonb({"state": "waiting", "reason": reason})})

    async def _finish(self, run: dict[str, Any], reason: str) -> None:
        async with self.db.as_service() as conn:
            await conn.execute(QUERIES["finish_run"], {"job_id": run["job_id"], "reason": reason})

    async def _fail(self, run: dict[str, Any], message: str) -> None:
        """The job fails through the jobs' one transition table; the run is done."""
        t = OUTPUT_TYPES[run["output_type"]]
        payload = MODELS[t.name].complete(status="failed", error_message=message)
        async with self.db.as_service() as conn:
            await conn.execute(QUERIES["finish_run"], {"job_id": run["job_id"], "reason": message})
            await conn.execute(_job_sql("job_waiting", t.name), {
                "id": run["job_id"], "dispatch": Jsonb({"state": "failed", "reason": message})})
            try:
                await JobService(t).complete(conn, run["job_id"], payload)
            except (InvalidTransition, JobNotFound):
                pass  # it ended some other way meanwhile (cancelled, deleted)
        log.info("dispatcher: run %s failed: %s", run["job_id"], message)


async def _wait_any(stop: asyncio.Event, *events: asyncio.Event, timeout: float) -> None:
    """Until `stop` or any of `events` is set, or `timeout` seconds have passed."""
    waiters = [asyncio.create_task(e.wait()) for e in (stop, *events)]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def dispatcher_service(context) -> None:
    """The background service (genstudio/background.py)."""
    await Dispatcher(context.db, context.settings).run(context.stop)
