"""Member activity per member, group and local day: the fact table behind DAU, retention and slipping-away lists."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, UniqueConstraint, case
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from storage.db import UTCDateTime
from storage.upsert import insert_for


class MemberActivity(SQLModel, table=True):
    __tablename__ = "member_activity"
    __table_args__ = (UniqueConstraint("group_id", "member_id", "day", name="uq_activity_group_member_day"),)

    id: int | None = Field(default=None, primary_key=True)
    group_id: int = Field(foreign_key="groups.id", index=True)
    member_id: int = Field(foreign_key="members.id", index=True)
    # The local calendar day in the group's timezone.
    day: date = Field(sa_type=Date, index=True)
    messages: int = 0
    commands: int = 0
    first_at: datetime = Field(sa_type=UTCDateTime)
    last_at: datetime = Field(sa_type=UTCDateTime)


async def record_activity(
    session: AsyncSession, *, group_id: int, member_id: int, day: date, at: datetime, command: bool
) -> None:
    """Count one message (or command) for the member's local day, atomically."""
    stmt = insert_for(session, MemberActivity).values(
        group_id=group_id, member_id=member_id, day=day, messages=0 if command else 1,
        commands=1 if command else 0, first_at=at, last_at=at,
    )
    table = MemberActivity.__table__  # type: ignore[attr-defined]
    stmt = stmt.on_conflict_do_update(
        index_elements=["group_id", "member_id", "day"],
        set_={
            "messages": table.c.messages + stmt.excluded.messages,
            "commands": table.c.commands + stmt.excluded.commands,
            # Events may be processed out of order (retries, recovery): keep the earliest and latest.
            "first_at": case((stmt.excluded.first_at < table.c.first_at, stmt.excluded.first_at), else_=table.c.first_at),
            "last_at": case((stmt.excluded.last_at > table.c.last_at, stmt.excluded.last_at), else_=table.c.last_at),
        },
    )
    await session.execute(stmt)
