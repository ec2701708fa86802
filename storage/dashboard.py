"""What the ops console shows: daily series for the dashboard, group statistics, member profiles.

Read-only queries over the facts other features record (member_activity, memberships, checkins,
faq_daily_counts, points_ledger). Every function takes `group_ids`: None for every group, or the set of
groups the caller may see (a console group admin's); nothing outside it is counted or returned.

Days: activity and check-ins carry the group's local day already. Joins and leaves are timestamps,
bucketed into the local days of the timezone the caller passes (the group's own for one group, the bot's
otherwise) with one index range per day, so a day with a DST change is still exactly one local day.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Integer, and_, false, func, literal, literal_column, or_, select, true, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from storage import checkin as checkin_store
from storage import points as points_store
from storage.activity import MemberActivity
from storage.checkin import Checkin
from storage.db import UTCDateTime
from storage.faq import FaqDailyCount
from storage.groups import Group, Member, Membership
from storage.points import PointsEntry

DIRECT_SCOPE = "@direct"  # bot.dispatcher.DIRECT_SCOPE: a door's 1:1 chats, stored as a group row
SEEN = "seen"  # the join scene of a stay opened by a first message (the dispatcher never saw the join)


def day_range(today: date, days: int) -> list[date]:
    """The `days` local days ending with `today`, oldest first."""
    return [today - timedelta(days=n) for n in range(days - 1, -1, -1)]


def local_today(tz: str, now: datetime) -> date:
    return now.astimezone(ZoneInfo(tz)).date()


def _in_groups(col: Any, group_ids: Collection[int] | None) -> Any:
    if group_ids is None:
        return true()
    return col.in_(sorted(group_ids)) if group_ids else false()


# -- the dashboard -----------------------------------------------------------------------------------


@dataclass
class Series:
    """Daily figures over a window of local days (oldest first): one list per figure, aligned with `days`."""

    days: list[date]
    active: list[int]
    joins: list[int]
    leaves: list[int]
    checkins: list[int]
    faq_answered: list[int]
    faq_suggested: list[int]
    faq_unanswered: list[int]
    totals: dict[str, int] = field(default_factory=dict)


async def daily_series(session: AsyncSession, *, days: Sequence[date], tz: str,
                       group_ids: Collection[int] | None) -> Series:
    """Daily active members (distinct members who wrote anything), joins, leaves, check-ins and FAQ
    answered / suggested / unanswered, for the given local days, over the groups in `group_ids`."""
    first, last = days[0], days[-1]
    index = {d: n for n, d in enumerate(days)}

    def aligned(rows: Any) -> list[int]:
        out = [0] * len(days)
        for day, count in rows:
            if isinstance(day, str):
                day = date.fromisoformat(day)
            if day in index:
                out[index[day]] = int(count or 0)
        return out

    a = MemberActivity
    day_col: Any = a.day
    if group_ids is not None and len(group_ids) <= 50 and session.get_bind().dialect.name == "sqlite":
        # A few groups: SQLite would still pick the (day, member_id) index and read every group's rows in
        # the window; unary + (a no-op) keeps it on the group index instead.
        day_col = literal_column("+member_activity.day")
    active = aligned((await session.execute(
        select(a.day, func.count(a.member_id.distinct()))  # type: ignore[attr-defined]
        .where(day_col >= first, day_col <= last, _in_groups(a.group_id, group_ids))
        .group_by(a.day))).all())
    c = Checkin
    checkins = aligned((await session.execute(
        select(c.day, func.count()).where(c.day >= first, c.day <= last, _in_groups(c.group_id, group_ids))  # type: ignore[operator]
        .group_by(c.day))).all())
    f = FaqDailyCount
    faq_rows = (await session.execute(
        select(f.day, func.sum(f.answered), func.sum(f.suggested), func.sum(f.unanswered))
        .where(f.day >= first, f.day <= last, _in_groups(f.group_id, group_ids))  # type: ignore[operator]
        .group_by(f.day))).all()
    # A stay opened because someone spoke before the bot saw them join ("seen") is not a join.
    joins = await _per_local_day(session, Membership.joined_at, days, tz, group_ids,
                                 or_(Membership.join_scene.is_(None), Membership.join_scene != SEEN))  # type: ignore[union-attr]
    leaves = await _per_local_day(session, Membership.left_at, days, tz, group_ids)
    return Series(
        days=list(days), active=active, joins=joins, leaves=leaves, checkins=checkins,
        faq_answered=aligned((r[0], r[1]) for r in faq_rows),
        faq_suggested=aligned((r[0], r[2]) for r in faq_rows),
        faq_unanswered=aligned((r[0], r[3]) for r in faq_rows),
    )


async def _per_local_day(session: AsyncSession, stamp: Any, days: Sequence[date], tz: str,
                         group_ids: Collection[int] | None, condition: Any = None) -> list[int]:
    """How many memberships have `stamp` (joined_at or left_at) in each local day of `tz`."""
    zone = ZoneInfo(tz)
    bounds = [(n, datetime.combine(d, time(), zone), datetime.combine(d + timedelta(days=1), time(), zone))
              for n, d in enumerate(days)]
    # One row per local day with its UTC bounds (a UNION ALL: SQLite's VALUES cannot name its columns).
    bucket = union_all(*(select(literal(n, Integer).label("n"), literal(lo, UTCDateTime()).label("lo"),
                                literal(hi, UTCDateTime()).label("hi")) for n, lo, hi in bounds)).cte("bucket")
    rows = await session.execute(
        select(bucket.c.n, func.count(Membership.id))
        .select_from(bucket.join(Membership, and_(stamp >= bucket.c.lo, stamp < bucket.c.hi)))
        .where(_in_groups(Membership.group_id, group_ids), true() if condition is None else condition)
        .group_by(bucket.c.n))
    out = [0] * len(days)
    for n, count in rows.all():
        out[int(n)] = int(count)
    return out


async def overview(session: AsyncSession, *, group_ids: Collection[int] | None) -> dict[str, int]:
    """How many groups (not 1:1 scopes, not dismissed) and members in them there are now."""
    groups = (await session.execute(
        select(func.count()).select_from(Group)
        .where(Group.external_id != DIRECT_SCOPE, Group.dismissed_at.is_(None),  # type: ignore[union-attr]
               _in_groups(Group.id, group_ids)))).scalar_one()
    members = (await session.execute(
        select(func.count(Membership.member_id.distinct()))  # type: ignore[attr-defined]
        .where(Membership.left_at.is_(None), _in_groups(Membership.group_id, group_ids)))).scalar_one()  # type: ignore[union-attr]
    return {"groups": int(groups), "members": int(members)}


async def most_active_groups(session: AsyncSession, *, day: date, group_ids: Collection[int] | None,
                             limit: int = 10) -> list[tuple[Group, int]]:
    """The groups with the most active members on a local day, most first."""
    a = MemberActivity
    counts = (select(a.group_id, func.count().label("active"))
              .where(a.day == day, _in_groups(a.group_id, group_ids)).group_by(a.group_id)
              .order_by(func.count().desc(), a.group_id).limit(limit)).subquery()
    rows = await session.execute(select(Group, counts.c.active).join(counts, counts.c.group_id == Group.id)
                                 .order_by(counts.c.active.desc(), Group.id))
    return [(g, int(n)) for g, n in rows.all()]


# -- groups ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupStats:
    group: Group
    timezone: str
    today: date
    members: int
    active_today: int
    checkins_today: int

    @property
    def checkin_rate(self) -> float:
        """Today's check-ins over the members in the group now (0 for an empty group)."""
        return round(self.checkins_today / self.members, 4) if self.members else 0.0


