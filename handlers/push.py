"""定时 (/push): a group's admins schedule posts into their own group, and set its quiet hours and daily cap.

Posts made here belong to the group (`owner_group_id`) and target only it; admins see and change only
their own group's posts. Ops' posts (CLI, config file) are managed with `qunbot push`. The timing, the
runs and the outbox are scheduler.push; the tables are storage.push.

`定时 活动 <编号> <活动> [阶段]` puts one of the group's posts into a campaign the group takes part in (and a
phase of it: it then fires only on those days, and may count down with {days_left}); `定时 活动 <编号> 取消`
takes it out again — storage.campaign.attach_post / detach_post, as the CLI and the console do.
"""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

from bot.dispatcher import DIRECT_SCOPE, Context, Registry, UsageError
from bot.events import Command, Reply
from bot.permissions import Role
from bot.push_spec import (
    MAX_CONTENT,
    SpecError,
    check_content,
    format_quiet_hours,
    parse_quiet_hours,
    split_schedule,
)
from bot.templates import Templates
from storage import push as store

LIST_WORDS = {"列表", "查看", "list"}
ADD_WORDS = {"添加", "新建", "创建", "add"}
PREVIEW_WORDS = {"预览", "preview"}
PAUSE_WORDS = {"暂停", "停止", "pause"}
RESUME_WORDS = {"恢复", "继续", "开启", "resume"}
REMOVE_WORDS = {"删除", "移除", "remove", "del"}
QUIET_WORDS = {"免打扰", "quiet"}
CAMPAIGN_WORDS = {"活动", "campaign"}
DETACH_WORDS = {"取消", "退出", "无", "none", "off"}
CAP_WORDS = {"上限", "cap"}
DEFAULT_WORDS = {"默认", "default"}
# Posts one group may keep (a chat command should not be able to flood the scheduler).
MAX_GROUP_POSTS = 20
MAX_DAILY_CAP = 1000
PREVIEW_RUNS = 3

USAGE = ("定时 [列表]；定时 添加 <时间> <内容>（时间如：每天 9:00、工作日 8:30、每周一 10:00、每2小时、"
         "0 9 * * *、2026-12-01 20:00、明天 9:00；内容可用 {date} {weekday} {group_name} {member_count} "
         "{yesterday_checkins} {days_until:2026-12-31}）；定时 预览|暂停|恢复|删除 <编号>；"
         "定时 活动 <编号> <活动名称或编号> [预热|爆发|长尾|复盘]（加入本群参与的活动，只在该阶段发送，可用 {campaign} "
         "{phase} {days_left}）；定时 活动 <编号> 取消；"
         "定时 免打扰 [22:00-08:00|关闭|默认]；定时 上限 [3|默认]")


def setup(registry: Registry) -> None:
    from scheduler.push import start_push

    registry.command("定时", "/push", "定时推送", description="管理本群的定时推送、免打扰时段和每日上限",
                     usage=USAGE, role=Role.GROUP_ADMIN)(push_command)
    registry.on_startup(start_push)


def spec_problem(templates: Templates, exc: SpecError) -> str:
    return templates.render(f"push.err_{exc.key}", **exc.values)


def local_time(at: datetime, tz: str) -> str:
    return at.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")


def excerpt(text: str, size: int = 40) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= size else flat[: size - 1] + "…"


def raw_tail(text: str, skip: int) -> str:
    """The message after its leading @-mentions and `skip` more words, exactly as typed."""
    words = list(re.finditer(r"\S+", text))
    while words and words[0].group(0).startswith(("@", "＠")):
        words.pop(0)
    if len(words) <= skip:
        return ""
    return text[words[skip].start():].strip()


async def push_command(event: Command, ctx: Context) -> Reply:
    t = ctx.templates
    if ctx.group_row is None or ctx.group_row.external_id == DIRECT_SCOPE:
        return Reply(t.raw("push.groups_only"))
    words = event.args.split(" ") if event.args else []
    action = words[0].lower() if words else ""
    rest = event.args[len(words[0]):].strip() if words else ""
    if not action or action in LIST_WORDS:
        return Reply(await _list(ctx))
    if action in ADD_WORDS:
        return await _add(event, ctx, rest)
    if action in QUIET_WORDS:
        return await _quiet(ctx, rest)
    if action in CAP_WORDS:
        return await _cap(ctx, rest)
    if action in CAMPAIGN_WORDS:
        return await _campaign(event, ctx, rest)
    if action in PREVIEW_WORDS | PAUSE_WORDS | RESUME_WORDS | REMOVE_WORDS:
        post = await _own_post(ctx, rest)
        if action in PREVIEW_WORDS:
            return Reply(await _preview(ctx, post))
        return await _switch(event, ctx, post, action)
    raise UsageError(t.render("push.err_action", action=words[0]))


