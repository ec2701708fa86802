"""The console's scheduled-post routes: list, create and edit posts with a live preview (next run times and
the content as a chosen group gets it), pause, resume and remove, the runs with each delivery's state and
reason, and a group's quiet hours, daily cap and tags.

The domain code is the chat command's and the CLI's: bot.push_spec (schedules as people write them, content
variables, payloads, quiet hours), storage.push (create_post, update_post, set_enabled, remove_post, runs_of,
deliveries_of, set_group_settings, tags), scheduler.push (next_runs, render_post, and the process's push
service, told to rebuild the post's timer at once). Every change is audited with source "console".
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.exc import IntegrityError

from bot.console import schema as s
from bot.console.api import GROUP_REF, api, group_ref, ts
from bot.console.routes import WRITE, ApiError, ApiRequest, Param
from bot.push_spec import (
    KINDS,
    MAX_CONTENT,
    SpecError,
    check_content,
    check_payload,
    check_timezone,
    format_quiet_hours,
    parse_quiet_hours,
    parse_schedule,
)
from storage import push as store
from storage.console import OPS_ADMIN
from storage.db import utcnow
from storage.groups import Group

PREVIEW_RUNS = 5
LIST_RUNS = 3
MAX_TAG = 64
# Daily caps a group admin may set (as in chat), and ops (as on the command line).
GROUP_ADMIN_MAX_CAP, OPS_MAX_CAP = 1000, 10_000
# Which form field a bot.push_spec problem is about.
SPEC_FIELD = {"schedule": "schedule", "cron": "schedule", "interval": "schedule", "past": "schedule",
              "timezone": "timezone", "variable": "content", "days_until": "content", "too_long": "content",
              "content": "content", "kind": "kind", "payload": "payload", "group": "group_ids"}

RUN_TIME = s.obj({"at": s.timestamp(), "local": s.string("in the post's timezone: 2026-05-01 09:00"),
                  "weekday": s.string()})
POST = s.obj({
    "id": s.integer(), "name": s.string(nullable=True),
    "source": s.string("config, cli, chat or console"),
    "state": s.string(enum=["on", "paused", "removed"]),
    "schedule_text": s.string("the schedule as it was written"),
    "schedule": s.string("how it is read: cron …, every …, once …"),
    "timezone": s.string(),
    "target_kind": s.string(enum=[store.GROUPS, store.TAG, store.ALL]),
    "target_tag": s.string(nullable=True), "target_channel": s.string(nullable=True),
    "groups": s.array(GROUP_REF, "the listed target groups"),
    "kind": s.string(enum=list(KINDS)), "content": s.string(),
    "payload": s.obj({}, closed=False, description="image or news payload; {} for text and markdown"),
    "owner_group": s.nullable(GROUP_REF) | {"description": "the group whose admins manage it (made in chat)"},
    "campaign_id": s.integer(nullable=True), "phase": s.string(nullable=True),
    "created_by": s.string(), "created_at": s.timestamp(), "updated_at": s.timestamp(),
    "next_runs": s.array(RUN_TIME, "the next firings (none while paused)"),
    "can_write": s.boolean("this account may change it"),
})
POST_FIELDS = {
    "name": s.string("a name to refer to it by (unique among live posts)", max_length=64, nullable=True),
    "schedule": s.string("as in chat and on the CLI: 每天 9:00, 工作日 8:30, 每周一 10:00, 每2小时, "
                         "0 9 * * 1-5, 2026-12-01 20:00, 明天 9:00", max_length=128),
    "timezone": s.string("IANA name; null or empty: the bot's timezone", max_length=64, nullable=True),
    "target_kind": s.string("groups: the listed ones; tag: live groups with the tag; all: every live group "
                            "(tag and all: ops admins)", enum=[store.GROUPS, store.TAG, store.ALL]),
    "group_ids": s.array(s.integer(minimum=1), "the target groups (target_kind groups)"),
    "tag": s.string("target_kind tag", max_length=MAX_TAG, nullable=True),
    "channel": s.string("tag and all: only groups on this door", max_length=32, nullable=True),
    "kind": s.string(enum=list(KINDS)),
    "content": s.string("with {date} {weekday} {group_name} {member_count} {yesterday_checkins} "
                        "{days_until:2026-12-31}", max_length=MAX_CONTENT),
    "payload": s.obj({}, closed=False, nullable=True,
                     description='image: {"url"} or {"base64", "md5"}; news: {"articles": [{"title", "url"}]}'),
}
POST_BODY = s.obj({**POST_FIELDS, "enabled": s.boolean("false: create it paused")},
                  required=["schedule", "target_kind", "kind", "content"])
EDIT_BODY = s.obj(POST_FIELDS, required=["schedule", "target_kind", "kind", "content"])
PREVIEW_BODY = s.obj({
    **POST_FIELDS,
    "post_id": s.integer("the post being edited (its interval anchor and campaign days)", minimum=1, nullable=True),
    "group_id": s.integer("render the content for this group (default: the first target)", minimum=1,
                          nullable=True),
}, required=[])
PROBLEM = s.obj({"field": s.string(), "message": s.string()})
DELIVERY = s.obj({
    "id": s.integer(), "channel": s.string(), "group": s.string("the group's id on its platform"),
    "group_name": s.string(), "status": s.string(enum=list(store.DELIVERY_STATES)), "attempts": s.integer(),
    "reason": s.string("why it failed or was skipped; else the last note (late, deferred, retried)"),
    "sent_at": s.timestamp(nullable=True), "next_attempt_at": s.timestamp(),
})
LIMITS = s.obj({
    "group": GROUP_REF, "timezone": s.string("the group's timezone (quiet hours are read in it)"),
    "quiet_hours": s.string("the group's own: 22:00-08:00, empty for none; null: the default", nullable=True),
    "daily_cap": s.integer("the group's own: posts per local day, 0 for no cap; null: the default", nullable=True),
    "default_quiet_hours": s.string("push.quiet_hours"), "default_daily_cap": s.integer("push.daily_cap"),
    "effective_quiet_hours": s.string("what applies now; empty: none"),
    "effective_daily_cap": s.integer("what applies now; 0: no cap"),
    "tags": s.array(s.string(), "the group's tags (targets of tag posts)"),
    "max_daily_cap": s.integer("the largest cap this account may set"),
    "can_write": s.boolean(), "can_tag": s.boolean("tags are set by ops admins"),
})


# -- helpers -----------------------------------------------------------------------------------------


def _spec_text(req: ApiRequest, exc: SpecError) -> str:
    return req.runtime.templates.render(f"push.err_{exc.key}", **exc.values)


def run_time(req: ApiRequest, at: datetime, tz: str) -> dict[str, str]:
    from scheduler.push import weekday_text

    local = at.astimezone(ZoneInfo(tz))
    return {"at": at.isoformat(), "local": local.strftime("%Y-%m-%d %H:%M"),
            "weekday": weekday_text(req.runtime.templates, local.date())}


def _writes_post(req: ApiRequest, post: store.PushPost, groups: list[Group]) -> bool:
    if not req.account.can_write or post.removed_at is not None:
        return False
    return req.account.group_ids is None or store.post_within(post, groups, req.account.group_ids)


async def _upcoming(req: ApiRequest, post: store.PushPost, count: int, now: datetime) -> list[datetime]:
    from scheduler.push import next_runs
    from storage.campaign import post_window

    if not post.enabled or post.removed_at is not None:
        return []
    window = None
    if post.campaign_id is not None:
        async with req.db.read_session() as session:
            window = await post_window(session, post)
    return next_runs(post, count, now, window)


async def post_json(req: ApiRequest, post: store.PushPost, groups: list[Group], now: datetime,
                    owners: dict[int, Group] | None = None) -> dict[str, Any]:
    owner = None
    if post.owner_group_id is not None:
        owner = (owners or {}).get(post.owner_group_id)
        if owner is None:
            async with req.db.read_session() as session:
                owner = await session.get(Group, post.owner_group_id)
    upcoming = await _upcoming(req, post, LIST_RUNS, now)
    state = "removed" if post.removed_at is not None else "on" if post.enabled else "paused"
    return {
        "id": post.id, "name": post.name, "source": post.source, "state": state, "schedule_text": post.schedule_text,
        "schedule": post.schedule.describe(post.timezone), "timezone": post.timezone,
        "target_kind": post.target_kind, "target_tag": post.target_tag, "target_channel": post.target_channel,
        "groups": [group_ref(g) for g in groups], "kind": post.kind, "content": post.content,
        "payload": post.payload_data, "owner_group": group_ref(owner) if owner is not None else None,
        "campaign_id": post.campaign_id, "phase": post.phase, "created_by": post.created_by,
        "created_at": ts(post.created_at), "updated_at": ts(post.updated_at),
        "next_runs": [run_time(req, at, post.timezone) for at in upcoming],
        "can_write": _writes_post(req, post, groups),
    }


async def _visible_post(req: ApiRequest, post_id: int, *, write: bool = False,
                        include_removed: bool = False) -> tuple[store.PushPost, list[Group]]:
    async with req.db.read_session() as session:
        post = await store.get_post(session, post_id, include_removed=include_removed)
        groups = await store.listed_groups(session, post_id) if post is not None else []
    if post is None:
        raise ApiError(404, "not_found")
    ids = req.account.group_ids
    if ids is not None and not store.post_within(post, groups, ids):
        raise ApiError(403, "other_group")
    if write and not req.account.can_write:
        raise ApiError(403, "read_only")
    return post, groups


async def _refresh(req: ApiRequest, post_id: int) -> None:
    """This process rebuilds the post's timer now (the others at their next sync)."""
    from scheduler.push import service

    push = service(req.runtime)
    if push is not None:
        await push.refresh(post_id)


