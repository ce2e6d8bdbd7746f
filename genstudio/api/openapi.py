"""The OpenAPI document lists every status an endpoint can answer.

Some answers come from no handler of its own: the request limits (genstudio.api.limits), request
validation, the caller dependency, an unavailable database. Which of them an operation can meet
follows from its method and its dependencies, so they are added to every route when the
document is first built, after every router (whoever wrote it) has been included.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from genstudio.api.caller import caller_claims
from genstudio.api.session import SAFE_METHODS
from genstudio.jobs.models import ErrorResponse

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


_ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorResponse"}
_VALIDATION_ERROR = "#/components/schemas/HTTPValidationError"


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR_SCHEMA}}}


def _dependants(dependant: Dependant) -> list[Dependant]:
    found = [dependant]
    for sub in dependant.dependencies:
        found += _dependants(sub)
    return found


def _needs_caller(route: APIRoute) -> bool:
    return any(d.call is caller_claims for d in _dependants(route.dependant))


def _takes_input(route: APIRoute) -> bool:
    return any(d.path_params or d.query_params or d.header_params or d.cookie_params or d.body_params
               for d in _dependants(route.dependant))


def possible_errors(route: APIRoute) -> dict[int, dict[str, Any]]:
    """The error statuses any request to this route may get, whatever its handler does."""
    errors = {
        400: _error("Malformed request: a NUL character in the URL, a body that is not JSON, a bad cursor"),
        431: _error("Request headers larger than the limit"),
        503: _error("The database (or the token signing keys) unavailable for now; see Retry-After"),
    }
    if route.dependant.path_params:
        errors[404] = _error("No such item, or not one the caller may see")
    if _takes_input(route):
        errors[422] = _error("Invalid parameter or field values")
    if _needs_caller(route):
        errors[401] = _error("Missing or invalid access token, or the account no longer exists")
        if route.methods - SAFE_METHODS:
            errors[403] = _error("Signed in by session cookie without this session's CSRF token")
    if route.methods & _BODY_METHODS:
        errors[413] = _error("Body larger than the limit")
        errors[415] = _error("Body is not JSON")
    return errors


def document_every_status(app: FastAPI) -> None:
    """Make `app.openapi()` list, for every operation, the errors it may answer in the usual shape."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {}).setdefault("schemas", {}).setdefault(
            "ErrorResponse", ErrorResponse.model_json_schema())
        for context in iter_route_contexts(app.routes):
            route = context.original_route
            if not (isinstance(route, APIRoute) and context.include_in_schema):
                continue
            for method in context.methods:
                operation = schema["paths"].get(context.path_format, {}).get(method.lower())
                if operation is None:
                    continue
                responses = operation.setdefault("responses", {})
                if _VALIDATION_ERROR in str(responses.get("422")):
                    # FastAPI's default 422 shape; genstudio answers 422 in its own error shape.
                    del responses["422"]
                for status, response in possible_errors(route).items():
                    responses.setdefault(str(status), response)
                for status, response in responses.items():
                    # An error documented by description only still has the error shape.
                    if status[0] in "45" and "content" not in response:
                        response["content"] = {"application/json": {"schema": _ERROR_SCHEMA}}
        if _VALIDATION_ERROR not in json.dumps(schema["paths"]):
            for name in ("HTTPValidationError", "ValidationError"):
                schema["components"]["schemas"].pop(name, None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
