"""Issue 11, item 7: the OpenAPI document lists every status an operation can answer, in the error
shape, and a 405 names in `Allow` every method the path takes. Both are checked over every route
the app has, so endpoints added later are held to the same rule.
"""

from __future__ import annotations

from collections import defaultdict

from fastapi.routing import APIRoute, iter_route_contexts

from genstudio.api.caller import caller_claims
from tests.security_support import api  # noqa: F401  (fixture)

BODY_METHODS = {"post", "put", "patch"}


def _operations(app) -> list[tuple[str, str, APIRoute]]:
    return [(context.path_format, method.lower(), context.original_route)
            for context in iter_route_contexts(app.routes)
            if isinstance(context.original_route, APIRoute) and context.include_in_schema
            for method in context.methods]


def _needs_caller(route: APIRoute) -> bool:
    pending = [route.dependant]
    while pending:
        dependant = pending.pop()
        if dependant.call is caller_claims:
            return True
        pending += dependant.dependencies
    return False


async def test_login_documents_its_400_and_every_other_status(api):
    document = (await api.client.get("/api/openapi.json")).json()
    responses = document["paths"]["/api/auth/login"]["post"]["responses"]
    assert {"200", "400", "401", "413", "415", "422", "429", "431", "503"} <= set(responses)
    assert responses["400"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}


async def test_every_operation_documents_the_errors_it_can_meet(api):
    app = api.client._transport.app
    document = (await api.client.get("/api/openapi.json")).json()
    assert document["components"]["schemas"]["ErrorResponse"]["required"] == ["error"]
    operations = _operations(app)
    assert len(operations) >= 26
    for path, method, route in operations:
        responses = document["paths"][path][method]["responses"]
        expected = {"400", "431", "503"}
        if _needs_caller(route):
            expected.add("401")
        if method in BODY_METHODS:
            expected |= {"413", "415"}
        if "{" in path:
            expected |= {"404", "422"}
        assert expected <= set(responses), (method, path, expected - set(responses))
        for status, response in responses.items():
            if status.startswith(("4", "5")) and (method, path, status) != ("get", "/api/healthz", "503"):
                assert response["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/ErrorResponse"}, (method, path, status)


async def test_a_405_names_every_method_of_the_path(api):
    app = api.client._transport.app
    methods_of: dict[str, set[str]] = defaultdict(set)
    for path, method, _ in _operations(app):
        methods_of[path].add(method.upper())
    assert methods_of["/api/image-jobs/{job_id}"] == {"GET", "PUT", "DELETE"}
    for path, methods in methods_of.items():
        url = path.replace("{job_id}", "00000000-0000-4000-8000-000000000000").replace("{", "").replace("}", "")
        unused = next(m for m in ("PATCH", "DELETE", "PUT", "POST") if m not in methods)
        r = await api.client.request(unused, url)
        assert r.status_code == 405, (unused, url, r.text)
        assert r.json() == {"success": False, "error": "Method Not Allowed"}
        assert set(r.headers["allow"].split(", ")) >= methods, (url, r.headers["allow"], methods)