def _audit_group(post: store.PushPost, groups: list[Group]) -> Group | None:
    return groups[0] if post.target_kind == store.GROUPS and len(groups) == 1 else None



async def check_targets(req: ApiRequest, body: dict[str, Any], writing: bool, problem: Callable[[str, str], None],
                        *, groups_required: bool) -> tuple[str, list[Group], str | None]:
    """A post's or campaign's targets from a console form: (target kind, the listed groups, the door or None).

    Listed groups must be ones the account sees and real groups (not the 1:1 scope); only ops admins (or, to
    read, accounts that see every group) may target a tag or all groups. Mistakes go to `problem`.
    """
    text = req.console.text
    target = body.get("target_kind") or store.GROUPS
    groups: list[Group] = []
    broad = req.account.role == OPS_ADMIN or (not writing and req.account.group_ids is None)
    if target == store.GROUPS:
        ids = list(dict.fromkeys(body.get("group_ids") or []))
        if not ids and groups_required:
            problem("group_ids", text("push.groups_required"))
        async with req.db.read_session() as session:
            for gid in ids:
                group = await session.get(Group, gid)
                if group is None or not req.account.sees_group(gid):
                    problem("group_ids", text("push.group_unknown", id=gid))
                elif group.external_id == store.DIRECT_SCOPE:
                    problem("group_ids", text("push.group_direct", name=group.name or group.channel))
                else:
                    groups.append(group)
    elif not broad:
        problem("target_kind", text("push.broad_ops_only"))
    channel = (body.get("channel") or "").strip() or None
    if channel is not None:
        from bot.channels import DOORS

        if channel not in DOORS:
            problem("channel", text("push.channel_unknown", channel=channel))
    return target, groups, channel


