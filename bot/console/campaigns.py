"""The console's campaign routes: the campaigns with their phases and countdown; one campaign's posts, lotteries,
reminders and review summary; creating, editing and removing campaigns, attaching posts to them (and a phase),
and a live preview of a definition being typed (its countdown on each phase's first day, its milestone
reminders, and the next runs and content of its posts under the edited dates).

Everything is storage.campaign, the functions `qunbot campaign`, the 定时 / 活动 chat commands and the config
file use (create_campaign, update_campaign, remove_campaign, attach_post, detach_post, summary …); every change
is audited with source "console". A group admin sees the campaigns that include one of their groups (with that
group's figures), and may create and change campaigns made only of their groups, and put their groups' posts
into a campaign their group takes part in. Campaigns declared in the config file are edited in the file.
"""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from bot.console import schema as s
from bot.console.api import GROUP_REF, api, group_ref, ts
from bot.console.push import check_targets
from bot.console.routes import WRITE, ApiError, ApiRequest, Param
from storage import campaign as store
from storage.console import OPS_ADMIN
from storage.db import utcnow
from storage.groups import Group

STATES = ["before", "during", "after", "removed"]
PREVIEW_RUNS = 3
SAMPLE_MAX = 500
# Which form field a storage.campaign mistake is about.
ERROR_FIELD = {"name": "name", "name_taken": "name", "title": "title", "timezone": "timezone",
               "targets": "group_ids", "phases": "phases", "phase": "phases", "span": "phases", "order": "phases",
               "no_phase": "phases", "phase_in_use": "phases", "post_content": "phases", "date": "phases",
               "key_name": "key_name", "date_name": "dates", "target": "reminder_target", "days": "reminder_days",
               "ops": "ops_users"}

PHASE = s.obj({"phase": s.string("warmup, burst, longtail or review"), "label": s.string("预热 爆发 长尾 复盘"),
               "first": s.day(), "last": s.day(), "current": s.boolean("today is one of its days")})
CAMPAIGN = {
    "id": s.integer(), "name": s.string(), "title": s.string(), "timezone": s.string("its days are counted in it"),
    "state": s.string("before, during (a phase or a gap between phases), after its days; or removed", enum=STATES),
    "today": s.day("the campaign's local today"),
    "phase": s.string("today's phase", nullable=True), "phase_label": s.string(nullable=True),
    "key_name": s.string("what the key date is called"), "key_date": s.day(),
    "days_left": s.integer("days from today to the key date (0: today; negative: past)"),
    "first_day": s.day(), "last_day": s.day(), "phases": s.array(PHASE),
    "target_kind": s.string(enum=["groups", "tag", "all"]), "target_tag": s.string(nullable=True),
    "target_channel": s.string(nullable=True), "groups": s.array(GROUP_REF, "its groups now (visible ones)"),
    "owner": s.string("the ops contact"),
    "dates": s.array(s.obj({"name": s.string(), "day": s.day()}), "extra named dates for {days_until:NAME}"),
    "ops_users": s.array(s.string(), "whom reminders @-mention or message (hidden from group admins who cannot "
                                     "change the campaign)"),
    "reminder_target": s.string("where its reminders go; null: campaign.reminder_target", nullable=True),
    "reminder_days": s.nullable(s.array(s.integer(), "days before the key date; null: "
                                                     "campaign.reminder_days_before")),
    "from_config": s.boolean("declared in the config file ([[campaigns]]): edited there"),
    "can_write": s.boolean("this account may change it"),
}
FIGURES = s.obj({"sent": s.integer(), "late": s.integer("sent late"), "failed": s.integer(), "skipped": s.integer(),
                 "pending": s.integer()})
WINDOW = s.obj({"first": s.day(), "last": s.day(), "days": s.integer(), "checkins": s.integer(),
                "checkin_members": s.integer(), "checkins_per_day": s.number(), "active_members": s.integer(),
                "messages": s.integer()})
