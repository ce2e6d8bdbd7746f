"""The monitor: follows every job on a configured ComfyUI server until it ends.

One follower per server among all genstudio processes (a PostgreSQL advisory lock held on a
session of its own decides which process leads; when it dies, another takes over). The leader

- keeps one WebSocket with genstudio's client id, on which ComfyUI reports the prompts
  genstudio submitted: `execution_start` → processing, `progress_state`/`progress` →
  progress over the whole workflow, `execution_success` → outputs fetched, stored with
  thumbnails, completed; `execution_error` → failed (node, node type, ComfyUI's message);
  `execution_interrupted` → cancelled;
- reconciles with `/queue` and `/history` after every (re)connect, which covers a restart of
  genstudio (in-flight jobs resume from the database), a dropped socket, and a restarted
  ComfyUI (a prompt in neither queue nor history goes back to the dispatcher once if it never
  started, and fails naming the server otherwise);
- polls `/queue` + `/history` for prompts clients submitted themselves (ComfyUI sends their
  messages only to the submitting client; capture 13), and for everything at a slower pace;
- ends jobs that make no progress for GENSTUDIO_MONITOR_STALL_SECONDS (the watchdog);
- listens for `genstudio_job_cancelled` and takes a cancelled job's prompt off its server:
  deleted from the queue, or interrupted if it runs, that prompt only.

Every state change goes through `JobService.advance` (the one transition table), one
transaction each; an outcome reported twice is recorded once (the second finds the job ended),
and outputs are stored once (storage `put` never rewrites a key).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any, Protocol

import psycopg
from psycopg.rows import dict_row

from genstudio.comfy.client import ComfyClient, ComfyError, ComfyMessage, ComfyTimeout, ComfyUnreachable
from genstudio.config import Settings
from genstudio.db.pool import Database
from genstudio.db.queries import load_queries
from genstudio.jobs.output_types import FINAL_STATUSES, OUTPUT_TYPES
from genstudio.jobs.service import JobService
from genstudio.storage import Storage, job_file_key, storage_from_settings, thumbnail_key
from genstudio.storage.base import content_type_of
from genstudio.storage.media import thumbnail

log = logging.getLogger(__name__)

QUERIES = load_queries("monitor")
SERVICES = {name: JobService(t) for name, t in OUTPUT_TYPES.items()}
CANCEL_CHANNEL = "genstudio_job_cancelled"
ENDING_MESSAGES = {"execution_success", "execution_error", "execution_interrupted"}
LANE_IDLE_SECONDS = 30.0
VIDEO_EXTENSIONS = {".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v"}
FILE_OUTPUT_KEYS = ("images", "gifs", "video", "videos", "audio")


@dataclass
class Tracked:
    """What the leader knows about one followed prompt while it runs."""

    prompt_id: str
    output_type: str
    job_id: uuid.UUID
    workflow_name: str
    status: str
    is_run: bool
    resubmitted: bool = False  # already given back to the dispatcher once
    output_nodes: list[str] | None = None
    node_count: int | None = None
    cached: set[str] = field(default_factory=set)
    nodes: dict[str, float] = field(default_factory=dict)  # node -> fraction done
    outputs: dict[str, Any] = field(default_factory=dict)  # from `executed`, while seen whole
    saw_start: bool = False
    started_at: datetime | None = None  # ComfyUI's execution_start time
    written_progress: float = -1.0
    last_write: float = 0.0
    last_activity: float = field(default_factory=time.monotonic)
    flush: asyncio.Task | None = None
    ended: bool = False

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Tracked:
        return cls(prompt_id=row["comfy_job_id"], output_type=row["output_type"], job_id=row["id"],
                   workflow_name=row["workflow_name"], status=row["status"], is_run=row["is_run"],
                   resubmitted=row["resubmitted"], output_nodes=row["output_nodes"] or None,
                   node_count=row.get("node_count") or None,
                   written_progress=row["progress"] if row["progress"] is not None else -1.0)

    def progress(self) -> float | None:
        """Percent of the whole workflow done (nodes ComfyUI had cached do not count)."""
        if not self.node_count:
            return None
        total = self.node_count - len(self.cached)
        if total <= 0:
            return None
        done = sum(f for node, f in self.nodes.items() if node not in self.cached)
        return float(min(99, math.floor(100 * done / total)))


@dataclass(frozen=True)
class MonitorSettings:
    client_id: str
    timeout: float
    poll_seconds: float
    reconcile_seconds: float
    stall_seconds: float
    lost_grace_seconds: float
    progress_interval: float
    leader_retry_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> MonitorSettings:
        return cls(settings.comfy_client_id, settings.comfy_timeout_seconds, settings.monitor_poll_seconds,
                   settings.monitor_reconcile_seconds, settings.monitor_stall_seconds,
                   settings.monitor_lost_grace_seconds, settings.monitor_progress_interval_seconds,
                   settings.monitor_leader_retry_seconds)


class ServerMonitor:
    """The follower of one ComfyUI server (see the module's docstring)."""

    def __init__(self, url: str, db: Database, storage: Storage, settings: MonitorSettings, stop: asyncio.Event):
        self.url = url.rstrip("/")
        self.db = db
        self.storage = storage
        self.settings = settings
        self.stop = stop
        self.client = ComfyClient(self.url, settings.client_id, timeout=settings.timeout)
        self.tracked: dict[str, Tracked] = {}
        self.unknown: dict[str, float] = {}  # prompt ids that are not ours, with when we looked
        self.finishing: dict[str, asyncio.Task] = {}
        self.lanes: dict[str, asyncio.Queue] = {}
        self.lane_tasks: set[asyncio.Task] = set()
        self.connected = asyncio.Event()
        self.leading = asyncio.Event()

    # --- leadership ------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    await self._lead_if_possible()
                except (psycopg.OperationalError, OSError) as exc:
                    log.warning("monitor of %s: database connection lost (%s); retrying", self.url, exc)
                await self._sleep(self.settings.leader_retry_seconds)
        finally:
            await self.client.aclose()

    async def _lead_if_possible(self) -> None:
        async with await psycopg.AsyncConnection.connect(self.db.conninfo, autocommit=True,
                                                         row_factory=dict_row) as conn:
            row = await (await conn.execute(QUERIES["leader_lock"], {"server": self.url})).fetchone()
            if not row["acquired"]:
                return
            await conn.execute(f"LISTEN {CANCEL_CHANNEL}")
            log.info("monitor: following %s", self.url)
            self.leading.set()
            try:
                await self._until_stopped(self.follow_socket(), self.listen_for_cancels(conn), self.poll())
            finally:
                self.leading.clear()
                self.connected.clear()
                for task in [*self.finishing.values(), *self.lane_tasks]:
                    task.cancel()

    async def _until_stopped(self, *jobs: Awaitable[None]) -> None:
        tasks = [asyncio.ensure_future(j) for j in jobs]
        stopper = asyncio.ensure_future(self.stop.wait())
        try:
            done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in [*tasks, stopper]:
                task.cancel()
            await asyncio.gather(*tasks, stopper, return_exceptions=True)
        for task in done:
            if task is not stopper and not task.cancelled() and task.exception() is not None:
                raise task.exception()

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.stop.wait(), seconds)
        except TimeoutError:
            pass

    # --- the WebSocket ---------------------------------------------------------------------

    async def follow_socket(self) -> None:
        backoff = 0.2
        while True:
            try:
                async with self.client.websocket() as socket:
                    backoff = 0.2
                    # Everything that happened while no socket was open is in /queue and /history.
                    await self.reconcile()
                    self.connected.set()
                    async for message in socket:
                        self.route(message)
            except (ComfyUnreachable, ComfyTimeout) as exc:
                if self.connected.is_set():
                    log.warning("monitor: lost %s (%s); reconnecting", self.url, exc)
            self.connected.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    def route(self, message: ComfyMessage) -> None:
        """Hand a message to its prompt's lane: each prompt's messages are handled in order,
        different prompts' concurrently, and the socket is never held up by the database."""
        prompt_id = message.prompt_id
        if not prompt_id:
            return
        lane = self.lanes.get(prompt_id)
        if lane is None:
            lane = self.lanes[prompt_id] = asyncio.Queue()
            task = asyncio.create_task(self._run_lane(prompt_id, lane))
            self.lane_tasks.add(task)
            task.add_done_callback(self.lane_tasks.discard)
        lane.put_nowait(message)

    async def _run_lane(self, prompt_id: str, lane: asyncio.Queue) -> None:
        try:
            tracked = self.tracked.get(prompt_id) or await self.track(prompt_id)
            while True:
                try:
                    batch = [await asyncio.wait_for(lane.get(), LANE_IDLE_SECONDS)]
                except TimeoutError:
                    return
                while not lane.empty():
                    batch.append(lane.get_nowait())
                if tracked is None or tracked.ended:
                    if lane.empty():
                        return
                    continue
                # A prompt that already ended in this batch skips the writes of its start and
                # progress: its outcome is written at once (with ComfyUI's start time).
                ending = any(m.type in ENDING_MESSAGES for m in batch)
                for message in batch:
                    await self.handle(tracked, message, quiet=ending)
        except Exception:
            log.exception("monitor: following prompt %s on %s failed; reconciling later", prompt_id, self.url)
        finally:
            if self.lanes.get(prompt_id) is lane:
                del self.lanes[prompt_id]

    async def handle(self, tracked: Tracked, message: ComfyMessage, *, quiet: bool = False) -> None:
        if tracked.ended:
            return
        prompt_id = tracked.prompt_id
        tracked.last_activity = time.monotonic()
        data = message.data
        kind = message.type
        if kind == "execution_start":
            tracked.saw_start, tracked.outputs, tracked.nodes = True, {}, {}
            tracked.started_at = _utc(data.get("timestamp"))
            tracked.last_write = time.monotonic()  # the first progress write waits an interval too
            if not quiet:
                await self.advance(tracked, "processing")
        elif kind == "execution_cached":
            tracked.cached = set(data.get("nodes") or [])
        elif kind == "progress_state":
            for node_id, node in (data.get("nodes") or {}).items():
                tracked.nodes[node_id] = 1.0 if node.get("state") == "finished" else _fraction(node)
            if not quiet:
                await self.report_progress(tracked)
        elif kind == "progress":
            if data.get("node") is not None:
                tracked.nodes[str(data["node"])] = _fraction(data)
                if not quiet:
                    await self.report_progress(tracked)
        elif kind == "executed":
            tracked.outputs[str(data.get("node"))] = data.get("output") or {}
        elif kind == "execution_success":
            outputs = tracked.outputs if tracked.saw_start else None
            self.finish_soon(tracked, lambda: self.complete(tracked, outputs))
        elif kind == "execution_error":
            self.finish_soon(tracked, lambda: self.fail(tracked, failure_message(self.url, data)))
        elif kind == "execution_interrupted":
            self.finish_soon(tracked, lambda: self.cancelled(tracked, data))
        elif kind == "executing" and data.get("node") is None and not tracked.ended \
                and prompt_id not in self.finishing:
            # The end marker without an outcome we saw (a message lost): ask /history.
            self.finish_soon(tracked, lambda: self.reconcile_one(tracked))

    async def track(self, prompt_id: str) -> Tracked | None:
        if time.monotonic() - self.unknown.get(prompt_id, -60.0) < 5.0:
            return None
        async with self.db.as_service() as conn:
            row = await (await conn.execute(QUERIES["job_by_prompt"],
                                            {"prompt_id": prompt_id, "server": self.url})).fetchone()
        if row is None or row["status"] in FINAL_STATUSES:
            self.unknown[prompt_id] = time.monotonic()
            if len(self.unknown) > 10000:
                self.unknown.clear()
            return None
        tracked = self.tracked[prompt_id] = Tracked.from_row(row)
        return tracked

    # --- reconciling with /queue and /history ------------------------------------------------

    async def poll(self) -> None:
        """Client-recorded prompts every poll interval (no messages come for them), every
        followed prompt at the slower reconcile interval, and only while the socket is up."""
        last_full = time.monotonic()
        while True:
            await asyncio.sleep(self.settings.poll_seconds)
            if not self.connected.is_set():
                continue
            full = time.monotonic() - last_full >= self.settings.reconcile_seconds
            try:
                await self.reconcile(recorded_only=not full)
            except (ComfyUnreachable, ComfyTimeout):
                continue  # the socket notices too, and reconciles when it is back
            if full:
                last_full = time.monotonic()

    async def followed(self) -> list[dict[str, Any]]:
        async with self.db.as_service() as conn:
            cur = await conn.execute(QUERIES["followed_jobs"], {
                "server": self.url, "grace_seconds": self.settings.lost_grace_seconds,
                "stall_seconds": self.settings.stall_seconds})
            return await cur.fetchall()

    async def reconcile(self, *, recorded_only: bool = False) -> None:
        rows = await self.followed()
        if recorded_only:
            rows = [r for r in rows if not r["is_run"] or r["stalled"]]
        queue = await self.client.queue()
        running = {entry[1]: entry for entry in queue.get("queue_running", [])}
        pending = {entry[1]: entry for entry in queue.get("queue_pending", [])}
        if not recorded_only:
            await self.remove_cancelled([*running, *pending])
        for row in rows:
            prompt_id = row["comfy_job_id"]
            if prompt_id in self.finishing:
                continue
            tracked = self.tracked.get(prompt_id) or Tracked.from_row(row)
            self.tracked[prompt_id] = tracked
            entry = running.get(prompt_id) or pending.get(prompt_id)
            if entry is not None:
                tracked.node_count = tracked.node_count or len(entry[2])
                if prompt_id in running:
                    if row["stalled"] and time.monotonic() - tracked.last_activity > self.settings.stall_seconds:
                        self.finish_soon(tracked, lambda t=tracked: self.stalled(t))
                    elif row["status"] == "pending":
                        await self.advance(tracked, "processing")
                continue
            self.finish_soon(tracked, lambda t=tracked, settled=row["settled"]: self.reconcile_one(t, settled=settled))

    async def reconcile_one(self, tracked: Tracked, *, settled: bool = True) -> None:
        """The outcome of a prompt that is not (or no longer) in its server's queue."""
        entry = (await self.client.history(tracked.prompt_id)).get(tracked.prompt_id)
        if entry is not None:
            await self.finish_from_history(tracked, entry)
        elif settled:
            await self.lost(tracked)

    async def finish_from_history(self, tracked: Tracked, entry: dict[str, Any]) -> None:
        status = entry.get("status") or {}
        messages = {m[0]: m[1] for m in status.get("messages", []) if isinstance(m, list) and len(m) == 2}
        if tracked.started_at is None and isinstance(messages.get("execution_start"), dict):
            tracked.started_at = _utc(messages["execution_start"].get("timestamp"))
        if status.get("status_str") == "success" or (status.get("completed") and "execution_error" not in messages):
            await self.complete(tracked, entry.get("outputs") or {})
        elif "execution_interrupted" in messages:
            await self.cancelled(tracked, messages["execution_interrupted"])
        elif "execution_error" in messages:
            await self.fail(tracked, failure_message(self.url, messages["execution_error"]))
        else:
            await self.fail(tracked, f"ComfyUI server {self.url} ended the prompt without saying why")

    async def lost(self, tracked: Tracked) -> None:
        """The server knows nothing of the prompt: it restarted (or someone deleted it there)."""
        if tracked.is_run and tracked.status == "pending" and not tracked.resubmitted:
            reason = f"ComfyUI server {self.url} lost the run before it started (restarted?); submitting it again"
            async with self.db.as_service() as conn:
                requeued = await (await conn.execute(QUERIES["requeue_run"],
                                                     {"job_id": tracked.job_id, "reason": reason})).fetchone()
                if requeued:
                    await SERVICES[tracked.output_type].back_to_dispatch(
                        conn, tracked.job_id, {"state": "waiting", "reason": reason})
            tracked.ended = True
            self.tracked.pop(tracked.prompt_id, None)
            log.info("monitor: %s forgot run %s before it started; back to the dispatcher", self.url, tracked.job_id)
            return
        where = "while it ran" if tracked.status == "processing" else "before it ran"
        await self.fail(tracked, f"ComfyUI server {self.url} lost the prompt {where} (it was restarted, "
                                 "or the prompt was deleted there)")

    async def stalled(self, tracked: Tracked) -> None:
        minutes = self.settings.stall_seconds / 60
        await self.fail(tracked, f"no progress for {minutes:g} minutes on ComfyUI server {self.url}; stopped")
        try:
            await self.client.interrupt(tracked.prompt_id)
        except ComfyError as exc:
            log.warning("monitor: could not interrupt stalled prompt %s on %s: %s", tracked.prompt_id, self.url, exc)

    # --- cancel ------------------------------------------------------------------------------

    async def listen_for_cancels(self, conn: psycopg.AsyncConnection) -> None:
        async for notice in conn.notifies():
            output_type, _, job_id = notice.payload.partition(":")
            if output_type not in OUTPUT_TYPES:
                continue
            try:
                job_uuid = uuid.UUID(job_id)
            except ValueError:
                continue
            async with self.db.as_service() as db_conn:
                row = await (await db_conn.execute(QUERIES["cancelled_job"],
                                                   {"id": job_uuid, "output_type": output_type})).fetchone()
                if row is None or row["server"] != self.url:
                    continue
                await db_conn.execute(QUERIES["finish_run"], {"job_id": job_uuid})
            await self.take_off_server(row["comfy_job_id"])

    async def remove_cancelled(self, prompt_ids: list[str]) -> None:
        """Prompts still on the server whose jobs were cancelled (a cancel while no leader
        listened)."""
        if not prompt_ids:
            return
        async with self.db.as_service() as conn:
            rows = await (await conn.execute(QUERIES["cancelled_prompts"], {"prompt_ids": prompt_ids})).fetchall()
        for row in rows:
            await self.take_off_server(row["comfy_job_id"])

    async def take_off_server(self, prompt_id: str) -> None:
        """Delete the prompt from the queue, then interrupt it in case it started meanwhile;
        a targeted interrupt never touches another prompt."""
        tracked = self.tracked.pop(prompt_id, None)
        if tracked is not None:
            tracked.ended = True
        try:
            await self.client.delete_from_queue([prompt_id])
            await self.client.interrupt(prompt_id)
        except ComfyError as exc:
            log.warning("monitor: could not take cancelled prompt %s off %s: %s", prompt_id, self.url, exc)

    # --- recording outcomes --------------------------------------------------------------------

    def finish_soon(self, tracked: Tracked, finish: Callable[[], Awaitable[None]]) -> None:
        """Run one ending of a prompt in the background (the socket keeps being read), never
        two at once for the same prompt."""
        if tracked.prompt_id in self.finishing:
            return

        async def run() -> None:
            try:
                await finish()
            except ComfyError as exc:
                log.warning("monitor: %s: %s; will reconcile later", tracked.prompt_id, exc)
            except Exception:
                log.exception("monitor: recording the outcome of prompt %s failed", tracked.prompt_id)
            finally:
                self.finishing.pop(tracked.prompt_id, None)

        self.finishing[tracked.prompt_id] = asyncio.create_task(run())

    async def advance(self, tracked: Tracked, status: str, *, progress: float | None = None,
                      results: dict[str, Any] | None = None, end_run: bool = False) -> bool:
        service = SERVICES[tracked.output_type]
        if status in FINAL_STATUSES and tracked.started_at is not None:
            results = {**(results or {}), "started_at": tracked.started_at}
        async with self.db.as_service() as conn:
            job = await service.advance(conn, tracked.job_id, status, progress=progress, results=results)
            if tracked.is_run and (end_run or job is None):
                await conn.execute(QUERIES["finish_run"], {"job_id": tracked.job_id})
        if job is None or status in FINAL_STATUSES:
            tracked.ended = True
            self.tracked.pop(tracked.prompt_id, None)
            if tracked.flush:
                tracked.flush.cancel()
            return job is not None
        tracked.status = status
        return True

    async def report_progress(self, tracked: Tracked) -> None:
        """Whole-percent changes only, and at most one write per progress interval per job
        (a change that arrives sooner is written when the interval is over)."""
        progress = tracked.progress()
        if progress is None or progress == tracked.written_progress:
            return
        wait = tracked.last_write + self.settings.progress_interval - time.monotonic()
        if wait > 0:
            if tracked.flush is None or tracked.flush.done():
                tracked.flush = asyncio.create_task(self._flush_progress(tracked, wait))
            return
        await self._write_progress(tracked)

    async def _flush_progress(self, tracked: Tracked, wait: float) -> None:
        await asyncio.sleep(wait)
        if not tracked.ended and tracked.progress() != tracked.written_progress:
            await self._write_progress(tracked)

    async def _write_progress(self, tracked: Tracked) -> None:
        progress = tracked.progress()
        tracked.written_progress, tracked.last_write = progress, time.monotonic()
        await self.advance(tracked, "processing", progress=progress)

    async def fail(self, tracked: Tracked, message: str) -> None:
        await self.advance(tracked, "failed", results={"error_message": message}, end_run=True)

    async def cancelled(self, tracked: Tracked, data: dict[str, Any]) -> None:
        where = f" at node {data.get('node_id')} ({data.get('node_type')})" if data.get("node_id") else ""
        await self.advance(tracked, "cancelled", end_run=True,
                           results={"error_message": f"interrupted on ComfyUI server {self.url}{where}"})

    async def complete(self, tracked: Tracked, outputs: dict[str, Any] | None) -> None:
        if not outputs:
            outputs = await self.history_outputs(tracked.prompt_id)
        results = await self.store_outputs(tracked, outputs)
        await self.advance(tracked, "completed", results=results, end_run=True)

    async def history_outputs(self, prompt_id: str) -> dict[str, Any]:
        """The outputs from /history, which ComfyUI writes just after `execution_success`."""
        for attempt in range(40):
            entry = (await self.client.history(prompt_id)).get(prompt_id)
            if entry is not None:
                return entry.get("outputs") or {}
            await asyncio.sleep(0.05 * min(attempt + 1, 5))
        return {}

    async def store_outputs(self, tracked: Tracked, outputs: dict[str, Any]) -> dict[str, Any]:
        files, texts = collect_outputs(outputs, tracked.output_nodes)
        stored: list[StoredOutput] = []
        used: set[str] = set()
        for item in files:
            name = unique_name(PurePosixPath(str(item["filename"])).name, used)
            key = job_file_key(tracked.output_type, tracked.workflow_name, tracked.job_id, name)
            if await self.storage.exists(key):
                data = None  # stored by an earlier report of this completion
            else:
                data = await self.client.view(item["filename"], item.get("subfolder", ""), item.get("type", "output"))
                await self.storage.put(key, data, content_type_of(name))
            stored.append(StoredOutput(item, key, name, data))
        if texts:
            key = job_file_key(tracked.output_type, tracked.workflow_name, tracked.job_id, "output.txt")
            await self.storage.put(key, "\n".join(texts).encode("utf-8"), "text/plain; charset=utf-8")
            text_url = self.storage.url_for(key)
        else:
            text_url = None
        return await self.results(tracked, stored, texts, text_url, outputs)

    async def results(self, tracked: Tracked, stored: list[StoredOutput], texts: list[str], text_url: str | None,
                      outputs: dict[str, Any]) -> dict[str, Any]:
        """The job's result columns, for its output type."""
        results: dict[str, Any] = {}
        if tracked.output_type == "text":
            results["output_text"] = "\n".join(texts)
            results["output_data"] = {"text": texts, "text_url": text_url,
                                      "files": [self.storage.url_for(s.key) for s in stored], "outputs": outputs}
            return results
        wanted = "video" if tracked.output_type == "video" else "image"
        chosen = [s for s in stored if s.kind == wanted] or stored
        results[f"output_{wanted}_urls"] = [self.storage.url_for(s.key) for s in chosen]
        if chosen:
            first = chosen[0]
            results["comfyui_output_filename"] = first.item["filename"]
            results["comfyui_output_subfolder"] = first.item.get("subfolder", "")
            results["comfyui_output_type"] = first.item.get("type", "output")
            thumb = await self.make_thumbnail(first)
            if thumb is not None:
                results["thumbnail_url"] = self.storage.url_for(thumb)
        return results

    async def make_thumbnail(self, output: StoredOutput) -> str | None:
        key = thumbnail_key(output.key)
        if await self.storage.exists(key):
            return key
        data = output.data
        if data is None:
            data = b"".join([chunk async for chunk in self.storage.open(output.key)])
        jpeg = await asyncio.to_thread(thumbnail, data, content_type_of(output.name))
        if jpeg is None:
            return None
        await self.storage.put(key, jpeg, "image/jpeg")
        return key