async def check_post(req: ApiRequest, body: dict[str, Any], now: datetime, *, post: store.PushPost | None = None,
                     writing: bool) -> tuple[store.PostFields | None, list[dict[str, str]], list[Group]]:
    """The post a form describes, checked as the chat command and the CLI check it: (fields or None, every
    problem as {field, message}, the target groups). `writing`: the account must be allowed to post there."""
    problems: list[dict[str, str]] = []

    def problem(field: str, message: str) -> None:
        if not any(p["field"] == field for p in problems):
            problems.append({"field": field, "message": message})

    text = req.console.text
    tz = (body.get("timezone") or "").strip() or req.config.timezone
    schedule_text = " ".join((body.get("schedule") or "").split())
    schedule = None
    try:
        check_timezone(tz)
    except SpecError as exc:
        problem("timezone", _spec_text(req, exc))
    else:
        if not schedule_text:
            problem("schedule", text("push.schedule_required"))
        else:
            try:
                schedule = parse_schedule(schedule_text, tz=tz, now=now)
            except SpecError as exc:
                problem(SPEC_FIELD.get(exc.key, "schedule"), _spec_text(req, exc))
    kind = body.get("kind") or "text"
    content = body.get("content") or ""
    payload: dict[str, Any] = {}
    try:
        payload = check_payload(kind, body.get("payload") or {})
    except SpecError as exc:
        problem(SPEC_FIELD.get(exc.key, "payload"), _spec_text(req, exc))
    if kind in ("text", "markdown") and not content.strip():
        problem("content", text("push.content_required"))
    try:
        dates = dict(req.config.push.dates)
        campaign = False
        if post is not None and post.campaign_id is not None:
            from storage.campaign import plan_of

            async with req.db.read_session() as session:
                plan = await plan_of(session, post.campaign_id)
            if plan is not None:
                dates.update(plan.named_dates())
                campaign = True
        check_content(content, dates, campaign=campaign)
    except SpecError as exc:
        problem("content", _spec_text(req, exc))
    target, groups, channel = await check_targets(req, body, writing, problem, groups_required=True)
    tag = (body.get("tag") or "").strip() or None
    if target == store.TAG and not tag:
        problem("tag", text("push.tag_required"))
    if problems or schedule is None:
        return None, problems, groups
    fields = store.PostFields(
        schedule=schedule, schedule_text=schedule_text, timezone=tz, target_kind=target, content=content, kind=kind,
        payload=payload, target_tag=tag if target == store.TAG else None,
        target_channel=channel if target != store.GROUPS else None,
        group_ids=tuple(g.id for g in groups) if target == store.GROUPS else (),  # type: ignore[misc]
        name=(body.get("name") or "").strip() or None, enabled=body.get("enabled", True))
    return fields, [], groups


