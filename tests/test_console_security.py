"""Console security, through real sockets on SQLite and PostgreSQL: every route refuses strangers (walked
from the app's router, so routes added later are covered), CSRF and Origin, roles and group scoping,
the login rate limit, cookie flags, sessions shared by two processes, and passwords kept out of sight."""

from __future__ import annotations

import asyncio
import io
import logging
import re
from datetime import timedelta

import pytest
from sqlalchemy import select
from yarl import URL

from bot.console.api import api
from bot.console.routes import ADMIN, PUBLIC, WRITE
from storage import console as console_store
from storage.audit import AuditEntry
from storage.console import ConsoleLoginAttempt, ConsoleSession, ConsoleUser
from storage.welcome import WelcomeSettings
from tests.conftest import make_config
from tests.console_helpers import PASSWORD, ConsoleClient, make_user, seed_features, seed_simulator

# The only console routes a stranger may use: the login page and API, and the static files.
PUBLIC_ROUTES = {("GET", "/console/login"), ("HEAD", "/console/login"), ("POST", "/console/api/login")}
STATIC_PREFIX = "/console/static"


def console_routes(bot) -> list[tuple[str, str]]:
    """(method, path pattern) of every route the running app serves under /console."""
    found = []
    for route in bot.server.app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if path == "/console" or path.startswith("/console/"):
            found.append((route.method, path))
    return found


async def age(db, model, field: str, by: timedelta) -> None:
    """Move a timestamp of every row of the table back in time (as if that much time had passed)."""
    async with db.session() as session:
        for row in (await session.execute(select(model))).scalars():
            setattr(row, field, getattr(row, field) - by)


def concrete(path: str) -> str:
    return re.sub(r"{\w+}", "1", path)


@pytest.fixture
async def client(bot):
    clients = []

    def make() -> ConsoleClient:
        c = ConsoleClient(bot.url("/"))
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.close()


async def test_every_console_route_refuses_a_request_without_a_live_session(bot, client):
    routes = console_routes(bot)
    declared = {(r.method, r.path) for r in api.routes}
    assert declared <= set(routes), "every declared API route is mounted"
    assert {r.access for r in api.routes if (r.method, r.path) in PUBLIC_ROUTES} == {PUBLIC}
    assert {(r.method, r.path) for r in api.routes if r.access == PUBLIC} <= PUBLIC_ROUTES
    stranger = client()
    forged = client()
    forged.http.cookie_jar.update_cookies({"qunbot_console": "forged-token"})
    checked = 0
    for method, path in routes:
        if (method, path) in PUBLIC_ROUTES or path.startswith(STATIC_PREFIX):
            continue
        for who in (stranger, forged):
            status, body, headers = await who.request(method, concrete(path), {} if method not in ("GET", "HEAD") else None,
                                                      csrf="x")
            if path.startswith("/console/api/"):
                assert status == 401, (method, path, status, body)
                if method != "HEAD":
                    assert body["error"] == "unauthenticated"
            else:
                assert status == 302, (method, path, status)
                assert headers["Location"].startswith("/console/login?next=")
            checked += 1
    assert checked >= 2 * 10
    # The public ones really are public (and the static files carry no data).
    assert (await stranger.get("/console/login"))[0] == 200
    assert (await stranger.get("/console/static/console.js"))[0] == 200


async def test_an_expired_or_idle_session_is_refused(db_url, bot_factory, client):
    bot = await bot_factory(make_config(db_url, console={"idle_minutes": 30}))
    await make_user(bot.runtime.db, "ops", console_store.OPS_ADMIN)
    c = ConsoleClient(bot.url("/"))
    try:
        assert (await c.login("ops"))[0] == 200
        assert (await c.get("/console/api/me"))[0] == 200
        await age(bot.runtime.db, ConsoleSession, "last_seen_at", timedelta(minutes=31))
        assert (await c.get("/console/api/me"))[0] == 401
        assert (await c.login("ops"))[0] == 200
        await age(bot.runtime.db, ConsoleSession, "expires_at", timedelta(hours=12))
        assert (await c.get("/console/api/me"))[0] == 401
    finally:
        await c.close()


