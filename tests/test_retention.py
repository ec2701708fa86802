"""Finished bookkeeping is forgotten after inbox.keep_days; what is unfinished or recent stays (both databases)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from storage.db import utcnow
from storage.faq import FaqCountedEvent
from storage.inbox import InboxMessage
from storage.official_account import OfficialAccountReply
from storage.robot import RobotReply
from storage.smartbot import SmartbotReply
from tests.conftest import make_config


async def seed(db) -> None:  # noqa: ANN001 - storage.db.Database
    old, new = utcnow() - timedelta(days=20), utcnow() - timedelta(days=2)
    async with db.session() as session:
        for key, status, at in [("old-done", "done", old), ("new-done", "done", new), ("old-failed", "failed", old),
                                ("old-pending", "pending", old), ("old-processing", "processing", old)]:
            session.add(InboxMessage(channel="wecom", message_key=key, event_type="text", payload="{}",
                                     received_at=at, status=status))
        session.add_all([FaqCountedEvent(event_id=1, counted_at=old), FaqCountedEvent(event_id=2, counted_at=new)])
        session.add_all([
            SmartbotReply(msgid="s-old-delivered", event_key="k1", status="delivered", stream_id="a", created_at=old),
            SmartbotReply(msgid="s-old-pending", event_key="k2", status="pending", stream_id="b", created_at=old),
            SmartbotReply(msgid="s-new-delivered", event_key="k3", status="delivered", stream_id="c", created_at=new),
            RobotReply(msgid="r-old-failed", event_key="k4", status="failed", chat_id="c1", created_at=old),
            RobotReply(msgid="r-old-ready", event_key="k5", status="ready", chat_id="c1", created_at=old),
            OfficialAccountReply(event_key="o-old", content="旧", created_at=old),
            OfficialAccountReply(event_key="o-new", content="新", created_at=new),
        ])


async def left(db, column) -> set[str]:  # noqa: ANN001
    async with db.session() as session:
        return {str(v) for v in (await session.execute(select(column))).scalars()}


async def test_prune_forgets_only_finished_rows_older_than_keep_days(db_url: str, bot_factory) -> None:
    bot = await bot_factory(make_config(db_url, inbox={"keep_days": 14}))
    db = bot.runtime.db
    await seed(db)

    deleted = await bot.runtime.inbox.prune()

    assert deleted == {"inbox": 1, "faq_counted_events": 1, "smartbot_replies": 1, "robot_replies": 1,
                       "official_account_replies": 1}
    assert await left(db, InboxMessage.message_key) == {"new-done", "old-failed", "old-pending", "old-processing"}
    assert await left(db, FaqCountedEvent.event_id) == {"2"}
    assert await left(db, SmartbotReply.msgid) == {"s-old-pending", "s-new-delivered"}
    assert await left(db, RobotReply.msgid) == {"r-old-ready"}
    assert await left(db, OfficialAccountReply.event_key) == {"o-new"}


async def test_one_process_prunes_per_turn_and_zero_keeps_everything(db_url: str, bot_factory) -> None:
    first = await bot_factory(make_config(db_url, inbox={"keep_days": 14}))
    second = await bot_factory(make_config(db_url, inbox={"keep_days": 14}))
    await seed(first.runtime.db)

    assert (await first.runtime.inbox.prune())["inbox"] == 1
    assert await second.runtime.inbox.prune() is None  # the hour's turn is taken

    forever = await bot_factory(make_config(db_url, inbox={"keep_days": 0}))
    assert await forever.runtime.inbox.prune() is None
    assert "old-failed" in await left(first.runtime.db, InboxMessage.message_key)


async def test_an_event_processed_today_is_kept(db_url: str, bot_factory) -> None:
    bot = await bot_factory(make_config(db_url, inbox={"keep_days": 1}))
    message = {"group": "g1", "user": "u1", "name": "小明", "text": "你好"}
    status, _ = await bot.post_json("/api/simulator/messages", message)
    assert status == 200
    await bot.runtime.inbox.drain()
    await bot.runtime.inbox.prune()
    async with bot.runtime.db.session() as session:
        rows = (await session.execute(select(InboxMessage.status))).scalars().all()
    assert rows == ["done"]  # kept: a duplicate delivery of it must still find its key
