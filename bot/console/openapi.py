"""The console API as an OpenAPI 3.1 document, built from the route declarations (bot/console/routes.py).

Nothing here is written by hand per route: paths, parameters, bodies, responses and who may call each
route come from `Api.routes`, so the document changes with the code.
"""

from __future__ import annotations

from typing import Any

from bot.console.auth import COOKIE, CSRF_HEADER
from bot.console.routes import ADMIN, PUBLIC, WRITE, Api, Route

ERROR = {"type": "object", "required": ["error", "message"], "additionalProperties": False,
         "properties": {"error": {"type": "string", "description": "a stable code, e.g. csrf, read_only"},
                        "message": {"type": "string", "description": "what went wrong, in Chinese"},
                        "field": {"type": "string", "description": "the body field a validation error is about"}}}
WHO = {PUBLIC: "anyone (no session)", "read": "any logged-in account",
       WRITE: "ops_admin, or a group_admin for their own groups (not ops_viewer)", ADMIN: "ops_admin only"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _operation(route: Route) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": route.handler.__name__,
        "summary": route.summary,
        "description": (" ".join(route.description.split()) + f" Who: {WHO[route.access]}.").strip(),
        "tags": [route.tag],
        "responses": {"200": {"description": "OK", "content": {
            "application/json": {"schema": route.response or {"type": "object"}}}}},
    }
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
        for name in route.path_params]
    params += [{"name": p.name, "in": "query", "required": p.required, "schema": p.schema,
                **({"description": p.description} if p.description else {})} for p in route.params]
    if route.changes_state and route.access != PUBLIC:
        params.append({"name": CSRF_HEADER, "in": "header", "required": True, "schema": {"type": "string"},
                       "description": "the session's CSRF token (csrf_token of GET /console/api/me)"})
    if params:
        op["parameters"] = params
    if route.body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": route.body}}}
    responses = op["responses"]
    if route.body is not None or route.params:
        responses["400"] = _error("a parameter or the body is invalid (the message names the field)")
    if route.access == PUBLIC:
        op["security"] = []
        if route.changes_state:
            responses["401"] = _error("wrong username or password")
            responses["403"] = _error("the request came from another site (Origin)")
            responses["429"] = _error("too many failed logins; see Retry-After")
    else:
        responses["401"] = _error("no live session")
        responses["403"] = _error("not allowed: role, another group" + (", CSRF token or Origin" if route.changes_state else ""))
    if route.path_params:
        responses["404"] = _error("no such object")
    return op


def build(api: Api) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every declared route."""
    paths: dict[str, dict[str, Any]] = {}
    for route in api.routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {"title": "qunbot ops console API", "version": "1",
                 "description": "The JSON API behind /console. Log in with POST /console/api/login (the session "
                                "is an HttpOnly cookie); send the session's CSRF token as X-CSRF-Token with every "
                                "request that changes something."},
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR},
            "securitySchemes": {"session": {"type": "apiKey", "in": "cookie", "name": COOKIE}},
        },
        "security": [{"session": []}],
        "tags": [{"name": t} for t in dict.fromkeys(r.tag for r in api.routes)],
    }