async def test_state_changing_requests_need_the_csrf_token_and_a_same_site_origin(bot, client):
    await make_user(bot.runtime.db, "ops", console_store.OPS_ADMIN)
    await seed_simulator(bot)
    c = client()
    assert (await c.login("ops"))[0] == 200
    changing = [r for r in api.routes if r.changes_state and r.access != PUBLIC]
    assert changing, "there are state-changing routes to check"
    for route in changing:
        if route.path.endswith("/logout"):
            continue  # checked last: it would end the session
        path = concrete(route.path)
        body = {"welcome_text": "被篡改的欢迎语"} if "settings" in path else {}
        for csrf in (False, "wrong-token"):
            status, data, _ = await c.request(route.method, path, body, csrf=csrf)
            assert (status, data["error"]) == (403, "csrf"), (route.path, csrf, status, data)
        status, data, _ = await c.request(route.method, path, body, headers={"Origin": "https://evil.example"})
        assert (status, data["error"]) == (403, "bad_origin"), route.path
    async with bot.runtime.db.read_session() as session:
        assert (await session.execute(select(WelcomeSettings))).first() is None  # nothing was changed
    # Logout too needs the token; a cross-site login form is refused by Origin.
    status, data, _ = await c.request("POST", "/console/api/logout", {}, csrf=False)
    assert (status, data["error"]) == (403, "csrf")
    assert (await c.get("/console/api/me"))[0] == 200
    status, data, _ = await c.request("POST", "/console/api/login", {"username": "ops", "password": PASSWORD},
                                      headers={"Origin": "https://evil.example"})
    assert (status, data["error"]) == (403, "bad_origin")
    # With the token and its own origin, the same change goes through.
    host = bot.url("/").rstrip("/")
    status, data, _ = await c.request("PATCH", "/console/api/groups/1/settings", {"welcome_text": "欢迎{names}"},
                                      headers={"Origin": host})
    assert status == 200, data
    status, _, _ = await c.request("POST", "/console/api/logout", {})
    assert status == 200
    assert (await c.get("/console/api/me"))[0] == 401


async def test_a_viewer_can_read_everything_and_change_nothing(bot, client):
    await seed_simulator(bot)
    await seed_features(bot)  # so that every "…/1" a GET route names exists
    await make_user(bot.runtime.db, "viewer", console_store.OPS_VIEWER)
    c = client()
    status, me = await c.login("viewer")
    assert status == 200 and me["can_write"] is False
    for route in api.routes:
        path = concrete(route.path)
        if route.access in (WRITE, ADMIN):
            status, data, _ = await c.request(route.method, path, {"welcome_text": "x", "faq_scope": "off"})
            assert status == 403 and data["error"] in ("read_only", "forbidden"), (route.path, status, data)
        elif route.method == "GET":
            assert (await c.get(path))[0] == 200, path
    status, detail = await c.get("/console/api/groups/1")
    assert detail["can_write"] is False and detail["settings"]["faq_scope"] == "all"
    async with bot.runtime.db.read_session() as session:
        assert (await session.execute(select(WelcomeSettings))).first() is None


async def test_a_group_admin_sees_and_changes_only_their_groups(bot, client):
    await seed_simulator(bot, "mine")
    await seed_simulator(bot, "theirs")
    await bot.post_json("/api/simulator/joins", {"group": "theirs", "users": [{"user": "stranger", "name": "外人"}]})
    await make_user(bot.runtime.db, "ga", console_store.GROUP_ADMIN, groups=[("simulator", "mine")])
    ops = client()
    await make_user(bot.runtime.db, "ops", console_store.OPS_ADMIN)
    await ops.login("ops")
    _, everything = await ops.get("/console/api/groups")
    ids = {g["group"]["external_id"]: g["group"]["id"] for g in everything["groups"]}
    mine, theirs = ids["mine"], ids["theirs"]
    # Some audit entries in both groups.
    assert (await ops.patch(f"/console/api/groups/{theirs}/settings", {"timezone": "Asia/Tokyo"}))[0] == 200
    assert (await ops.patch(f"/console/api/groups/{mine}/settings", {"timezone": "Asia/Tokyo"}))[0] == 200

    c = client()
    status, me = await c.login("ga")
    assert status == 200 and [g["external_id"] for g in me["groups"]] == ["mine"]
    _, groups = await c.get("/console/api/groups")
    assert [g["group"]["external_id"] for g in groups["groups"]] == ["mine"] and groups["total"] == 1
    for path in (f"/console/api/groups/{theirs}", f"/console/api/dashboard?group={theirs}",
                 f"/console/api/members?group={theirs}", f"/console/api/audit?group={theirs}"):
        status, data = await c.get(path)
        assert (status, data["error"]) == (403, "other_group"), path
    status, data = await c.patch(f"/console/api/groups/{theirs}/settings", {"welcome_text": "占领"})
    assert (status, data["error"]) == (403, "other_group")
    # Overall figures count only their group: 3 members, not 7.
    _, board = await c.get("/console/api/dashboard")
    assert board["totals"] == {"groups": 1, "members": 3}
    assert [t["group"]["external_id"] for t in board["top_groups"]] == ["mine"]
    _, members = await c.get("/console/api/members?q=外人")
    assert members["members"] == []
    _, everyone = await ops.get("/console/api/members?q=外人")
    [stranger] = everyone["members"]
    status, data = await c.get(f"/console/api/members/{stranger['member']['id']}")
    assert (status, data["error"]) == (403, "other_group")
    # A member of both groups: the profile shows only the group admin's group.
    _, both = await c.get("/console/api/members?q=小明")
    status, profile = await c.get(f"/console/api/members/{both['members'][0]['member']['id']}")
    assert status == 200 and {s["group"]["external_id"] for s in profile["stays"]} == {"mine"}
    _, audit = await c.get("/console/api/audit")
    assert audit["entries"] and {e["group"] for e in audit["entries"]} == {"mine"}
    # Their own group they may change.
    status, detail = await c.patch(f"/console/api/groups/{mine}/settings", {"faq_scope": "group"})
    assert status == 200 and detail["settings"]["faq_scope"] == "group"