async def _own_post(ctx: Context, text: str) -> store.PushPost:
    """This group's post whose number starts `text`; UsageError otherwise (never another group's post)."""
    t = ctx.templates
    number = text.split(" ")[0].lstrip("#") if text else ""
    if not number.isdigit():
        raise UsageError(t.raw("push.err_id"))
    assert ctx.group_row is not None
    async with ctx.db.read_session() as session:
        post = await store.get_post(session, int(number), owner_group_id=ctx.group_row.id)
    if post is None:
        raise UsageError(t.render("push.not_found", id=number))
    return post


async def _upcoming(ctx: Context, post: store.PushPost, count: int, now: datetime) -> list[datetime]:
    """The post's next firings (a campaign post's: within its phase's days only)."""
    from scheduler.push import next_runs
    from storage.campaign import post_window

    async with ctx.db.read_session() as session:
        window = await post_window(session, post)
    return next_runs(post, count, now, window)


async def _next_text(ctx: Context, post: store.PushPost, now: datetime) -> str:
    if not post.enabled:
        return ctx.templates.raw("push.paused_state")
    upcoming = await _upcoming(ctx, post, 1, now)
    return local_time(upcoming[0], post.timezone) if upcoming else ctx.templates.raw("push.never")


async def _campaign_line(ctx: Context, post: store.PushPost) -> str:
    """"活动：双十一大促·爆发" for a campaign's post; "" otherwise."""
    from storage.campaign import phase_label, plan_of

    if post.campaign_id is None:
        return ""
    async with ctx.db.read_session() as session:
        plan = await plan_of(session, post.campaign_id)
    if plan is None:
        return ""
    phase = phase_label(post.phase) if post.phase else ctx.templates.raw("push.all_phases")
    return ctx.templates.render("push.list_campaign", title=plan.campaign.title, phase=phase)


async def _list(ctx: Context) -> str:
    t = ctx.templates
    assert ctx.group_row is not None
    async with ctx.db.read_session() as session:
        posts = await store.list_posts(session, owner_group_id=ctx.group_row.id)
        settings = await store.group_settings(session, ctx.group_row.id)  # type: ignore[arg-type]
    quiet, cap = _limits(ctx, settings)
    footer = t.render("push.list_footer", quiet=quiet, cap=cap, tz=ctx.timezone)
    if not posts:
        return f"{t.raw('push.list_empty')}\n{footer}"
    lines = [t.raw("push.list_header")]
    for post in posts:
        lines.append(t.render("push.list_line", id=post.id, state=t.raw("push.state_on" if post.enabled else "push.state_off"),
                              schedule=post.schedule_text, tz=post.timezone, content=excerpt(post.content),
                              next=await _next_text(ctx, post, ctx.event.at)))
        campaign = await _campaign_line(ctx, post)
        if campaign:
            lines.append(campaign)
    lines.append(footer)
    return "\n".join(lines)


def _limits(ctx: Context, settings: store.PushGroupSettings | None) -> tuple[str, str]:
    t, cfg = ctx.templates, ctx.config.push
    quiet = cfg.quiet_hours if settings is None or settings.quiet_hours is None else settings.quiet_hours
    cap = cfg.daily_cap if settings is None or settings.daily_cap is None else settings.daily_cap
    return quiet or t.raw("push.no_quiet"), str(cap) if cap else t.raw("push.no_cap")


