"""The console API's route declarations and the one wrapper every API request goes through.

A route is declared once, with `@api.route(...)`: method, path, who may call it (`access`), its query
parameters, request body and response as JSON Schema (bot/console/schema.py). The same declaration mounts
the aiohttp route, validates the request, and produces the route's entry in /console/api/openapi.json.

Every request, in this order: the session cookie (401 without a live session, except PUBLIC routes); for
anything but GET/HEAD the Origin check and the CSRF header (403); the role (403: a viewer on a WRITE route,
anyone but an ops admin on an ADMIN route); the parameters and body (400, naming the field); then the
handler. Group scoping (a group admin sees only their groups) is the handler's job, through
`ApiRequest.group()` and `ApiRequest.visible_group_ids`, which answer 403/404 for it.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bot.console import auth
from bot.console.schema import Schema, coerce_param, validate
from bot.http import json_response
from storage import audit as audit_store
from storage import console as console_store
from storage.groups import Group

if TYPE_CHECKING:
    from bot.console import Console

log = logging.getLogger("qunbot.console")

PUBLIC = "public"  # no session needed (login)
READ = "read"  # any logged-in account
WRITE = "write"  # ops admins, and group admins for their own groups (the handler checks which)
ADMIN = "admin"  # ops admins only

MAX_BODY = 256 * 1024
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class ApiError(Exception):
    """An error answer: HTTP status, a stable code, and the Chinese text of console.error.<code>; `field`
    names the body field a validation error is about (the page marks it)."""

    def __init__(self, status: int, code: str, detail: str = "", *, headers: dict[str, str] | None = None,
                 field: str | None = None) -> None:
        super().__init__(code)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers or {}
        self.field = field


@dataclass(frozen=True)
class Param:
    """A query parameter (path parameters are read from the path: `{name}` with an integer schema)."""

    name: str
    schema: Schema
    description: str = ""
    required: bool = False


@dataclass
class Route:
    method: str
    path: str
    handler: Callable[[ApiRequest], Awaitable[Any]]
    summary: str
    access: str
    tag: str
    params: list[Param] = field(default_factory=list)
    body: Schema | None = None
    response: Schema | None = None
    description: str = ""

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)

    @property
    def changes_state(self) -> bool:
        return self.method not in auth.SAFE_METHODS


class ApiRequest:
    """What a route handler gets: the checked session, parameters and body, and console helpers."""

    def __init__(self, console: Console, request: web.Request, live: console_store.LiveSession | None,
                 params: dict[str, Any], body: Any) -> None:
        self.console = console
        self.request = request
        self.live = live
        self.params = params
        self.body = body

    @property
    def account(self) -> console_store.Account:
        assert self.live is not None, "a PUBLIC route has no account"
        return self.live.account

    @property
    def runtime(self):  # noqa: ANN201 - bot.runtime.Runtime
        return self.console.runtime

    @property
    def db(self):  # noqa: ANN201 - storage.db.Database
        return self.console.runtime.db

    @property
    def config(self):  # noqa: ANN201 - bot.config.Config
        return self.console.runtime.config

    @property
    def visible_group_ids(self) -> frozenset[int] | None:
        """None for every group (ops roles), else the group admin's groups."""
        return self.account.group_ids

    async def group(self, group_id: int, *, write: bool = False) -> Group:
        """The group, if this account may see it (and change it, with write=True): 404 unknown, 403 not theirs."""
        async with self.db.read_session() as session:
            group = await session.get(Group, group_id)
        if group is None:
            raise ApiError(404, "not_found")
        if not self.account.sees_group(group_id):
            raise ApiError(403, "other_group")
        if write and not self.account.can_write:
            raise ApiError(403, "read_only")
        return group

    async def audit(self, command: str, *, group: Group | None = None, args: str = "",
                    result: str = audit_store.OK, detail: str = "") -> None:
        """Write an audit log entry for this account's action (source "console")."""
        async with self.db.session() as session:
            await audit_store.record(session, source="console", command=command, result=result,
                                     actor=self.live.account.username if self.live else "",
                                     channel=group.channel if group else "", group=group.external_id if group else None,
                                     args=args, detail=detail)


