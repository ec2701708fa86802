"""The points ledger: append-only rows per member and group; balance and level are derived from it.

Every row says why (kind and reason) and may carry a `ref` that makes it idempotent: the same
(kind, ref) is written at most once, so a retried event never pays twice.

The balance is the sum of a member's rows in a group. The level comes from the points ever *earned* there
(the positive rows), not from the balance: a level records engagement, so spending points or a penalty
lowers the balance but never demotes anyone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Index, case, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from storage.db import UTCDateTime, utcnow
from storage.groups import Member
from storage.upsert import insert_for

CHECKIN = "checkin"
LOTTERY = "lottery"
GRANT = "grant"
DEDUCT = "deduct"
INVITE = "invite"


class PointsEntry(SQLModel, table=True):
    __tablename__ = "points_ledger"
    __table_args__ = (
        Index("ix_points_group_member", "group_id", "member_id"),
        Index("uq_points_kind_ref", "kind", "ref", unique=True,
              sqlite_where=text("ref IS NOT NULL"), postgresql_where=text("ref IS NOT NULL")),
    )

    id: int | None = Field(default=None, primary_key=True)
    group_id: int = Field(foreign_key="groups.id")
    member_id: int = Field(foreign_key="members.id")
    delta: int
    kind: str = Field(max_length=16)
    reason: str = Field(default="", max_length=255)
    ref: str | None = Field(default=None, max_length=128)
    # Who caused it: the admin's member id for grants and deductions.
    actor_id: int | None = Field(default=None, foreign_key="members.id")
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


async def add_entry(session: AsyncSession, *, group_id: int, member_id: int, delta: int, kind: str,
                    reason: str = "", ref: str | None = None, actor_id: int | None = None,
                    at: datetime | None = None) -> bool:
    """Append one ledger row; False if a row with the same (kind, ref) already exists."""
    stmt = insert_for(session, PointsEntry).values(
        group_id=group_id, member_id=member_id, delta=delta, kind=kind, reason=reason, ref=ref,
        actor_id=actor_id, at=at or utcnow())
    if ref is not None:
        stmt = stmt.on_conflict_do_nothing(index_elements=["kind", "ref"], index_where=text("ref IS NOT NULL"))
    return bool((await session.execute(stmt)).rowcount)


async def balance(session: AsyncSession, group_id: int, member_id: int) -> int:
    row = await session.execute(select(func.coalesce(func.sum(PointsEntry.delta), 0)).where(
        PointsEntry.group_id == group_id, PointsEntry.member_id == member_id))
    return int(row.scalar_one())


def balances(group_id: int) -> Any:
    """A query of (member_id, score = balance) for every member with rows in the group."""
    return (select(PointsEntry.member_id, func.sum(PointsEntry.delta).label("score"))
            .where(PointsEntry.group_id == group_id).group_by(PointsEntry.member_id))


@dataclass(frozen=True)
class Totals:
    balance: int
    # Points ever earned in the group (the positive rows): what the level is based on.
    earned: int


async def totals(session: AsyncSession, group_id: int, member_id: int) -> Totals:
    row = (await session.execute(select(
        func.coalesce(func.sum(PointsEntry.delta), 0),
        func.coalesce(func.sum(case((PointsEntry.delta > 0, PointsEntry.delta), else_=0)), 0),
    ).where(PointsEntry.group_id == group_id, PointsEntry.member_id == member_id))).one()
    return Totals(int(row[0]), int(row[1]))


@dataclass(frozen=True)
class Level:
    name: str
    # The next level up and the lifetime points it needs; None at the top.
    next_name: str | None
    next_threshold: int | None


def level_for(earned: int, levels: list[tuple[int, str]]) -> Level:
    """The level for points ever earned, given [(threshold, name), ...] sorted upwards from 0."""
    reached = [n for n, (threshold, _) in enumerate(levels) if earned >= threshold] or [0]
    n = reached[-1]
    following = levels[n + 1] if n + 1 < len(levels) else None
    return Level(levels[n][1], following[1] if following else None, following[0] if following else None)


async def history(session: AsyncSession, group_id: int, member_id: int, limit: int = 20) -> list[PointsEntry]:
    """The member's latest ledger rows in the group, newest first."""
    rows = await session.execute(
        select(PointsEntry).where(PointsEntry.group_id == group_id, PointsEntry.member_id == member_id)
        .order_by(PointsEntry.at.desc(), PointsEntry.id.desc()).limit(limit))  # type: ignore[attr-defined,union-attr]
    return list(rows.scalars())


class InsufficientPoints(Exception):
    """A deduction larger than the balance where balances may not go below zero."""

    def __init__(self, balance: int) -> None:
        super().__init__(f"balance is {balance}")
        self.balance = balance


@dataclass(frozen=True)
class Adjustment:
    # False when a row with the same ref was already written (a retried command): nothing changed now.
    applied: bool
    balance: int


async def adjust(session: AsyncSession, *, group_id: int, member_id: int, delta: int, reason: str,
                 actor_id: int | None = None, ref: str | None = None,
                 allow_negative: bool = False) -> Adjustment:
    """An admin's grant (delta > 0) or deduction (delta < 0) with a reason.

    Deductions for one member are serialized by a lock on the member's row (a no-op on SQLite, where
    writers are serialized anyway), so two at once cannot both pass the balance check.
    """
    kind = GRANT if delta > 0 else DEDUCT
    if ref is not None:
        done = await session.execute(select(PointsEntry.id).where(PointsEntry.kind == kind, PointsEntry.ref == ref))
        if done.first() is not None:
            return Adjustment(False, await balance(session, group_id, member_id))
    if delta < 0:
        # FOR NO KEY UPDATE: check-ins paying this member (foreign-key share locks) are not held up.
        await session.execute(select(Member.id).where(Member.id == member_id).with_for_update(key_share=True))
    current = await balance(session, group_id, member_id)
    if delta < 0 and not allow_negative and current + delta < 0:
        raise InsufficientPoints(current)
    applied = await add_entry(session, group_id=group_id, member_id=member_id, delta=delta, kind=kind,
                              reason=reason, ref=ref, actor_id=actor_id)
    return Adjustment(applied, current + delta if applied else current)