def _refuse(problems: list[dict[str, str]]) -> ApiError:
    first = problems[0]
    return ApiError(400, "bad_post", f"{first['field']}：{first['message']}", field=first["field"])


# -- posts -------------------------------------------------------------------------------------------


@api.route("GET", "/push/posts", summary="Scheduled posts with their schedules, targets and next runs", tag="push",
           params=[Param("removed", s.boolean("include removed posts") | {"default": False})],
           response=s.obj({"posts": s.array(POST), "timezone": s.string("the bot's timezone (the default)"),
                           "can_target_broadly": s.boolean("this account may target a tag or every group")}))
async def list_posts(req: ApiRequest) -> dict[str, Any]:
    now = utcnow()
    async with req.db.read_session() as session:
        rows = await store.posts_with_groups(session, group_ids=req.visible_group_ids,
                                             include_removed=bool(req.params["removed"]))
        owner_ids = {p.owner_group_id for p, _ in rows if p.owner_group_id is not None}
        owners = {gid: await session.get(Group, gid) for gid in owner_ids}
    return {"posts": [await post_json(req, p, g, now, owners) for p, g in rows],  # type: ignore[arg-type]
            "timezone": req.config.timezone, "can_target_broadly": req.account.role == OPS_ADMIN}


@api.route("GET", "/push/posts/{post_id}", summary="One scheduled post", tag="push", response=POST)
async def get_post(req: ApiRequest) -> dict[str, Any]:
    post, groups = await _visible_post(req, req.params["post_id"], include_removed=True)
    return await post_json(req, post, groups, utcnow())


@api.route("POST", "/push/posts", summary="Create a scheduled post", access=WRITE, tag="push", body=POST_BODY,
           response=POST,
           description="Checked like 定时 添加 and `qunbot push add`; 400 names the field (schedule, timezone, "
                       "content, payload, group_ids, tag …). A group admin posts only into their groups.")
async def create_post(req: ApiRequest) -> dict[str, Any]:
    from handlers.push import MAX_GROUP_POSTS

    now = utcnow()
    fields, problems, groups = await check_post(req, req.body, now, writing=True)
    if fields is None:
        raise _refuse(problems)
    for group in groups:
        await req.group(group.id, write=True)  # type: ignore[arg-type]
    # A group admin's post into one group is that group's, like one made in chat (listed there, counted in its limit).
    owner = groups[0].id if req.account.group_ids is not None and len(groups) == 1 else None
    try:
        async with req.db.session() as session:
            if owner is not None and len(await store.list_posts(session, owner_group_id=owner)) >= MAX_GROUP_POSTS:
                raise ApiError(400, "too_many_posts", str(MAX_GROUP_POSTS))
            post = await store.create_post(session, fields, source=store.CONSOLE, now=now, owner_group_id=owner,
                                           created_by=f"console:{req.account.username}")
    except IntegrityError:
        raise ApiError(400, "bad_post", req.console.text("push.name_taken", name=fields.name), field="name") from None
    await _refresh(req, post.id)  # type: ignore[arg-type]
    await req.audit("push add", group=_audit_group(post, groups), args=f"{fields.schedule_text} | {post.content[:200]}",
                    detail=f"added post {post.id} ({fields.schedule.describe(fields.timezone)}, {fields.timezone})")
    return await post_json(req, post, groups, now)