async def _add(event: Command, ctx: Context, rest: str) -> Reply:
    t = ctx.templates
    group = ctx.group_row
    assert group is not None
    if not ctx.capabilities.can_post_proactively:
        return Reply(t.render("push.cannot_post", channel=event.channel))
    if event.id is not None:
        async with ctx.db.read_session() as session:
            done = await store.created_by_event(session, event.id)
        if done is not None:  # this very command was processed before a crash: answer the same
            return Reply(await _created_text(ctx, done))
    if not rest:
        raise UsageError(t.raw("push.err_content"))
    tz = ctx.timezone
    try:
        schedule, content = split_schedule(rest, tz=tz, now=event.at)
        if not content:
            raise UsageError(t.raw("push.err_content"))
        schedule_words = len(rest.split(" ")) - len(content.split(" "))
        schedule_text = " ".join(rest.split(" ")[:schedule_words])
        # The content as typed (line breaks and full-width punctuation kept), not the normalised arguments.
        content = raw_tail(event.text, 2 + schedule_words) or content
        check_content(content, ctx.config.push.dates)
    except SpecError as exc:
        raise UsageError(spec_problem(t, exc)) from None
    async with ctx.db.session() as session:
        if len(await store.list_posts(session, owner_group_id=group.id)) >= MAX_GROUP_POSTS:
            return Reply(t.render("push.too_many", max=MAX_GROUP_POSTS))
        fields = store.PostFields(schedule=schedule, schedule_text=schedule_text, timezone=tz, target_kind=store.GROUPS,
                                  content=content, group_ids=(group.id,))  # type: ignore[arg-type]
        post = await store.create_post(session, fields, source=store.CHAT, created_by=f"chat:{event.sender.user}",
                                       now=event.at, owner_group_id=group.id, event_id=event.id)
    await _refresh(ctx, post.id)  # type: ignore[arg-type]
    ctx.audit_detail = f"added post {post.id}: {schedule.describe(tz)} ({tz}): {excerpt(content, 200)}"
    return Reply(await _created_text(ctx, post))


async def _created_text(ctx: Context, post: store.PushPost) -> str:
    return ctx.templates.render("push.created", id=post.id, schedule=post.schedule_text, tz=post.timezone,
                                next=await _next_text(ctx, post, ctx.event.at), content=excerpt(post.content, 200))


async def _refresh(ctx: Context, post_id: int) -> None:
    from scheduler.push import service

    push = service(ctx.runtime)
    if push is not None:
        await push.refresh(post_id)


async def _switch(event: Command, ctx: Context, post: store.PushPost, action: str) -> Reply:
    t = ctx.templates
    assert post.id is not None
    async with ctx.db.session() as session:
        if action in REMOVE_WORDS:
            await store.remove_post(session, post.id, event.at)
            key = "push.removed"
        else:
            enable = action in RESUME_WORDS
            changed = await store.set_enabled(session, post.id, enable, event.at)
            key = ("push.resumed" if enable else "push.paused") if changed else (
                "push.already_on" if enable else "push.already_off")
    await _refresh(ctx, post.id)
    async with ctx.db.read_session() as session:
        fresh = await store.get_post(session, post.id, include_removed=True)
    assert fresh is not None
    ctx.audit_detail = f"{action} post {post.id}"
    return Reply(t.render(key, id=post.id, next=await _next_text(ctx, fresh, event.at)))


async def _preview(ctx: Context, post: store.PushPost) -> str:
    from scheduler.push import render_post

    t = ctx.templates
    assert ctx.group_row is not None
    upcoming = await _upcoming(ctx, post, PREVIEW_RUNS, ctx.event.at)
    times = "\n".join(t.render("push.preview_time", at=local_time(at, post.timezone)) for at in upcoming)
    reply = await render_post(ctx.db, ctx.config, t, kind=post.kind, content=post.content, payload=post.payload_data,
                              scheduled_at=upcoming[0] if upcoming else ctx.event.at, group=ctx.group_row,
                              campaign_id=post.campaign_id, phase=post.phase)
    return t.render("push.preview", id=post.id, tz=post.timezone, times=times or t.raw("push.never"),
                    content=reply.text[:MAX_CONTENT])


async def _quiet(ctx: Context, rest: str) -> Reply:
    t = ctx.templates
    assert ctx.group_row is not None
    if not rest:
        async with ctx.db.read_session() as session:
            settings = await store.group_settings(session, ctx.group_row.id)  # type: ignore[arg-type]
        quiet, _ = _limits(ctx, settings)
        return Reply(t.render("push.quiet_show", quiet=quiet, tz=ctx.timezone))
    if rest.lower() in DEFAULT_WORDS:
        value: str | None = None
    else:
        try:
            value = format_quiet_hours(parse_quiet_hours(rest))
        except SpecError as exc:
            raise UsageError(spec_problem(t, exc)) from None
    async with ctx.db.session() as session:
        await store.set_group_settings(session, ctx.group_row.id, ctx.event.at, quiet_hours=value)  # type: ignore[arg-type]
        settings = await store.group_settings(session, ctx.group_row.id)  # type: ignore[arg-type]
    quiet, _ = _limits(ctx, settings)
    ctx.audit_detail = f"quiet hours: {value if value is not None else 'default'}"
    return Reply(t.render("push.quiet_set", quiet=quiet, tz=ctx.timezone))