async def find_groups(session: AsyncSession, *, group_ids: Collection[int] | None, query: str = "",
                      offset: int = 0, limit: int = 50) -> tuple[list[Group], int]:
    """Groups (1:1 scopes last) matching a search on name or id, a page of them and how many match."""
    condition = _in_groups(Group.id, group_ids)
    if query:
        like = f"%{_escape_like(query)}%"
        condition = and_(condition, or_(Group.name.ilike(like, escape="\\"),  # type: ignore[attr-defined]
                                        Group.external_id.ilike(like, escape="\\")))  # type: ignore[attr-defined]
    total = (await session.execute(select(func.count()).select_from(Group).where(condition))).scalar_one()
    rows = await session.execute(
        select(Group).where(condition)
        .order_by((Group.external_id == DIRECT_SCOPE), Group.dismissed_at.is_not(None), Group.id)  # type: ignore[union-attr]
        .offset(offset).limit(limit))
    return list(rows.scalars()), int(total)


async def group_stats(session: AsyncSession, groups: Sequence[Group], *, default_tz: str,
                      now: datetime) -> list[GroupStats]:
    """Members now, and active members and check-ins on each group's own local today."""
    if not groups:
        return []
    ids = [g.id for g in groups]
    zones = {g.id: g.timezone or default_tz for g in groups}
    todays = {gid: local_today(tz, now) for gid, tz in zones.items()}
    wanted_days = sorted(set(todays.values()))
    members = dict((await session.execute(
        select(Membership.group_id, func.count())
        .where(Membership.group_id.in_(ids), Membership.left_at.is_(None))  # type: ignore[attr-defined,union-attr]
        .group_by(Membership.group_id))).all())
    active: dict[tuple[int, date], int] = {}
    for gid, day, n in (await session.execute(
            select(MemberActivity.group_id, MemberActivity.day, func.count())
            .where(MemberActivity.group_id.in_(ids), MemberActivity.day.in_(wanted_days))  # type: ignore[attr-defined]
            .group_by(MemberActivity.group_id, MemberActivity.day))).all():
        active[(gid, _as_date(day))] = int(n)
    checked: dict[tuple[int, date], int] = {}
    for gid, day, n in (await session.execute(
            select(Checkin.group_id, Checkin.day, func.count())
            .where(Checkin.group_id.in_(ids), Checkin.day.in_(wanted_days))  # type: ignore[attr-defined]
            .group_by(Checkin.group_id, Checkin.day))).all():
        checked[(gid, _as_date(day))] = int(n)
    return [GroupStats(g, zones[g.id], todays[g.id], int(members.get(g.id, 0)),
                       active.get((g.id, todays[g.id]), 0), checked.get((g.id, todays[g.id]), 0))  # type: ignore[index]
            for g in groups]


