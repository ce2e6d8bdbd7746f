"""JobService: the rules for recording and tracking jobs, one class for all output types.

Every method runs on the caller's transaction (`Database.as_user`), so row-level security
decides what exists: a job the caller may not see is simply not found. Statements come from
`queries/jobs.sql`, with table and column names filled in from the `OutputType`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from pydantic import BaseModel

from genstudio.db.queries import load_queries
from genstudio.jobs.cursor import Cursor
from genstudio.jobs.errors import (
    ComfyJobIdTaken,
    InvalidRequest,
    InvalidTransition,
    JobNotFound,
    JobRecordedDifferently,
    NotJobOwner,
)
from genstudio.jobs.models import create_columns, result_columns, shown_columns
from genstudio.jobs.output_types import FINAL_STATUSES, OutputType

QUERIES = load_queries("jobs")

Scope = Literal["mine", "all"]

# The one place that says how a job's status may move. Staying in a non-final status is
# allowed (progress updates); a final status is left by nothing, and repeating the identical
# final report is answered by the caller of `check_transition` as a no-op before it gets here.
TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"pending", "processing", "completed", "failed", "cancelled"}),
    "processing": frozenset({"processing", "completed", "failed", "cancelled"}),
    "completed": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}

_JSON_COLUMNS = frozenset({"parameters", "output_data"})


def check_transition(current: str, wanted: str) -> None:
    if wanted not in TRANSITIONS[current]:
        if current in FINAL_STATUSES:
            raise InvalidTransition(f"the job is already {current}; it cannot move from {current} to {wanted}")
        raise InvalidTransition(f"a job cannot move from {current} to {wanted}")


def json_object(t: OutputType, alias: str = "j", tag: str | None = None) -> sql.Composable:
    """`json_build_object(...)` of the columns a caller may see, optionally tagged with the type."""
    pairs = [sql.SQL("'type', {}").format(sql.Literal(tag))] if tag else []
    pairs += [sql.SQL("{}, {}.{}").format(sql.Literal(c), sql.Identifier(alias), sql.Identifier(c))
              for c in shown_columns(t)]
    return sql.SQL("json_build_object({})").format(sql.SQL(", ").join(pairs))


# A caller's jobs, and (for `all`) the shared and ownerless jobs too: the visibility streams
# of queries/jobs.sql. Row-level security still decides every row; the streams only give
# each part of what a caller may see its own index in feed order.
STREAMS: dict[Scope, tuple[str, ...]] = {"mine": ("stream_mine",), "all": ("stream_mine", "stream_public")}

# `Prefer: count=...`, as PostgREST spells it. `estimated` (the default) counts exactly up to
# ESTIMATED_COUNT_CAP matching rows and gives the planner's estimate beyond: the guide's
# `total_count` stays, without a full count per page of a large table.
CountMethod = Literal["exact", "planned", "estimated"]
ESTIMATED_COUNT_CAP = 1000


def filter_clause(*, workflow: bool, status: bool, cursor: bool) -> sql.Composable:
    """The filters of a list or feed page, from the `filter_*` fragments of jobs.sql."""
    parts = [QUERIES[name] for name, wanted in (("filter_workflow", workflow), ("filter_status", status),
                                                 ("filter_before_cursor", cursor)) if wanted]
    return sql.SQL(" AND ").join(sql.SQL(p) for p in parts or [QUERIES["filter_none"]])


def stream(name: str) -> sql.Composable:
    return sql.SQL(QUERIES[name])


def next_cursor() -> sql.Composable:
    """The `next_cursor` of a list or feed page, rendered by the statement itself."""
    return sql.SQL(QUERIES["next_cursor"])


@dataclass(frozen=True)
class PageQuery:
    limit: int = 50
    offset: int = 0
    cursor: Cursor | None = None
    workflow_name: str | None = None
    status: str | None = None
    scope: Scope = "mine"
    count: CountMethod = "estimated"

    def params(self) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "offset": self.offset,
            "workflow_name": self.workflow_name,
            "status": self.status,
            "cursor_created_at": self.cursor.created_at if self.cursor else None,
            "cursor_id": self.cursor.id if self.cursor else None,
            "count_cap": None if self.count == "exact" else ESTIMATED_COUNT_CAP,
        }

    def filter_key(self) -> tuple[Scope, bool, bool, bool]:
        return (self.scope, self.workflow_name is not None, self.status is not None, self.cursor is not None)


def with_total_count(body: str, total: int) -> str:
    """A list page's body (as the `list` statement rendered it) with another `total_count`.
    The top-level key follows the items, so its last occurrence is the one, whatever the
    jobs' own values hold."""
    head, key, rest = body.rpartition(',"total_count":')
    return head + key + str(total) + rest[rest.index(',"next_cursor":'):]