@dataclass
class StoredOutput:
    item: dict[str, Any]
    key: str
    name: str
    data: bytes | None

    @property
    def kind(self) -> str:
        if PurePosixPath(self.name).suffix.lower() in VIDEO_EXTENSIONS:
            return "video"
        return content_type_of(self.name).split("/", 1)[0]


def _utc(milliseconds: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(float(milliseconds) / 1000, UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _fraction(node: dict[str, Any]) -> float:
    try:
        value, maximum = float(node.get("value", 0)), float(node.get("max", 1))
    except (TypeError, ValueError):
        return 0.0
    return max(0.0, min(1.0, value / maximum)) if maximum > 0 else 0.0


def failure_message(url: str, data: dict[str, Any]) -> str:
    """`LoadImage (node 1) failed on http://...: cannot identify image file ... [PIL.UnidentifiedImageError]`."""
    message = str(data.get("exception_message") or "").strip() or "no message"
    kind = f" [{data['exception_type']}]" if data.get("exception_type") else ""
    return f"{data.get('node_type', '?')} (node {data.get('node_id', '?')}) failed on ComfyUI server {url}: {message}{kind}"


def collect_outputs(outputs: dict[str, Any], output_nodes: list[str] | None) -> tuple[list[dict], list[str]]:
    """The files and texts of a prompt's outputs: of the template's output nodes for a run,
    of every node otherwise (previews, type `temp`, only when nothing else was saved)."""
    files: list[dict] = []
    texts: list[str] = []
    for node_id, ui in outputs.items():
        if output_nodes and node_id not in output_nodes or not isinstance(ui, dict):
            continue
        for key in FILE_OUTPUT_KEYS:
            files += [item for item in ui.get(key) or [] if isinstance(item, dict) and item.get("filename")]
        texts += [str(t) for t in ui.get("text") or []]
    saved = [f for f in files if f.get("type", "output") != "temp"]
    return (saved or files), texts


def unique_name(name: str, used: set[str]) -> str:
    stem, suffix = PurePosixPath(name).stem, PurePosixPath(name).suffix
    candidate, n = name, 1
    while candidate in used:
        candidate = f"{stem}-{n}{suffix}"
        n += 1
    used.add(candidate)
    return candidate


class ServiceContext(Protocol):
    """What genstudio.background hands a service (not imported: background sits above comfy)."""

    db: Database
    settings: Settings
    stop: asyncio.Event


async def monitor_service(context: ServiceContext) -> None:
    """The background service: one follower per configured server (see ServerMonitor)."""
    urls = context.settings.comfyui_urls
    if not urls:
        await context.stop.wait()
        return
    storage = storage_from_settings(context.settings)
    settings = MonitorSettings.from_settings(context.settings)
    monitors = [ServerMonitor(url, context.db, storage, settings, context.stop) for url in urls]
    await asyncio.gather(*(m.run() for m in monitors))


