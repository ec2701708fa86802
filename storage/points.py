"""The points ledger: append-only rows per member and group; balance and level are derived from it.

Every row says why (kind and reason) and may carry a `ref` that makes it idempotent: the same
(kind, ref) is written at most once, so a retried event never pays twice.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from storage.db import UTCDateTime, utcnow
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
