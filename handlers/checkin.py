"""Daily check-in (签到), points card (积分), leaderboard (排行), admin grants and deductions (加分 / 扣分)
and the group's timezone (时区).

Everything is decided in the database (storage.checkin, storage.points): a check-in counts once per member,
group and local day in the group's timezone, points are an append-only ledger, and streaks, balances,
levels and ranks are queries. Every door serves these commands, 1:1 chats included (they count in the
door's 1:1 scope).

Retries: an event processed again after a crash finds its own check-in (or grant) by the event's ref and
answers exactly as the first time, since the member may never have seen that first answer; a different
message on the same day is told that the member already checked in.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import zoneinfo
from dataclasses import dataclass
from datetime import date
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import CheckinConfig
from bot.dispatcher import Context, Registry, UsageError
from bot.events import Command, Event, Reply
from bot.permissions import Role
from bot.templates import Templates
from storage import checkin as store
from storage import groups as group_store
from storage import points as points_store
from storage.groups import Group

log = logging.getLogger("qunbot.checkin")

# The largest grant or deduction in one command (keeps typos like 1000000000 out of the ledger).
MAX_ADJUSTMENT = 1_000_000
AMOUNT = re.compile(r"[+-]?\d{1,12}")
BOARDS = {
    "": store.BY_POINTS, "积分": store.BY_POINTS, "points": store.BY_POINTS,
    "连续": store.BY_STREAK, "连签": store.BY_STREAK, "连续签到": store.BY_STREAK, "streak": store.BY_STREAK,
    "签到": store.BY_CHECKINS, "打卡": store.BY_CHECKINS, "本月": store.BY_CHECKINS, "checkins": store.BY_CHECKINS,
}
RESET_TIMEZONE = {"默认", "恢复默认", "default", "reset"}


def setup(registry: Registry) -> None:
    registry.command("签到", "/checkin", "打卡", description="每日签到领积分", usage="签到")(checkin)
    registry.command("积分", "/me", "我的积分", description="查看我的积分、等级和连续签到",
                     usage="积分")(points_card)
    registry.command("排行", "/rank", "排行榜", description="本群排行榜（积分、连续签到、本月签到）",
                     usage="排行 [积分|连续|签到]")(rank)
    registry.command("加分", "/grant", description="给成员加积分（群管理员）", usage="加分 @成员 数量 原因",
                     role=Role.GROUP_ADMIN)(grant)
    registry.command("扣分", "/deduct", description="扣成员积分（群管理员）", usage="扣分 @成员 数量 原因",
                     role=Role.GROUP_ADMIN)(deduct)
    registry.command("时区", "/timezone", description="查看或设置本群时区（群管理员）",
                     usage="时区 [Asia/Tokyo|默认]", role=Role.GROUP_ADMIN)(group_timezone)


# -- 签到 ------------------------------------------------------------------------------------------


def points_for_streak(cfg: CheckinConfig, streak: int) -> int:
    """Base points plus the highest streak tier reached, capped by checkin.daily_cap (0: no cap)."""
    bonus = max((extra for days, extra in cfg.streak_bonus if streak >= days), default=0)
    total = cfg.base_points + bonus
    return min(total, cfg.daily_cap) if cfg.daily_cap else total


def event_ref(event: Event) -> str:
    """The event's identity as a ledger ref (at most 128 characters): the same on every retry."""
    ref = f"{event.channel}:{event.key}"
    return ref if len(ref) <= 128 else f"{event.channel}:sha256:{hashlib.sha256(ref.encode()).hexdigest()}"


async def checkin(event: Command, ctx: Context) -> Reply:
    group, member = _scope(ctx)
    cfg, t = ctx.config.checkin, ctx.templates
    day = ctx.today()
    async with ctx.db.session() as session:
        result = await store.check_in(
            session, group_id=group.id, member_id=member.id, day=day, at=event.at,  # type: ignore[arg-type]
            event_ref=event_ref(event), points_for_streak=lambda streak: points_for_streak(cfg, streak),
            ledger_reason=lambda streak: t.render("checkin.ledger_reason", streak=streak))
        totals = await points_store.totals(session, group.id, member.id)  # type: ignore[arg-type]
    row, name = result.row, _name(ctx)
    if result.same_event:
        bonus = row.points - cfg.base_points
        text = t.render("checkin.done", name=name, position=row.position, streak=result.streak, points=row.points,
                        bonus=t.render("checkin.bonus", bonus=bonus) if bonus > 0 else "", balance=totals.balance,
                        level=points_store.level_for(totals.earned, cfg.levels).name)
    else:
        local = row.at.astimezone(ZoneInfo(ctx.timezone)).strftime("%H:%M")
        text = t.render("checkin.already", name=name, position=row.position, time=local, streak=result.streak,
                        balance=totals.balance)
    if result.new:
        log.info("checked in", extra={"event_id": event.id, "group": group.external_id, "member": member.external_id,
                                      "day": day.isoformat(), "position": row.position, "points": row.points,
                                      "streak": result.streak})
    return _reply(ctx, event, text)