DETAIL = s.obj({
    **CAMPAIGN,
    "posts": s.array(s.obj({
        "id": s.integer(), "phase": s.string(nullable=True), "phase_label": s.string(nullable=True),
        "state": s.string(enum=["on", "paused", "removed"]), "schedule_text": s.string(),
        "schedule": s.string(), "timezone": s.string(), "content": s.string(),
        "next_run": s.timestamp("within its phase's days", nullable=True),
        "next_run_local": s.string("the same in the post's timezone", nullable=True),
        "can_write": s.boolean("this account may move it to another phase or take it out")})),
    "reminders": s.array(s.obj({
        "milestone": s.string("phase:burst (a phase starts) or before:3 (days before the key date)"),
        "due_at": s.timestamp(), "channel": s.string(), "target": s.string(), "status": s.string(),
        "attempts": s.integer(), "reason": s.string()})),
    "summary": s.obj({
        "group": s.nullable(GROUP_REF) | {"description": "the group the figures are of; null: all"},
        "posts": s.integer(), "runs": s.integer(), "runs_skipped": s.integer(), "total": FIGURES,
        "by_phase": s.array(s.obj({"phase": s.string(nullable=True), "label": s.string(nullable=True),
                                   "figures": FIGURES})),
        "lotteries": s.array(s.obj({"id": s.integer(), "title": s.string(), "group": s.string(),
                                    "status": s.string(), "entrants": s.integer(), "winners": s.integer()})),
        "entrants": s.integer(), "unique_entrants": s.integer(), "winners": s.integer(),
        "groups": s.integer(), "before": WINDOW, "during": s.nullable(WINDOW),
        "checkins_change": s.string("check-ins per day during against before: +25%, n/a")}),
})
FIELDS = {
    "name": s.string("what commands call it (unique among live campaigns; no spaces, not a number)", max_length=64),
    "title": s.string("its title in texts ({campaign} in posts)", max_length=128),
    "timezone": s.string("IANA name its days are read in; null or empty: the bot's timezone", max_length=64,
                         nullable=True),
    "key_date": s.string("the key date (launch day): 2026-11-11", max_length=16),
    "key_name": s.string("what the key date is called (开售); null or empty: 关键日", max_length=32, nullable=True),
    "phases": s.array(s.obj({"phase": s.string("预热 爆发 长尾 复盘 (or warmup burst longtail review)", max_length=16),
                             "first": s.string("its first day: 2026-11-01", max_length=16),
                             "last": s.string("its last day (null or empty: the first)", max_length=16,
                                              nullable=True)}, required=["phase", "first"]),
                      "its phases, in order, not overlapping"),
    "dates": s.array(s.obj({"name": s.string(max_length=32), "day": s.string(max_length=16)}),
                     "extra named dates for {days_until:NAME}"),
    "target_kind": s.string("groups: the listed ones; tag: live groups with the tag; all: every live group "
                            "(tag and all: ops admins)", enum=["groups", "tag", "all"]),
    "group_ids": s.array(s.integer(minimum=1), "the groups taking part (target_kind groups)"),
    "tag": s.string("target_kind tag", max_length=64, nullable=True),
    "channel": s.string("tag and all: only groups on this door", max_length=32, nullable=True),
    "owner": s.string("the ops contact shown in reminders and summaries", max_length=128, nullable=True),
    "ops_users": s.array(s.string(max_length=128), "platform user ids reminders @-mention or message"),
    "reminder_target": s.string("channel:group (robot:ops, wecom:@direct); null or empty: the default",
                                max_length=160, nullable=True),
    "reminder_days": s.nullable(s.array(s.integer(minimum=0, maximum=store.MAX_REMINDER_DAYS),
                                        "days before the key date to remind on; null: the default")),
}
BODY = s.obj(FIELDS, required=["name", "title", "key_date", "phases", "target_kind"])
PREVIEW_BODY = s.obj({
    **FIELDS,
    "campaign_id": s.integer("the campaign being edited (its posts and reminders)", minimum=1, nullable=True),
    "sample": s.string("a text to render on the campaign's days, e.g. {campaign}·{phase}：还有 {days_left} 天",
                       max_length=SAMPLE_MAX, nullable=True),
}, required=[])
PROBLEM = s.obj({"field": s.string(), "message": s.string()})
RUN_TIME = s.obj({"at": s.timestamp(), "local": s.string("in the post's timezone: 2026-11-08 20:00")})


# -- helpers ---------------------------------------------------------------------------------------------


def _visible(req: ApiRequest, groups: list[Group]) -> list[Group]:
    return [g for g in groups if req.account.sees_group(g.id)]  # type: ignore[arg-type]


def _within(req: ApiRequest, campaign: store.Campaign, listed: list[Group]) -> bool:
    """May this account change the campaign? Ops admins: any; a group admin: one made only of their groups."""
    if not req.account.can_write:
        return False
    ids = req.account.group_ids
    if ids is None:
        return True
    return campaign.target_kind == store.GROUPS and bool(listed) and all(g.id in ids for g in listed)


def _error(req: ApiRequest, exc: store.CampaignError) -> dict[str, str]:
    from scheduler.campaign import error_text

    return {"field": ERROR_FIELD.get(exc.key, "name"), "message": error_text(req.runtime.templates, exc)}


def _refuse(problems: list[dict[str, str]]) -> ApiError:
    first = problems[0]
    return ApiError(400, "bad_campaign", first["message"], field=first["field"])


