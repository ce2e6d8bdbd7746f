"""`/api/feed`: the newest jobs of every type in one stream."""

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from genstudio.api.jobs import (Claims, CursorParam, Limit, Scope, StatusFilter, WorkflowFilter, decode_cursor,
                                json_response)
from genstudio.db.pool import Database
from genstudio.jobs.errors import InvalidRequest
from genstudio.jobs.feed import FeedQuery, read_feed
from genstudio.jobs.models import FeedResponse
from genstudio.jobs.output_types import OUTPUT_TYPES

router = APIRouter(tags=["feed"])
MAX_TYPES = 100


def parse_types(types: str | None) -> tuple[str, ...]:
    if types is None:
        return tuple(OUTPUT_TYPES)
    names = tuple(dict.fromkeys(n.strip() for n in types.split(",") if n.strip()))
    unknown = [n for n in names if n not in OUTPUT_TYPES]
    if unknown or not names:
        raise InvalidRequest(f"query parameter 'types': unknown type {', '.join(map(repr, unknown)) or '(none)'}; "
                             f"use a comma-separated list of {', '.join(OUTPUT_TYPES)}")
    return names


def feed_query(limit: int, cursor: str | None, scope: str, types: str | None, workflow_name: str | None,
               status: str | None) -> FeedQuery:
    return FeedQuery(limit=limit, cursor=decode_cursor(cursor), workflow_name=workflow_name, status=status,
                     scope=scope, types=parse_types(types))  # type: ignore[arg-type]


async def feed_page(db: Database, claims: dict[str, Any], query: FeedQuery) -> Response:
    """What `GET /api/feed` answers (also on the plain-request path, genstudio.api.hot_reads)."""
    return json_response((await read_feed(db.per_statement_as_user(claims, page_read=True), query)).encode())


@router.get("/api/feed", summary="Jobs of every type, newest first", responses={200: {"model": FeedResponse}})
async def feed(request: Request, claims: Claims, limit: Limit = 50, cursor: CursorParam = None,
               scope: Scope = "mine",
               types: Annotated[str | None, Query(max_length=MAX_TYPES, description="e.g. `video,image`")] = None,
               workflow_name: WorkflowFilter = None, status: StatusFilter = None) -> Response:
    return await feed_page(request.app.state.db, claims, feed_query(limit, cursor, scope, types, workflow_name, status))