@api.route("PUT", "/push/posts/{post_id}", summary="Edit a scheduled post", access=WRITE, tag="push", body=EDIT_BODY,
           response=POST,
           description="A changed schedule counts from now (nothing before the edit is sent late); runs already "
                       "recorded keep the content they had. Posts declared in the config file are edited there.")
async def edit_post(req: ApiRequest) -> dict[str, Any]:
    now = utcnow()
    post, old_groups = await _visible_post(req, req.params["post_id"], write=True)
    if post.source == store.CONFIG:
        raise ApiError(400, "config_post")
    fields, problems, groups = await check_post(req, req.body, now, post=post, writing=True)
    if fields is None:
        raise _refuse(problems)
    for group in groups:
        await req.group(group.id, write=True)  # type: ignore[arg-type]
    if req.account.group_ids is not None and post.owner_group_id is not None and \
            any(g.id != post.owner_group_id for g in groups):
        raise ApiError(400, "bad_post", req.console.text("push.owner_group_only"), field="group_ids")
    try:
        async with req.db.session() as session:
            fresh = await store.update_post(session, post.id, fields, now)  # type: ignore[arg-type]
    except IntegrityError:
        raise ApiError(400, "bad_post", req.console.text("push.name_taken", name=fields.name), field="name") from None
    if fresh is None:
        raise ApiError(404, "not_found")
    await _refresh(req, post.id)  # type: ignore[arg-type]
    if fresh.revision != post.revision:
        changed = [k for k in ("schedule_text", "timezone", "target_kind", "target_tag", "target_channel", "kind",
                               "content", "payload", "name") if getattr(fresh, k) != getattr(post, k)]
        if sorted(g.id for g in groups) != sorted(g.id for g in old_groups):  # type: ignore[type-var]
            changed.append("groups")
        await req.audit("push edit", group=_audit_group(fresh, groups), args=f"{fields.schedule_text} | {fresh.content[:200]}",
                        detail=f"edited post {post.id}: {', '.join(changed) or 'no visible change'}")
    return await post_json(req, fresh, groups, now)


async def _switch(req: ApiRequest, action: str) -> dict[str, Any]:
    now = utcnow()
    post, groups = await _visible_post(req, req.params["post_id"], write=True)
    assert post.id is not None
    async with req.db.session() as session:
        if action == "remove":
            done = await store.remove_post(session, post.id, now)
        else:
            done = await store.set_enabled(session, post.id, action == "resume", now)
    await _refresh(req, post.id)
    what = {"pause": "paused", "resume": "resumed", "remove": "removed"}[action]
    detail = f"post {post.id} {what}" if done else f"post {post.id} was already {what}"
    if post.source == store.CONFIG and done:
        detail += " (declared in the config file: the next start-up applies the file again)"
    await req.audit(f"push {action}", group=_audit_group(post, groups), args=str(post.id), detail=detail)
    async with req.db.read_session() as session:
        fresh = await store.get_post(session, post.id, include_removed=True)
    assert fresh is not None
    return await post_json(req, fresh, groups, now)


@api.route("POST", "/push/posts/{post_id}/pause", summary="Pause a scheduled post", access=WRITE, tag="push",
           response=POST, description="Deliveries still waiting are skipped (reason: post paused).")
async def pause_post(req: ApiRequest) -> dict[str, Any]:
    return await _switch(req, "pause")


@api.route("POST", "/push/posts/{post_id}/resume", summary="Resume a scheduled post", access=WRITE, tag="push",
           response=POST, description="From now on: what fell in the pause is not sent late.")
async def resume_post(req: ApiRequest) -> dict[str, Any]:
    return await _switch(req, "resume")


@api.route("DELETE", "/push/posts/{post_id}", summary="Remove a scheduled post (its runs stay)", access=WRITE,
           tag="push", response=POST)
async def remove_post(req: ApiRequest) -> dict[str, Any]:
    return await _switch(req, "remove")


# -- the live preview --------------------------------------------------------------------------------


@api.route("POST", "/push/preview", summary="Preview a post as typed: problems, next run times, rendered content",
           tag="push", body=PREVIEW_BODY,
           response=s.obj({
               "ok": s.boolean("no problems"), "problems": s.array(PROBLEM, "every problem, by form field"),
               "schedule": s.string("how the schedule is read", nullable=True),
               "timezone": s.string(),
               "next_runs": s.array(RUN_TIME),
               "group": s.nullable(GROUP_REF) | {"description": "the group the content was rendered for"},
               "content": s.string("the content as that group would get it", nullable=True),
               "markdown": s.boolean(),
               "attachment": s.obj({}, closed=False, nullable=True, description="image or news card"),
           }),
           description="Changes nothing (any logged-in account; the pages call it as the user types).")