def campaign_json(plan: store.Plan, groups: list[Group], today: date, *, listed: list[Group] | None = None,
                  can_write: bool = False, contacts: bool = True) -> dict[str, Any]:
    c = plan.campaign
    phase = plan.phase_on(today)
    first, last = plan.span()
    return {
        "id": c.id, "name": c.name, "title": c.title, "timezone": c.timezone,
        "state": "removed" if c.removed_at is not None else plan.state_on(today), "today": today.isoformat(),
        "phase": phase, "phase_label": store.phase_label(phase) if phase else None, "key_name": c.key_name,
        "key_date": c.key_date.isoformat(), "days_left": plan.days_left(today), "first_day": first.isoformat(),
        "last_day": last.isoformat(),
        "phases": [{"phase": p, "label": store.phase_label(p), "first": a.isoformat(), "last": b.isoformat(),
                    "current": p == phase} for p, (a, b) in plan.phases.items()],
        "target_kind": c.target_kind, "target_tag": c.target_tag, "target_channel": c.target_channel,
        "groups": [group_ref(g) for g in (listed if listed is not None else groups)], "owner": c.owner,
        "dates": [{"name": n, "day": d.isoformat()} for n, d in plan.dates.items()],
        "ops_users": c.ops if contacts else [], "reminder_target": c.reminder_target if contacts else None,
        "reminder_days": (None if c.reminder_days is None or not contacts else list(store.parse_days_list(c.reminder_days))),
        "from_config": c.created_by == store.CONFIG_MAKER, "can_write": can_write,
    }


async def _campaign(req: ApiRequest, campaign_id: int, *, write: bool = False,
                    include_removed: bool = False) -> tuple[store.Campaign, list[Group], list[Group]]:
    """The campaign (404), if this account sees it (403): it, its groups now, and its listed groups."""
    async with req.db.read_session() as session:
        campaign = await store.get_campaign(session, campaign_id, include_removed=include_removed)
        if campaign is None:
            raise ApiError(404, "not_found")
        groups = await store.groups_of(session, campaign)
        listed = await store.listed_groups(session, campaign_id) if campaign.target_kind == store.GROUPS else []
    if req.visible_group_ids is not None and not _visible(req, groups):
        raise ApiError(403, "other_group")
    if write and not _within(req, campaign, listed):
        raise ApiError(403, "read_only" if not req.account.can_write else "other_group")
    return campaign, groups, listed


async def _refresh(req: ApiRequest, campaign_id: int, extra: list[int] = ()) -> None:  # type: ignore[assignment]
    """This process rebuilds the timers of the campaign's posts now (the others at their next sync)."""
    from scheduler.push import service

    push = service(req.runtime)
    if push is None:
        return
    async with req.db.read_session() as session:
        ids = [p.id for p in await store.posts_of(session, campaign_id)]
    for post_id in dict.fromkeys([*ids, *extra]):
        await push.refresh(post_id)  # type: ignore[arg-type]


def _audit_group(campaign: store.Campaign, listed: list[Group]) -> Group | None:
    return listed[0] if campaign.target_kind == store.GROUPS and len(listed) == 1 else None


async def check_campaign(req: ApiRequest, body: dict[str, Any], *, writing: bool
                         ) -> tuple[store.CampaignFields | None, list[dict[str, str]], list[Group]]:
    """The campaign a form describes, checked as the CLI and the config file check it: (fields or None, every
    problem as {field, message}, the listed groups). `writing`: the account must be allowed to make it."""
    problems: list[dict[str, str]] = []

    def problem(field: str, message: str) -> None:
        if not any(p["field"] == field for p in problems):
            problems.append({"field": field, "message": message})

    def mistake(field: str, exc: store.CampaignError) -> None:
        problem(field, _error(req, exc)["message"])

    text = req.console.text
    name = (body.get("name") or "").strip()
    key_date = None
    try:
        key_date = store.parse_day(body.get("key_date") or "")
    except store.CampaignError as exc:
        mistake("key_date", exc)
    phases: dict[str, tuple[date, date]] = {}
    for row in body.get("phases") or []:
        try:
            phase = store.parse_phase(row.get("phase") or "")
            first = store.parse_day(row.get("first") or "")
            last = store.parse_day(row["last"], year=first.year) if row.get("last") else first
            if phase in phases:
                raise store.CampaignError("phase", f"phase {row['phase']} given twice", text=row["phase"])
            if last < first:
                raise store.CampaignError("span", "ends before it starts", text=f"{first}..{last}")
            phases[phase] = (first, last)
        except store.CampaignError as exc:
            mistake("phases", exc)
    dates: dict[str, date] = {}
    for row in body.get("dates") or []:
        try:
            dates[row["name"].strip()] = store.parse_day(row.get("day") or "")
        except store.CampaignError as exc:
            mistake("dates", exc)
    target, groups, channel = await check_targets(req, body, writing, problem, groups_required=False)
    reminder_target = (body.get("reminder_target") or "").strip() or None
    if reminder_target and req.account.group_ids is not None:
        # A group admin's reminders may only go into one of their groups.
        try:
            where = store.parse_target(reminder_target)
        except store.CampaignError as exc:
            mistake("reminder_target", exc)
        else:
            async with req.db.read_session() as session:
                found = (await session.execute(select(Group).where(Group.channel == where[0],
                                                                   Group.external_id == where[1]))).scalar_one_or_none()
            if found is None or not req.account.sees_group(found.id):  # type: ignore[arg-type]
                problem("reminder_target", text("campaigns.remind_to_own"))
    fields = store.CampaignFields(
        name=name, title=body.get("title") or "", timezone=(body.get("timezone") or "").strip() or req.config.timezone,
        key_date=key_date or date(2000, 1, 1), phases=phases, target_kind=target,
        target_tag=(body.get("tag") or "").strip() or None, target_channel=channel,
        group_ids=tuple(g.id for g in groups),  # type: ignore[misc]
        key_name=(body.get("key_name") or "").strip() or store.DEFAULT_KEY_NAME, dates=dates,
        owner=body.get("owner") or "", ops_users=tuple(body.get("ops_users") or []), reminder_target=reminder_target,
        reminder_days=None if body.get("reminder_days") is None else tuple(body["reminder_days"]))
    for found in fields.problems():
        problem(ERROR_FIELD.get(found.key, "name"), _error(req, found)["message"])
    if problems or key_date is None:
        return None, problems, groups
    return fields.normalized(), [], groups


