"""活动 (/campaign): a group's admins see the campaigns their group takes part in — phases, countdown to the
key date — and one campaign's figures in their group (its posts' deliveries, its lotteries here, check-ins
during the campaign against the week before).

Read-only here: campaigns are made by ops (`qunbot campaign`, the console, the config file); a group admin
puts the group's own posts into one with `定时 活动 <编号> <活动> [阶段]` (handlers.push), and `活动 <名称>`
lists them with their next sending time. The tables and figures are storage.campaign, the milestone reminders
scheduler.campaign (started here).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from bot.dispatcher import DIRECT_SCOPE, Context, Registry
from bot.events import Command, Reply
from bot.permissions import Role
from bot.templates import Templates
from scheduler.campaign import countdown_text, day_text, phase_now_text, phases_text
from storage import campaign as store

LIST_WORDS = {"列表", "查看", "list"}

USAGE = ("活动 — 本群参与的活动、当前阶段和倒计时；活动 <名称或编号> — 这个活动在本群的推送和数据（推送、抽奖、签到）；"
         "把本群的定时推送加入活动：定时 活动 <编号> <活动名称> [阶段]")


def setup(registry: Registry) -> None:
    from scheduler.campaign import start_campaign_reminders

    registry.command("活动", "/campaign", "活动倒计时", description="查看本群参与的活动：阶段、倒计时和复盘数据",
                     usage=USAGE, role=Role.GROUP_ADMIN)(campaign_command)
    registry.on_startup(start_campaign_reminders)


async def campaign_command(event: Command, ctx: Context) -> Reply:
    t = ctx.templates
    group = ctx.group_row
    if group is None or group.external_id == DIRECT_SCOPE:
        return Reply(t.raw("campaign.groups_only"))
    assert group.id is not None
    wanted = event.args.strip()
    async with ctx.db.read_session() as session:
        plans = [await store.load_plan(session, c) for c in await store.campaigns_of_group(session, group.id)]
        if not wanted or wanted.lower() in LIST_WORDS:
            return Reply(_listing(ctx, plans))
        plan = pick(plans, wanted)
        if plan is None:
            return Reply(t.render("campaign.not_found", name=wanted))
        today = plan.local_day(event.at)
        figures = await store.summary(session, plan, today=today, group_id=group.id)
        posts = await posts_text(ctx, session, plan, group.id, event.at)
    ctx.audit_detail = f"campaign {plan.id} summary"
    return Reply(summary_text(t, figures) + "\n" + posts)


async def posts_text(ctx: Context, session: Any, plan: store.Plan, group_id: int, now: datetime) -> str:
    """The campaign's live posts that reach this group, each with its phase and next sending time."""
    from scheduler.push import next_runs
    from storage.groups import Group
    from storage.push import target_conditions

    t = ctx.templates
    lines = []
    for post in await store.posts_of(session, plan.id, include_removed=False):
        reached = await session.execute(select(Group.id).where(Group.id == group_id, *target_conditions(post)))
        if reached.first() is None:
            continue
        window = plan.window(post.phase) or (store.plan_epoch(), store.plan_epoch())
        upcoming = next_runs(post, 1, now, window) if post.enabled else []
        nxt = (upcoming[0].astimezone(ZoneInfo(post.timezone)).strftime("%Y-%m-%d %H:%M") if upcoming
               else t.raw("push.paused_state") if not post.enabled else t.raw("push.never"))
        lines.append(t.render("campaign.post_line", id=post.id, schedule=post.schedule_text,
                              phase=store.phase_label(post.phase) if post.phase else t.raw("push.all_phases"),
                              next=nxt, content=" ".join(post.content.split())[:40]))
    if not lines:
        return t.raw("campaign.posts_none")
    return "\n".join([t.raw("campaign.posts_header"), *lines])


def pick(plans: list[store.Plan], wanted: str) -> store.Plan | None:
    """The campaign a chat message names: by number ("3", "#3"), name or title."""
    number = wanted.lstrip("#")
    for plan in plans:
        if (number.isdigit() and plan.id == int(number)) or wanted in (plan.campaign.name, plan.campaign.title):
            return plan
    return None


def _listing(ctx: Context, plans: list[store.Plan]) -> str:
    t = ctx.templates
    if not plans:
        return t.raw("campaign.list_empty")
    lines = [t.raw("campaign.list_header")]
    for plan in plans:
        today = plan.local_day(ctx.event.at)
        lines.append(t.render("campaign.list_line", id=plan.id, title=plan.campaign.title, name=plan.campaign.name,
                              phase_now=phase_now_text(t, plan, today), countdown=countdown_text(t, plan, today)))
    lines.append(t.raw("campaign.list_footer"))
    return "\n".join(lines)


def _average(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def summary_text(t: Templates, figures: store.Summary) -> str:
    """The 活动 <名称> reply: the campaign's countdown and one group's figures."""
    plan, total = figures.plan, figures.total
    posts = t.render("campaign.posts_line", sent=total.sent, late=total.late, failed=total.failed,
                     skipped=total.skipped, pending=total.pending)
    if figures.lotteries:
        lotteries = t.render("campaign.lotteries_line", count=len(figures.lotteries), entrants=figures.entrants,
                             unique=figures.unique_entrants, winners=figures.winners)
    else:
        lotteries = t.raw("campaign.lotteries_none")
    before = figures.before
    if figures.during is None:
        checkins = t.render("campaign.checkins_not_started", baseline=before.days, before=before.checkins,
                            before_members=before.checkin_members, before_avg=_average(before.checkins_per_day))
    else:
        during = figures.during
        checkins = t.render("campaign.checkins_during", during=during.checkins, during_members=during.checkin_members,
                            during_avg=_average(during.checkins_per_day), baseline=before.days,
                            before=before.checkins, before_members=before.checkin_members,
                            before_avg=_average(before.checkins_per_day),
                            change=store.change_text(during.checkins_per_day, before.checkins_per_day))
    campaign = plan.campaign
    return t.render("campaign.detail", id=plan.id, title=campaign.title, name=campaign.name,
                    phases=phases_text(t, plan), phase_now=phase_now_text(t, plan, figures.today),
                    countdown=countdown_text(t, plan, figures.today), owner=campaign.owner or t.raw("campaign.no_owner"),
                    today=day_text(t, figures.today), posts=posts, lotteries=lotteries, checkins=checkins)
