"""The web UI: server-rendered pages (Jinja2), a little plain JavaScript, every asset served here."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from genstudio.web import feed, jobs, run, signin

STATIC_DIR = Path(__file__).parent / "static"


def install_web(app: FastAPI) -> None:
    """Mount the pages and their static assets on the API's app."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    signin.install_handlers(app)
    for module in (signin, feed, run, jobs):
        app.include_router(module.router)