# -- reading -----------------------------------------------------------------------------------------------


@api.route("GET", "/campaigns", summary="Campaigns with their phases and countdown", tag="campaign",
           params=[Param("removed", s.boolean("include removed campaigns") | {"default": False})],
           response=s.obj({"campaigns": s.array(s.obj(CAMPAIGN)),
                           "can_create": s.boolean("this account may create campaigns"),
                           "can_target_broadly": s.boolean("this account may target a tag or every group"),
                           "timezone": s.string("the bot's timezone (the default)")}))
async def list_campaigns(req: ApiRequest) -> dict[str, Any]:
    now = utcnow()
    found = []
    async with req.db.read_session() as session:
        for campaign in await store.list_campaigns(session, include_removed=bool(req.params["removed"])):
            groups = _visible(req, await store.groups_of(session, campaign))
            if req.visible_group_ids is not None and not groups:
                continue
            listed = await store.listed_groups(session, campaign.id) if campaign.target_kind == store.GROUPS else []  # type: ignore[arg-type]
            plan = await store.load_plan(session, campaign)
            writes = campaign.removed_at is None and _within(req, campaign, listed)
            found.append(campaign_json(plan, groups, plan.local_day(now), can_write=writes,
                                       contacts=writes or req.visible_group_ids is None))
    return {"campaigns": found, "can_create": req.account.can_write,
            "can_target_broadly": req.account.role == OPS_ADMIN, "timezone": req.config.timezone}


async def detail_json(req: ApiRequest, campaign_id: int, group_id: int | None = None) -> dict[str, Any]:
    """One campaign as GET /campaigns/{id} answers (the write routes answer the same)."""
    from scheduler.push import next_runs
    from storage import push as push_store

    now = utcnow()
    campaign, all_groups, listed = await _campaign(req, campaign_id, include_removed=True)
    groups = _visible(req, all_groups)
    group = await req.group(group_id) if group_id else None
    if group is None and req.visible_group_ids is not None:
        group = groups[0]
    async with req.db.read_session() as session:
        plan = await store.load_plan(session, campaign)
        today = plan.local_day(now)
        posts = await store.posts_of(session, plan.id)
        reminders = await store.reminders_of(session, plan.id)
        figures = await store.summary(session, plan, today=today, group_id=group.id if group else None)
        post_groups = {p.id: await push_store.listed_groups(session, p.id) for p in posts}  # type: ignore[arg-type]
    live = campaign.removed_at is None
    writes = live and _within(req, campaign, listed)
    ids = req.account.group_ids
    post_rows = []
    for post in posts:
        window = plan.window(post.phase) or (store.plan_epoch(), store.plan_epoch())
        upcoming = next_runs(post, 1, now, window) if live and post.enabled and post.removed_at is None else []
        mine = post.removed_at is None and req.account.can_write and (
            ids is None or push_store.post_within(post, post_groups[post.id], ids))
        post_rows.append({"id": post.id, "phase": post.phase, "phase_label": store.phase_label(post.phase) or None,
                          "state": "removed" if post.removed_at else "on" if post.enabled else "paused",
                          "schedule_text": post.schedule_text, "schedule": post.schedule.describe(post.timezone),
                          "timezone": post.timezone, "content": post.content,
                          "next_run": ts(upcoming[0]) if upcoming else None,
                          "next_run_local": upcoming[0].astimezone(ZoneInfo(post.timezone)).strftime("%Y-%m-%d %H:%M")
                          if upcoming else None, "can_write": bool(live and mine)})

    def figures_json(part: Any) -> dict[str, int]:
        return {"sent": part.sent, "late": part.late, "failed": part.failed, "skipped": part.skipped,
                "pending": part.pending}

    def window_json(w: Any) -> dict[str, Any]:
        return {"first": w.first.isoformat(), "last": w.last.isoformat(), "days": w.days, "checkins": w.checkins,
                "checkin_members": w.checkin_members, "checkins_per_day": round(w.checkins_per_day, 2),
                "active_members": w.active_members, "messages": w.messages}

    during = figures.during
    contacts = writes or ids is None
    return {
        **campaign_json(plan, groups, today, listed=listed if writes else None, can_write=writes, contacts=contacts),
        "posts": post_rows,
        # Reminders go to ops (their contacts and where they are sent): not a group admin's business, unless
        # the campaign is theirs.
        "reminders": [] if not contacts else [{"milestone": r.milestone, "due_at": ts(r.due_at), "channel": r.channel,
                                               "target": r.target, "status": r.status, "attempts": r.attempts,
                                               "reason": r.reason} for r in reminders],
        "summary": {
            "group": group_ref(group) if group else None, "posts": figures.posts, "runs": figures.runs,
            "runs_skipped": figures.runs_skipped, "total": figures_json(figures.total),
            "by_phase": [{"phase": p or None, "label": store.phase_label(p) or None, "figures": figures_json(f)}
                         for p, f in figures.by_phase.items()],
            "lotteries": [{"id": lot.id, "title": lot.title, "group": lot.group, "status": lot.status,
                           "entrants": lot.entrants, "winners": lot.winners} for lot in figures.lotteries],
            "entrants": figures.entrants, "unique_entrants": figures.unique_entrants, "winners": figures.winners,
            "groups": figures.groups, "before": window_json(figures.before),
            "during": window_json(during) if during is not None else None,
            "checkins_change": store.change_text(during.checkins_per_day, figures.before.checkins_per_day)
            if during is not None else "n/a",
        },
    }


