"""Who administers a group: what the platform says (owner, admin list) and what operators configured."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import UniqueConstraint, delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from storage.db import UTCDateTime, utcnow
from storage.groups import Group, Member
from storage.upsert import insert_for

PLATFORM = "platform"  # told by the platform (WeCom groupchat/get owner and admin_list, the simulator's role)
MANUAL = "manual"  # added by a bot or group admin (chat command, CLI, console)


class GroupAdmin(SQLModel, table=True):
    __tablename__ = "group_admins"
    __table_args__ = (UniqueConstraint("group_id", "member_id", "source", name="uq_group_admins_group_member_source"),)

    id: int | None = Field(default=None, primary_key=True)
    group_id: int = Field(foreign_key="groups.id", index=True)
    member_id: int = Field(foreign_key="members.id", index=True)
    source: str = Field(max_length=16)
    # "owner" or "admin" for platform rows; who added a manual one.
    detail: str = Field(default="", max_length=128)
    added_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


async def is_group_admin(session: AsyncSession, group_id: int, member_id: int) -> bool:
    row = await session.execute(
        select(GroupAdmin.id).where(GroupAdmin.group_id == group_id, GroupAdmin.member_id == member_id).limit(1)
    )
    return row.first() is not None


async def add_admin(session: AsyncSession, group_id: int, member_id: int, *, source: str = MANUAL,
                    detail: str = "") -> bool:
    """Make a member an admin of the group; False if they already were (from that source)."""
    stmt = (insert_for(session, GroupAdmin)
            .values(group_id=group_id, member_id=member_id, source=source, detail=detail, added_at=utcnow())
            .on_conflict_do_nothing(index_elements=["group_id", "member_id", "source"]))
    return bool((await session.execute(stmt)).rowcount)


async def remove_admin(session: AsyncSession, group_id: int, member_id: int, *, source: str = MANUAL) -> bool:
    result = await session.execute(delete(GroupAdmin).where(
        GroupAdmin.group_id == group_id, GroupAdmin.member_id == member_id, GroupAdmin.source == source))
    return bool(result.rowcount)


async def set_platform_admins(session: AsyncSession, group_id: int, admins: Iterable[tuple[int, str]]) -> None:
    """Replace what the platform told us about a group's owner and admins: (member id, "owner"|"admin")."""
    wanted = dict(admins)
    await session.execute(delete(GroupAdmin).where(GroupAdmin.group_id == group_id, GroupAdmin.source == PLATFORM))
    for member_id, role in wanted.items():
        await add_admin(session, group_id, member_id, source=PLATFORM, detail=role)


async def list_admins(session: AsyncSession, group_id: int) -> list[tuple[Member, GroupAdmin]]:
    rows = await session.execute(
        select(Member, GroupAdmin).join(GroupAdmin, GroupAdmin.member_id == Member.id)
        .where(GroupAdmin.group_id == group_id).order_by(GroupAdmin.source.desc(), Member.external_id)  # type: ignore[attr-defined]
    )
    return [(m, a) for m, a in rows.all()]


async def find_group(session: AsyncSession, channel: str, external_id: str) -> Group | None:
    row = await session.execute(select(Group).where(Group.channel == channel, Group.external_id == external_id))
    return row.scalar_one_or_none()