async def preview_post(req: ApiRequest) -> dict[str, Any]:
    from scheduler.push import next_runs, render_post
    from storage.campaign import post_window

    body = req.body or {}
    now = utcnow()
    existing = None
    if body.get("post_id"):
        existing, _ = await _visible_post(req, body["post_id"])
    fields, problems, groups = await check_post(req, body, now, post=existing, writing=False)
    tz = (body.get("timezone") or "").strip() or req.config.timezone
    upcoming: list[datetime] = []
    if fields is not None or not any(p["field"] in ("schedule", "timezone") for p in problems):
        schedule = fields.schedule if fields is not None else None
        if schedule is None:
            try:
                schedule = parse_schedule(" ".join((body.get("schedule") or "").split()), tz=tz, now=now)
            except SpecError:
                schedule = None
        if schedule is not None:
            same = existing is not None and existing.schedule == schedule and existing.timezone == tz
            probe = store.PushPost(
                source=store.CONSOLE, schedule_kind=schedule.kind, cron=schedule.cron,
                interval_seconds=schedule.interval_seconds, run_at=schedule.run_at, timezone=tz,
                anchor_at=existing.anchor_at if same and existing else now.replace(second=0, microsecond=0),
                covered_until=existing.covered_until if same and existing else now, target_kind=store.GROUPS,
                campaign_id=existing.campaign_id if existing else None, phase=existing.phase if existing else None)
            window = None
            if probe.campaign_id is not None:
                async with req.db.read_session() as session:
                    window = await post_window(session, probe)
            upcoming = next_runs(probe, PREVIEW_RUNS, now, window)
    group = None
    if body.get("group_id"):
        group = await req.group(body["group_id"])
    elif groups:
        group = groups[0]
    elif (body.get("target_kind") or store.GROUPS) != store.GROUPS:
        group = await _first_broad_target(req, body)
    content = None
    markdown = False
    attachment = None
    if not any(p["field"] in ("content", "payload", "kind") for p in problems):
        shown = group or Group(channel="", external_id="(example)", name=req.console.text("push.example_group"))
        reply = await render_post(req.db, req.config, req.runtime.templates, kind=body.get("kind") or "text",
                                  content=body.get("content") or "",
                                  payload=check_payload(body.get("kind") or "text", body.get("payload") or {}),
                                  scheduled_at=upcoming[0] if upcoming else now, group=shown,
                                  campaign_id=existing.campaign_id if existing else None,
                                  phase=existing.phase if existing else None)
        content, markdown, attachment = reply.text, reply.markdown, reply.attachment
    return {"ok": not problems, "problems": problems,
            "schedule": fields.schedule.describe(tz) if fields is not None else None, "timezone": tz,
            "next_runs": [run_time(req, at, tz) for at in upcoming],
            "group": group_ref(group) if group is not None else None, "content": content, "markdown": markdown,
            "attachment": json.loads(json.dumps(attachment)) if attachment else None}


async def _first_broad_target(req: ApiRequest, body: dict[str, Any]) -> Group | None:
    """A group a tag or all post would reach (the first one this account sees), to render the preview for."""
    from sqlalchemy import select

    probe = store.PushPost(source=store.CONSOLE, schedule_kind="once", timezone="UTC", anchor_at=utcnow(),
                           covered_until=utcnow(), target_kind=body.get("target_kind") or store.ALL,
                           target_tag=(body.get("tag") or "").strip() or None,
                           target_channel=(body.get("channel") or "").strip() or None)
    query = select(Group).where(*store.target_conditions(probe)).order_by(Group.id).limit(1)
    if req.visible_group_ids is not None:
        query = query.where(Group.id.in_(sorted(req.visible_group_ids)))  # type: ignore[union-attr]
    async with req.db.read_session() as session:
        return (await session.execute(query)).scalar_one_or_none()


# -- runs --------------------------------------------------------------------------------------------