@api.route("GET", "/campaigns/{campaign_id}", summary="A campaign: phases, countdown, posts, lotteries, reminders "
                                                      "and its review summary", tag="campaign",
           params=[Param("group", s.integer("the summary of this group only (a group admin: one of theirs, by "
                                            "default the first)", minimum=1))],
           response=DETAIL)
async def get_campaign(req: ApiRequest) -> dict[str, Any]:
    return await detail_json(req, req.params["campaign_id"], req.params["group"])


# -- changing ----------------------------------------------------------------------------------------------


@api.route("POST", "/campaigns", summary="Create a campaign", access=WRITE, tag="campaign", body=BODY,
           response=DETAIL,
           description="Checked like `qunbot campaign add`; 400 names the field (name, key_date, phases, group_ids "
                       "…). A group admin makes campaigns of their own groups only.")
async def create_campaign(req: ApiRequest) -> dict[str, Any]:
    now = utcnow()
    fields, problems, groups = await check_campaign(req, req.body, writing=True)
    if fields is None:
        raise _refuse(problems)
    try:
        async with req.db.session() as session:
            campaign = await store.create_campaign(session, fields, created_by=f"console:{req.account.username}",
                                                   now=now)
    except store.CampaignError as exc:
        raise _refuse([_error(req, exc)]) from None
    except IntegrityError:
        raise _refuse([{"field": "name", "message": req.runtime.templates.render("campaign.err_name_taken",
                                                                                   name=fields.name)}]) from None
    assert campaign.id is not None
    await req.audit("campaign add", group=_audit_group(campaign, groups), args=fields.name,
                    detail=f"added campaign {campaign.id} {campaign.name}")
    return await detail_json(req, campaign.id)


@api.route("PUT", "/campaigns/{campaign_id}", summary="Edit a campaign", access=WRITE, tag="campaign", body=BODY,
           response=s.obj({"campaign": DETAIL,
                           "changed": s.array(s.string(), "what changed (empty: nothing)"),
                           "posts_followed": s.array(s.integer(), "posts that took the new targets or timezone"),
                           "reminders": s.array(s.string(), "what happened to its milestone reminders")}),
           description="As `qunbot campaign edit`: runs and deliveries stay; posts that had the campaign's targets "
                       "(timezone) take the new ones; unsent reminders of moved milestones are re-planned, sent ones "
                       "are never sent again; a phase with posts or a date a post names cannot be dropped (400). "
                       "Campaigns declared in the config file are edited there.")
