"""`/jobs/{type}/{id}`: one job in full, with its owner's controls.

A job the caller may not see is the same 404 page as a job that does not exist: row-level
security decides, and the page cannot tell the two apart either.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from genstudio.jobs.errors import JobNotFound
from genstudio.jobs.output_types import OUTPUT_TYPES
from genstudio.jobs.service import JobService
from genstudio.web.rendering import render
from genstudio.web.signin import PageClaims

router = APIRouter(include_in_schema=False)

SERVICES = {name: JobService(t) for name, t in OUTPUT_TYPES.items()}


async def visible_job(request: Request, claims: dict[str, Any], type: str, job_id: uuid.UUID) -> dict[str, Any] | None:
    """The job as the caller may see it, tagged with its type; None whether missing or not theirs to see."""
    if type not in SERVICES:
        return None
    async with request.app.state.db.as_user(claims) as conn:
        try:
            job = json.loads(await SERVICES[type].get(conn, job_id))
        except JobNotFound:
            return None
    return {"type": type, **job}


def not_found_page(request: Request, claims: dict[str, Any], what: str = "job") -> Response:
    return render(request, "not_found.html", claims, status_code=404, what=what)


@router.get("/jobs/{type}/{job_id}")
async def job_page(request: Request, claims: PageClaims, type: str, job_id: str) -> Response:
    try:
        parsed = uuid.UUID(job_id)
    except ValueError:
        return not_found_page(request, claims)
    job = await visible_job(request, claims, type, parsed)
    if job is None:
        return not_found_page(request, claims)
    return render(request, "job.html", claims, job=job, is_owner=job.get("user_id") == claims["sub"],
                  inputs=job_inputs(job), timings=job_timings(job))


def job_inputs(job: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, url) of every input file the job names."""
    labels = {"input_image_urls": "Image", "input_audio_urls": "Audio", "input_video_urls": "Video"}
    return [(label, url) for column, label in labels.items() for url in job.get(column) or []]


def job_timings(job: dict[str, Any]) -> list[tuple[str, str | None]]:
    seconds = job.get("processing_time_seconds")
    return [("Queued", job.get("created_at")), ("Started", job.get("started_at")),
            ("Finished", job.get("completed_at")),
            ("Processing time", f"{seconds} s" if seconds is not None else None)]