async def test_login_is_rate_limited_per_username_and_per_address_in_the_database(db_url, bot_factory):
    config = make_config(db_url, console={"login_max_failures": 3, "login_ip_max_failures": 5,
                                          "login_window_seconds": 600})
    first, second = await bot_factory(config), await bot_factory(config)  # two processes, one database
    await make_user(first.runtime.db, "ops", console_store.OPS_ADMIN)
    await make_user(first.runtime.db, "other", console_store.OPS_VIEWER)
    a, b = ConsoleClient(first.url("/")), ConsoleClient(second.url("/"))
    try:
        for n in range(3):
            status, body = await (a if n % 2 else b).login("ops", "wrong password!")
            assert (status, body["error"]) == (401, "bad_credentials")
        for who in (a, b):  # even the right password, in either process
            status, body, headers = await who.request("POST", "/console/api/login",
                                                      {"username": "OPS", "password": PASSWORD})
            assert (status, body["error"]) == (429, "rate_limited")
            assert 590 <= int(headers["Retry-After"]) <= 600
        # Another name from the same address still gets its chances, up to the address's limit.
        assert (await a.login("other"))[0] == 200
        for _ in range(2):
            assert (await a.login("nobody", "guess guess guess"))[0] == 401
        status, _ = await b.login("other")
        assert status == 429
        # When the window has passed, the right password works again.
        await age(first.runtime.db, ConsoleLoginAttempt, "at", timedelta(seconds=601))
        assert (await a.login("ops"))[0] == 200
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize("secure", [False, True])
async def test_the_session_cookie_is_httponly_samesite_scoped_and_secure_when_configured(db_url, bot_factory, secure):
    bot = await bot_factory(make_config(db_url, console={"secure_cookie": secure, "same_site": "Strict"}))
    await make_user(bot.runtime.db, "ops", console_store.OPS_ADMIN)
    c = ConsoleClient(bot.url("/"))
    try:
        status, _, headers = await c.request("POST", "/console/api/login", {"username": "ops", "password": PASSWORD})
        assert status == 200
        [cookie] = headers.getall("Set-Cookie")
        attrs = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
        assert {"httponly", "path", "samesite", "max-age"} <= attrs
        assert "Path=/console" in cookie and "SameSite=Strict" in cookie
        assert ("secure" in attrs) is secure
        token = cookie.split(";")[0].split("=", 1)[1]
        assert len(token) >= 40
        async with bot.runtime.db.read_session() as session:
            [row] = (await session.execute(select(ConsoleSession))).scalars()
        assert row.token_hash == console_store.token_hash(token) and token not in row.token_hash
        if not secure:
            status, _, headers = await c.request("POST", "/console/api/logout", {})
            assert status == 200
            assert "qunbot_console=" in headers["Set-Cookie"] and "Max-Age=0" in headers["Set-Cookie"]
    finally:
        await c.close()


async def test_sessions_are_shared_by_two_processes_and_logout_ends_them_everywhere(db_url, bot_factory):
    config = make_config(db_url)
    first, second = await bot_factory(config), await bot_factory(config)
    await make_user(first.runtime.db, "ops", console_store.OPS_ADMIN)
    a = ConsoleClient(first.url("/"))
    try:
        assert (await a.login("ops"))[0] == 200
        cookie = a.http.cookie_jar.filter_cookies(URL(first.url("/console")))["qunbot_console"].value
        b = ConsoleClient(second.url("/"))
        b.http.cookie_jar.update_cookies({"qunbot_console": cookie})
        b.csrf = a.csrf
        status, me = await b.get("/console/api/me")
        assert status == 200 and me["username"] == "ops" and me["csrf_token"] == a.csrf
        status, _, _ = await b.request("POST", "/console/api/logout", {})
        assert status == 200
        assert (await a.get("/console/api/me"))[0] == 401
        await b.close()
    finally:
        await a.close()


