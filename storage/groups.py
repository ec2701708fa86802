"""Groups, members and memberships (who is in which group since when, and how they came and went)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Index, UniqueConstraint, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from storage.db import Database, UTCDateTime, utcnow
from storage.upsert import insert_for


class Group(SQLModel, table=True):
    __tablename__ = "groups"
    __table_args__ = (UniqueConstraint("channel", "external_id", name="uq_groups_channel_external"),)

    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(max_length=32)
    external_id: str = Field(max_length=128)
    name: str = Field(default="", max_length=255)
    owner: str | None = Field(default=None, max_length=128)
    # IANA zone for local days (check-ins, activity); None means the bot's default timezone.
    timezone: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    dismissed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Member(SQLModel, table=True):
    __tablename__ = "members"
    __table_args__ = (UniqueConstraint("channel", "external_id", name="uq_members_channel_external"),)

    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(max_length=32)
    external_id: str = Field(max_length=128)
    name: str = Field(default="", max_length=255)
    # "staff" (WeCom user) or "external" (WeChat customer); None where the platform does not say.
    kind: str | None = Field(default=None, max_length=16)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Membership(SQLModel, table=True):
    """One stay of a member in a group; a member who leaves and rejoins has two rows."""

    __tablename__ = "memberships"
    __table_args__ = (
        # At most one open stay per member and group.
        Index(
            "uq_memberships_open",
            "group_id",
            "member_id",
            unique=True,
            sqlite_where=text("left_at IS NULL"),
            postgresql_where=text("left_at IS NULL"),
        ),
        Index("ix_memberships_group_joined", "group_id", "joined_at"),
        # Joins and leaves per day across groups (the console's dashboard).
        Index("ix_memberships_joined_at", "joined_at"),
        Index("ix_memberships_left_at", "left_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    group_id: int = Field(foreign_key="groups.id", index=False)
    member_id: int = Field(foreign_key="members.id", index=True)
    joined_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    join_scene: str | None = Field(default=None, max_length=32)
    inviter_id: int | None = Field(default=None, foreign_key="members.id")
    left_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    leave_scene: str | None = Field(default=None, max_length=32)


async def ensure_group(session: AsyncSession, channel: str, external_id: str, name: str | None = None) -> Group:
    """The group row for a platform group id, created on first sight; a known name is kept up to date."""
    values = {"channel": channel, "external_id": external_id, "name": name or "", "created_at": utcnow()}
    stmt = insert_for(session, Group).values(**values)
    if name:
        stmt = stmt.on_conflict_do_update(index_elements=["channel", "external_id"], set_={"name": name})
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=["channel", "external_id"])
    await session.execute(stmt)
    row = await session.execute(
        select(Group).where(Group.channel == channel, Group.external_id == external_id)
        .execution_options(populate_existing=True)
    )
    return row.scalar_one()


async def ensure_member(
    session: AsyncSession, channel: str, external_id: str, name: str | None = None, kind: str | None = None
) -> Member:
    """The member row for a platform user id, created on first sight; a known name is kept up to date."""
    now = utcnow()
    values = {"channel": channel, "external_id": external_id, "name": name or "", "kind": kind,
              "created_at": now, "updated_at": now}
    stmt = insert_for(session, Member).values(**values)
    updates = {k: v for k, v in (("name", name), ("kind", kind)) if v}
    if updates:
        updates["updated_at"] = now
        stmt = stmt.on_conflict_do_update(index_elements=["channel", "external_id"], set_=updates)
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=["channel", "external_id"])
    await session.execute(stmt)
    row = await session.execute(
        select(Member).where(Member.channel == channel, Member.external_id == external_id)
        .execution_options(populate_existing=True)
    )
    return row.scalar_one()


async def open_membership(
    session: AsyncSession,
    group: Group,
    member: Member,
    *,
    joined_at: datetime,
    join_scene: str | None = None,
    inviter: Member | None = None,
) -> bool:
    """Record that a member joined; False if they were already in the group (a repeated join)."""
    stmt = (
        insert_for(session, Membership)
        .values(group_id=group.id, member_id=member.id, joined_at=joined_at, join_scene=join_scene,
                inviter_id=inviter.id if inviter else None)
        .on_conflict_do_nothing(index_elements=["group_id", "member_id"], index_where=text("left_at IS NULL"))
    )
    result = await session.execute(stmt)
    return bool(result.rowcount)


async def close_membership(
    session: AsyncSession, group: Group, member: Member, *, left_at: datetime, leave_scene: str | None = None
) -> bool:
    """Record that a member left; False if no open stay was known."""
    result = await session.execute(
        update(Membership)
        .where(Membership.group_id == group.id, Membership.member_id == member.id,
               Membership.left_at.is_(None))  # type: ignore[union-attr]
        .values(left_at=left_at, leave_scene=leave_scene)
    )
    return bool(result.rowcount)


async def member_count(session: AsyncSession, group: Group) -> int:
    """How many members the bot knows to be in the group now."""
    result = await session.execute(
        select(func.count()).select_from(Membership)
        .where(Membership.group_id == group.id, Membership.left_at.is_(None))  # type: ignore[union-attr]
    )
    return int(result.scalar_one())


async def set_timezone(session: AsyncSession, group_id: int, zone: str | None) -> str | None:
    """Set a group's IANA timezone (None: back to the bot's default); returns the previous one. The
    caller checks the name (handlers.checkin.resolve_timezone); days already recorded keep their dates."""
    before = (await session.execute(select(Group.timezone).where(Group.id == group_id))).scalar_one_or_none()
    await session.execute(update(Group).where(Group.id == group_id).values(timezone=zone))  # type: ignore[arg-type]
    return before


async def dismiss_group(session: AsyncSession, group: Group, at: datetime) -> None:
    """Mark a group dismissed and close every open stay in it."""
    await session.execute(update(Group).where(Group.id == group.id).values(dismissed_at=at))
    await session.execute(
        update(Membership)
        .where(Membership.group_id == group.id, Membership.left_at.is_(None))  # type: ignore[union-attr]
        .values(left_at=at, leave_scene="dismissed")
    )


async def find_member_in_group(session: AsyncSession, group: Group, who: str) -> Member | None:
    """A member of the group named the way people write it in chat: "@小红", "小红", or the user id."""
    who = who.strip().lstrip("@").strip()
    if not who:
        return None
    base = (select(Member).join(Membership, Membership.member_id == Member.id)
            .where(Membership.group_id == group.id, Membership.left_at.is_(None)))  # type: ignore[union-attr]
    for condition in (Member.external_id == who, Member.name == who):
        row = await session.execute(base.where(condition).order_by(Member.id).limit(1))
        found = row.scalar_one_or_none()
        if found is not None:
            return found
    return None


_SPEAKER_SELECT = (
    "SELECT v.n, g.id, g.name, g.owner, g.timezone, g.created_at, g.dismissed_at, "
    "m.id, m.name, m.kind, m.created_at, m.updated_at, s.id"
)
_SPEAKER_FROM = (
    " FROM v JOIN groups g ON g.channel = v.ch AND g.external_id = v.ext "
    "JOIN members m ON m.channel = v.ch AND m.external_id = v.usr "
    "LEFT JOIN memberships s ON s.group_id = g.id AND s.member_id = m.id AND s.left_at IS NULL"
)
_speaker_sql: dict[tuple[int, tuple[str, ...]], str] = {}
Speaker = tuple[Group, Member, bool, list[Any]]


async def find_speaker(db: Database, channel: str, group_external_id: str, user: str,
                       probes: Sequence[str] = ()) -> Speaker | None:
    """The group, the member, whether they are in it now, and each probe's value; None if either is unknown."""
    return (await find_speakers(db, [(channel, group_external_id, user)], probes))[0]