@api.route("GET", "/push/runs", summary="Runs of the posts (or one post) with each delivery's state and reason",
           tag="push",
           params=[Param("post", s.integer("only this post", minimum=1)),
                   Param("state", s.string("only deliveries in this state", enum=list(store.DELIVERY_STATES))),
                   Param("limit", s.integer("the latest N runs", minimum=1, maximum=200) | {"default": 20})],
           response=s.obj({
               "post": s.nullable(POST),
               "runs": s.array(s.obj({
                   "id": s.integer(), "post_id": s.integer(), "post_name": s.string(nullable=True),
                   "scheduled_at": s.timestamp(), "local": s.string("in the post's timezone"),
                   "timezone": s.string("the post's timezone: its run and delivery times are shown in it"),
                   "status": s.string("scheduled, or skipped (not sent at all)", enum=["scheduled", "skipped"]),
                   "late": s.boolean("recorded after its time (downtime) and sent late"),
                   "reason": s.string(), "targets": s.integer(), "deliveries": s.array(DELIVERY)})),
               "summary": s.obj({"runs": s.integer(), "late": s.integer(), "skipped": s.integer(),
                                 "deliveries": s.obj({k: s.integer() for k in store.DELIVERY_STATES})},
                                description="of the post (or of every post, for ops roles)"),
           }))
async def list_runs(req: ApiRequest) -> dict[str, Any]:
    p = req.params
    now = utcnow()
    post = None
    allowed: set[int] | None = None
    if p["post"]:
        post, groups = await _visible_post(req, p["post"], include_removed=True)
    elif req.visible_group_ids is not None:
        async with req.db.read_session() as session:
            visible = await store.posts_with_groups(session, group_ids=req.visible_group_ids, include_removed=True)
        allowed = {x.id for x, _ in visible}  # type: ignore[misc]
    async with req.db.read_session() as session:
        rows = await store.runs_of(session, post.id if post else None, limit=p["limit"] if allowed is None else 1000)
        if allowed is not None:
            rows = [(r, x) for r, x in rows if x.id in allowed][:p["limit"]]
        deliveries = await store.deliveries_of(session, [r.id for r, _ in rows])  # type: ignore[misc]
        if allowed is None:
            by_state = await store.delivery_counts(session, post.id if post else None)
            counts = await store.run_counts(session, post.id if post else None)
        else:
            by_state, counts = {}, {"runs": 0, "late": 0, "skipped": 0}
            for post_id in allowed:
                for k, v in (await store.delivery_counts(session, post_id)).items():
                    by_state[k] = by_state.get(k, 0) + v
                for k, v in (await store.run_counts(session, post_id)).items():
                    counts[k] += v
    by_run: dict[int, list[store.DeliveryView]] = {}
    for d in deliveries:
        if p["state"] is None or d.status == p["state"]:
            by_run.setdefault(d.run_id, []).append(d)
    return {
        "post": await post_json(req, post, groups, now) if post is not None else None,
        "runs": [{"id": r.id, "post_id": x.id, "post_name": x.name, "scheduled_at": ts(r.scheduled_at),
                  "local": r.scheduled_at.astimezone(ZoneInfo(x.timezone)).strftime("%Y-%m-%d %H:%M"),
                  "timezone": x.timezone,
                  "status": r.status, "late": r.late, "reason": r.reason, "targets": r.targets,
                  "deliveries": [{"id": d.id, "channel": d.channel, "group": d.group, "group_name": d.group_name,
                                  "status": d.status, "attempts": d.attempts, "reason": d.reason,
                                  "sent_at": ts(d.sent_at), "next_attempt_at": ts(d.next_attempt_at)}
                                 for d in by_run.get(r.id, [])]}  # type: ignore[arg-type]
                 for r, x in rows],
        "summary": {**counts, "deliveries": {k: by_state.get(k, 0) for k in store.DELIVERY_STATES}},
    }


# -- tags and a group's limits -----------------------------------------------------------------------


@api.route("GET", "/push/tags", summary="Group tags (targets of tag posts) with their groups", tag="push",
           response=s.obj({"tags": s.array(s.obj({"tag": s.string(), "groups": s.array(GROUP_REF)}))}))
async def list_tags(req: ApiRequest) -> dict[str, Any]:
    async with req.db.read_session() as session:
        rows = await store.tagged(session)
    tags: dict[str, list[dict[str, Any]]] = {}
    for tag, group in rows:
        if req.account.sees_group(group.id):  # type: ignore[arg-type]
            tags.setdefault(tag, []).append(group_ref(group))
    return {"tags": [{"tag": t, "groups": g} for t, g in tags.items()]}