async def test_no_account_no_default_password_and_the_login_page_says_how_to_create_one(bot, client):
    c = client()
    status, page = await c.get("/console/login")
    assert status == 200 and "qunbot console create-user" in page and 'id="no-users"' in page
    for name, password in (("admin", "admin"), ("admin", "password"), ("root", "root"), ("qunbot", "qunbot")):
        assert (await c.login(name, password))[0] == 401
    await make_user(bot.runtime.db, "ops", console_store.OPS_ADMIN)
    _, page = await c.get("/console/login")
    assert 'id="no-users"' not in page


async def test_passwords_are_never_logged_stored_or_returned(db_url, bot_factory, caplog, capsys, monkeypatch):
    from bot.cli import main

    secret = "Sup3r-secret-Passw0rd"
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("QUNBOT_DATABASE_URL", db_url)
    monkeypatch.setenv("QUNBOT_DATABASE_AUTO_MIGRATE", "false")
    monkeypatch.setattr("sys.stdin", io.StringIO(secret + "\n"))
    assert await asyncio.to_thread(main, ["console", "create-user", "ops", "--role", "ops_admin", "--password-stdin"]) == 0
    cli_output = capsys.readouterr()
    assert secret not in cli_output.out + cli_output.err
    logging.getLogger().addHandler(caplog.handler)  # the CLI replaced the root handlers with its own
    logging.getLogger().setLevel(logging.DEBUG)
    bot = await bot_factory(make_config(db_url))
    c = ConsoleClient(bot.url("/"))
    try:
        bodies = []
        for attempt in ("Wrong-" + secret, secret):
            status, body, _ = await c.request("POST", "/console/api/login", {"username": "ops", "password": attempt})
            bodies.append(str(body))
        assert status == 200
        bodies.append(str((await c.get("/console/api/me"))[1]))
        bodies.append(str((await c.get("/console/api/audit"))[1]))
        assert not any(secret in b for b in bodies)
        logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
        assert "console login" in logged and secret not in logged
        async with bot.runtime.db.read_session() as session:
            [user] = (await session.execute(select(ConsoleUser))).scalars()
            audit = " ".join(f"{e.args} {e.detail}" for e in (await session.execute(select(AuditEntry))).scalars())
        assert user.password_hash.startswith("scrypt$") and secret not in user.password_hash
        assert secret not in audit
    finally:
        await c.close()


async def test_only_ops_admins_reach_the_account_routes_and_page(bot, client):
    """Walked from the declarations: every ADMIN route (账号管理 among them) refuses viewers and group admins
    before it looks at anything, and the page is neither linked nor served for them."""
    await seed_simulator(bot)
    account_routes = [r for r in api.routes if r.path.startswith("/console/api/users")]
    assert len(account_routes) >= 6 and {r.access for r in account_routes} == {ADMIN}
    await make_user(bot.runtime.db, "viewer", console_store.OPS_VIEWER)
    await make_user(bot.runtime.db, "ga", console_store.GROUP_ADMIN, groups=[("simulator", "g1")])
    ops_id = await make_user(bot.runtime.db, "ops", console_store.OPS_ADMIN)
    body = {"username": "mallory", "role": "ops_admin", "password": PASSWORD * 2, "group_ids": [], "group_ids_x": 1}
    for name in ("viewer", "ga"):
        c = client()
        assert (await c.login(name))[0] == 200
        for route in (r for r in api.routes if r.access == ADMIN):
            path = route.path.replace("{user_id}", str(ops_id))
            status, data, _ = await c.request(route.method, concrete(path), body if route.changes_state else None)
            assert (status, data["error"]) == (403, "forbidden"), (name, route.path, status, data)
        status, page = await c.get("/console/users")
        assert status == 403 and "没有权限" in page
        _, dashboard = await c.get("/console")
        assert 'href="/console/users"' not in dashboard
    async with bot.runtime.db.read_session() as session:
        names = set((await session.execute(select(ConsoleUser.username))).scalars())
        ops = (await session.execute(select(ConsoleUser).where(ConsoleUser.username == "ops"))).scalar_one()
    assert names == {"viewer", "ga", "ops"} and not ops.disabled and ops.role == console_store.OPS_ADMIN
    admin = client()
    assert (await admin.login("ops"))[0] == 200
    status, page = await admin.get("/console/users")
    assert status == 200 and 'data-page="users"' in page and 'href="/console/users"' in page