async def edit_campaign(req: ApiRequest) -> dict[str, Any]:
    from scheduler.campaign import settings_of

    now = utcnow()
    campaign, _, listed = await _campaign(req, req.params["campaign_id"], write=True)
    assert campaign.id is not None
    if campaign.created_by == store.CONFIG_MAKER:
        raise ApiError(400, "config_campaign")
    fields, problems, groups = await check_campaign(req, req.body, writing=True)
    if fields is None:
        raise _refuse(problems)
    try:
        async with req.db.session() as session:
            edit = await store.update_campaign(session, campaign.id, fields, now=now, settings=settings_of(req.config))
    except store.CampaignError as exc:
        raise _refuse([_error(req, exc)]) from None
    except IntegrityError:
        raise _refuse([{"field": "name", "message": req.runtime.templates.render("campaign.err_name_taken",
                                                                                   name=fields.name)}]) from None
    await _refresh(req, campaign.id)
    if edit.changed:
        await req.audit("campaign edit", group=_audit_group(campaign, groups or listed), args=fields.name,
                        detail=edit.detail)
    return {"campaign": await detail_json(req, campaign.id), "changed": edit.changed,
            "posts_followed": edit.posts_followed, "reminders": edit.reminders}


@api.route("DELETE", "/campaigns/{campaign_id}", summary="Remove a campaign and its posts (history stays)",
           access=WRITE, tag="campaign", response=DETAIL,
           description="As `qunbot campaign remove`: its posts are removed too; runs, reminders and figures stay.")
async def remove_campaign(req: ApiRequest) -> dict[str, Any]:
    now = utcnow()
    campaign, _, listed = await _campaign(req, req.params["campaign_id"], write=True)
    assert campaign.id is not None
    async with req.db.session() as session:
        posts = await store.remove_campaign(session, campaign.id, now)
    await _refresh(req, campaign.id)
    detail = f"campaign {campaign.id} {campaign.name} removed" + (
        f" with its post(s) {', '.join(map(str, posts))}" if posts else "")
    if campaign.created_by == store.CONFIG_MAKER:
        detail += " (declared in the config file: the next start-up applies the file again)"
    await req.audit("campaign remove", group=_audit_group(campaign, listed), args=campaign.name, detail=detail)
    return await detail_json(req, campaign.id)


async def _post_access(req: ApiRequest, post_id: int) -> Any:
    """The live post (404) if this account may change it (403)."""
    from storage import push as push_store

    async with req.db.read_session() as session:
        post = await push_store.get_post(session, post_id)
        groups = await push_store.listed_groups(session, post_id) if post is not None else []
    if post is None:
        raise ApiError(404, "not_found")
    ids = req.account.group_ids
    if ids is not None and not push_store.post_within(post, groups, ids):
        raise ApiError(403, "other_group")
    return post, groups


@api.route("PUT", "/campaigns/{campaign_id}/posts/{post_id}", summary="Put a scheduled post into the campaign "
                                                                      "(or move it to another phase)",
           access=WRITE, tag="campaign",
           body=s.obj({"phase": s.string("预热 爆发 长尾 复盘 (warmup …); null: every day of the campaign",
                                         max_length=16, nullable=True)}, required=[]),
           response=DETAIL,
           description="As `qunbot campaign attach` and 定时 活动 in chat: the post then fires only on the phase's "
                       "days and may use {campaign} {phase} {days_left}. A group admin: their groups' posts, into a "
                       "campaign their group takes part in.")
async def attach_post(req: ApiRequest) -> dict[str, Any]:
    now = utcnow()
    campaign, _, _ = await _campaign(req, req.params["campaign_id"])
    if not req.account.can_write:
        raise ApiError(403, "read_only")
    post, groups = await _post_access(req, req.params["post_id"])
    try:
        phase = store.parse_phase(req.body["phase"]) if req.body.get("phase") else None
        async with req.db.session() as session:
            _, changed = await store.attach_post(session, campaign.id, post.id, phase, now=now)  # type: ignore[arg-type]
    except store.CampaignError as exc:
        raise _refuse([{**_error(req, exc), "field": "phase"}]) from None
    await _refresh(req, campaign.id, [post.id])  # type: ignore[arg-type]
    if changed:
        where = f"phase {phase}" if phase else "all phases"
        await req.audit("campaign attach", group=groups[0] if len(groups) == 1 else None, args=f"{campaign.name} {post.id}",
                        detail=f"post {post.id} in campaign {campaign.id} {campaign.name}, {where}")
    return await detail_json(req, campaign.id)  # type: ignore[arg-type]


@api.route("DELETE", "/campaigns/{campaign_id}/posts/{post_id}", summary="Take a scheduled post out of the campaign",
           access=WRITE, tag="campaign", response=DETAIL,
           description="As `qunbot campaign detach` and 定时 活动 <编号> 取消: refused (400) while its content uses the "
                       "campaign's variables.")
async def detach_post(req: ApiRequest) -> dict[str, Any]:
    from scheduler.campaign import settings_of

    now = utcnow()
    campaign, _, _ = await _campaign(req, req.params["campaign_id"])
    if not req.account.can_write:
        raise ApiError(403, "read_only")
    post, groups = await _post_access(req, req.params["post_id"])
    try:
        async with req.db.session() as session:
            _, changed = await store.detach_post(session, post.id, now=now, settings=settings_of(req.config),
                                                 campaign_id=campaign.id)
    except store.CampaignError as exc:
        raise _refuse([{**_error(req, exc), "field": "post"}]) from None
    await _refresh(req, campaign.id, [post.id])  # type: ignore[arg-type]
    if changed:
        await req.audit("campaign detach", group=groups[0] if len(groups) == 1 else None,
                        args=f"{campaign.name} {post.id}",
                        detail=f"post {post.id} taken out of campaign {campaign.id} {campaign.name}")
    return await detail_json(req, campaign.id)  # type: ignore[arg-type]


