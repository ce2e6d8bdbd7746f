"""Server-Sent Events: `/api/feed/events` and `/api/{type}-jobs/{id}/events`.

Why sse-starlette rather than a plain StreamingResponse: it sends the heartbeat comments on
its own timer while the stream waits for events, notices a client that went away (and then
closes our generator, which unsubscribes it), and ends open streams when uvicorn shuts down,
where a plain StreamingResponse would keep the server waiting for them.
"""

# No `from __future__ import annotations`: FastAPI reads the annotations.

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from sse_starlette import EventSourceResponse

from genstudio.api.feed import parse_types
from genstudio.api.jobs import Claims, JobId, Scope
from genstudio.events.log import EventFilter
from genstudio.events.stream import StreamRequest, stream_events
from genstudio.jobs.errors import InvalidRequest
from genstudio.jobs.output_types import OutputType
from genstudio.jobs.service import JobService

STREAM_RESPONSE = {200: {"description": "A `text/event-stream`: `id:` the event id, `event:` its kind, "
                                        "`data:` the event and the job as the API returns it.",
                         "content": {"text/event-stream": {}}}}

LastEventIdQuery = Annotated[int | None, Query(ge=0, description="Resume after this event id (for `EventSource`, "
                                                                 "which cannot set the Last-Event-ID header on a first connection).")]
LastEventIdHeader = Annotated[str | None, Header(alias="Last-Event-ID", max_length=30)]

router = APIRouter(tags=["events"], responses=STREAM_RESPONSE)


def resume_after(header: str | None, query: int | None) -> int | None:
    """The id to resume after: the `Last-Event-ID` header (sent by a reconnecting
    EventSource) wins over the query parameter (set by whoever opened the stream)."""
    if header is not None and header.strip():
        if not header.strip().isdigit():
            raise InvalidRequest("header 'Last-Event-ID' must be an event id (a non-negative integer)")
        return int(header.strip())
    return query


class EventStreamResponse(EventSourceResponse):
    """sse-starlette's response without a cancel scope around every send when no send timeout
    is set (ours is not: a stalled reader is cut off by the hub's bounded queue instead). With
    a thousand subscribers that scope alone took a tenth of the server's CPU (py-spy)."""

    async def _send_with_timeout(self, send, message) -> None:
        if self.send_timeout is None:
            await send(message)
        else:
            await super()._send_with_timeout(send, message)


def event_source(request: Request, claims: dict, stream: StreamRequest) -> EventSourceResponse:
    app = request.app
    settings = app.state.settings
    events = stream_events(app.state.db, app.state.event_hub, claims, stream, max_pending=settings.sse_max_pending)
    return EventStreamResponse(events, ping=settings.sse_heartbeat_seconds, sep="\n",
                               headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.get("/api/feed/events", summary="Live events of every job you may see (Server-Sent Events)")
async def feed_events(request: Request, claims: Claims, scope: Scope = "mine",
                      types: Annotated[str | None, Query(max_length=100, description="e.g. `video,image`")] = None,
                      last_event_id: LastEventIdQuery = None,
                      last_event_id_header: LastEventIdHeader = None) -> EventSourceResponse:
    wanted = EventFilter(mine=scope == "mine", types=parse_types(types))
    return event_source(request, claims, StreamRequest(wanted, resume_after(last_event_id_header, last_event_id)))


def job_events_router(t: OutputType) -> APIRouter:
    service = JobService(t)
    job_router = APIRouter(prefix=f"/api/{t.path}", tags=["events"], responses=STREAM_RESPONSE)

    @job_router.get("/{job_id}/events", summary=f"Events of one {t.name} job (Server-Sent Events)",
                    description="Without a Last-Event-ID, starts with every event of the job the log still holds.")
    async def job_events(request: Request, claims: Claims, job_id: JobId, last_event_id: LastEventIdQuery = None,
                         last_event_id_header: LastEventIdHeader = None) -> EventSourceResponse:
        async with request.app.state.db.as_user(claims) as conn:
            await service.get(conn, job_id)  # 404 unless the caller may see the job
        wanted = EventFilter(types=(t.name,), job=(t.name, job_id))
        after = resume_after(last_event_id_header, last_event_id)
        return event_source(request, claims, StreamRequest(wanted, after, from_start=True))

    return job_router
