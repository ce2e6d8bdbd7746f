"""`/`: the unified feed, and the HTML fragments its script asks for (more cards, one card).

Cards are rendered in one place, `templates/_card.html`, for the first page, for infinite
scroll and for live updates alike; the script only decides where a card goes.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from genstudio.jobs.cursor import Cursor
from genstudio.jobs.errors import InvalidCursor
from genstudio.jobs.feed import FeedQuery, read_feed
from genstudio.jobs.output_types import OUTPUT_TYPES, STATUSES
from genstudio.web.jobs import visible_job
from genstudio.web.rendering import render
from genstudio.web.signin import PageClaims
from genstudio.web.workflows import workflow_catalog

router = APIRouter(include_in_schema=False)

SCOPE_COOKIE = "genstudio_scope"
PAGE_SIZE = 24
ONE_YEAR = 365 * 24 * 3600


@dataclass(frozen=True)
class FeedFilters:
    type: str = "all"  # all | video | image | text
    workflow: str = ""
    status: str = ""
    scope: Literal["mine", "all"] = "mine"

    @classmethod
    def from_request(cls, request: Request, type: str | None, workflow: str | None, status: str | None,
                     scope: str | None) -> FeedFilters:
        # Show Mine / Show All is remembered in a cookie; an explicit `scope` wins and is remembered.
        remembered = request.cookies.get(SCOPE_COOKIE)
        chosen = scope if scope in ("mine", "all") else remembered if remembered in ("mine", "all") else "mine"
        return cls(type=type if type in OUTPUT_TYPES else "all",
                   workflow=(workflow or "").strip()[:200],
                   status=status if status in STATUSES else "",
                   scope=chosen)

    def query(self, cursor: Cursor | None) -> FeedQuery:
        return FeedQuery(limit=PAGE_SIZE, cursor=cursor, workflow_name=self.workflow or None,
                         status=self.status or None, scope=self.scope,
                         types=(self.type,) if self.type != "all" else tuple(OUTPUT_TYPES))

    def params(self, **overrides: str) -> dict[str, str]:
        values = {"type": self.type, "workflow": self.workflow, "status": self.status, "scope": self.scope,
                  **overrides}
        return {k: v for k, v in values.items() if v and not (k == "type" and v == "all")}


TypeParam = Annotated[str | None, Query(max_length=20)]
TextParam = Annotated[str | None, Query(max_length=200)]
CursorParam = Annotated[str | None, Query(max_length=500)]


def _cursor(text: str | None) -> Cursor | None:
    """A cursor from the query string; one this server did not issue starts from the top."""
    try:
        return Cursor.decode(text) if text else None
    except InvalidCursor:
        return None


async def _page(request: Request, claims: dict[str, Any], filters: FeedFilters,
                cursor: Cursor | None) -> tuple[list[dict[str, Any]], str | None]:
    body = await read_feed(request.app.state.db.per_statement_as_user(claims, page_read=True), filters.query(cursor))
    page = json.loads(body)
    return page["items"], page["next_cursor"]


@router.get("/")
async def feed_page(request: Request, claims: PageClaims, type: TypeParam = None, workflow: TextParam = None,
                    status: TextParam = None, scope: TextParam = None, cursor: CursorParam = None) -> Response:
    """The feed; `cursor` (the "Older jobs" link, for browsers without scripts) starts after it."""
    filters = FeedFilters.from_request(request, type, workflow, status, scope)
    jobs, next_cursor = await _page(request, claims, filters, _cursor(cursor))
    response = render(request, "feed.html", claims, filters=filters, jobs=jobs, next_cursor=next_cursor,
                      workflows=workflow_catalog(request))
    response.set_cookie(SCOPE_COOKIE, filters.scope, max_age=ONE_YEAR, path="/", samesite="lax",
                        httponly=False)
    return response


@router.get("/feed/cards")
async def more_cards(request: Request, claims: PageClaims, cursor: CursorParam = None,
                     type: TypeParam = None, workflow: TextParam = None, status: TextParam = None,
                     scope: TextParam = None) -> Response:
    """The page of cards after `cursor` (infinite scroll), or the first page (catching up)."""
    filters = FeedFilters.from_request(request, type, workflow, status, scope)
    jobs, next_cursor = await _page(request, claims, filters, _cursor(cursor))
    return render(request, "_cards.html", claims, jobs=jobs, next_cursor=next_cursor, filters=filters)


@router.get("/feed/card/{type}/{job_id}")
async def one_card(request: Request, claims: PageClaims, type: str, job_id: uuid.UUID) -> Response:
    """One job's card as it is now, for live updates; 404 when the caller may not (or no longer) see it."""
    job = await visible_job(request, claims, type, job_id)
    if job is None:
        return Response(status_code=404)
    return render(request, "_card.html", claims, job=job)