# -- 积分 ------------------------------------------------------------------------------------------


async def points_card(event: Command, ctx: Context) -> Reply:
    group, member = _scope(ctx)
    today = ctx.today()
    async with ctx.db.session() as session:
        card = await member_card(session, ctx.config.checkin, group, member.id, today)  # type: ignore[arg-type]
    t = ctx.templates
    level = card.level
    if level.next_threshold is None:
        next_line = t.raw("checkin.me.top_level")
    else:
        next_line = t.render("checkin.me.next_level", needed=level.next_threshold - card.totals.earned,
                             next_level=level.next_name)
    text = t.render("checkin.me.text", name=_name(ctx), balance=card.totals.balance, level=level.name,
                    next=next_line, streak=card.streak, month_checkins=card.month_checkins,
                    today=t.raw("checkin.me.today_done" if card.checked_in_today else "checkin.me.today_open"))
    return _reply(ctx, event, text)


@dataclass(frozen=True)
class MemberCard:
    """A member's standing in a group on a local day: what 积分 and `qunbot points show` print."""

    totals: points_store.Totals
    level: points_store.Level
    streak: int
    month_checkins: int
    checked_in_today: bool


async def member_card(session: AsyncSession, cfg: CheckinConfig, group: Group, member_id: int,
                      today: date) -> MemberCard:
    """Balance, level (from lifetime earned points), current streak, check-ins this local month."""
    totals = await points_store.totals(session, group.id, member_id)  # type: ignore[arg-type]
    streak = (await store.current_streaks(session, group.id, today, [member_id])).get(member_id, 0)  # type: ignore[arg-type]
    month = await store.checkins_between(session, group.id, member_id, today.replace(day=1), today)  # type: ignore[arg-type]
    done = await store.checkin_on(session, group.id, member_id, today) is not None  # type: ignore[arg-type]
    return MemberCard(totals, points_store.level_for(totals.earned, cfg.levels), streak, month, done)


# -- 排行 ------------------------------------------------------------------------------------------


async def rank(event: Command, ctx: Context) -> Reply:
    group, member = _scope(ctx)
    by = BOARDS.get(event.args.split(" ")[0].lower() if event.args else "")
    if by is None:
        raise UsageError("")
    async with ctx.db.session() as session:
        top, mine = await store.leaderboard(session, group.id, by=by, today=ctx.today(),  # type: ignore[arg-type]
                                            limit=ctx.config.checkin.leaderboard_size, me=member.id)
    return Reply(render_board(ctx.templates, by, top, mine))


def render_board(t: Templates, by: str, top: list[store.Standing], mine: store.Standing | None) -> str:
    """The leaderboard text: header, the top rows, then the caller's own line if they are further down."""
    if not top:
        return t.raw("checkin.rank.empty")
    me = mine.member_id if mine else None

    def line(s: store.Standing) -> str:
        you = t.raw("checkin.rank.you") if s.member_id == me else ""
        return t.render(f"checkin.rank.line_{by}", rank=s.rank, name=s.name, score=s.score, you=you)

    lines = [t.raw(f"checkin.rank.header_{by}"), *(line(s) for s in top)]
    if mine is None:
        lines.append(t.raw("checkin.rank.unranked"))
    elif all(s.member_id != me for s in top):
        lines += [t.raw("checkin.rank.gap"), line(mine)]
    return "\n".join(lines)


# -- 加分 / 扣分 ------------------------------------------------------------------------------------


async def grant(event: Command, ctx: Context) -> Reply:
    return await _adjust(event, ctx, sign=1)


async def deduct(event: Command, ctx: Context) -> Reply:
    return await _adjust(event, ctx, sign=-1)


