"""`/run` and `/run/{workflow}`: a page per workflow template, its form generated from the template."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from genstudio.web.forms import form_fields
from genstudio.web.jobs import not_found_page
from genstudio.web.rendering import render
from genstudio.web.signin import PageClaims
from genstudio.web.workflows import workflow_catalog

router = APIRouter(include_in_schema=False)


@router.get("/run")
async def run_index(request: Request, claims: PageClaims) -> Response:
    return render(request, "run_index.html", claims, workflows=workflow_catalog(request))


@router.get("/run/{name}")
async def run_page(request: Request, claims: PageClaims, name: str) -> Response:
    workflow = next((w for w in workflow_catalog(request) if w["name"] == name), None)
    if workflow is None:
        return not_found_page(request, claims, what="workflow")
    return render(request, "run.html", claims, workflow=workflow, fields=form_fields(workflow))
