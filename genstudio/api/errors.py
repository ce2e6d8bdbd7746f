"""Every failure a caller can act on, mapped to its HTTP status here and nowhere else.

Errors answer `{"success": false, "error": "<what is wrong, in words>"}`, as the guide's
client expects.
"""

from __future__ import annotations

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from genstudio.auth.errors import (
    AccountGone,
    CsrfRejected,
    InvalidCredentials,
    InvalidToken,
    LoginRateLimited,
    MissingToken,
    SigningKeysUnavailable,
)
from genstudio.comfy.runs import (
    IdempotencyKeyReused,
    InputFileTooLarge,
    InvalidInputFile,
    MalformedBody,
    MissingNodeTypes,
    UploadNotFound,
)
from genstudio.comfy.templates import InvalidParameters, UnknownWorkflow
from genstudio.storage import FileNotFound, InvalidKey
from genstudio.errors import CallerError
from genstudio.events.addresses import RefusedAddress
from genstudio.events.webhooks import TooManyWebhooks, WebhookNotFound
from genstudio.jobs.models import ErrorResponse
from genstudio.jobs.errors import (
    ComfyJobIdTaken,
    InvalidCursor,
    InvalidRequest,
    InvalidTransition,
    JobNotFound,
    JobRecordedDifferently,
    NotJobOwner,
)

STATUS_OF: dict[type[Exception], int] = {
    MissingToken: 401,
    InvalidToken: 401,
    InvalidCredentials: 401,
    AccountGone: 401,
    SigningKeysUnavailable: 503,
    LoginRateLimited: 429,
    CsrfRejected: 403,
    JobNotFound: 404,
    NotJobOwner: 403,
    InvalidTransition: 409,
    ComfyJobIdTaken: 409,
    JobRecordedDifferently: 409,
    InvalidCursor: 400,
    InvalidRequest: 422,
    WebhookNotFound: 404,
    RefusedAddress: 422,
    TooManyWebhooks: 409,
    UnknownWorkflow: 404,
    UploadNotFound: 404,
    InvalidParameters: 422,
    InvalidInputFile: 422,
    MissingNodeTypes: 422,
    InputFileTooLarge: 413,
    IdempotencyKeyReused: 409,
    MalformedBody: 400,
    FileNotFound: 404,
    InvalidKey: 404,
}

# For OpenAPI: what every job endpoint may answer besides success.
ERROR_RESPONSES = {
    status: {"description": description, "model": ErrorResponse}
    for status, description in ((400, "Malformed request"), (401, "Missing or invalid access token"),
                                (404, "No such job, or not one the caller may see"),
                                (413, "Body larger than the limit"), (415, "Body is not JSON"),
                                (422, "Invalid field values"))
}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"success": False, "error": message}, status_code=status, headers=headers)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    status = next(code for kind, code in STATUS_OF.items() if isinstance(exc, kind))
    headers = None
    if status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    elif isinstance(exc, LoginRateLimited):
        headers = {"Retry-After": str(exc.retry_after_seconds)}
    elif status == 503:
        headers = {"Retry-After": "5"}
    return error_response(status, exc.message, headers)


def describe_validation_error(exc: RequestValidationError) -> tuple[int, str]:
    problems = []
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            return 400, "the request body is not valid JSON"
        kind, *path = error.get("loc") or ("body",)
        where = ".".join(map(str, path)) or "body"
        prefix = {"query": "query parameter", "path": "path parameter", "header": "header"}.get(kind, "field")
        if error.get("type") == "extra_forbidden":
            problems.append(f"{prefix} {where!r} is not accepted")
        else:
            problems.append(f"{prefix} {where!r}: {error.get('msg', 'invalid')}")
    return 422, "; ".join(problems) or "the request is invalid"


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    status, message = describe_validation_error(exc)
    return error_response(status, message)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))


async def _database_refused(request: Request, exc: psycopg.Error) -> JSONResponse:
    # Input that passed validation but that PostgreSQL cannot store (a CHECK, a value out of
    # range, a NUL inside JSON): the transaction was rolled back, nothing was written.
    message = exc.diag.message_primary or "the database refused the values"
    return error_response(422, f"the database refused the values: {message}")


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # Not the caller's fault and nothing was written; worth retrying, hence 503 + Retry-After.
    return error_response(503, "the database is unavailable right now; try again shortly", {"Retry-After": "5"})


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(CallerError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(psycopg.errors.DataError, _database_refused)
    app.add_exception_handler(psycopg.errors.IntegrityError, _database_refused)
    app.add_exception_handler(psycopg.OperationalError, _database_unavailable)
    app.add_exception_handler(PoolTimeout, _database_unavailable)