def _param(column: str, value: Any) -> Any:
    return Jsonb(value) if column in _JSON_COLUMNS and value is not None else value


class JobService:
    def __init__(self, output_type: OutputType):
        self.type = output_type
        self._create_columns = ("workflow_name", "comfy_url", "comfy_job_id", "parameters", "visibility",
                                *create_columns(output_type))
        self._result_columns = result_columns(output_type)
        fields = {
            "table": sql.Identifier("public", output_type.table),
            "job_json": json_object(output_type),
            "create_columns": sql.SQL(", ").join(map(sql.Identifier, self._create_columns)),
            "create_values": sql.SQL(", ").join(sql.Placeholder(c) for c in self._create_columns),
            "result_assignments": sql.SQL(", ").join(
                sql.SQL("{c} = coalesce({p}, j.{c})").format(c=sql.Identifier(c), p=sql.Placeholder(c))
                for c in self._result_columns
            ),
        }
        self._fields = fields
        self._sql = {
            name: sql.SQL(QUERIES[name]).format(**fields).as_string()
            for name in ("insert", "get", "get_by_comfy_id", "get_own_by_comfy_id", "lock_own", "is_visible",
                         "update_progress", "finish", "delete", "back_to_dispatch")
        }

    @cache
    def _list_sql(self, key: tuple[Scope, bool, bool, bool], counted: bool) -> str:
        scope, workflow, status, cursor = key
        table = self._fields["table"]
        filters = filter_clause(workflow=workflow, status=status, cursor=cursor)
        count_filters = filter_clause(workflow=workflow, status=status, cursor=False)
        streams = sql.SQL("\nUNION\n").join(
            sql.SQL(QUERIES["list_stream"]).format(table=table, stream=stream(s), filters=filters)
            for s in STREAMS[scope])
        total_count = sql.SQL("NULL::bigint")
        if counted:
            count_streams = sql.SQL("\nUNION\n").join(
                sql.SQL(QUERIES["count_stream"]).format(table=table, stream=stream(s), filters=count_filters)
                for s in STREAMS[scope])
            total_count = sql.SQL(QUERIES["count_matching"]).format(count_streams=count_streams)
        return sql.SQL(QUERIES["list"]).format(
            streams=streams, total_count=total_count, next_cursor=next_cursor(),
            items_key=sql.Literal(self.type.list_key), **self._fields).as_string()

    @cache
    def _plan_count_sql(self, key: tuple[Scope, bool, bool, bool]) -> str:
        scope, workflow, status, _ = key
        return sql.SQL(QUERIES["plan_count"]).format(
            table=self._fields["table"],
            scope=stream("stream_mine" if scope == "mine" else "filter_none"),
            filters=filter_clause(workflow=workflow, status=status, cursor=False),
        ).as_string()

    # The statements with their parameters, as the methods below run them (benchmarks replay
    # them under pgbench).
    def statement(self, name: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return self._sql[name], params

    def list_statement(self, query: PageQuery) -> tuple[str, dict[str, Any]]:
        return self._list_sql(query.filter_key(), query.count != "planned"), query.params()

    def plan_count_statement(self, query: PageQuery) -> tuple[str, dict[str, Any]]:
        """The EXPLAIN that gives the planner's estimate, when that is the page's count."""
        return self._plan_count_sql(query.filter_key()), query.params()

    def insert_statement(self, payload: BaseModel) -> tuple[str, dict[str, Any]]:
        values = payload.model_dump()
        return self._sql["insert"], {c: _param(c, values.get(c)) for c in self._create_columns}

    def finish_statement(self, job_id: Any, status: str, results: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        params = {"id": job_id, "status": status, "started_at": results.get("started_at")}
        params.update({c: _param(c, results.get(c)) for c in self._result_columns})
        return self._sql["finish"], params

    async def _one(self, conn: psycopg.AsyncConnection, name: str, params: dict[str, Any]) -> dict | None:
        cur = await conn.execute(self._sql[name], params)
        return await cur.fetchone()

    async def _run(self, conn: psycopg.AsyncConnection, statement: tuple[str, dict[str, Any]]) -> dict | None:
        cur = await conn.execute(*statement)
        return await cur.fetchone()

    def _not_found(self, job_id: Any) -> JobNotFound:
        return JobNotFound(f"no {self.type.name} job {job_id}")

    async def create(self, conn: psycopg.AsyncConnection, payload: BaseModel) -> tuple[str, bool]:
        """Record a job for the caller; returns its JSON and whether it is new.

        Recording a `comfy_job_id` the caller already recorded with the same values returns
        that job unchanged, so a client may retry a create whose answer it lost; different
        values are a conflict, named field by field."""
        statement = self.insert_statement(payload)
        row = await self._run(conn, statement)
        if row is not None:
            return row["job"], True
        comfy_job_id = payload.comfy_job_id
        own = await self._one(conn, "get_own_by_comfy_id", {"comfy_job_id": comfy_job_id})
        if own is None:
            raise ComfyJobIdTaken(f"comfy_job_id {comfy_job_id!r} is already recorded by another user's job")
        # Only what the re-post states: a field left out is not a different value.
        stated = tuple(c for c in self._create_columns if c in payload.model_fields_set and c != "comfy_job_id")
        differing = await self._differing(conn, stated, statement[1]) if stated else []
        if differing:
            raise JobRecordedDifferently(
                f"comfy_job_id {comfy_job_id!r} is already recorded for your {self.type.name} job with other values "
                f"for {', '.join(differing)}; re-post the same values to get that job, or use a new comfy_job_id "
                "for a new one")
        return own["job"], False

    async def _differing(self, conn: psycopg.AsyncConnection, columns: tuple[str, ...], params: dict) -> list[str]:
        differences = sql.SQL(", ").join(
            sql.SQL("CASE WHEN j.{c} IS DISTINCT FROM {p} THEN {name} END").format(
                c=sql.Identifier(c), p=sql.Placeholder(c), name=sql.Literal(c))
            for c in columns)
        query = sql.SQL(QUERIES["differing_create_values"]).format(differences=differences, **self._fields)
        row = await (await conn.execute(query, params)).fetchone()
        return list(row["differing"]) if row else []

    async def get(self, conn: psycopg.AsyncConnection, job_id: uuid.UUID) -> str:
        row = await self._one(conn, "get", {"id": job_id})
        if row is None:
            raise self._not_found(job_id)
        return row["job"]

    async def get_by_comfy_id(self, conn: psycopg.AsyncConnection, comfy_job_id: str) -> str:
        row = await self._one(conn, "get_by_comfy_id", {"comfy_job_id": comfy_job_id})
        if row is None:
            raise JobNotFound(f"no {self.type.name} job with comfy_job_id {comfy_job_id!r}")
        return row["job"]

    async def list(self, conn: psycopg.AsyncConnection, query: PageQuery) -> str:
        """One page as the response body, `{"success": true, "<type>_jobs": [...],
        "total_count": ..., "next_cursor": ...}`, rendered by PostgreSQL."""
        row = await self._run(conn, self.list_statement(query))
        body, counted = row["body"], row["total_count"]
        if query.count == "planned" or (query.count == "estimated" and counted > ESTIMATED_COUNT_CAP):
            plan = await self._run(conn, self.plan_count_statement(query))
            planned = int(plan["QUERY PLAN"][0]["Plan"]["Plan Rows"])
            # `estimated` knows there are more than the cap, whatever the planner guesses.
            body = with_total_count(body, planned if query.count == "planned" else max(planned, ESTIMATED_COUNT_CAP + 1))
        return body

    async def _lock_own(self, conn: psycopg.AsyncConnection, job_id: uuid.UUID) -> dict[str, Any]:
        row = await self._one(conn, "lock_own", {"id": job_id})
        if row is None:
            await self._raise_missing(conn, job_id)
        return row

    async def _raise_missing(self, conn: psycopg.AsyncConnection, job_id: uuid.UUID) -> None:
        """Why the caller cannot change a job: it is someone else's that they may see, or
        (for them) it does not exist."""
        visible = await self._one(conn, "is_visible", {"id": job_id})
        if visible["visible"]:
            raise NotJobOwner(f"{self.type.name} job {job_id} belongs to someone else; only its owner may change it")
        raise self._not_found(job_id)

    async def update(self, conn: psycopg.AsyncConnection, job_id: uuid.UUID, payload: BaseModel) -> str:
        changes = {k: v for k, v in payload.model_dump(exclude_unset=True).items()
                   if v is not None or k in ("progress", "error_message")}
        if not changes:
            raise InvalidRequest("nothing to update: send status, progress, error_message or visibility")
        row = await self._lock_own(conn, job_id)
        current = row["status"]
        if current in FINAL_STATUSES and set(changes) - {"visibility"}:
            raise InvalidTransition(f"the job is already {current}; only its visibility can still change")
        wanted = changes.get("status", current)
        if "status" in changes:
            check_transition(current, wanted)
        params = {"id": job_id, "status": wanted}
        for column in ("progress", "error_message", "visibility"):
            params[column] = changes.get(column, row[column])
        return (await self._one(conn, "update_progress", params))["job"]

    async def complete(self, conn: psycopg.AsyncConnection, job_id: uuid.UUID, payload: BaseModel) -> str:
        body_id = getattr(payload, "job_id", None)
        if body_id is not None and body_id != job_id:
            raise InvalidRequest(f"job_id in the body ({body_id}) is not the job in the URL ({job_id})")
        results = payload.model_dump(exclude_unset=True, exclude={"job_id", "status"})
        row = await self._lock_own(conn, job_id)
        if row["status"] == payload.status:
            differing = sorted(k for k, v in results.items() if row[k] != v)
            if not differing:
                return row["job"]
            raise InvalidTransition(
                f"the job is already {payload.status} with other results ({', '.join(differing)} differ); "
                "a repeated completion must be identical"
            )
        check_transition(row["status"], payload.status)
        return await self._finish(conn, job_id, payload.status, results)

    async def cancel(self, conn: psycopg.AsyncConnection, job_id: uuid.UUID) -> str:
        row = await self._lock_own(conn, job_id)
        if row["status"] == "cancelled":
            return row["job"]
        check_transition(row["status"], "cancelled")
        job = await self._finish(conn, job_id, "cancelled", {})
        if row["comfy_job_id"]:
            # Tells the ComfyUI monitor (at commit) to take the prompt off its server.
            await conn.execute(QUERIES["notify_cancelled"], {"payload": f"{self.type.name}:{job_id}"})
        return job

    async def advance(self, conn: psycopg.AsyncConnection, job_id: uuid.UUID, status: str, *,
                      progress: float | None = None, results: dict[str, Any] | None = None) -> str | None:
        """A move made by genstudio itself (the ComfyUI monitor), on a `service_role`
        transaction, under the same transition table as the API's moves.

        Returns the job's JSON, or None when the job has already ended: a late or repeated
        report (ComfyUI saying twice that a prompt finished, a cancel that won the race)
        changes nothing, so each outcome is recorded exactly once."""
        row = await self._one(conn, "lock_own", {"id": job_id})  # service_role: any job
        if row is None or row["status"] in FINAL_STATUSES:
            return None
        check_transition(row["status"], status)
        if status in FINAL_STATUSES:
            return await self._finish(conn, job_id, status, results or {})
        params = {"id": job_id, "status": status, "error_message": row["error_message"],
                  "visibility": row["visibility"], "progress": row["progress"] if progress is None else progress}
        return (await self._one(conn, "update_progress", params))["job"]

    async def back_to_dispatch(self, conn: psycopg.AsyncConnection, job_id: uuid.UUID,
                               dispatch: dict[str, Any]) -> str | None:
        """A pending run whose server forgot it: no server any more, and why (service side)."""
        row = await self._one(conn, "back_to_dispatch", {"id": job_id, "dispatch": Jsonb(dispatch)})
        return row["job"] if row else None

    async def _finish(self, conn: psycopg.AsyncConnection, job_id: uuid.UUID, status: str,
                      results: dict[str, Any]) -> str:
        return (await self._run(conn, self.finish_statement(job_id, status, results)))["job"]

    async def delete(self, conn: psycopg.AsyncConnection, job_id: uuid.UUID) -> None:
        if await self._one(conn, "delete", {"id": job_id}) is None:
            await self._raise_missing(conn, job_id)