async def get_group(session: AsyncSession, group_id: int) -> Group | None:
    return await session.get(Group, group_id, populate_existing=True)


# -- members -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemberRow:
    member: Member
    groups: int
    last_active: datetime | None


async def find_members(session: AsyncSession, *, group_ids: Collection[int] | None, query: str = "",
                       group_id: int | None = None, offset: int = 0, limit: int = 50) -> tuple[list[MemberRow], int]:
    """Members who were ever in a visible group (or in `group_id`), matching a search on name or user id,
    with how many of those groups they are in now and when they were last active there."""
    stays = select(Membership.member_id).where(_in_groups(Membership.group_id, group_ids))
    if group_id is not None:
        stays = stays.where(Membership.group_id == group_id)
    condition: Any = Member.id.in_(stays)  # type: ignore[union-attr]
    if query:
        like = f"%{_escape_like(query)}%"
        condition = and_(condition, or_(Member.name.ilike(like, escape="\\"),  # type: ignore[attr-defined]
                                        Member.external_id.ilike(like, escape="\\")))  # type: ignore[attr-defined]
    total = (await session.execute(select(func.count()).select_from(Member).where(condition))).scalar_one()
    members = list((await session.execute(
        select(Member).where(condition).order_by(Member.name, Member.id).offset(offset).limit(limit))).scalars())
    ids = [m.id for m in members]
    scope = [group_id] if group_id is not None else group_ids
    in_now = dict((await session.execute(
        select(Membership.member_id, func.count())
        .where(Membership.member_id.in_(ids), Membership.left_at.is_(None), _in_groups(Membership.group_id, scope))  # type: ignore[attr-defined,union-attr]
        .group_by(Membership.member_id))).all()) if ids else {}
    last = dict((await session.execute(
        select(MemberActivity.member_id, func.max(MemberActivity.last_at))
        .where(MemberActivity.member_id.in_(ids), _in_groups(MemberActivity.group_id, scope))  # type: ignore[attr-defined]
        .group_by(MemberActivity.member_id))).all()) if ids else {}
    return [MemberRow(m, int(in_now.get(m.id, 0)), _aware(last.get(m.id))) for m in members], int(total)


