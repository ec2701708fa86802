"""Daily check-ins: one row per member, group and local day; streaks, positions and boards are derived.

The unique key (group, member, day) is the only thing that decides whether a check-in counts: the row is
inserted with ON CONFLICT DO NOTHING and whoever inserted it won, in any process. The winner pays the
points (a ledger row whose ref is the check-in's id) and takes the next number from a per-(group, day)
counter in the same transaction, so "今天第 N 个" is exact and unique under any concurrency; the counter's
row lock is taken last, to hold it for as short a time as possible.

A streak is never stored: it is the run of consecutive local days ending on the given day (or the day
before, when the member has not checked in yet today), found with a gaps-and-islands query in the database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Date, Index, Integer, UniqueConstraint, cast, extract, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from storage import points as points_store
from storage.db import UTCDateTime
from storage.groups import Member, Membership
from storage.upsert import insert_for

# Leaderboard orderings.
BY_POINTS, BY_STREAK, BY_CHECKINS = "points", "streak", "checkins"


class Checkin(SQLModel, table=True):
    __tablename__ = "checkins"
    __table_args__ = (
        UniqueConstraint("group_id", "member_id", "day", name="uq_checkins_group_member_day"),
        Index("ix_checkins_group_day", "group_id", "day"),
        Index("ix_checkins_day", "day"),  # check-ins per day across groups (the console's dashboard)
    )

    id: int | None = Field(default=None, primary_key=True)
    group_id: int = Field(foreign_key="groups.id")
    member_id: int = Field(foreign_key="members.id", index=True)
    # The local calendar day in the group's timezone at the moment of the check-in.
    day: date = Field(sa_type=Date)
    # 1 for the group's first check-in of the day, 2 for the second, ...
    position: int = 0
    # Points the check-in earned (the ledger row with kind "checkin" and ref = id holds the same).
    points: int = 0
    # The event that made it (channel:key), so a retried event re-answers instead of saying "already".
    event_ref: str | None = Field(default=None, max_length=128)
    at: datetime = Field(sa_type=UTCDateTime)


class CheckinDayCount(SQLModel, table=True):
    """How many check-ins a group has had on a local day: the source of each check-in's position."""

    __tablename__ = "checkin_day_counts"
    __table_args__ = (UniqueConstraint("group_id", "day", name="uq_checkin_day_counts_group_day"),)

    id: int | None = Field(default=None, primary_key=True)
    group_id: int = Field(foreign_key="groups.id")
    day: date = Field(sa_type=Date)
    checkins: int = 0


@dataclass(frozen=True)
class CheckinResult:
    """What happened to a check-in request: `row` is the day's check-in (this request's or the earlier one)."""

    row: Checkin
    # This request created the check-in.
    new: bool
    # The check-in was made by this very event earlier (a retry after a crash): answer as the first time.
    same_event: bool
    # Consecutive days ending on the check-in's day.
    streak: int


async def check_in(session: AsyncSession, *, group_id: int, member_id: int, day: date, at: datetime,
                   event_ref: str | None, points_for_streak: Callable[[int], int],
                   ledger_reason: Callable[[int], str]) -> CheckinResult:
    """Check a member in for a local day, exactly once, paying the points in the same transaction."""
    inserted = await session.execute(
        insert_for(session, Checkin)
        .values(group_id=group_id, member_id=member_id, day=day, position=0, points=0, event_ref=event_ref, at=at)
        .on_conflict_do_nothing(index_elements=["group_id", "member_id", "day"])
        .returning(Checkin.id)
    )
    checkin_id = inserted.scalar_one_or_none()
    if checkin_id is None:
        row = (await session.execute(select(Checkin).where(
            Checkin.group_id == group_id, Checkin.member_id == member_id, Checkin.day == day))).scalar_one()
        streak = (await current_streaks(session, group_id, day, member_ids=[member_id]))[member_id]
        return CheckinResult(row, new=False, same_event=event_ref is not None and row.event_ref == event_ref,
                             streak=streak)

    streak = (await current_streaks(session, group_id, day, member_ids=[member_id]))[member_id]
    earned = points_for_streak(streak)
    if earned:
        await points_store.add_entry(session, group_id=group_id, member_id=member_id, delta=earned,
                                     kind=points_store.CHECKIN, reason=ledger_reason(streak), ref=str(checkin_id),
                                     at=at)
    position = await _next_position(session, group_id, day)
    await session.execute(update(Checkin).where(Checkin.id == checkin_id).values(position=position, points=earned))
    row = Checkin(id=checkin_id, group_id=group_id, member_id=member_id, day=day, position=position, points=earned,
                  event_ref=event_ref, at=at)
    return CheckinResult(row, new=True, same_event=True, streak=streak)


async def _next_position(session: AsyncSession, group_id: int, day: date) -> int:
    """Count one more check-in for the group's day and return the new count (atomic: a row lock or upsert)."""
    stmt = insert_for(session, CheckinDayCount).values(group_id=group_id, day=day, checkins=1)
    table = CheckinDayCount.__table__  # type: ignore[attr-defined]
    stmt = stmt.on_conflict_do_update(index_elements=["group_id", "day"],
                                      set_={"checkins": table.c.checkins + 1}).returning(table.c.checkins)
    return int((await session.execute(stmt)).scalar_one())


