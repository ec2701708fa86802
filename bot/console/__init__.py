"""The ops console: a web console at /console (Chinese pages) over a JSON API at /console/api.

Layout:
- auth.py     passwords (scrypt), session cookie, CSRF and Origin checks, login rate limit
- routes.py   `Api.route(...)` declarations and the wrapper every API request goes through
- schema.py   JSON Schema builders and the validator for bodies and parameters
- api.py      the API routes (me, login, logout, dashboard, groups, members, audit, openapi.json)
- openapi.py  the OpenAPI 3.1 document, generated from the route declarations
- pages.py    the pages: a server-rendered shell per page + one script per page in static/pages/
- static/     console.css, console.js (helpers: api(), h(), t(), forms), chart.js (SVG charts)
- storage/console.py (accounts, sessions, login attempts), storage/dashboard.py (what the pages show),
  bot/templates/zh/console.toml (every Chinese text; the pages' scripts get them as JSON).

Adding an API route (e.g. for FAQ entries), in api.py or a module of your own imported by `add_routes`:

    from bot.console.api import api
    from bot.console.routes import WRITE, ApiRequest, Param
    from bot.console import schema as s

    @api.route("POST", "/groups/{group_id}/faq", summary="Add an FAQ entry to a group", access=WRITE,
               tag="faq", body=s.obj({"question": s.string(max_length=255), "answer": s.string()}),
               response=s.obj({"id": s.integer()}))
    async def add_faq(req: ApiRequest) -> dict:
        group = await req.group(req.params["group_id"], write=True)   # 403 for a viewer / another group
        ...call the domain function in storage/ (the one chat commands and the CLI use)...
        await req.audit("faq add", group=group, args=req.body["question"])
        return {"id": entry.id}

The route is then served with the session, CSRF, role and body checks, listed in openapi.json, and
covered by the security tests (they walk the app's router). Keep queries in storage/, not in routes.

Adding a page: append `Page("faq", "/console/faq")` to pages.PAGES (it gets a nav entry, the login
redirect and the shell), write static/pages/faq.js:

    Console.page("faq", async (root, ctx) => { root.append(h("h2", {}, t("faq.title"))); ... });

and put its texts under [console.faq] (and the nav label as console.nav.faq) in
bot/templates/zh/console.toml. `api(method, path, body)` in console.js sends the CSRF header.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import web

from bot.templates import load_defaults

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger("qunbot.console")


class Console:
    """The console of one runtime: its config section, its texts, and its routes."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.config = runtime.config.console
        # Every console.* text (operator overrides applied), for the pages' scripts.
        self.texts = {key.removeprefix("console."): runtime.templates.raw(key)
                      for key in load_defaults() if key.startswith("console.")}

    def text(self, key: str, **values: object) -> str:
        return self.runtime.templates.render(f"console.{key}", **values)

    @property
    def simulator_url(self) -> str | None:
        return "/simulator" if "simulator" in self.runtime.channels else None


CONSOLE = web.AppKey("console", Console)


def add_routes(app: web.Application, runtime: Runtime) -> Console:
    """Mount the console (pages, static files, API) on the app."""
    from bot.console import api, campaigns, faq, lottery, pages, push, users  # noqa: F401 - importing declares their routes

    console = Console(runtime)
    app[CONSOLE] = console
    api.api.mount(app, console)
    pages.mount(app, console)
    return console
