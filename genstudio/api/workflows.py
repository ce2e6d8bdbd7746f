"""`/api/workflows` (templates and runs) and `/api/uploads` (input files ahead of a run).

A run is checked completely before anything is written: the template exists, its parameters
fit its JSON Schema (every bad field named), every input file is present, of an accepted kind
by its content and within its size and pixel bounds, and some healthy ComfyUI server has every
node type it needs (when any server is known to be healthy). Only then are the input files
stored and the job and its run row inserted, in the caller's one transaction.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations.

import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Request, Response
from starlette.datastructures import UploadFile

from genstudio.api.caller import caller_claims
from genstudio.api.jobs import envelope, json_response
from genstudio.comfy.runs import (
    CheckedFile,
    InvalidInputFile,
    MalformedBody,
    RunService,
    check_file,
    check_input,
    parse_parameters_field,
)
from genstudio.comfy.templates import InvalidParameters, Template, TemplateSet
from genstudio.jobs.output_types import OUTPUT_TYPES
from genstudio.jobs.service import JobService

Claims = Annotated[dict[str, Any], Depends(caller_claims)]
WorkflowName = Annotated[str, Path(max_length=64, description="The template's name.")]
IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", max_length=200,
    description="Any unique string: a retried run with the same key returns the same job.")]

# The request paths that take multipart bodies (files), for the body-size middleware.
UPLOAD_PATHS = r"/api/uploads|/api/workflows/[^/]+/runs"

router = APIRouter(tags=["workflows"])

_RUN_BODY = {
    "requestBody": {
        "content": {
            "multipart/form-data": {"schema": {
                "type": "object",
                "properties": {"parameters": {"type": "string", "description": "The parameters, a JSON object."}},
                "additionalProperties": {"type": "string", "format": "binary",
                                         "description": "One part per input file, named as the template's input "
                                                        "(or the id of an earlier upload)."}}},
            "application/json": {"schema": {
                "type": "object",
                "properties": {
                    "parameters": {"type": "object", "description": "See the template's parameters_schema."},
                    "inputs": {"type": "object", "additionalProperties": {"type": "string", "format": "uuid"},
                               "description": "Input name -> id of an upload (POST /api/uploads)."}},
                "additionalProperties": False}},
        },
        "required": True,
    }
}


def _templates(request: Request) -> TemplateSet:
    return request.app.state.templates


def _runs(request: Request) -> RunService:
    return request.app.state.run_service


@router.get("/api/workflows", summary="The workflow templates this genstudio runs")
async def list_workflows(request: Request, claims: Claims) -> Response:
    body = {"success": True, "workflows": [t.describe() for t in _templates(request)]}
    return json_response(json.dumps(body).encode())


@router.get("/api/workflows/{name}", summary="One workflow template, with the JSON Schema of its parameters")
async def get_workflow(request: Request, claims: Claims, name: WorkflowName) -> Response:
    body = {"success": True, "workflow": _templates(request).get(name).describe()}
    return json_response(json.dumps(body).encode())


@router.post("/api/uploads", status_code=201, summary="Upload an input file ahead of a run",
             openapi_extra={"requestBody": {"content": {"multipart/form-data": {"schema": {
                 "type": "object", "properties": {"file": {"type": "string", "format": "binary"}},
                 "required": ["file"]}}}, "required": True}},
             responses={201: {"description": "Created: the upload, to name as a run's input"},
                        # The body is read by the handler, not declared as fields, so FastAPI
                        # would not list the 422 a missing or unreadable file gets.
                        422: {"description": "No part 'file', or a file that is not an image, video or audio "
                                             "file genstudio can read, or beyond the pixel bounds"},
                        413: {"description": "The file is too large"}})
async def create_upload(request: Request, claims: Claims) -> Response:
    settings = request.app.state.settings
    form = await _form(request)
    part = form.get("file")
    if not isinstance(part, UploadFile):
        raise InvalidInputFile("send the file as the multipart part 'file'")
    checked = check_file(part.filename or "upload", await part.read(), max_bytes=settings.upload_max_bytes,
                         max_pixels=settings.upload_max_pixels, what="the file")
    async with request.app.state.db.as_user(claims) as conn:
        upload = await _runs(request).create_upload(conn, claims["sub"], checked)
    return json_response(json.dumps({"success": True, "upload": upload}).encode(), 201)


@router.post("/api/workflows/{name}/runs", status_code=202, summary="Run a workflow template",
             openapi_extra=_RUN_BODY,
             responses={202: {"description": "Accepted: the job, pending, as the jobs API returns it"},
                        404: {"description": "No such workflow, or an upload that is not yours"},
                        409: {"description": "The Idempotency-Key was used for another workflow"},
                        413: {"description": "An input file is too large"}})
async def create_run(request: Request, claims: Claims, name: WorkflowName,
                     idempotency_key: IdempotencyKey = None) -> Response:
    template = _templates(request).get(name)
    runs = _runs(request)
    db = request.app.state.db
    t = OUTPUT_TYPES[template.output_type]

    async with db.as_user(claims) as conn:
        earlier = await runs.existing_run_job(conn, template, idempotency_key)
        if earlier is not None:
            return await _replayed(conn, *earlier)
        parameters, files = await _read_run_request(request, conn, template)

    async with db.as_service() as service_conn:
        await runs.check_node_types(service_conn, template)

    job_id = uuid.uuid4()
    stored = await runs.store_inputs(template, job_id, files)
    try:
        async with db.as_user(claims) as conn:
            job = await runs.insert(conn, template, job_id, parameters, stored, idempotency_key)
            if job is None:  # a concurrent retry with the same key got there first
                earlier = await runs.existing_run_job(conn, template, idempotency_key)
    except BaseException:
        await runs.delete_inputs(stored)
        raise
    if job is None:
        await runs.delete_inputs(stored)
        async with db.as_user(claims) as conn:
            return await _replayed(conn, *earlier)
    return json_response(envelope(t.item_key, job), 202)


async def _replayed(conn, output_type, job_id) -> Response:
    job = await JobService(output_type).get(conn, job_id)
    response = json_response(envelope(output_type.item_key, job), 202)
    response.headers["Idempotent-Replayed"] = "true"
    return response


async def _form(request: Request):
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise InvalidInputFile("send the file as multipart/form-data")
    try:
        return await request.form(max_files=16, max_fields=64)
    except Exception as exc:  # python-multipart's parse errors have no common base class
        raise MalformedBody(f"the multipart body cannot be read: {exc}") from None


async def _read_run_request(request: Request, conn, template: Template) -> tuple[dict[str, Any], dict[str, CheckedFile]]:
    """The validated parameters and the checked input files of a run request."""
    settings = request.app.state.settings
    runs = _runs(request)
    specs = {f.name: f for f in template.manifest.inputs}
    references: dict[str, str] = {}
    parts: dict[str, UploadFile] = {}
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await _form(request)
        raw_parameters = parse_parameters_field(form.get("parameters") if isinstance(form.get("parameters"), str) else None)
        for key, value in form.multi_items():
            if key == "parameters":
                continue
            if key not in specs:
                raise InvalidInputFile(f"{key!r} is not an input file of {template.name}"
                                       + (f" (its inputs: {', '.join(specs)})" if specs else " (it takes none)"))
            if isinstance(value, UploadFile):
                parts[key] = value
            else:
                references[key] = value
    else:
        body = await _json_body(request)
        raw_parameters = body.get("parameters", {})
        inputs = body.get("inputs", {})
        unknown = sorted(set(body) - {"parameters", "inputs"})
        if unknown:
            raise InvalidParameters([f"field {k!r} is not accepted (send parameters and inputs)" for k in unknown])
        if not isinstance(inputs, dict) or not all(isinstance(v, str) for v in inputs.values()):
            raise InvalidInputFile("inputs: must map input names to upload ids")
        for key in inputs:
            if key not in specs:
                raise InvalidInputFile(f"{key!r} is not an input file of {template.name}")
        references = inputs

    parameters = template.validate_parameters(raw_parameters)

    files: dict[str, CheckedFile] = {}
    for spec in template.manifest.inputs:
        if spec.name in parts:
            part = parts[spec.name]
            data = await part.read()
            checked = check_file(part.filename or spec.name, data,
                                 max_bytes=min(spec.max_bytes, settings.upload_max_bytes),
                                 max_pixels=settings.upload_max_pixels, what=f"input file {spec.name}")
            check_input(spec, checked)
            files[spec.name] = checked
        elif spec.name in references:
            files[spec.name] = await runs.load_upload(conn, references[spec.name], spec)
        elif spec.required:
            raise InvalidInputFile(f"input file {spec.name} is required ({', '.join(spec.media_types)})")
    return parameters, files


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise MalformedBody("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise MalformedBody("the request body must be a JSON object")
    return body
