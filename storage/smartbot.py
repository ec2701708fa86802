"""Reply state of the WeCom smart bot door: what the bot answers to each message, and how it got there.

A smart bot reply can leave by three ways (the callback's own response, a later stream refresh callback,
or the message's response_url), and the callback that asks for it may reach any process behind the load
balancer. So the state of every reply is a row: a refresh answered by another process, a retry of the
message, and the response_url fallback all read it here, and conditional updates decide who hands a
reply to WeCom, so it leaves once.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Text, UniqueConstraint, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from storage.db import UTCDateTime, utcnow
from storage.inbox import InboxMessage
from storage.upsert import insert_for

# pending: the handlers have not finished; ready: the content is known and not handed over yet;
# posting: a process is sending it to response_url; delivered: handed to WeCom (see `via`);
# failed: it never will be (processing failed for good, response_url refused or expired).
PENDING, READY, POSTING, DELIVERED, FAILED = "pending", "ready", "posting", "delivered", "failed"
# How a delivered reply left: in the message callback's response, in a stream refresh response, through
# response_url, or not at all because the handlers had nothing to say.
INLINE, STREAM, RESPONSE_URL, NOTHING = "inline", "stream", "response_url", "nothing"


class SmartbotReply(SQLModel, table=True):
    __tablename__ = "smartbot_replies"
    __table_args__ = (
        UniqueConstraint("msgid", name="uq_smartbot_replies_msgid"),
        UniqueConstraint("stream_id", name="uq_smartbot_replies_stream_id"),
        Index("ix_smartbot_replies_status_ready", "status", "ready_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    # WeCom's msgid of the message (or event) this answers.
    msgid: str = Field(max_length=128)
    # The stream id the bot gives WeCom when the reply is not ready in time (derived from msgid).
    stream_id: str = Field(max_length=64)
    # The inbox key of the message's event, to tell "no reply" from "not finished".
    event_key: str = Field(max_length=255)
    # Usable once within an hour of the message; None for events, which carry none.
    response_url: str | None = Field(default=None, sa_type=Text)
    status: str = Field(default=PENDING, max_length=16)
    via: str | None = Field(default=None, max_length=16)
    # The reply as sent (markdown); "" when the handlers had nothing to say.
    content: str | None = Field(default=None, sa_type=Text)
    attempts: int = 0
    error: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    ready_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


async def create(session: AsyncSession, *, msgid: str, stream_id: str, event_key: str,
                 response_url: str | None) -> None:
    """The message's reply row, unless a copy of the message (a retry) created it already."""
    await session.execute(
        insert_for(session, SmartbotReply)
        .values(msgid=msgid, stream_id=stream_id, event_key=event_key, response_url=response_url,
                status=PENDING, attempts=0, created_at=utcnow())
        # No conflict target: a concurrent copy collides on msgid or on stream_id, whichever is checked first.
        .on_conflict_do_nothing()
    )


async def by_msgid(session: AsyncSession, msgid: str) -> SmartbotReply | None:
    return (await session.execute(select(SmartbotReply).where(SmartbotReply.msgid == msgid))).scalar_one_or_none()


async def by_stream_id(session: AsyncSession, stream_id: str) -> SmartbotReply | None:
    return (await session.execute(
        select(SmartbotReply).where(SmartbotReply.stream_id == stream_id))).scalar_one_or_none()


async def save_content(session: AsyncSession, msgid: str, content: str) -> bool:
    """The handlers' reply is known: pending → ready. False if it was settled already (a re-processed event)."""
    result = await session.execute(
        update(SmartbotReply)
        .where(SmartbotReply.msgid == msgid, SmartbotReply.status == PENDING)
        .values(status=READY, content=content, ready_at=utcnow())
    )
    return bool(result.rowcount)


async def settle(session: AsyncSession, reply_id: int, *, from_status: str, to_status: str, via: str | None = None,
                 content: str | None = None, error: str | None = None) -> bool:
    """Move a reply on if it is still in `from_status`; True for the one caller that did."""
    values: dict[str, object] = {"status": to_status}
    if via is not None:
        values["via"] = via
    if content is not None:
        values["content"] = content
    if error is not None:
        values["error"] = error[:4000]
    if to_status in (DELIVERED, FAILED):
        values["delivered_at"] = utcnow()
    if to_status == POSTING:
        values["attempts"] = SmartbotReply.attempts + 1
    result = await session.execute(
        update(SmartbotReply)
        .where(SmartbotReply.id == reply_id, SmartbotReply.status == from_status)  # type: ignore[arg-type]
        .values(**values)
    )
    return bool(result.rowcount)


async def ready_unclaimed(session: AsyncSession, *, ready_before: datetime, limit: int = 100) -> list[SmartbotReply]:
    """Replies ready since before `ready_before` that no refresh has fetched: response_url's turn."""
    return list((await session.execute(
        select(SmartbotReply)
        .where(SmartbotReply.status == READY, SmartbotReply.ready_at < ready_before)  # type: ignore[operator]
        .order_by(SmartbotReply.id)
        .limit(limit)
    )).scalars())


async def pending_since(session: AsyncSession, *, created_before: datetime, limit: int = 100) -> list[SmartbotReply]:
    """Replies still pending although their message is older than `created_before`."""
    return list((await session.execute(
        select(SmartbotReply)
        .where(SmartbotReply.status == PENDING, SmartbotReply.created_at < created_before)  # type: ignore[operator]
        .order_by(SmartbotReply.id)
        .limit(limit)
    )).scalars())


async def event_status(session: AsyncSession, channel: str, event_key: str) -> str | None:
    """The inbox status of the reply's event (None if it was never accepted)."""
    return (await session.execute(
        select(InboxMessage.status).where(InboxMessage.channel == channel, InboxMessage.message_key == event_key)
    )).scalar_one_or_none()