async def _cap(ctx: Context, rest: str) -> Reply:
    t = ctx.templates
    assert ctx.group_row is not None
    if not rest:
        async with ctx.db.read_session() as session:
            settings = await store.group_settings(session, ctx.group_row.id)  # type: ignore[arg-type]
        _, cap = _limits(ctx, settings)
        return Reply(t.render("push.cap_show", cap=cap))
    if rest.lower() in DEFAULT_WORDS:
        value: int | None = None
    elif rest.isdigit() and int(rest) <= MAX_DAILY_CAP:
        value = int(rest)
    else:
        raise UsageError(t.render("push.err_cap", max=MAX_DAILY_CAP))
    async with ctx.db.session() as session:
        await store.set_group_settings(session, ctx.group_row.id, ctx.event.at, daily_cap=value)  # type: ignore[arg-type]
        settings = await store.group_settings(session, ctx.group_row.id)  # type: ignore[arg-type]
    _, cap = _limits(ctx, settings)
    ctx.audit_detail = f"daily cap: {value if value is not None else 'default'}"
    return Reply(t.render("push.cap_set", cap=cap))


async def _campaign(event: Command, ctx: Context, rest: str) -> Reply:
    """定时 活动 <编号> <活动> [阶段] / 定时 活动 <编号> 取消: one of this group's posts joins (or leaves) a campaign
    the group takes part in."""
    from handlers.campaign import pick
    from scheduler.campaign import error_text, settings_of
    from storage import campaign as campaigns

    t = ctx.templates
    group = ctx.group_row
    assert group is not None and group.id is not None
    words = rest.split()
    if len(words) < 2 or len(words) > 3:
        raise UsageError(t.raw("push.err_campaign_usage"))
    post = await _own_post(ctx, words[0])
    assert post.id is not None
    try:
        if words[1].lower() in DETACH_WORDS:
            if len(words) > 2:
                raise UsageError(t.raw("push.err_campaign_usage"))
            async with ctx.db.session() as session:
                before = await campaigns.plan_of(session, post.campaign_id) if post.campaign_id else None
                fresh, changed = await campaigns.detach_post(session, post.id, now=event.at,
                                                             settings=settings_of(ctx.config))
            await _refresh(ctx, post.id)
            if not changed or before is None:
                return Reply(t.render("push.campaign_none", id=post.id))
            ctx.audit_detail = f"post {post.id} taken out of campaign {before.id} {before.campaign.name}"
            return Reply(t.render("push.campaign_detached", id=post.id, title=before.campaign.title,
                                  next=await _next_text(ctx, fresh, event.at)))
        async with ctx.db.read_session() as session:
            plans = [await campaigns.load_plan(session, c) for c in await campaigns.campaigns_of_group(session, group.id)]
        plan = pick(plans, words[1])
        if plan is None:
            raise UsageError(t.render("push.err_campaign_unknown", name=words[1]))
        phase = campaigns.parse_phase(words[2]) if len(words) > 2 else None
        async with ctx.db.session() as session:
            fresh, changed = await campaigns.attach_post(session, plan.id, post.id, phase, now=event.at)
    except campaigns.CampaignError as exc:
        raise UsageError(error_text(t, exc)) from None
    await _refresh(ctx, post.id)
    from scheduler.campaign import span_text

    first, last = plan.phases[phase] if phase else plan.span()
    where = campaigns.phase_label(phase) if phase else t.raw("push.all_phases")
    ctx.audit_detail = (f"post {post.id} in campaign {plan.id} {plan.campaign.name}, "
                        f"{f'phase {phase}' if phase else 'all phases'}" + ("" if changed else " (no change)"))
    return Reply(t.render("push.campaign_attached", id=post.id, title=plan.campaign.title, phase=where,
                          span=span_text(t, first, last), next=await _next_text(ctx, fresh, event.at)))