def _streak_islands(group_id: int, today: date, member_ids: list[int] | None = None) -> Any:
    """(member_id, length) of each member's run of consecutive days that ends today or yesterday.

    Gaps and islands: day number minus the row's rank among the member's days is constant along a run.
    Only members who checked in today or yesterday are looked at, so old history is never scanned for
    members whose streak is already broken.
    """
    yesterday = today - timedelta(days=1)
    day_number = cast(extract("epoch", Checkin.day), Integer) // 86400
    recent = select(Checkin.member_id).where(Checkin.group_id == group_id, Checkin.day >= yesterday,
                                             Checkin.day <= today)
    if member_ids is not None:
        recent = recent.where(Checkin.member_id.in_(member_ids))  # type: ignore[attr-defined]
    days = (
        select(Checkin.member_id, Checkin.day,
               (day_number - func.row_number().over(partition_by=Checkin.member_id, order_by=Checkin.day))
               .label("island"))
        .where(Checkin.group_id == group_id, Checkin.day <= today, Checkin.member_id.in_(recent))  # type: ignore[attr-defined]
    )
    if member_ids is not None:
        # Said again outside the subquery so the planner reads only these members' rows through the unique index.
        days = days.where(Checkin.member_id.in_(member_ids))  # type: ignore[attr-defined]
    days = days.subquery()
    return (
        select(days.c.member_id, func.count().label("length"))
        .group_by(days.c.member_id, days.c.island)
        .having(func.max(days.c.day) >= yesterday)
    )


async def current_streaks(session: AsyncSession, group_id: int, today: date,
                          member_ids: list[int] | None = None) -> dict[int, int]:
    """{member id: streak} for members whose streak is alive on `today` (checked in today or yesterday)."""
    rows = await session.execute(_streak_islands(group_id, today, member_ids))
    return {member_id: int(length) for member_id, length in rows.all()}


async def checkins_between(session: AsyncSession, group_id: int, member_id: int, first: date, last: date) -> int:
    """How many days in [first, last] the member checked in (e.g. this local month)."""
    row = await session.execute(select(func.count()).select_from(Checkin).where(
        Checkin.group_id == group_id, Checkin.member_id == member_id, Checkin.day >= first, Checkin.day <= last))
    return int(row.scalar_one())


async def checkin_on(session: AsyncSession, group_id: int, member_id: int, day: date) -> Checkin | None:
    row = await session.execute(select(Checkin).where(
        Checkin.group_id == group_id, Checkin.member_id == member_id, Checkin.day == day))
    return row.scalar_one_or_none()


@dataclass(frozen=True)
class Standing:
    """One line of a leaderboard. Ties share a rank (standard competition ranking: 1, 2, 2, 4)."""

    rank: int
    member_id: int
    name: str
    score: int


def _scores(group_id: int, by: str, today: date) -> Any:
    """(member_id, score) for the ordering, for members in the group now, with a score above zero."""
    if by == BY_POINTS:
        scores = points_store.balances(group_id)
    elif by == BY_STREAK:
        scores = _streak_islands(group_id, today)
    elif by == BY_CHECKINS:
        scores = (select(Checkin.member_id, func.count().label("score"))
                  .where(Checkin.group_id == group_id, Checkin.day >= today.replace(day=1), Checkin.day <= today)
                  .group_by(Checkin.member_id))
    else:
        raise ValueError(f"unknown leaderboard ordering {by!r}")
    sub = scores.subquery()
    member_col, score_col = sub.c[0], sub.c[1]
    return (select(member_col.label("member_id"), score_col.label("score"))
            .join(Membership, Membership.member_id == member_col)
            .where(Membership.group_id == group_id, Membership.left_at.is_(None), score_col > 0))  # type: ignore[union-attr]


async def leaderboard(session: AsyncSession, group_id: int, *, by: str, today: date, limit: int,
                      me: int | None = None) -> tuple[list[Standing], Standing | None]:
    """The top `limit` rows by points, current streak or check-ins this month, and `me`'s own standing.

    Ties share the rank of the first of them (1, 2, 2, 4); within a tie rows are listed by name. The caller's
    standing is None when they have no score.
    """
    scores = _scores(group_id, by, today).subquery()
    ranked = select(scores.c.member_id, scores.c.score,
                    func.rank().over(order_by=scores.c.score.desc()).label("rank")).subquery()
    name = func.coalesce(func.nullif(Member.name, ""), Member.external_id)
    query = (select(ranked.c.rank, ranked.c.member_id, name, ranked.c.score)
             .join(Member, Member.id == ranked.c.member_id)
             .order_by(ranked.c.rank, name, ranked.c.member_id))
    top = [Standing(int(r), m, n, int(s)) for r, m, n, s in (await session.execute(query.limit(limit))).all()]
    mine = None
    if me is not None:
        found = next((s for s in top if s.member_id == me), None)
        if found is None:
            row = (await session.execute(query.where(ranked.c.member_id == me))).first()
            found = Standing(int(row[0]), row[1], row[2], int(row[3])) if row else None
        mine = found
    return top, mine
