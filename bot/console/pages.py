"""The console's pages: a small server-rendered shell per page (navigation, the account, the texts) whose
script fills it from the JSON API; the login page; the static files.

A page is one `Page` in PAGES plus static/pages/<key>.js (see bot/console/__init__.py). Without a live
session every page but the login page redirects to /console/login?next=<the page>.
"""

from __future__ import annotations

import hashlib
import html
import json
import string
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from aiohttp import web

from bot.console import auth
from storage import console as console_store

if TYPE_CHECKING:
    from bot.console import Console

HERE = Path(__file__).parent
STATIC = HERE / "static"
LOGIN_PATH = "/console/login"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
PAGE_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
                "Referrer-Policy": "same-origin", "Cache-Control": "no-store"}


@dataclass(frozen=True)
class Page:
    """A console page: its key (script static/pages/<key>.js, nav label console.nav.<key>, title
    console.title.<key>) and its path."""

    key: str
    path: str
    nav: bool = True
    # Only for ops admins: left out of the others' navigation, 403 for them (its API refuses them too).
    admin_only: bool = False


PAGES: list[Page] = [
    Page("dashboard", "/console"),
    Page("groups", "/console/groups"),
    Page("faq", "/console/faq"),
    Page("push", "/console/push"),
    Page("campaigns", "/console/campaigns"),
    Page("lottery", "/console/lottery"),
    Page("members", "/console/members"),
    Page("audit", "/console/audit"),
    Page("users", "/console/users", admin_only=True),
]


def _static_version() -> str:
    digest = hashlib.sha256()
    for file in sorted(STATIC.rglob("*")):
        if file.is_file():
            digest.update(file.name.encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:10]


def _json_for_html(data: object) -> str:
    """JSON safe inside <script type="application/json"> (no "</script>" can end it early)."""
    return json.dumps(data, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def mount(app: web.Application, console: Console) -> None:
    version = _static_version()
    shell = string.Template((HERE / "shell.html").read_text(encoding="utf-8"))
    login_page = string.Template((HERE / "login.html").read_text(encoding="utf-8"))
    esc = html.escape

    def page_handler(page: Page):  # noqa: ANN202 - an aiohttp handler
        async def handle(request: web.Request) -> web.StreamResponse:
            live = await auth.current_session(console.runtime.db, request, console.config)
            if live is None:
                raise web.HTTPFound(f"{LOGIN_PATH}?next={quote(request.path_qs, safe='')}")
            account = live.account
            is_admin = account.role == console_store.OPS_ADMIN
            if page.admin_only and not is_admin:
                return web.Response(status=403, text=console.text("error.forbidden"), charset="utf-8",
                                    headers=PAGE_HEADERS)
            nav = []
            for other in PAGES:
                if other.nav and (is_admin or not other.admin_only):
                    current = ' aria-current="page" class="current"' if other.key == page.key else ""
                    nav.append(f'<a href="{esc(other.path)}"{current}>{esc(console.text("nav." + other.key))}</a>')
            if console.simulator_url:
                nav.append(f'<a href="{esc(console.simulator_url)}" target="_blank" rel="noopener" id="nav-simulator">'
                           f'{esc(console.text("nav.simulator"))} ↗</a>')
            me = {"username": account.username, "role": account.role, "can_write": account.can_write,
                  "csrf_token": live.csrf_token, "simulator_url": console.simulator_url,
                  "timezone": console.runtime.config.timezone}
            body = shell.substitute(
                title=esc(console.text("title." + page.key)), brand=esc(console.text("brand")), page=esc(page.key),
                nav="".join(nav), username=esc(account.username), role=esc(console.text("role." + account.role)),
                logout=esc(console.text("logout")), loading=esc(console.text("loading")),
                menu=esc(console.text("menu")), version=version, texts=_json_for_html(console.texts),
                me=_json_for_html(me))
            return web.Response(text=body, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS)

        handle.__name__ = f"console_page_{page.key}"
        return handle

    async def login(request: web.Request) -> web.StreamResponse:
        if await auth.current_session(console.runtime.db, request, console.config) is not None:
            raise web.HTTPFound("/console")
        async with console.runtime.db.read_session() as session:
            no_users = await console_store.user_count(session) == 0
        notice = (f'<div class="notice" id="no-users">{esc(console.text("login.no_users"))}'
                  f'<pre>qunbot console create-user admin --role ops_admin</pre></div>') if no_users else ""
        body = login_page.substitute(
            brand=esc(console.text("brand")), title=esc(console.text("login.title")), notice=notice,
            username=esc(console.text("login.username")), password=esc(console.text("login.password")),
            submit=esc(console.text("login.submit")), version=version, texts=_json_for_html(console.texts))
        return web.Response(text=body, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS)

    for page in PAGES:
        handler = page_handler(page)
        app.router.add_get(page.path, handler)
        if page.path == "/console":
            app.router.add_get("/console/", handler)
    app.router.add_get(LOGIN_PATH, login)
    app.router.add_static("/console/static", STATIC, append_version=False)