# -- the live preview --------------------------------------------------------------------------------------


def _milestone_label(req: ApiRequest, plan: store.Plan, key: str) -> str:
    kind, _, arg = key.partition(":")
    if kind == "phase":
        return req.console.text("campaigns.ms_phase", phase=store.phase_label(arg))
    if arg == "0":
        return req.console.text("campaigns.ms_day", name=plan.campaign.key_name)
    return req.console.text("campaigns.ms_before", name=plan.campaign.key_name, days=arg)


async def _milestones(req: ApiRequest, old: store.Plan | None, plan: store.Plan, now: datetime) -> list[dict[str, Any]]:
    """The milestones of the edited definition and what will happen to each: sent ones stay sent, moved ones
    are planned anew, ones the edit moves into the past are not reminded (storage.campaign.replan_reminders)."""
    from scheduler.campaign import settings_of

    settings = settings_of(req.config)

    def keyed(p: store.Plan) -> dict[str, store.Milestone]:
        days = store.reminder_days(p.campaign, settings.reminder_days_before)
        return {m.key: m for m in store.milestones(p, at=settings.reminder_time, days_before=days)}

    rows: dict[str, Any] = {}
    if old is not None:
        async with req.db.read_session() as session:
            rows = {r.milestone: r for r in await store.reminders_of(session, old.id)}
    before = keyed(old) if old is not None else {}
    out = []
    first_day = plan.local_day(plan.campaign.created_at)
    for key, m in keyed(plan).items():
        row = rows.get(key)
        if row is not None and row.status in (store.SENT, store.SENDING):
            status = row.status
        elif row is not None and row.due_at == m.due_at:
            status = row.status
        elif m.due_at > now:
            status = "planned"
        elif plan.local_day(m.due_at) < first_day or not (key in before and before[key].due_at <= now):
            status = "past"
        else:
            status = "due"
        out.append({"key": key, "label": _milestone_label(req, plan, key), "due_at": ts(m.due_at),
                    "local": m.due_at.astimezone(plan.zone).strftime("%Y-%m-%d %H:%M"), "status": status,
                    "status_text": req.console.text(f"campaigns.ms_{status}")})
    return out


def _samples(req: ApiRequest, plan: store.Plan, sample: str, now: datetime) -> list[dict[str, Any]]:
    """The sample text rendered today and on each phase's first day and the key date (campaign timezone)."""
    from bot.push_spec import render_content
    from scheduler.campaign import plan_values

    days: dict[date, str] = {plan.local_day(now): req.console.text("campaigns.sample_today")}
    for phase, (first, _) in plan.phases.items():
        days.setdefault(first, req.console.text("campaigns.ms_phase", phase=store.phase_label(phase)))
    days.setdefault(plan.campaign.key_date, plan.campaign.key_name)
    out = []
    for day, label in sorted(days.items()):
        at = datetime.combine(day, time(12), plan.zone)
        values = plan_values(req.runtime.templates, plan, None, at)
        out.append({"day": day.isoformat(), "label": label, "days_left": plan.days_left(day),
                    "text": render_content(sample, values, day, req.config.push.dates)})
    return out


@api.route("POST", "/campaigns/preview", summary="Preview a campaign as typed: problems, countdown, milestone "
                                                 "reminders, and its posts' next runs and content",
           tag="campaign", body=PREVIEW_BODY,
           response=s.obj({
               "ok": s.boolean("no problems"), "problems": s.array(PROBLEM, "every problem, by form field"),
               "campaign": s.nullable(s.obj({
                   "today": s.day(), "state": s.string(enum=STATES), "phase_label": s.string(nullable=True),
                   "days_left": s.integer(), "countdown": s.string("as reminders and 活动 say it"),
                   "phase_now": s.string(), "first_day": s.day(), "last_day": s.day(), "key_date": s.day(),
                   "key_name": s.string(), "phases": s.array(PHASE)})) | {"description": "null until it can be read"},
               "samples": s.array(s.obj({"day": s.day(), "label": s.string(), "days_left": s.integer(),
                                         "text": s.string("the sample rendered on that day")})),
               "milestones": s.array(s.obj({
                   "key": s.string(), "label": s.string(), "due_at": s.timestamp(), "local": s.string(),
                   "status": s.string("sent/sending (never again), pending/failed/skipped (as recorded), planned "
                                      "(to come), due (the reminder job records it now), past (not reminded)"),
                   "status_text": s.string()})),
               "posts": s.array(s.obj({
                   "id": s.integer(), "phase": s.string(nullable=True), "phase_label": s.string(nullable=True),
                   "schedule": s.string(), "timezone": s.string(), "state": s.string(enum=["on", "paused"]),
                   "next_runs": s.array(RUN_TIME, "within its phase's days, as edited"),
                   "group": s.nullable(GROUP_REF) | {"description": "the group the content was rendered for"},
                   "content": s.string("its content at its next run", nullable=True)})),
           }),
           description="Changes nothing (any logged-in account; the page calls it as the user types).")
