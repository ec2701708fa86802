"""The outbox of the signed JSON gateway door: every message the bot says through a gateway.

Replies handed over in an event's own HTTP response are rows too (status `inline`), so a gateway that lost
that response and sends the event again gets the same replies back. Replies that come later and the bot's
own posts are `pending` rows, sent to the gateway's outbound URL by whichever process claims them first:

    pending ──claim──► sending ──2xx──► delivered
       ▲                  │
       └── retry, backoff ┤ (connection error, timeout, 408/425/429, 5xx)
                          └──► failed (other answers, or the last attempt; also recorded in api_failures)

A claim is a conditional UPDATE (on PostgreSQL of rows picked FOR UPDATE SKIP LOCKED; SQLite has one
writer), so two processes never send the same row at once; a claim carries a lease, so a row whose sender
died is sent again after it (the gateway deduplicates by `message_id`). `attempts` is the claim's fencing
token: a sender whose lease ran out cannot settle a row another process has claimed since. Rows for one
chat leave in order: a row is not claimed while an older one for the same chat is pending or sending.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Index, Text, UniqueConstraint, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel, col

from storage.db import Database, UTCDateTime, utcnow
from storage.upsert import insert_for

INLINE, PENDING, SENDING, DELIVERED, FAILED = "inline", "pending", "sending", "delivered", "failed"
# Whom a row goes to: a group chat, or one user (a 1:1 chat).
GROUP, USER = "group", "user"


class GatewayOutbox(SQLModel, table=True):
    __tablename__ = "gateway_outbox"
    __table_args__ = (
        UniqueConstraint("message_id", name="uq_gateway_outbox_message_id"),
        # An event processed again (after a crash) does not add its replies twice.
        UniqueConstraint("event_key", "position", name="uq_gateway_outbox_event_position"),
        Index("ix_gateway_outbox_status_due", "status", "next_attempt_at"),
        Index("ix_gateway_outbox_chat", "gateway", "target_kind", "target", "status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    # Sent as the message's "id": the gateway's key to drop a message it has already posted.
    message_id: str = Field(max_length=64)
    # The gateway's name (a key of gateway.secrets).
    gateway: str = Field(max_length=32)
    target_kind: str = Field(max_length=8)
    # The group or user id as the gateway knows it (without the "<gateway>:" prefix the bot stores).
    target: str = Field(max_length=255)
    # The inbox key of the event this answers, and the reply's place among its replies; None for posts.
    event_key: str | None = Field(default=None, max_length=255)
    position: int = 0
    # The gateway's own id of that event, sent back as "in_reply_to".
    in_reply_to: str | None = Field(default=None, max_length=128)
    # {"text", "mentions", "markdown"} as JSON, mentions already in the gateway's user ids.
    payload: str = Field(sa_type=Text)
    status: str = Field(default=PENDING, max_length=16)
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_error: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # When it was delivered (or handed over inline), or given up.
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


async def add(session: AsyncSession, rows: list[dict[str, object]]) -> int:
    """Insert outbox rows (column → value); an event's reply that exists already is skipped. How many were new."""
    if not rows:
        return 0
    now = utcnow()
    values = [{"position": 0, "event_key": None, "in_reply_to": None, "attempts": 0, "next_attempt_at": now,
               "lease_until": None, "last_error": None, "created_at": now, "finished_at": None, **row}
              for row in rows]
    result = await session.execute(insert_for(session, GatewayOutbox).values(values).on_conflict_do_nothing())
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def inline_replies(session: AsyncSession, event_key: str) -> list[GatewayOutbox]:
    """The replies handed over in the response to the event (for a gateway that sends it again)."""
    return list((await session.execute(
        select(GatewayOutbox)
        .where(col(GatewayOutbox.event_key) == event_key, col(GatewayOutbox.status) == INLINE)
        .order_by(col(GatewayOutbox.position))
    )).scalars())


async def claim_due(db: Database, *, now: datetime, lease: timedelta, limit: int = 50) -> list[GatewayOutbox]:
    """Claim rows due to be sent (pending and due, or sending with an expired lease): at most one per chat,
    the oldest, and none while an older row for that chat is still on its way."""
    table = GatewayOutbox.__table__  # type: ignore[attr-defined]
    row, older = table.c, table.alias("older").c
    waiting = (row.status == PENDING) & (row.next_attempt_at <= now)
    abandoned = (row.status == SENDING) & (row.lease_until < now)
    blocked = exists().where(older.gateway == row.gateway, older.target_kind == row.target_kind,
                             older.target == row.target, older.id < row.id, older.status.in_([PENDING, SENDING]))
    async with db.session() as session:
        pick = select(row.id).where(or_(waiting, abandoned), ~blocked).order_by(row.id).limit(limit)
        if session.get_bind().dialect.name == "postgresql":
            pick = pick.with_for_update(skip_locked=True, of=table)
        ids = list((await session.execute(pick)).scalars())
        if not ids:
            return []
        await session.execute(
            update(GatewayOutbox)
            .where(col(GatewayOutbox.id).in_(ids))
            .values(status=SENDING, attempts=col(GatewayOutbox.attempts) + 1, lease_until=now + lease)
        )
        claimed = await session.execute(select(GatewayOutbox).where(col(GatewayOutbox.id).in_(ids))
                                        .order_by(col(GatewayOutbox.id)).execution_options(populate_existing=True))
        return list(claimed.scalars())


async def settle(db: Database, row: GatewayOutbox, *, status: str, error: str | None = None,
                 retry_at: datetime | None = None) -> bool:
    """Record the outcome of the claim `row` holds: delivered, failed, or pending again at `retry_at`.
    False when the claim was lost meanwhile (the lease ran out and another process took the row)."""
    values: dict[str, object] = {"status": status, "lease_until": None}
    if error is not None:
        values["last_error"] = error[:4000]
    if status == PENDING:
        assert retry_at is not None
        values["next_attempt_at"] = retry_at
    else:
        values["finished_at"] = utcnow()
    async with db.session() as session:
        result = await session.execute(
            update(GatewayOutbox)
            .where(col(GatewayOutbox.id) == row.id, col(GatewayOutbox.status) == SENDING,
                   col(GatewayOutbox.attempts) == row.attempts)
            .values(**values)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

