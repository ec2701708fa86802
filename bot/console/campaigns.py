"""The console's campaign routes, read only: the campaigns with their phases and countdown, and one campaign's
posts, lotteries, reminders and review summary. Campaigns are made and changed with `qunbot campaign` and the
活动 chat command; everything here is storage.campaign (load_plan, groups_of, campaigns_of_group, posts_of,
reminders_of, summary), the functions those use.

A group admin sees the campaigns that include one of their groups, and the summary of one of their groups.
"""

from __future__ import annotations

from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

from bot.console import schema as s
from bot.console.api import GROUP_REF, api, group_ref, ts
from bot.console.routes import ApiError, ApiRequest, Param
from storage.db import utcnow
from storage.groups import Group

STATES = ["before", "during", "after", "removed"]

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
}
FIGURES = s.obj({"sent": s.integer(), "late": s.integer("sent late"), "failed": s.integer(), "skipped": s.integer(),
                 "pending": s.integer()})
WINDOW = s.obj({"first": s.day(), "last": s.day(), "days": s.integer(), "checkins": s.integer(),
                "checkin_members": s.integer(), "checkins_per_day": s.number(), "active_members": s.integer(),
                "messages": s.integer()})


async def _visible_groups(req: ApiRequest, groups: list[Group]) -> list[Group]:
    return [g for g in groups if req.account.sees_group(g.id)]  # type: ignore[arg-type]


def campaign_json(plan: Any, groups: list[Group], today: date) -> dict[str, Any]:
    from storage import campaign as store

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
        "groups": [group_ref(g) for g in groups], "owner": c.owner,
    }


@api.route("GET", "/campaigns", summary="Campaigns with their phases and countdown (read only)", tag="campaign",
           params=[Param("removed", s.boolean("include removed campaigns") | {"default": False})],
           response=s.obj({"campaigns": s.array(s.obj(CAMPAIGN))}))
async def list_campaigns(req: ApiRequest) -> dict[str, Any]:
    from storage import campaign as store

    now = utcnow()
    found = []
    async with req.db.read_session() as session:
        for campaign in await store.list_campaigns(session, include_removed=bool(req.params["removed"])):
            groups = await _visible_groups(req, await store.groups_of(session, campaign))
            if req.visible_group_ids is not None and not groups:
                continue
            plan = await store.load_plan(session, campaign)
            found.append(campaign_json(plan, groups, plan.local_day(now)))
    return {"campaigns": found}


@api.route("GET", "/campaigns/{campaign_id}", summary="A campaign: phases, countdown, posts, lotteries, reminders "
                                                      "and its review summary (read only)", tag="campaign",
           params=[Param("group", s.integer("the summary of this group only (a group admin: one of theirs, by "
                                            "default the first)", minimum=1))],
           response=s.obj({
               **CAMPAIGN,
               "posts": s.array(s.obj({
                   "id": s.integer(), "phase": s.string(nullable=True), "phase_label": s.string(nullable=True),
                   "state": s.string(enum=["on", "paused", "removed"]), "schedule_text": s.string(),
                   "schedule": s.string(), "timezone": s.string(), "content": s.string(),
                   "next_run": s.timestamp("within its phase's days", nullable=True),
                   "next_run_local": s.string("the same in the post's timezone", nullable=True)})),
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
           }))
async def get_campaign(req: ApiRequest) -> dict[str, Any]:
    from scheduler.push import next_runs
    from storage import campaign as store

    now = utcnow()
    async with req.db.read_session() as session:
        campaign = await store.get_campaign(session, req.params["campaign_id"], include_removed=True)
        if campaign is None:
            raise ApiError(404, "not_found")
        all_groups = await store.groups_of(session, campaign)
    groups = await _visible_groups(req, all_groups)
    if req.visible_group_ids is not None and not groups:
        raise ApiError(403, "other_group")
    group = await req.group(req.params["group"]) if req.params["group"] else None
    if group is None and req.visible_group_ids is not None:
        group = groups[0]
    async with req.db.read_session() as session:
        plan = await store.load_plan(session, campaign)
        today = plan.local_day(now)
        posts = await store.posts_of(session, plan.id)
        reminders = await store.reminders_of(session, plan.id)
        figures = await store.summary(session, plan, today=today, group_id=group.id if group else None)
    live = campaign.removed_at is None
    post_rows = []
    for post in posts:
        window = plan.window(post.phase) or (store.plan_epoch(), store.plan_epoch())
        upcoming = next_runs(post, 1, now, window) if live and post.enabled and post.removed_at is None else []
        post_rows.append({"id": post.id, "phase": post.phase, "phase_label": store.phase_label(post.phase) or None,
                          "state": "removed" if post.removed_at else "on" if post.enabled else "paused",
                          "schedule_text": post.schedule_text, "schedule": post.schedule.describe(post.timezone),
                          "timezone": post.timezone, "content": post.content,
                          "next_run": ts(upcoming[0]) if upcoming else None,
                          "next_run_local": upcoming[0].astimezone(ZoneInfo(post.timezone)).strftime("%Y-%m-%d %H:%M")
                          if upcoming else None})

    def figures_json(part: Any) -> dict[str, int]:
        return {"sent": part.sent, "late": part.late, "failed": part.failed, "skipped": part.skipped,
                "pending": part.pending}

    def window_json(w: Any) -> dict[str, Any]:
        return {"first": w.first.isoformat(), "last": w.last.isoformat(), "days": w.days, "checkins": w.checkins,
                "checkin_members": w.checkin_members, "checkins_per_day": round(w.checkins_per_day, 2),
                "active_members": w.active_members, "messages": w.messages}

    during = figures.during
    return {
        **campaign_json(plan, groups, today),
        "posts": post_rows,
        # Reminders go to ops (their contacts and where they are sent): not a group admin's business.
        "reminders": [] if req.visible_group_ids is not None else [{"milestone": r.milestone, "due_at": ts(r.due_at), "channel": r.channel, "target": r.target,
                       "status": r.status, "attempts": r.attempts, "reason": r.reason} for r in reminders],
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