def parse_adjustment(args: str) -> tuple[str, int, str] | None:
    """"@小红 10 活动奖励" → ("@小红", 10, "活动奖励"): the member is everything before the first number
    (names may contain spaces), the reason everything after it. None when there is no number after a name."""
    words = args.split(" ") if args else []
    for n, word in enumerate(words):
        if n and AMOUNT.fullmatch(word):
            return " ".join(words[:n]), abs(int(word)), " ".join(words[n + 1:]).strip()
    return None


async def _adjust(event: Command, ctx: Context, *, sign: int) -> Reply:
    group, actor = _scope(ctx)
    t = ctx.templates
    parsed = parse_adjustment(event.args)
    if parsed is None:
        raise UsageError("")
    who, amount, reason = parsed
    if not 1 <= amount <= MAX_ADJUSTMENT:
        raise UsageError(t.render("checkin.admin.bad_amount", max=MAX_ADJUSTMENT))
    if not reason:
        raise UsageError(t.raw("checkin.admin.missing_reason"))
    reason = reason[:255]
    async with ctx.db.session() as session:
        target = await group_store.find_member_in_group(session, group, who)
        if target is None:
            raise UsageError(t.render("checkin.admin.unknown_member", who=who.lstrip("@")))
        name = target.name or target.external_id
        try:
            done = await points_store.adjust(
                session, group_id=group.id, member_id=target.id, delta=sign * amount, reason=reason,  # type: ignore[arg-type]
                actor_id=actor.id, ref=event_ref(event), allow_negative=ctx.config.checkin.allow_negative_balance)
        except points_store.InsufficientPoints as exc:
            raise UsageError(t.render("checkin.admin.insufficient", name=name, balance=exc.balance,
                                      amount=amount)) from None
    ctx.audit_detail = (f"{'+' if sign > 0 else '-'}{amount} to {target.external_id} ({reason}); "
                        f"balance {done.balance}{'' if done.applied else '; already applied by this event'}")
    key = "checkin.admin.granted" if sign > 0 else "checkin.admin.deducted"
    return Reply(t.render(key, name=name, amount=amount, reason=reason, balance=done.balance))


# -- 时区 ------------------------------------------------------------------------------------------


@functools.cache
def _zones_by_lower_name() -> dict[str, str]:
    return {name.lower(): name for name in zoneinfo.available_timezones()}


def resolve_timezone(text: str) -> str | None:
    """An IANA zone name as the zone database spells it ("asia/tokyo" → "Asia/Tokyo"), or None if unknown."""
    return _zones_by_lower_name().get(text.strip().lower())


async def group_timezone(event: Command, ctx: Context) -> Reply:
    group, _ = _scope(ctx)
    t = ctx.templates
    wanted = event.args.strip()
    if not wanted:
        zone = group.timezone or ctx.config.timezone
        return Reply(t.render("checkin.timezone.current", timezone=zone, local_time=_local_time(event, zone),
                              note="" if group.timezone else t.raw("checkin.timezone.default_note")))
    if wanted.lower() in RESET_TIMEZONE:
        new, key = None, "checkin.timezone.reset"
    else:
        new, key = resolve_timezone(wanted), "checkin.timezone.changed"
        if new is None:
            raise UsageError(t.render("checkin.timezone.unknown", timezone=wanted))
    async with ctx.db.session() as session:
        await group_store.set_timezone(session, group.id, new)
    zone = new or ctx.config.timezone
    ctx.audit_detail = f"timezone {group.timezone or 'default'} -> {new or 'default'}"
    return Reply(t.render(key, timezone=zone, local_time=_local_time(event, zone)))


# -- helpers ---------------------------------------------------------------------------------------


def _scope(ctx: Context):  # noqa: ANN202 - (Group, Member)
    """The event's group (or 1:1 scope) and sender as recorded by the dispatcher."""
    if ctx.group_row is None or ctx.member_row is None:
        raise RuntimeError("check-in commands need a recorded group and sender")
    return ctx.group_row, ctx.member_row


def _name(ctx: Context) -> str:
    member = ctx.member_row
    return (member.name if member else "") or ctx.sender


def _local_time(event: Event, zone: str) -> str:
    return event.at.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M")


def _reply(ctx: Context, event: Command, text: str) -> Reply:
    """A reply that @-mentions the member in a group, where the door can."""
    mention = event.group is not None and ctx.capabilities.mentions
    return Reply(text, mentions=[event.sender.user] if mention else [])