class Api:
    """The console's API routes, in declaration order (the OpenAPI document lists them in this order)."""

    def __init__(self, prefix: str = "/console/api") -> None:
        self.prefix = prefix
        self.routes: list[Route] = []

    def route(self, method: str, path: str, *, summary: str, access: str = READ, tag: str = "console",
              params: list[Param] | None = None, body: Schema | None = None, response: Schema | None = None,
              description: str = "") -> Callable[[Callable[[ApiRequest], Awaitable[Any]]], Callable[[ApiRequest], Awaitable[Any]]]:
        """Declare an API route under the prefix; `path` may hold `{name_id}` integer path parameters."""
        if access not in (PUBLIC, READ, WRITE, ADMIN):
            raise ValueError(f"unknown access {access!r}")

        def register(handler: Callable[[ApiRequest], Awaitable[Any]]) -> Callable[[ApiRequest], Awaitable[Any]]:
            self.routes.append(Route(method.upper(), self.prefix + path, handler, summary, access, tag,
                                     list(params or []), body, response, description or (handler.__doc__ or "")))
            return handler

        return register

    def mount(self, app: web.Application, console: Console) -> None:
        for route in self.routes:
            app.router.add_route(route.method, route.path, _wrap(route, console))


def _wrap(route: Route, console: Console) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            response = await _serve(route, console, request)
        except ApiError as exc:
            response = error_response(console, exc)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        # The server's own time for the request (the benchmark reads it; so can the browser's dev tools).
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
        return response

    handle.__name__ = f"console_api_{route.handler.__name__}"
    return handle


def error_response(console: Console, exc: ApiError) -> web.Response:
    message = console.text(f"error.{exc.code}")
    if exc.detail:
        message = f"{message}：{exc.detail}"
    body = {"error": exc.code, "message": message}
    if exc.field:
        body["field"] = exc.field
    response = json_response(body, status=exc.status)
    response.headers.update(exc.headers)
    return response


async def _serve(route: Route, console: Console, request: web.Request) -> web.StreamResponse:
    cfg = console.config
    live = await auth.current_session(console.runtime.db, request, cfg)
    if route.access != PUBLIC and live is None:
        raise ApiError(401, "unauthenticated")
    if route.changes_state:
        if not auth.origin_allowed(request, cfg):
            log.warning("console request refused", extra={"path": request.path, "reason": "origin",
                                                          "origin": request.headers.get("Origin", "")})
            raise ApiError(403, "bad_origin")
        if live is not None and route.access != PUBLIC and not auth.csrf_ok(request, live.csrf_token):
            log.warning("console request refused", extra={"path": request.path, "reason": "csrf",
                                                          "user": live.account.username})
            raise ApiError(403, "csrf")
    if live is not None:
        if route.access == WRITE and not live.account.can_write:
            raise ApiError(403, "read_only")
        if route.access == ADMIN and live.account.role != console_store.OPS_ADMIN:
            raise ApiError(403, "forbidden")
    params = _params(route, request)
    body = await _body(route, request) if route.body is not None else None
    result = await route.handler(ApiRequest(console, request, live, params, body))
    if isinstance(result, web.StreamResponse):
        return result
    return json_response(result)


def _params(route: Route, request: web.Request) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in route.path_params:
        try:
            values[name] = int(request.match_info[name])
        except ValueError:
            raise ApiError(404, "not_found") from None
    for param in route.params:
        raw = request.query.get(param.name)
        if raw is None or raw == "":
            if param.required:
                raise ApiError(400, "bad_request", f"{param.name}: required")
            values[param.name] = param.schema.get("default")
            continue
        try:
            value = coerce_param(raw, param.schema)
        except ValueError:
            raise ApiError(400, "bad_request", f"{param.name}: expected {param.schema.get('type')}") from None
        problems = validate(value, param.schema, param.name)
        if problems:
            raise ApiError(400, "bad_request", "; ".join(problems))
        values[param.name] = value
    return values


async def _body(route: Route, request: web.Request) -> Any:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, "too_large")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise ApiError(413, "too_large")
    try:
        body = json.loads(raw.decode("utf-8")) if raw else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ApiError(400, "bad_request", "body: not JSON") from None
    assert route.body is not None
    problems = validate(body, route.body, "body")
    if problems:
        where = problems[0].split(":", 1)[0]
        field = re.split(r"[.\[]", where.removeprefix("body."), maxsplit=1)[0] if where.startswith("body.") else None
        raise ApiError(400, "bad_request", "; ".join(problems[:5]), field=field)
    return body
