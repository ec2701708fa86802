"""The console's JSON API: account, dashboard, groups and their settings, members, audit log.

Routes only parse, check access and shape JSON: the queries live in storage/ (storage/dashboard.py,
storage/audit.py, storage/faq.py …) and changes go through the same domain functions the chat commands
and the CLI use (handlers.welcome.update_welcome_settings, storage.groups.set_timezone,
storage.faq.set_group_scope), each change written to the audit log with source "console".
See bot/console/__init__.py for how to add a route.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

from bot.console import auth
from bot.console import schema as s
from bot.console.routes import PUBLIC, WRITE, Api, ApiError, ApiRequest, Param
from storage import audit as audit_store
from storage import dashboard as board
from storage import faq as faq_store
from storage import groups as group_store
from storage import welcome as welcome_store
from storage.console import ROLES
from storage.db import utcnow
from storage.groups import Group, Member

api = Api()

# -- schemas -----------------------------------------------------------------------------------------

GROUP_REF = s.obj({
    "id": s.integer("the group's id in the console (groups.id)"),
    "channel": s.string("the door the group is on (simulator, wecom, gateway …)"),
    "external_id": s.string("the group's id on its platform; @direct for a door's 1:1 chats"),
    "name": s.string(),
    "direct": s.boolean("a door's 1:1 chats rather than a group"),
    "dismissed": s.boolean(),
})
GROUP_SUMMARY = s.obj({
    "group": GROUP_REF,
    "timezone": s.string("the timezone its days are counted in (its own or the bot's)"),
    "today": s.day("the group's local today"),
    "members": s.integer("members in the group now"),
    "active_today": s.integer("members who wrote anything today"),
    "checkins_today": s.integer(),
    "checkin_rate": s.number("today's check-ins / members now (0..1)"),
})
SETTINGS = s.obj({
    "welcome_enabled": s.boolean("the group's own switch; null: the configured default", nullable=True),
    "welcome_enabled_effective": s.boolean("whether newcomers are welcomed now"),
    "welcome_text": s.string("the group's welcome template; null: the default", nullable=True),
    "welcome_rules": s.string("the group's rules line; null: the default", nullable=True),
    "welcome_preview": s.string("the welcome a newcomer named 小新 would get now"),
    "timezone": s.string("the group's own IANA timezone; null: the bot's", nullable=True),
    "default_timezone": s.string(),
    "faq_scope": s.string("which FAQ entries answer here", enum=list(faq_store.SCOPES)),
})
GROUP_DETAIL = s.obj({"summary": GROUP_SUMMARY, "settings": SETTINGS, "can_write": s.boolean()})
SETTINGS_CHANGE = s.obj({
    "welcome_enabled": s.boolean("true/false, or null for the configured default", nullable=True),
    "welcome_text": s.string("placeholders {names} {group_name} {member_count} {rules} {count}; "
                             "empty or null for the default", max_length=2000, nullable=True),
    "welcome_rules": s.string("empty or null for the default", max_length=2000, nullable=True),
    "timezone": s.string("an IANA name (Asia/Tokyo); empty or null for the bot's", max_length=64, nullable=True),
    "faq_scope": s.string("all: own + global entries; group: own only; global: global only; off: no answers",
                          enum=list(faq_store.SCOPES)),
}, required=[], description="only the fields given are changed")
ME = s.obj({
    "username": s.string(),
    "role": s.string(enum=list(ROLES)),
    "can_write": s.boolean(),
    "groups": s.nullable(s.array(GROUP_REF, "a group admin's groups; null for the ops roles (every group)")),
    "csrf_token": s.string("send it as X-CSRF-Token with every request that is not GET"),
    "simulator_url": s.string("the simulator page, when the simulator is on", nullable=True),
    "timezone": s.string("the bot's timezone"),
})
MEMBER_REF = s.obj({
    "id": s.integer(), "channel": s.string(), "external_id": s.string(), "name": s.string(),
    "kind": s.string("staff, external, or null when the platform does not say", nullable=True),
})
PAGING = [Param("page", s.integer(minimum=1) | {"default": 1}),
          Param("per_page", s.integer(minimum=1, maximum=200) | {"default": 50})]
AUDIT_ENTRY = s.obj({
    "id": s.integer(), "at": s.timestamp(), "source": s.string("chat, cli, console or config"),
    "channel": s.string(), "group": s.string("the platform's group id; empty when not tied to a group"),
    "actor": s.string(), "command": s.string(), "args": s.string(), "result": s.string(), "detail": s.string(),
})
SERIES = s.obj({name: s.array(s.integer()) for name in (
    "active", "joins", "leaves", "checkins", "faq_answered", "faq_suggested", "faq_unanswered")})


def group_ref(group: Group) -> dict[str, Any]:
    return {"id": group.id, "channel": group.channel, "external_id": group.external_id, "name": group.name,
            "direct": group.external_id == board.DIRECT_SCOPE, "dismissed": group.dismissed_at is not None}


def member_ref(member: Member) -> dict[str, Any]:
    return {"id": member.id, "channel": member.channel, "external_id": member.external_id, "name": member.name,
            "kind": member.kind}


def summary_json(stats: board.GroupStats) -> dict[str, Any]:
    return {"group": group_ref(stats.group), "timezone": stats.timezone, "today": stats.today.isoformat(),
            "members": stats.members, "active_today": stats.active_today, "checkins_today": stats.checkins_today,
            "checkin_rate": stats.checkin_rate}


def ts(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# -- account -----------------------------------------------------------------------------------------


async def me_json(req: ApiRequest, csrf_token: str, account: Any) -> dict[str, Any]:
    groups = None
    if account.group_ids is not None:
        async with req.db.read_session() as session:
            rows = [await session.get(Group, gid) for gid in sorted(account.group_ids)]
        groups = [group_ref(g) for g in rows if g is not None]
    return {"username": account.username, "role": account.role, "can_write": account.can_write, "groups": groups,
            "csrf_token": csrf_token, "simulator_url": req.console.simulator_url, "timezone": req.config.timezone}


@api.route("GET", "/me", summary="The logged-in account, its CSRF token and groups", tag="account", response=ME)
async def me(req: ApiRequest) -> dict[str, Any]:
    assert req.live is not None
    return await me_json(req, req.live.csrf_token, req.account)


@api.route("POST", "/login", summary="Log in: sets the session cookie", access=PUBLIC, tag="account",
           body=s.obj({"username": s.string(min_length=1, max_length=64),
                       "password": s.string(min_length=1, max_length=1024)}),
           response=ME, description="401 for a wrong name or password; 429 with Retry-After after too many "
                                    "failures for the name or from the address.")
async def login(req: ApiRequest) -> web.StreamResponse:
    cfg = req.console.config
    result = await auth.login(req.db, cfg, username=req.body["username"], password=req.body["password"],
                              ip=auth.client_ip(req.request, cfg),
                              user_agent=req.request.headers.get("User-Agent", ""))
    if result.retry_after is not None:
        raise ApiError(429, "rate_limited", headers={"Retry-After": str(result.retry_after)})
    if result.token is None or result.account is None:
        raise ApiError(401, "bad_credentials")
    if req.live is not None:  # a new login replaces the browser's previous session
        await auth.logout(req.db, req.live)
    async with req.db.session() as session:
        await audit_store.record(session, source="console", command="console login", result=audit_store.OK,
                                 actor=result.account.username, args=auth.client_ip(req.request, cfg))
    from bot.http import json_response

    response = json_response(await me_json(req, result.csrf_token, result.account))  # type: ignore[arg-type]
    auth.set_cookie(response, result.token, cfg)
    return response


@api.route("POST", "/logout", summary="Log out: ends the session", tag="account",
           response=s.obj({"ok": s.boolean()}))
async def logout(req: ApiRequest) -> web.StreamResponse:
    from bot.http import json_response

    assert req.live is not None
    await auth.logout(req.db, req.live)
    response = json_response({"ok": True})
    auth.clear_cookie(response, req.console.config)
    return response


# -- dashboard ---------------------------------------------------------------------------------------


@api.route("GET", "/dashboard", summary="Daily figures for the last N days, overall or for one group",
           tag="dashboard",
           params=[Param("group", s.integer("one group's figures (its own timezone)", minimum=1)),
                   Param("days", s.integer(minimum=7, maximum=90) | {"default": 30})],
           response=s.obj({
               "group": s.nullable(GROUP_REF),
               "timezone": s.string("the timezone of the days"),
               "days": s.array(s.day()),
               "series": SERIES,
               "totals": s.obj({"groups": s.integer(), "members": s.integer()}),
               "top_groups": s.array(s.obj({"group": GROUP_REF, "active": s.integer()}),
                                     "the most active groups today (overall view only)"),
               "empty": s.boolean("nothing happened in the window: show the first steps"),
           }))
async def dashboard(req: ApiRequest) -> dict[str, Any]:
    group = await req.group(req.params["group"]) if req.params["group"] else None
    ids = frozenset({group.id}) if group is not None else req.visible_group_ids
    tz = (group.timezone or req.config.timezone) if group is not None else req.config.timezone
    today = board.local_today(tz, utcnow())
    days = board.day_range(today, req.params["days"])
    async with req.db.read_session() as session:
        series = await board.daily_series(session, days=days, tz=tz, group_ids=ids)  # type: ignore[arg-type]
        totals = await board.overview(session, group_ids=ids)
        top = [] if group is not None else await board.most_active_groups(session, day=today, group_ids=ids)
    figures = {name: getattr(series, name) for name in SERIES["properties"]}
    return {"group": group_ref(group) if group else None, "timezone": tz, "days": [d.isoformat() for d in days],
            "series": figures, "totals": totals,
            "top_groups": [{"group": group_ref(g), "active": n} for g, n in top],
            "empty": not any(any(v) for v in figures.values())}


# -- groups ------------------------------------------------------------------------------------------


@api.route("GET", "/groups", summary="Groups with members, active today and check-in rate", tag="groups",
           params=[Param("q", s.string("search in name and id", max_length=100)), *PAGING],
           response=s.obj({"groups": s.array(GROUP_SUMMARY), "total": s.integer(), "page": s.integer(),
                           "per_page": s.integer()}))
async def list_groups(req: ApiRequest) -> dict[str, Any]:
    page, per_page = req.params["page"], req.params["per_page"]
    async with req.db.read_session() as session:
        groups, total = await board.find_groups(session, group_ids=req.visible_group_ids, query=req.params["q"] or "",
                                                offset=(page - 1) * per_page, limit=per_page)
        stats = await board.group_stats(session, groups, default_tz=req.config.timezone, now=utcnow())
    return {"groups": [summary_json(st) for st in stats], "total": total, "page": page, "per_page": per_page}


async def group_detail(req: ApiRequest, group: Group) -> dict[str, Any]:
    from handlers.welcome import welcome_preview

    async with req.db.read_session() as session:
        [stats] = await board.group_stats(session, [group], default_tz=req.config.timezone, now=utcnow())
        welcome = await welcome_store.get_settings(session, group.id)  # type: ignore[arg-type]
        scope = await faq_store.group_scope(session, group.id)  # type: ignore[arg-type]
    enabled, preview = await welcome_preview(req.db, req.config, group.channel, group.external_id,
                                             req.runtime.templates)
    return {"summary": summary_json(stats), "can_write": req.account.can_write, "settings": {
        "welcome_enabled": welcome.enabled if welcome else None, "welcome_enabled_effective": enabled,
        "welcome_text": welcome.template if welcome else None, "welcome_rules": welcome.rules if welcome else None,
        "welcome_preview": preview, "timezone": stats.group.timezone, "default_timezone": req.config.timezone,
        "faq_scope": scope}}


@api.route("GET", "/groups/{group_id}", summary="One group: figures and settings", tag="groups",
           response=GROUP_DETAIL)
async def get_group(req: ApiRequest) -> dict[str, Any]:
    return await group_detail(req, await req.group(req.params["group_id"]))


@api.route("PATCH", "/groups/{group_id}/settings", summary="Change a group's welcome, timezone or FAQ scope",
           access=WRITE, tag="groups", body=SETTINGS_CHANGE, response=GROUP_DETAIL,
           description="Each change is written to the audit log (source console). 400 names a bad field; "
                       "nothing is changed then.")
async def change_group_settings(req: ApiRequest) -> dict[str, Any]:
    from handlers.checkin import resolve_timezone
    from handlers.welcome import update_welcome_settings

    group = await req.group(req.params["group_id"], write=True)
    body = req.body
    zone: str | None = None
    if "timezone" in body and body["timezone"]:
        zone = resolve_timezone(body["timezone"])
        if zone is None:
            raise ApiError(400, "bad_timezone", body["timezone"])
    async with req.db.read_session() as session:
        before = await welcome_store.get_settings(session, group.id)  # type: ignore[arg-type]
    welcome: dict[str, object] = {}
    if "welcome_enabled" in body:
        welcome["enabled"] = body["welcome_enabled"]
    if "welcome_text" in body:
        welcome["template"] = body["welcome_text"] or None
    if "welcome_rules" in body:
        welcome["rules"] = body["welcome_rules"] or None
    if welcome:
        try:
            await update_welcome_settings(req.db, group.channel, group.external_id, **welcome)
        except ValueError as exc:
            raise ApiError(400, "bad_welcome", str(exc)) from None
    changed_zone = changed_scope = None
    async with req.db.session() as session:
        if "timezone" in body:
            old = await group_store.set_timezone(session, group.id, zone)  # type: ignore[arg-type]
            if old != zone:
                changed_zone = f"timezone {old or 'default'} -> {zone or 'default'}"
        if "faq_scope" in body:
            old_scope = await faq_store.set_group_scope(session, group.id, body["faq_scope"])  # type: ignore[arg-type]
            if old_scope != body["faq_scope"]:
                changed_scope = f"faq scope {old_scope} -> {body['faq_scope']}"
    old_values = {"enabled": before.enabled if before else None, "template": before.template if before else None,
                  "rules": before.rules if before else None}
    if "enabled" in welcome and welcome["enabled"] != old_values["enabled"]:
        state = {True: "on", False: "off", None: "default"}
        await req.audit(f"welcome {state[welcome['enabled']]}", group=group,  # type: ignore[index]
                        detail=f"welcome {state[old_values['enabled']]} -> {state[welcome['enabled']]}")  # type: ignore[index]
    for key, label in (("template", "text"), ("rules", "rules")):
        if key in welcome and welcome[key] != old_values[key]:
            await req.audit(f"welcome set {label}", group=group, args=str(welcome[key] or ""),
                            detail=f"welcome {label} {'reset to default' if welcome[key] is None else 'changed'}")
    if changed_zone:
        await req.audit("timezone", group=group, args=zone or "", detail=changed_zone)
    if changed_scope:
        await req.audit("faq scope", group=group, args=body["faq_scope"], detail=changed_scope)
    return await group_detail(req, await req.group(group.id))  # type: ignore[arg-type]


# -- members -----------------------------------------------------------------------------------------


@api.route("GET", "/members", summary="Search members by name or user id", tag="members",
           params=[Param("q", s.string("search in name and user id", max_length=100)),
                   Param("group", s.integer("only members of this group", minimum=1)), *PAGING],
           response=s.obj({"members": s.array(s.obj({
               "member": MEMBER_REF, "groups": s.integer("visible groups the member is in now"),
               "last_active": s.timestamp(nullable=True)})),
               "total": s.integer(), "page": s.integer(), "per_page": s.integer()}))
async def list_members(req: ApiRequest) -> dict[str, Any]:
    group = await req.group(req.params["group"]) if req.params["group"] else None
    page, per_page = req.params["page"], req.params["per_page"]
    async with req.db.read_session() as session:
        rows, total = await board.find_members(session, group_ids=req.visible_group_ids, query=req.params["q"] or "",
                                               group_id=group.id if group else None,
                                               offset=(page - 1) * per_page, limit=per_page)
    return {"members": [{"member": member_ref(r.member), "groups": r.groups, "last_active": ts(r.last_active)}
                        for r in rows], "total": total, "page": page, "per_page": per_page}


@api.route("GET", "/members/{member_id}", summary="A member's profile in the visible groups", tag="members",
           response=s.obj({
               "member": MEMBER_REF,
               "stays": s.array(s.obj({
                   "group": GROUP_REF, "joined_at": s.timestamp(), "join_scene": s.string(nullable=True),
                   "inviter": s.nullable(MEMBER_REF), "left_at": s.timestamp(nullable=True),
                   "leave_scene": s.string(nullable=True)}), "joins and leaves, newest first"),
               "standings": s.array(s.obj({
                   "group": GROUP_REF, "balance": s.integer(), "earned": s.integer(), "level": s.string(),
                   "streak": s.integer(), "last_active": s.timestamp(nullable=True),
                   "active_days_30": s.integer()}), "points, level, streak and activity per group"),
               "ledger": s.array(s.obj({
                   "group": GROUP_REF, "at": s.timestamp(), "delta": s.integer(), "kind": s.string(),
                   "reason": s.string()}), "the latest points ledger rows"),
               "invites": s.array(s.obj({"group": GROUP_REF, "member": MEMBER_REF, "joined_at": s.timestamp()}),
                                  "members this member invited"),
           }))
async def get_member(req: ApiRequest) -> dict[str, Any]:
    async with req.db.read_session() as session:
        profile = await board.member_profile(session, req.params["member_id"], group_ids=req.visible_group_ids,
                                             levels=[tuple(x) for x in req.config.checkin.levels],  # type: ignore[misc]
                                             default_tz=req.config.timezone, now=utcnow())
        exists = profile is not None or await session.get(Member, req.params["member_id"]) is not None
    if profile is None:
        raise ApiError(403 if exists and req.visible_group_ids is not None else 404,
                       "other_group" if exists and req.visible_group_ids is not None else "not_found")
    return {
        "member": member_ref(profile.member),
        "stays": [{"group": group_ref(st.group), "joined_at": ts(st.joined_at), "join_scene": st.join_scene,
                   "inviter": member_ref(st.inviter) if st.inviter else None, "left_at": ts(st.left_at),
                   "leave_scene": st.leave_scene} for st in profile.stays],
        "standings": [{"group": group_ref(x.group), "balance": x.balance, "earned": x.earned, "level": x.level,
                       "streak": x.streak, "last_active": ts(x.last_active), "active_days_30": x.active_days_30}
                      for x in profile.standings],
        "ledger": [{"group": group_ref(g), "at": ts(e.at), "delta": e.delta, "kind": e.kind, "reason": e.reason}
                   for g, e in profile.ledger],
        "invites": [{"group": group_ref(i.group), "member": member_ref(i.member), "joined_at": ts(i.joined_at)}
                    for i in profile.invites],
    }


# -- audit log ---------------------------------------------------------------------------------------


@api.route("GET", "/audit", summary="The audit log: admin actions from chat, CLI and console, newest first",
           tag="audit",
           params=[Param("group", s.integer("only this group", minimum=1)),
                   Param("source", s.string(enum=list(audit_store.SOURCES))),
                   Param("actor", s.string(max_length=128)),
                   Param("q", s.string("search in command, arguments and result detail", max_length=100)),
                   Param("before", s.integer("entries older than this id (paging)", minimum=1)),
                   Param("limit", s.integer(minimum=1, maximum=200) | {"default": 50})],
           response=s.obj({"entries": s.array(AUDIT_ENTRY),
                           "next_before": s.integer("pass as `before` for the next page", nullable=True)}))
async def audit_log(req: ApiRequest) -> dict[str, Any]:
    p = req.params
    group = await req.group(p["group"]) if p["group"] else None
    pairs = None
    if req.visible_group_ids is not None:
        async with req.db.read_session() as session:
            rows = [await session.get(Group, gid) for gid in sorted(req.visible_group_ids)]
        pairs = [(g.channel, g.external_id) for g in rows if g is not None]
    async with req.db.read_session() as session:
        entries = await audit_store.search(session, groups=pairs, group=(group.channel, group.external_id) if group else None,
                                           source=p["source"], actor=p["actor"], text=p["q"], before_id=p["before"],
                                           limit=p["limit"])
    return {"entries": [{"id": e.id, "at": ts(e.at), "source": e.source, "channel": e.channel, "group": e.group,
                         "actor": e.actor, "command": e.command, "args": e.args, "result": e.result,
                         "detail": e.detail} for e in entries],
            "next_before": entries[-1].id if len(entries) == p["limit"] else None}


# -- the API's own description ---------------------------------------------------------------------


@api.route("GET", "/openapi.json", summary="This API, as an OpenAPI 3.1 document", tag="meta",
           response={"type": "object", "description": "an OpenAPI 3.1 document"})
async def openapi_document(req: ApiRequest) -> dict[str, Any]:
    from bot.console.openapi import build

    return build(api)

