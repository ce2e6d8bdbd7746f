"""`/api/{type}-jobs`: one router factory, used for video, image and text jobs alike.

Handlers are thin: they open the caller's transaction (row-level security applies inside it),
ask the `JobService`, and send the JSON PostgreSQL rendered, wrapped in the guide's envelope.
A request that is one statement runs it `per_statement_as_user`: its own transaction, one
round trip. (`create` and `delete` may follow a statement that wrote nothing with a look-up
that explains why; under READ COMMITTED that sees what it would see inside one transaction.)
"""

# No `from __future__ import annotations`: FastAPI must see the generated payload classes as
# real annotations, and they are local to the factory.

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response

from genstudio.api.caller import caller_claims
from genstudio.db.pool import Database
from genstudio.jobs.cursor import Cursor
from genstudio.jobs.models import MODELS, Status
from genstudio.jobs.output_types import OUTPUT_TYPES, OutputType
from genstudio.jobs.service import ESTIMATED_COUNT_CAP, CountMethod, JobService, PageQuery

# Bounds of the page parameters, shared with the plain-request path (genstudio.api.hot_reads).
MAX_LIMIT = 100
MAX_OFFSET = 10_000_000
MAX_CURSOR = 500
MAX_FILTER = 200
MAX_PREFER = 500

Claims = Annotated[dict[str, Any], Depends(caller_claims)]
JobId = Annotated[uuid.UUID, Path(description="The job's id.")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"Page size, 1–{MAX_LIMIT}.")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]
Scope = Annotated[Literal["mine", "all"], Query(description="`mine`: your jobs; `all`: every job you may see.")]
CursorParam = Annotated[str | None, Query(max_length=MAX_CURSOR, description="`next_cursor` of the previous page.")]
WorkflowFilter = Annotated[str | None, Query(max_length=MAX_FILTER)]
StatusFilter = Annotated[Status | None, Query()]
Prefer = Annotated[str | None, Header(
    max_length=MAX_PREFER,
    description="`count=exact` counts every matching job for `total_count`; `count=planned` gives the "
                "planner's estimate; `count=estimated` (the default) counts exactly up to "
                f"{ESTIMATED_COUNT_CAP:,} and estimates beyond. As PostgREST's `Prefer: count=...`.")]
COUNT_METHODS: tuple[CountMethod, ...] = ("exact", "planned", "estimated")

# One service per output type, used by the routes and the plain-request path alike.
SERVICES: dict[str, JobService] = {name: JobService(t) for name, t in OUTPUT_TYPES.items()}


def preferred_count(prefer: str | None) -> CountMethod | None:
    """The `count=` preference of a `Prefer` header (RFC 7240), if it names a known method;
    other preferences are ignored, as the RFC asks."""
    for preference in (prefer or "").split(","):
        name, _, value = preference.strip().partition("=")
        if name.strip().lower() == "count" and value.strip().lower() in COUNT_METHODS:
            return value.strip().lower()  # type: ignore[return-value]
    return None


def json_response(body: bytes, status_code: int = 200) -> Response:
    return Response(content=body, status_code=status_code, media_type="application/json")


def envelope(key: str, job_json: str) -> bytes:
    """`{"success": true, "<key>": <job>}` around JSON that PostgreSQL already rendered."""
    return b'{"success":true,"' + key.encode() + b'":' + job_json.encode() + b"}"


def decode_cursor(cursor: str | None) -> Cursor | None:
    return Cursor.decode(cursor) if cursor else None


# What the routes answer, given their parsed parameters: the FastAPI routes below and the
# plain-request path (genstudio.api.hot_reads) both answer through these.

async def list_page(db: Database, service: JobService, claims: dict[str, Any], query: PageQuery,
                    count: CountMethod | None) -> Response:
    body = await service.list(db.per_statement_as_user(claims, page_read=True), query)
    response = json_response(body.encode())
    if count:
        response.headers["Preference-Applied"] = f"count={count}"
    return response


async def one_job(db: Database, service: JobService, claims: dict[str, Any], job_id: uuid.UUID) -> Response:
    job = await service.get(db.per_statement_as_user(claims), job_id)
    return json_response(envelope(service.type.item_key, job))


