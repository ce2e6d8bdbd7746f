"""The workflow templates the pages offer: the navigation, the feed's workflow filter, `/run`."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from genstudio.comfy.templates import TemplateSet, templates_from_settings


def loaded_templates(request: Request) -> TemplateSet:
    """The app's templates: the very set the runs API uses (`app.state.templates`), loaded once."""
    state = request.app.state
    templates = getattr(state, "templates", None)
    if templates is None:
        templates = state.templates = templates_from_settings(state.settings)
    return templates


def workflow_catalog(request: Request) -> list[dict[str, Any]]:
    """Every template as `GET /api/workflows` describes it (name, display_name, output_type, schema…)."""
    return sorted((t.describe() for t in loaded_templates(request)), key=lambda w: w["display_name"].lower())
