"""State of the WeCom group robot (群机器人) door: which robot serves which chat, the per-robot send slots
that keep every process together under WeCom's rate limit, and the reply to each callback message.

- `robot_chats`: a chat's webhook key as learned from callbacks (each carries WebhookUrl and ChatId).
  The key is a credential: it is stored because sending needs it, and never logged.
- `robot_send_slots`: `limit` rows per robot (keyed by a hash of its key, never the key). A send takes
  the slot whose last use is oldest, in one conditional UPDATE (a driver-level statement: the send path
  runs it for every message), and only if that use is a whole window ago; so any window holds at most
  `limit` sends of one robot, whichever process made them. Robots never wait for each other: there is no
  global lock.
- `robot_replies`: the reply to a callback message (storage.replies: the states and queries the callback
  doors share), settled by conditional updates so that it leaves exactly once, in the callback's response
  or later through the webhook.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Index, Text, UniqueConstraint, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import Field, SQLModel

from storage import fastsql
from storage.db import Database, UTCDateTime, utcnow
from storage.kv import HideStatementsOn
from storage.replies import Replies, ReplyColumns
from storage.upsert import insert_for

# Statements on robot_chats carry webhook keys: their parameters never reach the logs, not even at DEBUG.
logging.getLogger("aiosqlite").addFilter(HideStatementsOn("robot_chats"))

# The beginning of time for a slot never used.
NEVER = datetime(2000, 1, 1, tzinfo=UTC)

# The robot's reply states between those of storage.replies (pending, ready, delivered, failed). late: the
# callback's budget ran out, so the webhook takes the reply when it is ready; sending: a process is posting
# it through the webhook.
LATE, SENDING = "late", "sending"
# How a delivered reply left: in the callback's encrypted response, or through the webhook (or not at all:
# storage.replies.NOTHING).
PASSIVE, WEBHOOK = "passive", "webhook"


class RobotChat(SQLModel, table=True):
    """A chat (group or 1:1) a robot's callback came from, and that robot's webhook key."""

    __tablename__ = "robot_chats"
    __table_args__ = (UniqueConstraint("chat_id", name="uq_robot_chats_chat_id"),)

    id: int | None = Field(default=None, primary_key=True)
    chat_id: str = Field(max_length=128)
    # "group" or "single" as the callback said.
    chat_type: str = Field(max_length=16)
    # A secret: whoever has it can post into the robot's chats.
    webhook_key: str = Field(sa_type=Text)
    # sha256 of the key (hex, 32 chars): the robot's identity in logs and in the send slots.
    key_hash: str = Field(max_length=64)
    first_seen_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class RobotSendSlot(SQLModel, table=True):
    """One of a robot's `limit` sends per window: busy until `used_at` + the window."""

    __tablename__ = "robot_send_slots"

    key_hash: str = Field(primary_key=True, max_length=64)
    slot: int = Field(primary_key=True)
    # When the slot's last send finished (or, while one is in flight, when it will have finished at the latest).
    used_at: datetime = Field(sa_type=UTCDateTime)
    # Bumped by every reservation: the compare-and-set that lets one process take the slot.
    version: int = 0


class RobotReply(ReplyColumns, table=True):
    __tablename__ = "robot_replies"
    __table_args__ = (
        UniqueConstraint("msgid", name="uq_robot_replies_msgid"),
        Index("ix_robot_replies_status_ready", "status", "ready_at"),
    )

    # Where a webhook reply goes (the callback's ChatId). The content is markdown, mentions as <@userid>.
    chat_id: str = Field(max_length=128)


replies = Replies(RobotReply)


# -- chats -------------------------------------------------------------------------------------------


async def learn_chat(session: AsyncSession, *, chat_id: str, chat_type: str, webhook_key: str, key_hash: str) -> None:
    """Remember (or update) which robot key serves `chat_id`."""
    now = utcnow()
    stmt = insert_for(session, RobotChat).values(chat_id=chat_id, chat_type=chat_type, webhook_key=webhook_key,
                                                 key_hash=key_hash, first_seen_at=now, updated_at=now)
    stmt = stmt.on_conflict_do_update(index_elements=["chat_id"], set_={
        "chat_type": chat_type, "webhook_key": webhook_key, "key_hash": key_hash, "updated_at": now})
    await session.execute(stmt)


async def chat(session: AsyncSession, chat_id: str) -> RobotChat | None:
    return (await session.execute(select(RobotChat).where(RobotChat.chat_id == chat_id))).scalar_one_or_none()


async def chat_webhook_key(db: Database, chat_id: str) -> str | None:
    """The webhook key of the robot serving `chat_id`, if one called back from it. Every post through the door
    reads it, so it is one driver-level statement (storage.fastsql), not an ORM query."""
    rows = await fastsql.fetch(db, "SELECT webhook_key FROM robot_chats WHERE chat_id = ?", [chat_id])
    return str(rows[0][0]) if rows else None


# -- send slots --------------------------------------------------------------------------------------


async def ensure_slots(db: Database, key_hash: str, limit: int) -> None:
    """Create the robot's slots 0..limit-1 that do not exist yet."""
    rows = ", ".join(["(?, ?, ?, 0)"] * limit)
    params: list[Any] = [value for n in range(limit) for value in (key_hash, n, NEVER)]
    await fastsql.fetch(db, f"INSERT INTO robot_send_slots (key_hash, slot, used_at, version) VALUES {rows} "  # noqa: S608 - placeholders only
                            "ON CONFLICT (key_hash, slot) DO NOTHING", params)


async def take_free_slot(db: Database, key_hash: str, limit: int, *, free_before: datetime,
                         busy_until: datetime) -> tuple[int, int] | None:
    """Take the robot's least recently used slot if its last use ended before `free_before` (a window ago),
    marking it busy until `busy_until`: one conditional UPDATE, so of two senders only one gets a slot
    (on PostgreSQL the loser re-checks the row after the winner's commit and finds it busy).
    (slot, version) of the reservation, or None if no slot is free (or the robot has none yet)."""
    rows = await fastsql.fetch(db, """
        UPDATE robot_send_slots SET used_at = ?, version = version + 1
        WHERE key_hash = ? AND used_at <= ? AND slot = (
            SELECT slot FROM robot_send_slots WHERE key_hash = ? AND slot < ? ORDER BY used_at, slot LIMIT 1)
        RETURNING slot, version""", [busy_until, key_hash, free_before, key_hash, limit])
    return (int(rows[0][0]), int(rows[0][1])) if rows else None


async def slot_state(db: Database, key_hash: str, limit: int) -> tuple[int, datetime | None]:
    """(how many of its `limit` slots the robot has, the oldest last use among them)."""
    [(count, oldest)] = await fastsql.fetch(
        db, "SELECT count(*), min(used_at) FROM robot_send_slots WHERE key_hash = ? AND slot < ?", [key_hash, limit])
    if isinstance(oldest, str):  # SQLite keeps the text SQLAlchemy wrote
        oldest = datetime.fromisoformat(oldest)
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    return int(count), oldest


async def finish_slot(db: Database, key_hash: str, slot: int, version: int, finished_at: datetime) -> None:
    """The send on the slot is over: its window counts from `finished_at` (never later than the reservation said)."""
    await fastsql.fetch(db, "UPDATE robot_send_slots SET used_at = ? "
                            "WHERE key_hash = ? AND slot = ? AND version = ? AND used_at > ?",
                        [finished_at, key_hash, slot, version, finished_at])
