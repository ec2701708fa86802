"""The inbox: every platform message the bot accepted, unique per channel and message key.

A row is written (durably) before the platform is acknowledged; a retry or a second process that tries
to insert the same key finds the row and stops there. The row then serves as a work queue item: it is
claimed with a lease, processed, and marked done, so a crash between acknowledge and processing loses
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Index, Text, UniqueConstraint, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from storage.db import UTCDateTime, utcnow
from storage.upsert import insert_for

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
    error: str | None = Field(default=None, sa_type=Text)


@dataclass(frozen=True)
class NewMessage:
    channel: str
    message_key: str
    event_type: str
    payload: str


async def insert_new(session: AsyncSession, items: list[NewMessage], now: datetime | None = None) -> dict[tuple[str, str], int]:
    """Insert the items that are not in the inbox yet; return {(channel, key): id} for those inserted."""
    if not items:
        return {}
    now = now or utcnow()
    unique: dict[tuple[str, str], NewMessage] = {}
    for item in items:
        unique.setdefault((item.channel, item.message_key), item)
    stmt = (
        insert_for(session, InboxMessage)
        .values([
            {"channel": m.channel, "message_key": m.message_key, "event_type": m.event_type,
             "payload": m.payload, "received_at": now, "status": PENDING, "attempts": 0}
            for m in unique.values()
        ])
        .on_conflict_do_nothing(index_elements=["channel", "message_key"])
        .returning(InboxMessage.id, InboxMessage.channel, InboxMessage.message_key)  # type: ignore[arg-type]
    )
    result = await session.execute(stmt)
    return {(row.channel, row.message_key): row.id for row in result}


async def claim(session: AsyncSession, message_id: int, lease: timedelta, now: datetime | None = None) -> InboxMessage | None:
    """Take a pending (or abandoned) message for processing; None if another worker has it or it is done."""
    now = now or utcnow()
    result = await session.execute(
        update(InboxMessage)
        .where(
            InboxMessage.id == message_id,
            or_(
                InboxMessage.status == PENDING,
                (InboxMessage.status == PROCESSING) & (InboxMessage.lease_until < now),  # type: ignore[operator]
            ),
        )
        .values(status=PROCESSING, lease_until=now + lease, attempts=InboxMessage.attempts + 1)
    )
    if not result.rowcount:
        return None
    row = await session.execute(select(InboxMessage).where(InboxMessage.id == message_id))
    return row.scalar_one()


async def mark_done(session: AsyncSession, message_id: int, handler_errors: str | None = None) -> None:
    """Finish a message; handler errors (other handlers' work was kept) are noted, not retried."""
    await session.execute(
        update(InboxMessage).where(InboxMessage.id == message_id)
        .values(status=DONE, processed_at=utcnow(), lease_until=None,
                error=handler_errors[:4000] if handler_errors else None)
    )


async def mark_failed(session: AsyncSession, message_id: int, error: str, *, final: bool) -> None:
    """Record a processing error; the message is retried later unless this was the last attempt."""
    await session.execute(
        update(InboxMessage).where(InboxMessage.id == message_id)
        .values(status=FAILED if final else PENDING, lease_until=None, error=error[:4000])
    )


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
