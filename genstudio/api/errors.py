"""Every failure a caller can act on, mapped to its HTTP status here and nowhere else.

Errors answer `{"success": false, "error": "<what is wrong, in words>"}`, as the guide's
client expects.
"""

from __future__ import annotations

import logging

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

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
from genstudio.db.queries import load_queries
from genstudio.errors import CallerError
from genstudio.events.addresses import RefusedAddress
from genstudio.events.webhooks import TooManyWebhooks, WebhookNotFound
from genstudio.jobs.errors import (
    ComfyJobIdTaken,
    InvalidCursor,
    InvalidRequest,
    InvalidTransition,
    JobNotFound,
    JobRecordedDifferently,
    NotJobOwner,
)

logger = logging.getLogger(__name__)
CONSTRAINT_QUERIES = load_queries("constraints")

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


def allowed_methods(request: Request) -> list[str]:
    """Every method some route accepts at this request's path. Starlette's own 405 names only
    the methods of the first route whose path matched (GET for `/api/image-jobs/{id}`, which
    also takes PUT and DELETE)."""
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        if route.methods and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods
    return sorted(methods)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request))
    return error_response(exc.status_code, str(exc.detail), headers or None)


# What each kind of refusal means for the caller. The database's own wording names tables and
# constraints (`text_jobs_user_id_fkey`): it goes to the log, never into a response.
_REFUSALS: tuple[tuple[type[psycopg.Error], int, str], ...] = (
    (psycopg.errors.UniqueViolation, 409, "this already exists"),
    (psycopg.errors.ForeignKeyViolation, 422, "a value refers to something that does not exist"),
    (psycopg.errors.CheckViolation, 422, "a value is outside what is allowed"),
    (psycopg.errors.NotNullViolation, 422, "a required value is missing"),
    (psycopg.errors.UntranslatableCharacter, 422, "text must not contain the NUL character"),
    (psycopg.errors.CharacterNotInRepertoire, 422, "text must not contain the NUL character"),
    (psycopg.errors.NumericValueOutOfRange, 422, "a number is out of range"),
    (psycopg.errors.StringDataRightTruncation, 422, "a value is too long"),
    (psycopg.errors.DatetimeFieldOverflow, 422, "a date or time is out of range"),
    (psycopg.errors.InvalidTextRepresentation, 422, "a value has the wrong form"),
)


def describe_database_refusal(exc: psycopg.Error) -> tuple[int, str]:
    """The status and caller-facing words for input PostgreSQL refused, without its wording."""
    for kind, status, words in _REFUSALS:
        if isinstance(exc, kind):
            return status, f"{words}; nothing was written"
    return 422, "the values could not be stored; nothing was written"


async def _references_accounts(request: Request, exc: psycopg.errors.ForeignKeyViolation) -> bool:
    params = {"constraint": exc.diag.constraint_name, "schema": exc.diag.schema_name}
    try:
        async with request.app.state.db.as_owner() as conn:
            row = await (await conn.execute(CONSTRAINT_QUERIES["references_accounts"], params)).fetchone()
    except (psycopg.Error, PoolTimeout):
        return False  # then it is answered as the plain refusal it also is
    return bool(row["references_accounts"])


async def _database_refused(request: Request, exc: psycopg.Error) -> JSONResponse:
    # Input that passed validation but that PostgreSQL cannot store: the transaction was
    # rolled back, nothing was written.
    logger.info("database refused a request's values (%s %s): %s", request.method, request.url.path,
                exc.diag.message_primary)
    if isinstance(exc, psycopg.errors.ForeignKeyViolation) and await _references_accounts(request, exc):
        return await _domain_error(request, AccountGone("your account no longer exists; sign in again"))
    return error_response(*describe_database_refusal(exc))


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
