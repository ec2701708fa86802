"""The reply to an inbound message, for doors that answer in the response to the platform's own callback.

WeCom's smart bot (HTTP callback, `smartbot_replies`) and group robot (callback mode, `robot_replies`) hand
a message's reply back in the callback's response when it is ready within the door's budget, and another
way when it is not (a stream refresh or response_url; the robot's webhook). The callback, WeCom's retries
of it and the later ways may reach different processes, so each message's reply is a row, and every move
of it is a conditional UPDATE from the state it was seen in: whoever moves it hands it over, once, and a
retry of the message reads what was handed over and answers the same.

    pending ──handlers replied──► ready ──handed over──► delivered (`via` says how)
       │                            └──► the door's own ways (a process posting it) ──► delivered | failed
       └──► delivered via nothing (nothing to say) | failed (processing failed for good)

Each door keeps its own table (with `ReplyColumns` and its own extra columns) and its own states between
these; `Replies` holds the queries they share. (The Official Account door keeps only the reply text: its
state is the inbox row's.)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Text, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from storage.db import UTCDateTime, utcnow
from storage.inbox import InboxMessage
from storage.upsert import insert_for

# pending: the handlers have not finished; ready: the content is known and nobody has handed it over yet;
# delivered: handed to the platform (see `via`); failed: it never will be.
PENDING, READY, DELIVERED, FAILED = "pending", "ready", "delivered", "failed"
# How a reply left when the handlers had nothing to say: not at all.
NOTHING = "nothing"


class ReplyColumns(SQLModel):
    """The columns every door's reply table has (a table declares its own name, keys and extra columns)."""

    id: int | None = Field(default=None, primary_key=True)
    # The platform's id of the message (or event) this answers.
    msgid: str = Field(max_length=128)
    # The inbox key of the message's event.
    event_key: str = Field(max_length=255)
    status: str = Field(default=PENDING, max_length=16)
    # How a delivered reply left (the door's own names, or NOTHING).
    via: str | None = Field(default=None, max_length=16)
    # The reply as sent (markdown); "" when the handlers had nothing to say.
    content: str | None = Field(default=None, sa_type=Text)
    error: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    ready_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


Row = TypeVar("Row", bound=ReplyColumns)


class Replies(Generic[Row]):
    """The queries on one door's reply table, each reply found by its msgid (unique in every table)."""

    def __init__(self, model: type[Row], *, attempt_status: str | None = None) -> None:
        self.model: Any = model
        # Moving a reply into this status counts an attempt (tables with an `attempts` column).
        self.attempt_status = attempt_status

    async def create(self, session: AsyncSession, *, msgid: str, event_key: str, **columns: object) -> None:
        """The message's reply row, unless a copy of the message (a retry) created it already."""
        await session.execute(
            insert_for(session, self.model)
            .values(msgid=msgid, event_key=event_key, status=PENDING, created_at=utcnow(), **columns)
            # No conflict target: a concurrent copy collides on whichever unique key is checked first.
            .on_conflict_do_nothing()
        )

    async def get(self, session: AsyncSession, msgid: str) -> Row | None:
        return (await session.execute(select(self.model).where(self.model.msgid == msgid))).scalar_one_or_none()

    async def settle(self, session: AsyncSession, msgid: str, *, from_status: str, to_status: str,
                     via: str | None = None, content: str | None = None, error: str | None = None) -> bool:
        """Move a reply on if it is still in `from_status`; True for the one caller that did."""
        values: dict[str, object] = {"status": to_status}
        if via is not None:
            values["via"] = via
        if content is not None:
            values["content"] = content
        if error is not None:
            values["error"] = error[:4000]
        if from_status == PENDING and to_status == READY:
            values["ready_at"] = utcnow()  # when it first was: a reply put back after a failed attempt keeps it
        if to_status in (DELIVERED, FAILED):
            values["delivered_at"] = utcnow()
        if to_status == self.attempt_status:
            values["attempts"] = self.model.attempts + 1
        result = await session.execute(
            update(self.model).where(self.model.msgid == msgid, self.model.status == from_status).values(**values)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def settle_nothing(self, session: AsyncSession, msgid: str, *from_statuses: str) -> bool:
        """The handlers had nothing to say: delivered via NOTHING, from the first of `from_statuses` (default
        pending) the reply is still in. False if it was settled already."""
        for status in from_statuses or (PENDING,):
            if await self.settle(session, msgid, from_status=status, to_status=DELIVERED, via=NOTHING, content=""):
                return True
        return False

    async def ready_unclaimed(self, session: AsyncSession, *, ready_before: datetime, limit: int = 100) -> list[Row]:
        """Replies ready since before `ready_before` that nobody handed over: the door's other way's turn."""
        return await self._waiting(session, READY, self.model.ready_at, ready_before, limit)

    async def pending_since(self, session: AsyncSession, *, created_before: datetime, limit: int = 100) -> list[Row]:
        """Replies still pending although their message is older than `created_before`."""
        return await self._waiting(session, PENDING, self.model.created_at, created_before, limit)

    async def _waiting(self, session: AsyncSession, status: str, since: Any, before: datetime, limit: int) -> list[Row]:
        return list((await session.execute(
            select(self.model).where(self.model.status == status, since < before).order_by(self.model.id).limit(limit)
        )).scalars())


async def event_status(session: AsyncSession, channel: str, event_key: str) -> str | None:
    """The inbox status of a reply's event (None if it was never accepted): tells "nothing to say" from "not
    finished" for a reply still pending."""
    return (await session.execute(
        select(InboxMessage.status).where(InboxMessage.channel == channel, InboxMessage.message_key == event_key)
    )).scalar_one_or_none()