async def limits_json(req: ApiRequest, group: Group) -> dict[str, Any]:
    cfg = req.config.push
    async with req.db.read_session() as session:
        own = await store.group_settings(session, group.id)  # type: ignore[arg-type]
        tags = await store.group_tags(session, group.id)  # type: ignore[arg-type]
    quiet = own.quiet_hours if own is not None else None
    cap = own.daily_cap if own is not None else None
    return {"group": group_ref(group), "timezone": group.timezone or req.config.timezone, "quiet_hours": quiet,
            "daily_cap": cap, "default_quiet_hours": cfg.quiet_hours, "default_daily_cap": cfg.daily_cap,
            "effective_quiet_hours": cfg.quiet_hours if quiet is None else quiet,
            "effective_daily_cap": cfg.daily_cap if cap is None else cap, "tags": tags,
            "max_daily_cap": OPS_MAX_CAP if req.account.role == OPS_ADMIN else GROUP_ADMIN_MAX_CAP,
            "can_write": req.account.can_write, "can_tag": req.account.role == OPS_ADMIN}


@api.route("GET", "/groups/{group_id}/push-settings", summary="A group's quiet hours, daily cap and tags",
           tag="push", response=LIMITS)
async def get_limits(req: ApiRequest) -> dict[str, Any]:
    return await limits_json(req, await req.group(req.params["group_id"]))


@api.route("PATCH", "/groups/{group_id}/push-settings", summary="Set a group's quiet hours, daily cap or tags",
           access=WRITE, tag="push",
           body=s.obj({"quiet_hours": s.string("22:00-08:00; empty or 关闭 for none; null for the default",
                                               max_length=32, nullable=True),
                       "daily_cap": s.integer("posts per local day, 0 for no cap; null for the default", minimum=0,
                                              nullable=True),
                       "tags": s.array(s.string(min_length=1, max_length=MAX_TAG), "the group's tags (ops admins)")},
                      required=[], description="only the fields given are changed"),
           response=LIMITS,
           description="As 定时 免打扰 / 定时 上限 in chat and `qunbot push limits`; quiet hours are read in the "
                       "group's timezone, and posts due in them wait until they end.")
async def set_limits(req: ApiRequest) -> dict[str, Any]:
    group = await req.group(req.params["group_id"], write=True)
    body = req.body
    values: dict[str, Any] = {}
    if "quiet_hours" in body:
        raw = body["quiet_hours"]
        try:
            values["quiet_hours"] = None if raw is None else format_quiet_hours(parse_quiet_hours(raw))
        except SpecError as exc:
            raise ApiError(400, "bad_request", _spec_text(req, exc), field="quiet_hours") from None
    if "daily_cap" in body:
        most = OPS_MAX_CAP if req.account.role == OPS_ADMIN else GROUP_ADMIN_MAX_CAP
        if body["daily_cap"] is not None and body["daily_cap"] > most:
            raise ApiError(400, "bad_request", req.runtime.templates.render("push.err_cap", max=most),
                           field="daily_cap")
        values["daily_cap"] = body["daily_cap"]
    added: list[str] = []
    removed: list[str] = []
    if "tags" in body:
        if req.account.role != OPS_ADMIN:
            raise ApiError(403, "forbidden", req.console.text("push.tags_ops_only"))
        wanted = list(dict.fromkeys(t.strip() for t in body["tags"] if t.strip()))
        async with req.db.read_session() as session:
            current = await store.group_tags(session, group.id)  # type: ignore[arg-type]
        added = [t for t in wanted if t not in current]
        removed = [t for t in current if t not in wanted]
    async with req.db.session() as session:
        before = await store.group_settings(session, group.id)  # type: ignore[arg-type]
        old = {"quiet_hours": before.quiet_hours if before else None, "daily_cap": before.daily_cap if before else None}
        if values:
            await store.set_group_settings(session, group.id, utcnow(), **values)  # type: ignore[arg-type]
        for tag in added:
            await store.add_tag(session, group.id, tag)  # type: ignore[arg-type]
        for tag in removed:
            await store.remove_tag(session, group.id, tag)  # type: ignore[arg-type]
    changes = [f"{k} {_shown(old[k])} -> {_shown(v)}" for k, v in values.items() if old[k] != v]
    if changes:
        await req.audit("push limits", group=group, args=json.dumps(values, ensure_ascii=False), detail="; ".join(changes))
    if added or removed:
        await req.audit("push tag", group=group, args=" ".join(added + removed),
                        detail="; ".join([f"tagged {t}" for t in added] + [f"untagged {t}" for t in removed]))
    return await limits_json(req, group)


def _shown(value: object) -> str:
    return "default" if value is None else "none" if value in ("", 0) else str(value)