async def find_speakers(db: Database, wanted: Sequence[tuple[str, str, str]],
                        probes: Sequence[str] = ()) -> list[Speaker | None]:
    """For each (channel, group external id, user): the group, the member, whether they are in it now,
    and the value of each probe, all in one read.

    This runs for every message a group sends (the dispatcher batches concurrent messages into one
    call), so it skips the ORM's query layers and takes no write lock on SQLite; the rows are detached
    and built without the ORM's instrumentation (read them, don't add them to a session). `probes` are
    scalar SQL expressions over the group row `g` (features' per-message checks, see Registry.probe).
    """
    from storage import fastsql

    if not wanted:
        return []
    key = (len(wanted), tuple(probes))
    sql = _speaker_sql.get(key)
    if sql is None:
        rows_sql = ", ".join(["(?, ?, ?, ?)"] * len(wanted))
        sql = _speaker_sql[key] = (f"WITH v(n, ch, ext, usr) AS (VALUES {rows_sql}) " + _SPEAKER_SELECT
                                   + "".join(f", ({p})" for p in probes) + _SPEAKER_FROM)
    params: list[Any] = []
    for n, (channel, group_external_id, user) in enumerate(wanted):
        params += [str(n), channel, group_external_id, user]
    found: list[Speaker | None] = [None] * len(wanted)
    for row in await fastsql.fetch(db, sql, params):
        n = int(row[0])
        if found[n] is not None and found[n][2]:  # type: ignore[index]
            continue  # one open stay is enough
        channel, group_external_id, user = wanted[n]
        (gid, gname, owner, tz, gcreated, gdismissed, mid, mname, kind, mcreated, mupdated, stay) = row[1:13]
        group = Group.model_construct(id=gid, channel=channel, external_id=group_external_id, name=gname, owner=owner,
                                      timezone=tz, created_at=_utc(gcreated), dismissed_at=_utc(gdismissed))
        member = Member.model_construct(id=mid, channel=channel, external_id=user, name=mname, kind=kind,
                                        created_at=_utc(mcreated), updated_at=_utc(mupdated))
        found[n] = (group, member, stay is not None, list(row[13:]))
    return found


def _utc(value: datetime | str | None) -> datetime | None:
    """A timestamp as the driver returns it (SQLite: text in UTC) as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