@dataclass(frozen=True)
class Stay:
    group: Group
    joined_at: datetime
    join_scene: str | None
    inviter: Member | None
    left_at: datetime | None
    leave_scene: str | None


@dataclass(frozen=True)
class GroupStanding:
    group: Group
    balance: int
    earned: int
    level: str
    streak: int
    last_active: datetime | None
    active_days_30: int


@dataclass(frozen=True)
class Invite:
    group: Group
    member: Member
    joined_at: datetime


@dataclass
class Profile:
    member: Member
    stays: list[Stay]
    standings: list[GroupStanding]
    ledger: list[tuple[Group, PointsEntry]]
    invites: list[Invite]


async def member_profile(session: AsyncSession, member_id: int, *, group_ids: Collection[int] | None,
                         levels: list[tuple[int, str]], default_tz: str, now: datetime,
                         ledger_limit: int = 50) -> Profile | None:
    """A member's stays (joins and leaves), points, level, streak and last activity per visible group,
    their latest points ledger rows and whom they invited; None if unknown or in no visible group."""
    member = await session.get(Member, member_id)
    if member is None:
        return None
    inviter = Member.__table__.alias("inviter")  # type: ignore[attr-defined]
    rows = (await session.execute(
        select(Membership, Group, inviter.c.id).join(Group, Group.id == Membership.group_id)  # type: ignore[arg-type]
        .outerjoin(inviter, inviter.c.id == Membership.inviter_id)
        .where(Membership.member_id == member_id, _in_groups(Membership.group_id, group_ids))
        .order_by(Membership.joined_at.desc(), Membership.id.desc()))).all()  # type: ignore[attr-defined]
    if not rows:
        return None
    inviter_ids = {r[2] for r in rows if r[2] is not None}
    inviters = {m.id: m for m in (await session.execute(
        select(Member).where(Member.id.in_(inviter_ids)))).scalars()} if inviter_ids else {}  # type: ignore[union-attr]
    stays = [Stay(g, s.joined_at, s.join_scene, inviters.get(inv), s.left_at, s.leave_scene) for s, g, inv in rows]
    groups: dict[int, Group] = {}
    for stay in stays:
        groups.setdefault(stay.group.id, stay.group)  # type: ignore[arg-type]

    standings = []
    for gid, group in groups.items():
        tz = group.timezone or default_tz
        today = local_today(tz, now)
        totals = await points_store.totals(session, gid, member_id)
        streak = (await checkin_store.current_streaks(session, gid, today, [member_id])).get(member_id, 0)
        last_active, active_days = (await session.execute(
            select(func.max(MemberActivity.last_at),
                   func.count().filter(MemberActivity.day > today - timedelta(days=30)))
            .where(MemberActivity.group_id == gid, MemberActivity.member_id == member_id))).one()
        standings.append(GroupStanding(group, totals.balance, totals.earned,
                                       points_store.level_for(totals.earned, levels).name, streak,
                                       _aware(last_active), int(active_days or 0)))

    ledger = [(groups[e.group_id], e) for e in (await session.execute(
        select(PointsEntry).where(PointsEntry.member_id == member_id, PointsEntry.group_id.in_(list(groups)))  # type: ignore[attr-defined]
        .order_by(PointsEntry.at.desc(), PointsEntry.id.desc()).limit(ledger_limit))).scalars()]  # type: ignore[attr-defined,union-attr]

    invited = await session.execute(
        select(Membership, Member).join(Member, Member.id == Membership.member_id)  # type: ignore[arg-type]
        .where(Membership.inviter_id == member_id, Membership.group_id.in_(list(groups)))  # type: ignore[attr-defined]
        .order_by(Membership.joined_at.desc()).limit(100))  # type: ignore[attr-defined]
    invites = [Invite(groups[s.group_id], m, s.joined_at) for s, m in invited.all()]
    return Profile(member, stays, standings, ledger, invites)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _as_date(value: Any) -> date:
    return date.fromisoformat(value) if isinstance(value, str) else value


def _aware(value: Any) -> datetime | None:
    from storage.groups import _utc

    return _utc(value)