async def preview_campaign(req: ApiRequest) -> dict[str, Any]:
    from bot.push_spec import SpecError, check_content
    from scheduler.campaign import countdown_text, phase_now_text, previewing
    from scheduler.push import next_runs, render_post

    body = req.body or {}
    now = utcnow()
    old = None
    posts: list[Any] = []
    if body.get("campaign_id"):
        campaign, _, _ = await _campaign(req, body["campaign_id"])
        async with req.db.read_session() as session:
            old = await store.load_plan(session, campaign)
            posts = await store.posts_of(session, old.id, include_removed=False)
    fields, problems, _ = await check_campaign(req, body, writing=False)
    sample = body.get("sample") or req.console.text("campaigns.sample_default")
    try:
        check_content(sample, {**req.config.push.dates, **(store.plan_from_fields(fields).named_dates() if fields
                                                            else {})}, campaign=True)
    except SpecError as exc:
        problems.append({"field": "sample", "message": req.runtime.templates.render(f"push.err_{exc.key}", **exc.values)})
        sample = ""
    if fields is None:
        return {"ok": False, "problems": problems, "campaign": None, "samples": [], "milestones": [], "posts": []}
    plan = store.plan_from_fields(fields, campaign_id=old.id if old else None,
                                  created_at=old.campaign.created_at if old else now)
    if old is not None:
        try:
            from scheduler.campaign import settings_of

            store.check_posts_fit(plan, posts, settings_of(req.config))
        except store.CampaignError as exc:
            problems.append(_error(req, exc))
    t = req.runtime.templates
    today = plan.local_day(now)
    first, last = plan.span()
    phase = plan.phase_on(today)
    summary = {"today": today.isoformat(), "state": plan.state_on(today),
               "phase_label": store.phase_label(phase) if phase else None, "days_left": plan.days_left(today),
               "countdown": countdown_text(t, plan, today), "phase_now": phase_now_text(t, plan, today),
               "first_day": first.isoformat(), "last_day": last.isoformat(), "key_date": plan.campaign.key_date.isoformat(),
               "key_name": plan.campaign.key_name,
               "phases": [{"phase": p, "label": store.phase_label(p), "first": a.isoformat(), "last": b.isoformat(),
                           "current": p == phase} for p, (a, b) in plan.phases.items()]}
    post_rows = []
    with previewing(plan):
        for post in posts:
            window = plan.window(post.phase) or (store.plan_epoch(), store.plan_epoch())
            upcoming = next_runs(post, PREVIEW_RUNS, now, window) if post.enabled else []
            group = await _first_target(req, post)
            content = None
            if group is not None or post.kind in ("text", "markdown"):
                shown = group or Group(channel="", external_id="(example)", name=req.console.text("push.example_group"))
                reply = await render_post(req.db, req.config, t, kind=post.kind, content=post.content,
                                          payload=post.payload_data, scheduled_at=upcoming[0] if upcoming else now,
                                          group=shown, campaign_id=plan.id if old else 0, phase=post.phase)
                content = reply.text
            post_rows.append({"id": post.id, "phase": post.phase, "phase_label": store.phase_label(post.phase) or None,
                              "schedule": post.schedule_text or post.schedule.describe(post.timezone),
                              "timezone": post.timezone, "state": "on" if post.enabled else "paused",
                              "next_runs": [{"at": ts(at), "local": at.astimezone(ZoneInfo(post.timezone))
                                             .strftime("%Y-%m-%d %H:%M")} for at in upcoming],
                              "group": group_ref(group) if group is not None else None, "content": content})
    return {"ok": not problems, "problems": problems, "campaign": summary,
            "samples": _samples(req, plan, sample, now) if sample else [],
            "milestones": await _milestones(req, old, plan, now), "posts": post_rows}


async def _first_target(req: ApiRequest, post: Any) -> Group | None:
    """The first group (this account sees) a post reaches, to render its preview for."""
    from storage.push import target_conditions

    query = select(Group).where(*target_conditions(post)).order_by(Group.id).limit(1)
    if req.visible_group_ids is not None:
        query = query.where(Group.id.in_(sorted(req.visible_group_ids)))  # type: ignore[union-attr]
    async with req.db.read_session() as session:
        return (await session.execute(query)).scalar_one_or_none()
