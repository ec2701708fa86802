"""State of the WeCom smart bot long-connection door: who holds the connection, and what waits to be sent.

WeCom keeps one live WebSocket per bot (a new one kicks the old), so among the processes sharing this
database one holds a lease row and connects; the others stand by and take over when the lease expires.
Everything the bot says through the connection is first a row in the outbox: replies to inbound frames
(kept from the moment the frame arrives, so a reply finished after a drop, or by another process, is
still sent), and proactive posts from any process. Only the lease holder sends; conditional updates let
one sender take each row.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Index, Text, UniqueConstraint, case, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from storage.db import Database, UTCDateTime, utcnow
from storage.upsert import insert_for

# What a row is: the reply to a message (aibot_respond_msg with the frame's req_id), the greeting for an
# enter_chat event (aibot_respond_welcome_msg, within 5 s), or a post of the bot's own (aibot_send_msg).
RESPOND, WELCOME, SEND = "respond", "welcome", "send"
# waiting: the handlers have not finished; pending: ready to send; sending: a sender took it;
# sent: WeCom acknowledged it (see `via`); nothing: the handlers had nothing to say; failed: never will be.
WAITING, PENDING, SENDING, SENT, NOTHING, FAILED = "waiting", "pending", "sending", "sent", "nothing", "failed"
UNSENT = (WAITING, PENDING)


class SmartbotWsLease(SQLModel, table=True):
    """The one process allowed to hold the bot's WebSocket, until expires_at (renewed with each heartbeat)."""

    __tablename__ = "smartbot_ws_leases"

    bot_id: str = Field(primary_key=True, max_length=128)
    instance_id: str = Field(max_length=128)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    acquired_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    renewed_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class SmartbotWsOutbox(SQLModel, table=True):
    __tablename__ = "smartbot_ws_outbox"
    __table_args__ = (
        UniqueConstraint("bot_id", "msgid", name="uq_smartbot_ws_outbox_bot_msgid"),
        Index("ix_smartbot_ws_outbox_bot_status", "bot_id", "status", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    bot_id: str = Field(max_length=128)
    kind: str = Field(max_length=16)
    # The inbound frame's msgid (replies only: one reply per message, whatever WeCom redelivers).
    msgid: str | None = Field(default=None, max_length=128)
    # The inbox key of the message's event, to tell "no reply" from "not finished".
    event_key: str | None = Field(default=None, max_length=255)
    # The req_id of the latest copy of the frame, and the connection it came on (a req_id is only
    # answered on its own connection; afterwards the reply goes out with aibot_send_msg).
    req_id: str | None = Field(default=None, max_length=128)
    conn_id: str | None = Field(default=None, max_length=64)
    # Where aibot_send_msg delivers it: the group's chatid, else the user's 1:1 chat (userid).
    chatid: str | None = Field(default=None, max_length=128)
    userid: str | None = Field(default=None, max_length=128)
    content: str | None = Field(default=None, sa_type=Text)
    status: str = Field(default=PENDING, max_length=16)
    # How it left: aibot_respond_msg, aibot_respond_welcome_msg or aibot_send_msg.
    via: str | None = Field(default=None, max_length=32)
    attempts: int = 0
    claimed_by: str | None = Field(default=None, max_length=128)
    error: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    ready_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


# -- the lease -----------------------------------------------------------------------------------------


async def take_lease(db: Database, bot_id: str, instance: str, ttl_seconds: float) -> bool:
    """Take the bot's connection lease, or renew it; True if `instance` holds it afterwards.

    A live lease of another instance is never taken: it expires first.
    """
    now = utcnow()
    until = now + timedelta(seconds=ttl_seconds)
    async with db.session() as session:
        renewed = await session.execute(
            update(SmartbotWsLease)
            .where(SmartbotWsLease.bot_id == bot_id,
                   or_(SmartbotWsLease.instance_id == instance, SmartbotWsLease.expires_at < now))  # type: ignore[arg-type,operator]
            .values(acquired_at=case((SmartbotWsLease.instance_id == instance, SmartbotWsLease.acquired_at),
                                     else_=now),
                    instance_id=instance, expires_at=until, renewed_at=now)
        )
        if renewed.rowcount:
            return True
        inserted = await session.execute(
            insert_for(session, SmartbotWsLease)
            .values(bot_id=bot_id, instance_id=instance, expires_at=until, acquired_at=now, renewed_at=now)
            .on_conflict_do_nothing()
            .returning(SmartbotWsLease.bot_id)
        )
        return inserted.first() is not None


async def lease_of(db: Database, bot_id: str) -> SmartbotWsLease | None:
    async with db.read_session() as session:
        return (await session.execute(
            select(SmartbotWsLease).where(SmartbotWsLease.bot_id == bot_id))).scalar_one_or_none()


async def release_lease(db: Database, bot_id: str, instance: str) -> None:
    """Give the lease up (on shutdown), so a standby takes over at once instead of after expiry."""
    async with db.session() as session:
        await session.execute(delete(SmartbotWsLease).where(SmartbotWsLease.bot_id == bot_id,
                                                            SmartbotWsLease.instance_id == instance))


# -- the outbox ----------------------------------------------------------------------------------------


async def open_reply(session: AsyncSession, *, bot_id: str, kind: str, msgid: str, event_key: str | None,
                     req_id: str, conn_id: str, chatid: str | None, userid: str | None,
                     content: str | None = None) -> bool:
    """The reply row of an inbound frame; True if new. A copy redelivered on a newer connection while the
    reply is not sent yet gives the row its fresh req_id (answerable on that connection)."""
    status = WAITING if content is None else PENDING
    now = utcnow()
    inserted = await session.execute(
        insert_for(session, SmartbotWsOutbox)
        .values(bot_id=bot_id, kind=kind, msgid=msgid, event_key=event_key, req_id=req_id, conn_id=conn_id,
                chatid=chatid, userid=userid, content=content, status=status, attempts=0, created_at=now,
                ready_at=now if content is not None else None)
        .on_conflict_do_nothing()
        .returning(SmartbotWsOutbox.id)
    )
    if inserted.first() is not None:
        return True
    await session.execute(
        update(SmartbotWsOutbox)
        .where(SmartbotWsOutbox.bot_id == bot_id, SmartbotWsOutbox.msgid == msgid,
               SmartbotWsOutbox.status.in_(UNSENT),  # type: ignore[attr-defined]
               or_(SmartbotWsOutbox.conn_id.is_(None), SmartbotWsOutbox.conn_id != conn_id))  # type: ignore[union-attr]
        .values(req_id=req_id, conn_id=conn_id)
    )
    return False


async def reply_ready(session: AsyncSession, bot_id: str, msgid: str, content: str) -> bool:
    """The handlers' reply is known: waiting → pending (or nothing when empty). False if already settled."""
    result = await session.execute(
        update(SmartbotWsOutbox)
        .where(SmartbotWsOutbox.bot_id == bot_id, SmartbotWsOutbox.msgid == msgid,
               SmartbotWsOutbox.status == WAITING)
        .values(status=PENDING if content else NOTHING, content=content, ready_at=utcnow())
    )
    return bool(result.rowcount)


async def enqueue_send(session: AsyncSession, *, bot_id: str, content: str, chatid: str | None = None,
                       userid: str | None = None) -> None:
    """A post of the bot's own (aibot_send_msg), sent by whichever process holds the connection."""
    now = utcnow()
    session.add(SmartbotWsOutbox(bot_id=bot_id, kind=SEND, chatid=chatid, userid=userid, content=content,
                                 status=PENDING, created_at=now, ready_at=now))


async def by_msgid(session: AsyncSession, bot_id: str, msgid: str) -> SmartbotWsOutbox | None:
    return (await session.execute(
        select(SmartbotWsOutbox).where(SmartbotWsOutbox.bot_id == bot_id, SmartbotWsOutbox.msgid == msgid)
    )).scalar_one_or_none()


async def due(session: AsyncSession, bot_id: str, limit: int = 100) -> list[SmartbotWsOutbox]:
    """Rows ready to send, oldest first."""
    return list((await session.execute(
        select(SmartbotWsOutbox)
        .where(SmartbotWsOutbox.bot_id == bot_id, SmartbotWsOutbox.status == PENDING)
        .order_by(SmartbotWsOutbox.id)  # type: ignore[arg-type]
        .limit(limit)
    )).scalars())


async def claim(session: AsyncSession, row_id: int, instance: str) -> bool:
    """pending → sending for one sender; True for the one that took it."""
    result = await session.execute(
        update(SmartbotWsOutbox)
        .where(SmartbotWsOutbox.id == row_id, SmartbotWsOutbox.status == PENDING)  # type: ignore[arg-type]
        .values(status=SENDING, claimed_by=instance, attempts=SmartbotWsOutbox.attempts + 1)
    )
    return bool(result.rowcount)


async def settle(session: AsyncSession, row_id: int, *, from_status: str, to_status: str, via: str | None = None,
                 error: str | None = None, content: str | None = None, drop_req_id: bool = False) -> bool:
    """Move a row on if it is still in `from_status`; True for the one caller that did."""
    values: dict[str, object] = {"status": to_status}
    if via is not None:
        values["via"] = via
    if error is not None:
        values["error"] = error[:4000]
    if content is not None:
        values["content"] = content
        values["ready_at"] = utcnow()
    if drop_req_id:
        values["req_id"] = None
    if to_status in (SENT, FAILED, NOTHING):
        values["sent_at"] = utcnow()
    result = await session.execute(
        update(SmartbotWsOutbox)
        .where(SmartbotWsOutbox.id == row_id, SmartbotWsOutbox.status == from_status)  # type: ignore[arg-type]
        .values(**values)
    )
    return bool(result.rowcount)


async def reclaim_abandoned(session: AsyncSession, bot_id: str, instance: str) -> int:
    """Rows a previous holder took but never settled go back to pending (sent at least once)."""
    result = await session.execute(
        update(SmartbotWsOutbox)
        .where(SmartbotWsOutbox.bot_id == bot_id, SmartbotWsOutbox.status == SENDING,
               or_(SmartbotWsOutbox.claimed_by.is_(None), SmartbotWsOutbox.claimed_by != instance))  # type: ignore[union-attr]
        .values(status=PENDING)
    )
    return int(result.rowcount or 0)


async def unsettled_since(session: AsyncSession, bot_id: str, *, statuses: tuple[str, ...], created_before: datetime,
                          limit: int = 100) -> list[SmartbotWsOutbox]:
    """Rows still in one of `statuses` (waiting, pending) although created before `created_before`."""
    return list((await session.execute(
        select(SmartbotWsOutbox)
        .where(SmartbotWsOutbox.bot_id == bot_id, SmartbotWsOutbox.status.in_(statuses),  # type: ignore[attr-defined]
               SmartbotWsOutbox.created_at < created_before)  # type: ignore[operator]
        .order_by(SmartbotWsOutbox.id)  # type: ignore[arg-type]
        .limit(limit)
    )).scalars())

