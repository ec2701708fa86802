"""The inbox: every platform message the bot accepted, unique per channel and message key.

A row is written (durably) before the platform is acknowledged; a retry or a second process that tries
to insert the same key finds the row and stops there. The row then serves as a work queue item: it is
claimed with a lease, processed, and marked done, so a crash between acknowledge and processing loses
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import Index, Text, UniqueConstraint, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from storage import fastsql
from storage.activity import Tally, tally_statements
from storage.db import Database, UTCDateTime, utcnow

PENDING, PROCESSING, DONE, FAILED = "pending", "processing", "done", "failed"


class InboxMessage(SQLModel, table=True):
    __tablename__ = "inbox"
    __table_args__ = (
        UniqueConstraint("channel", "message_key", name="uq_inbox_channel_key"),
        Index("ix_inbox_status_lease", "status", "lease_until"),
    )

    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(max_length=32)
    message_key: str = Field(max_length=255)
    event_type: str = Field(max_length=32)
    payload: str = Field(sa_type=Text)
    received_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    status: str = Field(default=PENDING, max_length=16)
    attempts: int = 0
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    processed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Set once the event's activity was counted, so a retried event is not counted twice.
    recorded_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    error: str | None = Field(default=None, sa_type=Text)


class NewMessage(NamedTuple):
    """An accepted event on its way into the inbox (one per callback: a tuple is the cheapest to build)."""

    channel: str
    message_key: str
    event_type: str
    payload: str


# PostgreSQL's batch statement: the new events, already claimed, from arrays (received_at, lease_until,
# channels, keys, types, payloads), after one of the prefixes below when the batch also finishes events.
_PG_INSERT = (
    "INSERT INTO inbox (channel, message_key, event_type, payload, received_at, lease_until, status, attempts) "
    "SELECT c, k, t, p, ?, ?, 'processing', 1 FROM unnest(?::text[], ?::text[], ?::text[], ?::text[]) AS u(c, k, t, p) "
    "ON CONFLICT (channel, message_key) DO NOTHING RETURNING id, channel, message_key"
)
_PG_DONE = (
    "WITH done AS (UPDATE inbox SET status = 'done', processed_at = ?, lease_until = NULL, error = NULL "
    "WHERE id = ANY(?::int[])) "
)
_PG_DONE_AND_TALLIES = (
    "WITH fresh AS (UPDATE inbox SET status = 'done', processed_at = ?, lease_until = NULL, error = NULL, "
    "recorded_at = ? WHERE id = ANY(?::int[]) AND recorded_at IS NULL RETURNING id), "
    "done AS (UPDATE inbox SET status = 'done', processed_at = ?, lease_until = NULL, error = NULL "
    "WHERE id = ANY(?::int[]) AND NOT (id = ANY(?::int[]) AND recorded_at IS NULL)), "
    "act AS (INSERT INTO member_activity (group_id, member_id, day, messages, commands, first_at, last_at) "
    "SELECT g, m, d, sum(msg), sum(cmd), min(a), max(a) "
    "FROM unnest(?::int[], ?::int[], ?::int[], ?::date[], ?::int[], ?::int[], ?::timestamptz[]) "
    "AS t(eid, g, m, d, msg, cmd, a) JOIN fresh ON fresh.id = t.eid GROUP BY g, m, d "
    "ON CONFLICT (group_id, member_id, day) DO UPDATE SET "
    "messages = member_activity.messages + excluded.messages, "
    "commands = member_activity.commands + excluded.commands, "
    "first_at = LEAST(member_activity.first_at, excluded.first_at), "
    "last_at = GREATEST(member_activity.last_at, excluded.last_at)) "
)


async def write_batch(
    conn: fastsql.FastConnection, items: list[NewMessage], done_ids: list[int], *, lease: timedelta,
    now: datetime | None = None, tallies: dict[int, Tally] | None = None,
) -> dict[tuple[str, str], int]:
    """In one transaction: mark `done_ids` done (counting their activity `tallies`, once per event), and
    insert the items not in the inbox yet, already claimed.

    The accepting process processes what it accepted, so new rows start in 'processing' with a lease
    (and attempt 1): no separate claim is needed, and if the process dies the lease expires and any
    process recovers them. Returns {(channel, key): id} for the rows inserted.

    This is the callback hot path: one round trip per batch (PostgreSQL runs the update as a
    data-modifying CTE of the insert), through the driver, because the ORM's async layers cost about
    ten times as much per batch.
    """
    now = now or utcnow()
    unique: dict[tuple[str, str], NewMessage] = {}
    for item in items:
        unique.setdefault((item.channel, item.message_key), item)
    rows = list(unique.values())
    stamp, until = conn.stamp(now), conn.stamp(now + lease)
    if not rows and not done_ids:
        return {}
    insert_at = 0
    statements: list[fastsql.Statement]
    if conn.postgres:
        # One round trip whatever the batch holds: done marks (and activity) are data-modifying CTEs of the insert.
        # Each shape is one constant statement (arrays, not a placeholder per value).
        if tallies:
            # The events whose activity is not counted yet are marked done together with the stamp that says
            # so (a conditional UPDATE, so an event finished twice counts once), and their tallies are summed
            # into member_activity.
            tally_rows = list(tallies.items())
            prefix, params = _PG_DONE_AND_TALLIES, [
                stamp, stamp, list(tallies), stamp, done_ids, list(tallies),
                [eid for eid, _ in tally_rows], [t.group_id for _, t in tally_rows],
                [t.member_id for _, t in tally_rows], [t.day for _, t in tally_rows],
                [0 if t.command else 1 for _, t in tally_rows], [1 if t.command else 0 for _, t in tally_rows],
                [t.at for _, t in tally_rows]]
            tallies = None
        elif done_ids:
            prefix, params = _PG_DONE, [stamp, done_ids]
        else:  # the usual batch during a burst: new events only
            prefix, params = "", []
        statements = [(prefix + _PG_INSERT, [*params, stamp, until, [m.channel for m in rows],
                                             [m.message_key for m in rows], [m.event_type for m in rows],
                                             [m.payload for m in rows]])]
    else:
        statements = []
        if done_ids:
            statements.append((
                "UPDATE inbox SET status = 'done', processed_at = ?, lease_until = NULL, error = NULL "  # noqa: S608 - placeholders only
                f"WHERE id IN ({fastsql.placeholders(len(done_ids))})",
                [stamp, *done_ids],
            ))
        if rows:
            insert_at = len(statements)
            statements.append((
                "INSERT INTO inbox (channel, message_key, event_type, payload, received_at, lease_until, status, attempts) "  # noqa: S608 - placeholders only
                "VALUES " + ", ".join(f"({fastsql.placeholders(6)}, 'processing', 1)" for _ in rows)
                + " ON CONFLICT (channel, message_key) DO NOTHING RETURNING id, channel, message_key",
                [v for m in rows for v in (m.channel, m.message_key, m.event_type, m.payload, stamp, until)],
            ))
    statements.extend(tally_statements(conn, tallies or {}, stamp))
    results = await conn.transaction(statements)
    inserted = results[insert_at] if rows else []
    return {(channel, key): message_id for message_id, channel, key in inserted}


@dataclass(frozen=True)
class Claimed:
    id: int
    channel: str
    message_key: str
    event_type: str
    payload: str
    attempts: int


async def claim(db: Database, message_ids: list[int], lease: timedelta, now: datetime | None = None) -> list[Claimed]:
    """Take the pending (or abandoned) messages among these for processing, in one statement.

    Messages another worker holds, or that are done, are left out.
    """
    if not message_ids:
        return []
    now = now or utcnow()
    rows = await fastsql.fetch(
        db,
        "UPDATE inbox SET status = 'processing', lease_until = ?, attempts = attempts + 1 "  # noqa: S608 - placeholders only
        f"WHERE id IN ({fastsql.placeholders(len(message_ids))}) "
        "AND (status = 'pending' OR (status = 'processing' AND lease_until < ?)) "
        "RETURNING id, channel, message_key, event_type, payload, attempts",
        [now + lease, *message_ids, now],
    )
    return sorted((Claimed(*row) for row in rows), key=lambda c: c.id)


async def note_handler_errors(db: Database, message_id: int, note: str) -> None:
    """Finish a message whose handlers partly failed: done (the others' work was kept), with the errors noted."""
    await fastsql.fetch(
        db, "UPDATE inbox SET status = 'done', processed_at = ?, lease_until = NULL, error = ? WHERE id = ?",
        [utcnow(), note[:4000], message_id],
    )


async def mark_failed(db: Database, message_id: int, error: str, *, final: bool) -> None:
    """Record a processing error; the message is retried later unless this was the last attempt."""
    await fastsql.fetch(
        db, "UPDATE inbox SET status = ?, lease_until = NULL, error = ? WHERE id = ?",
        [FAILED if final else PENDING, error[:4000], message_id],
    )


async def mark_recorded(session: AsyncSession, message_id: int) -> bool:
    """Claim the right to count this event's activity, in the caller's transaction; False if already counted."""
    result = await session.execute(
        update(InboxMessage)
        .where(InboxMessage.id == message_id, InboxMessage.recorded_at.is_(None))  # type: ignore[union-attr]
        .values(recorded_at=utcnow())
    )
    return bool(result.rowcount)


async def due_for_recovery(session: AsyncSession, *, older_than: datetime, limit: int = 100) -> list[int]:
    """Messages accepted but never finished: pending ones past a grace period and expired leases."""
    now = utcnow()
    result = await session.execute(
        select(InboxMessage.id)
        .where(
            or_(
                (InboxMessage.status == PENDING) & (InboxMessage.received_at < older_than),  # type: ignore[operator]
                (InboxMessage.status == PROCESSING) & (InboxMessage.lease_until < now),  # type: ignore[operator]
            )
        )
        .order_by(InboxMessage.id)
        .limit(limit)
    )
    return list(result.scalars())
