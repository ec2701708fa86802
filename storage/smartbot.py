"""Reply state of the WeCom smart bot door: what the bot answers to each message, and how it got there.

A smart bot reply can leave by three ways (the callback's own response, a later stream refresh callback,
or the message's response_url), and the callback that asks for it may reach any process behind the load
balancer. So the state of every reply is a row (storage.replies: the states and queries the callback doors
share): a refresh answered by another process, a retry of the message, and the response_url fallback all
read it here, and conditional updates decide who hands a reply to WeCom, so it leaves once.
"""

from __future__ import annotations

from sqlalchemy import Index, Text, UniqueConstraint, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field

from storage.replies import Replies, ReplyColumns

# The smart bot's reply state between those of storage.replies (pending, ready, delivered, failed): a
# process is sending the reply to response_url (failed: response_url refused or expired, or processing
# failed for good).
POSTING = "posting"
# How a delivered reply left: in the message callback's response, in a stream refresh response, through
# response_url (or not at all, storage.replies.NOTHING: the handlers had nothing to say).
INLINE, STREAM, RESPONSE_URL = "inline", "stream", "response_url"


class SmartbotReply(ReplyColumns, table=True):
    __tablename__ = "smartbot_replies"
    __table_args__ = (
        UniqueConstraint("msgid", name="uq_smartbot_replies_msgid"),
        UniqueConstraint("stream_id", name="uq_smartbot_replies_stream_id"),
        Index("ix_smartbot_replies_status_ready", "status", "ready_at"),
    )

    # The stream id the bot gives WeCom when the reply is not ready in time (derived from msgid).
    stream_id: str = Field(max_length=64)
    # Usable once within an hour of the message; None for events, which carry none.
    response_url: str | None = Field(default=None, sa_type=Text)
    # response_url posts begun (each move to POSTING).
    attempts: int = 0


replies = Replies(SmartbotReply, attempt_status=POSTING)


async def create(session: AsyncSession, *, msgid: str, stream_id: str, event_key: str,
                 response_url: str | None) -> None:
    """The message's reply row, unless a copy of the message (a retry) created it already."""
    await replies.create(session, msgid=msgid, event_key=event_key, stream_id=stream_id, response_url=response_url,
                         attempts=0)


async def by_stream_id(session: AsyncSession, stream_id: str) -> SmartbotReply | None:
    return (await session.execute(
        select(SmartbotReply).where(SmartbotReply.stream_id == stream_id))).scalar_one_or_none()
