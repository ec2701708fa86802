"""The FAQ's daily counts (the console dashboard's "answered against unanswered" chart) and its unanswered log
count each event exactly once: when the inbox processes an event again — a failed delivery retried, a worker
whose lease ran out finishing after the process that took the event over, a process that died after the FAQ
counted but before the event was marked done — nothing is counted twice.

Every test runs on SQLite and on PostgreSQL (the `db_url` fixture), through real sockets.
"""

from __future__ import annotations

import asyncio
import time
from datetime import date, timedelta

from sqlalchemy import select, update

from bot.events import event_from_json
from storage import console as console_store
from storage import inbox as inbox_store
from storage.dashboard import local_today
from storage.db import Database, utcnow
from storage.faq import FaqDailyCount, FaqUnanswered
from storage.inbox import InboxMessage
from tests.conftest import make_config
from tests.console_helpers import ConsoleClient, make_user
from tests.test_pipeline import accept_and_process, bot_messages, fail_delivery, inbox_row, text_event

RETURNS = "在「我的-订单」里点「申请售后」，按页面地址寄回即可。"
ENTRIES = (f"问答 添加 怎么申请退货？ | {RETURNS} | 退货流程|想退货",
           "问答 添加 积分怎么获得？ | 消费1元得1积分。 | 怎么赚积分",
           "问答 添加 积分会过期吗？ | 积分12个月后清零。 | 积分有效期")


async def add_entries(bot, *entries: str) -> None:
    for text in entries:
        status, data = await bot.post_json("/api/simulator/messages",
                                           {"group": "g1", "user": "boss", "name": "老板", "role": "owner", "text": text})
        assert status == 200 and data["replies"][0]["text"].startswith("已添加问答"), data


async def daily_counts(bot) -> list[tuple[date, int, int, int]]:
    async with bot.runtime.db.read_session() as session:
        rows = await session.execute(select(FaqDailyCount.day, FaqDailyCount.answered, FaqDailyCount.suggested,
                                            FaqDailyCount.unanswered))
    return [tuple(r) for r in rows.all()]  # type: ignore[misc]


async def unanswered_log(bot) -> list[tuple[str, int]]:
    async with bot.runtime.db.read_session() as session:
        rows = await session.execute(select(FaqUnanswered.sample, FaqUnanswered.count).order_by(FaqUnanswered.id))
    return [tuple(r) for r in rows.all()]  # type: ignore[misc]


async def retry(bot, event_id: int) -> list:
    """Process an event again the way the recovery scan does: claim it, rebuild it from its row."""
    [claimed] = await inbox_store.claim(bot.runtime.db, [event_id], bot.runtime.inbox.lease)
    again = event_from_json(claimed.event_type, claimed.payload, event_id=claimed.id)
    replies = await bot.runtime.inbox.process(again, claimed.attempts)
    assert replies is not None
    return replies


async def dashboard_today(bot) -> tuple[int, int, int]:
    """(answered, suggested, unanswered) today, as the console's dashboard API shows them to an ops admin."""
    await make_user(bot.runtime.db, "ops", console_store.OPS_ADMIN)
    client = ConsoleClient(bot.url("/"))
    try:
        assert (await client.login("ops"))[0] == 200
        status, board = await client.get("/console/api/dashboard?days=7")
    finally:
        await client.close()
    assert status == 200
    s = board["series"]
    assert board["days"][-1] == local_today(bot.runtime.config.timezone, utcnow()).isoformat()
    return s["faq_answered"][-1], s["faq_suggested"][-1], s["faq_unanswered"][-1]


async def test_retried_events_count_their_answer_suggestion_and_question_once(bot, monkeypatch):
    await add_entries(bot, *ENTRIES)
    today = local_today(bot.runtime.config.timezone, utcnow())

    # An answer and a suggestion (to a vague question) whose delivery fails: the inbox retries both.
    fail_delivery(bot, monkeypatch, ConnectionError("发送超时"))
    answered, vague = text_event("请问怎么退货呀", user="u2"), text_event("积分？", user="u3")
    assert await accept_and_process(bot, answered) is None
    assert await accept_and_process(bot, vague) is None
    monkeypatch.undo()
    assert [r.text for r in await retry(bot, answered.id)] == [RETURNS]
    [suggestion] = await retry(bot, vague.id)
    assert suggestion.text.startswith("你是不是想问：")
    assert (await inbox_row(bot, answered.id)).status == (await inbox_row(bot, vague.id)).status == "done"
    assert len(await bot_messages(bot)) == 2 + len(ENTRIES)  # the entries' confirmations, then the retried two

    # A question nobody answers, finished twice (a slow worker whose lease ran out finishes after the process
    # that took it over), with another wording of it in between: two questions, not three.
    first, other = text_event("你们支持分期吗？", user="u4"), text_event("支持分期吗", user="u5")
    assert await accept_and_process(bot, first) == []
    assert await accept_and_process(bot, other) == []
    assert await bot.runtime.inbox.process(first) == []

    assert await daily_counts(bot) == [(today, 1, 1, 3)]  # 积分？ is a question too
    # ops see both questions (under their latest wording), each asked as often as members asked it
    assert await unanswered_log(bot) == [("积分？", 1), ("支持分期吗", 2)]
    assert await dashboard_today(bot) == (1, 1, 3)


async def test_an_answer_counted_by_a_process_that_died_before_the_done_mark_counts_once(db_url, bot_factory):
    config = make_config(db_url, inbox={"recovery_interval_seconds": 0.3})
    crashed = await bot_factory(config)
    await add_entries(crashed, ENTRIES[0])
    # The process answers (the FAQ counts the answer), then dies while delivering: no done mark, no failure.
    delivering = asyncio.Event()

    async def hang(event, replies):
        delivering.set()
        await asyncio.Event().wait()

    crashed.runtime.channels["simulator"].deliver = hang  # type: ignore[method-assign]
    event = text_event("想退货怎么办", user="u2", key="dies-mid-delivery")
    assert await crashed.runtime.inbox.accept(event) is not None
    work = asyncio.get_running_loop().create_task(crashed.runtime.inbox.process(event))
    await asyncio.wait_for(delivering.wait(), 10)
    work.cancel()
    await asyncio.gather(work, return_exceptions=True)
    await crashed.server.close()
    today = local_today(config.timezone, utcnow())
    assert await daily_counts(crashed) == [(today, 1, 0, 0)]
    assert event.id is not None and (await inbox_row(crashed, event.id)).status == "processing"

    # Its lease runs out; another process recovers the event, answers again, and counts nothing again.
    db = Database(db_url)
    try:
        async with db.session() as session:
            await session.execute(update(InboxMessage).where(InboxMessage.id == event.id)
                                  .values(lease_until=utcnow() - timedelta(minutes=1)))
    finally:
        await db.close()
    survivor = await bot_factory(config)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if (await inbox_row(survivor, event.id)).status == "done":
            break
        await asyncio.sleep(0.1)
    await survivor.runtime.inbox.drain()
    row = await inbox_row(survivor, event.id)
    assert (row.status, row.attempts) == ("done", 2)
    assert (await bot_messages(survivor))[-1] == RETURNS
    assert await daily_counts(survivor) == [(today, 1, 0, 0)]
    assert await dashboard_today(survivor) == (1, 0, 0)
