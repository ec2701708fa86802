"""The simulator's group transcript: what members said and what the bot posted, in order."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Text, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from storage.db import UTCDateTime, utcnow


class TranscriptMessage(SQLModel, table=True):
    __tablename__ = "transcript_messages"
    __table_args__ = (Index("ix_transcript_group_id", "group_external_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(max_length=32)
    group_external_id: str = Field(max_length=128)
    # text | join | leave
    kind: str = Field(default="text", max_length=16)
    from_bot: bool = False
    user: str | None = Field(default=None, max_length=128)
    name: str = Field(default="", max_length=255)
    text: str = Field(default="", sa_type=Text)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


async def append(session: AsyncSession, message: TranscriptMessage) -> TranscriptMessage:
    session.add(message)
    await session.flush()
    return message


async def read_after(
    session: AsyncSession, channel: str, group: str, after: int, limit: int = 500
) -> list[TranscriptMessage]:
    """The group's transcript after message id `after`, oldest first."""
    result = await session.execute(
        select(TranscriptMessage)
        .where(TranscriptMessage.channel == channel, TranscriptMessage.group_external_id == group,
               TranscriptMessage.id > after)  # type: ignore[operator]
        .order_by(TranscriptMessage.id)  # type: ignore[arg-type]
        .limit(limit)
    )
    return list(result.scalars())