def page_query(limit: int, offset: int, cursor: str | None, workflow_name: str | None, status: str | None,
               scope: str, count: CountMethod | None) -> PageQuery:
    return PageQuery(limit, offset, decode_cursor(cursor), workflow_name, status, scope,  # type: ignore[arg-type]
                     count or "estimated")


def job_router(t: OutputType) -> APIRouter:
    service = SERVICES[t.name]
    models = MODELS[t.name]
    one = {"model": models.response}
    router = APIRouter(prefix=f"/api/{t.path}", tags=[f"{t.name} jobs"])

    @router.post("", status_code=201, summary=f"Record {t.with_article} job",
                 responses={201: one, 200: {**one, "description": "This comfy_job_id was already recorded by you"},
                            409: {"description": "This comfy_job_id belongs to another user's job, or you "
                                                   "recorded it with other values"}})
    async def create(payload: models.create, request: Request, claims: Claims) -> Response:
        job, created = await service.create(request.app.state.db.per_statement_as_user(claims), payload)
        return json_response(envelope(t.item_key, job), 201 if created else 200)

    @router.get("", summary=f"List {t.name} jobs, newest first",
                responses={200: {"model": models.list_response}})
    async def list_jobs(request: Request, claims: Claims, limit: Limit = 50, offset: Offset = 0,
                        cursor: CursorParam = None, workflow_name: WorkflowFilter = None,
                        status: StatusFilter = None, scope: Scope = "mine", prefer: Prefer = None) -> Response:
        count = preferred_count(prefer)
        query = page_query(limit, offset, cursor, workflow_name, status, scope, count)
        return await list_page(request.app.state.db, service, claims, query, count)

    @router.get("/by-comfy-id/{comfy_job_id}", summary=f"{t.with_article.capitalize()} job by its ComfyUI prompt id",
                responses={200: one})
    async def get_by_comfy_id(request: Request, claims: Claims,
                              comfy_job_id: Annotated[str, Path(max_length=200)]) -> Response:
        job = await service.get_by_comfy_id(request.app.state.db.per_statement_as_user(claims), comfy_job_id)
        return json_response(envelope(t.item_key, job))

    @router.get("/{job_id}", summary=f"One {t.name} job", responses={200: one})
    async def get(request: Request, claims: Claims, job_id: JobId) -> Response:
        return await one_job(request.app.state.db, service, claims, job_id)

    @router.put("/{job_id}", summary=f"Report {t.with_article} job's progress, or change its visibility",
                responses={200: one, 403: {"description": "Not your job"}, 409: {"description": "Not allowed now"}})
    async def update(payload: models.update, request: Request, claims: Claims, job_id: JobId) -> Response:
        async with request.app.state.db.as_user(claims) as conn:
            job = await service.update(conn, job_id, payload)
        return json_response(envelope(t.item_key, job))

    @router.put("/{job_id}/complete", summary=f"Report {t.with_article} job's final state",
                responses={200: one, 403: {"description": "Not your job"},
                           409: {"description": "Already in another final state"}})
    async def complete(payload: models.complete, request: Request, claims: Claims, job_id: JobId) -> Response:
        async with request.app.state.db.as_user(claims) as conn:
            job = await service.complete(conn, job_id, payload)
        return json_response(envelope(t.item_key, job))

    @router.post("/{job_id}/cancel", summary=f"Cancel {t.with_article} job",
                 responses={200: one, 403: {"description": "Not your job"}, 409: {"description": "Already ended"}})
    async def cancel(request: Request, claims: Claims, job_id: JobId) -> Response:
        async with request.app.state.db.as_user(claims) as conn:
            job = await service.cancel(conn, job_id)
        return json_response(envelope(t.item_key, job))

    @router.delete("/{job_id}", summary=f"Delete {t.with_article} job",
                   responses={200: {"description": "Deleted"}, 403: {"description": "Not your job"}})
    async def delete(request: Request, claims: Claims, job_id: JobId) -> Response:
        await service.delete(request.app.state.db.per_statement_as_user(claims), job_id)
        return json_response(b'{"success":true,"deleted":"' + str(job_id).encode() + b'"}')

    return router
