"""Member activity per member, group and local day: the fact table behind DAU, retention and slipping-away lists."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING

from sqlalchemy import Date, Index, UniqueConstraint, case
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from storage.db import UTCDateTime
from storage.upsert import insert_for

if TYPE_CHECKING:
    from storage.fastsql import FastConnection, Statement


class MemberActivity(SQLModel, table=True):
    __tablename__ = "member_activity"
    __table_args__ = (
        UniqueConstraint("group_id", "member_id", "day", name="uq_activity_group_member_day"),
        # Days first, then members: the console's daily active members across groups read only this index.
        Index("ix_member_activity_day", "day", "member_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    group_id: int = Field(foreign_key="groups.id", index=True)
    member_id: int = Field(foreign_key="members.id", index=True)
    # The local calendar day in the group's timezone.
    day: date = Field(sa_type=Date)
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


@dataclass(frozen=True)
class Tally:
    """One event's contribution to member activity, counted when the event is marked done."""

    group_id: int
    member_id: int
    day: date
    at: datetime
    command: bool


def tally_statements(conn: FastConnection, tallies: dict[int, Tally], stamp: object) -> list[Statement]:
    """Statements (for the inbox journal's batch transaction) that count each event's activity once.

    Only events whose inbox row has no `recorded_at` yet are counted, and they are stamped in the same
    transaction, so an event processed twice (a retry after a crash) never counts twice. The batch is
    summed per member, group and day: one upsert row each, however many messages the batch holds.
    """
    if not tallies:
        return []
    ids = list(tallies)
    rows = list(tallies.items())
    upsert = ("ON CONFLICT (group_id, member_id, day) DO UPDATE SET "
              "messages = member_activity.messages + excluded.messages, "
              "commands = member_activity.commands + excluded.commands, ")
    if conn.postgres:
        return [(
            "WITH fresh AS (UPDATE inbox SET recorded_at = ? WHERE id = ANY(?::int[]) AND recorded_at IS NULL "  # noqa: S608 - constant text
            "RETURNING id) "
            "INSERT INTO member_activity (group_id, member_id, day, messages, commands, first_at, last_at) "
            "SELECT g, m, d, sum(msg), sum(cmd), min(at), max(at) "
            "FROM unnest(?::int[], ?::int[], ?::int[], ?::date[], ?::int[], ?::int[], ?::timestamptz[]) "
            "AS t(eid, g, m, d, msg, cmd, at) JOIN fresh ON fresh.id = t.eid GROUP BY g, m, d "
            + upsert + "first_at = LEAST(member_activity.first_at, excluded.first_at), "
            "last_at = GREATEST(member_activity.last_at, excluded.last_at)",
            [stamp, ids, ids, [t.group_id for _, t in rows], [t.member_id for _, t in rows],
             [t.day for _, t in rows], [0 if t.command else 1 for _, t in rows],
             [1 if t.command else 0 for _, t in rows], [t.at for _, t in rows]],
        )]
    from storage.fastsql import placeholders

    values = ", ".join(f"({placeholders(7)})" for _ in rows)
    params = [v for eid, t in rows for v in (eid, t.group_id, t.member_id, t.day.isoformat(),
                                              0 if t.command else 1, 1 if t.command else 0, conn.stamp(t.at))]
    return [
        ("INSERT INTO member_activity (group_id, member_id, day, messages, commands, first_at, last_at) "  # noqa: S608 - placeholders only
         "SELECT column2, column3, column4, sum(column5), sum(column6), min(column7), max(column7) "
         f"FROM (VALUES {values}) WHERE column1 IN (SELECT id FROM inbox WHERE id IN ({placeholders(len(ids))}) "
         "AND recorded_at IS NULL) GROUP BY column2, column3, column4 "
         + upsert + "first_at = min(member_activity.first_at, excluded.first_at), "
         "last_at = max(member_activity.last_at, excluded.last_at)",
         [*params, *ids]),
        ("UPDATE inbox SET recorded_at = ? "  # noqa: S608 - placeholders only
         f"WHERE id IN ({placeholders(len(ids))}) AND recorded_at IS NULL", [stamp, *ids]),
    ]
