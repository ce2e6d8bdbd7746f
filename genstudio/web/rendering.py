"""Rendering pages: the Jinja2 environment, its filters, and the context every page gets."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

from genstudio import __version__
from genstudio.api.session import SESSION_COOKIE, csrf_token
from genstudio.jobs.output_types import FINAL_STATUSES, OUTPUT_TYPES, STATUSES

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")

TYPE_LABELS = {"video": "Video", "image": "Image", "text": "Text"}


def age(stamp: str | datetime | None, now: datetime | None = None) -> str:
    """'just now', '5 min ago', '3 h ago', '2 days ago': how long ago a job was made."""
    if stamp is None:
        return ""
    when = datetime.fromisoformat(stamp) if isinstance(stamp, str) else stamp
    seconds = max(0, int(((now or datetime.now(timezone.utc)) - when).total_seconds()))
    for limit, unit, size in ((60, None, 1), (3600, "min", 60), (86400, "h", 3600), (10**12, "days", 86400)):
        if seconds < limit:
            return "just now" if unit is None else f"{seconds // size} {unit} ago"
    return ""


def when(stamp: str | None) -> str:
    """An ISO timestamp as a readable UTC time."""
    if not stamp:
        return ""
    return datetime.fromisoformat(stamp).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def output_urls(job: dict[str, Any]) -> list[str]:
    return [*(job.get("output_video_urls") or []), *(job.get("output_image_urls") or [])]


def file_name(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0] or url


templates.env.filters.update(age=age, when=when, file_name=file_name,
                             pretty_json=lambda v: json.dumps(v, indent=2, ensure_ascii=False, sort_keys=True))
templates.env.globals.update(output_urls=output_urls, TYPE_LABELS=TYPE_LABELS, STATUSES=STATUSES,
                             FINAL_STATUSES=FINAL_STATUSES, OUTPUT_TYPES=OUTPUT_TYPES, version=__version__)


def render(request: Request, name: str, claims: dict[str, Any] | None = None, status_code: int = 200,
           **context: Any) -> Response:
    session = request.cookies.get(SESSION_COOKIE)
    page = {
        "user": claims,
        # The CSRF token of this session, for the page's scripts and forms.
        "csrf": csrf_token(request.app.state.csrf_key, session) if claims and session else "",
        **context,
    }
    response = templates.TemplateResponse(request, name, page, status_code=status_code)
    response.headers["Cache-Control"] = "no-store"
    return response
