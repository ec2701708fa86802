"""Passive replies of the WeChat Official Account (公众号) door, kept for WeChat's retries.

An Official Account reply can only leave as the answer to WeChat's own request. When that request times
out (or reaches another process while the first one works), WeChat retries, and the retry must get the
same answer without running the handlers again. So the reply text of every message the handlers answered
is a row keyed like the message's inbox row; whether the message is still being worked on is the inbox
row's status.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Text, UniqueConstraint, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from storage.db import UTCDateTime, utcnow
from storage.inbox import InboxMessage
from storage.upsert import insert_for


class OfficialAccountReply(SQLModel, table=True):
    __tablename__ = "official_account_replies"
    __table_args__ = (UniqueConstraint("event_key", name="uq_official_account_replies_event_key"),)

    id: int | None = Field(default=None, primary_key=True)
    # The inbox key of the message (or follow event) this answers: "msg:<MsgId>" or "evt:<OpenID>:…".
    event_key: str = Field(max_length=255)
    # The passive reply's text as sent.
    content: str = Field(sa_type=Text)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


async def save_reply(session: AsyncSession, event_key: str, content: str) -> bool:
    """Keep the reply to a message; the first one wins (a re-processed event does not change what was said).

    True if this call stored it.
    """
    result = await session.execute(
        insert_for(session, OfficialAccountReply)
        .values(event_key=event_key, content=content, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["event_key"])
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def reply_state(session: AsyncSession, channel: str, event_key: str) -> tuple[str | None, str | None]:
    """(inbox status of the message, its stored reply): None for a message never accepted or not answered."""
    row = (await session.execute(
        select(InboxMessage.status, OfficialAccountReply.content)  # type: ignore[call-overload]
        .select_from(InboxMessage)
        .outerjoin(OfficialAccountReply, OfficialAccountReply.event_key == InboxMessage.message_key)  # type: ignore[arg-type]
        .where(InboxMessage.channel == channel, InboxMessage.message_key == event_key)
    )).first()
    if row is None:
        return None, None
    return row[0], row[1]
