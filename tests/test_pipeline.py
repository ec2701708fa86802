"""The event pipeline through a running bot: handler isolation, command parsing, activity, recovery, duplicates.

Every test runs on SQLite and on PostgreSQL (the `db_url` fixture). Events either come through the simulator's
HTTP door or are handed to the inbox directly (`accept` + `process`), which is what every door does.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from bot.events import Command, Person, TextMessage, event_from_json
from storage import inbox as inbox_store
from storage.activity import MemberActivity
from storage.db import Database, utcnow
from storage.groups import Group, Member
from storage.inbox import InboxMessage
from storage.transcript import TranscriptMessage
from tests.conftest import make_config

HELP_HEADER = "我可以帮你做这些事："


def text_event(text: str, *, user: str = "u1", name: str = "小明", group: str = "g1",
               at: datetime | None = None, key: str | None = None) -> TextMessage:
    """A member's message as the simulator door would build it."""
    return TextMessage("simulator", key or uuid.uuid4().hex, group, at or utcnow(), sender=Person(user, name),
                       text=text, mentioned=True)


async def accept_and_process(bot, event: TextMessage):  # noqa: ANN201 - list[Reply] | None
    """What a door does: store the event durably, then process it."""
    assert await bot.runtime.inbox.accept(event) is not None
    return await bot.runtime.inbox.process(event)


async def inbox_row(bot, message_id: int) -> InboxMessage:
    async with bot.runtime.db.session() as session:
        row = await session.get(InboxMessage, message_id)
    assert row is not None
    return row


async def bot_messages(bot, group: str = "g1") -> list[str]:
    """What the bot actually posted into the simulated group (delivered, not just returned)."""
    async with bot.runtime.db.session() as session:
        rows = await session.execute(
            select(TranscriptMessage.text)
            .where(TranscriptMessage.group_external_id == group, TranscriptMessage.from_bot.is_(True))  # type: ignore[attr-defined]
            .order_by(TranscriptMessage.id)  # type: ignore[arg-type]
        )
    return list(rows.scalars())


async def activity_rows(bot) -> list[tuple[str, str, date, int, int, datetime, datetime]]:
    async with bot.runtime.db.session() as session:
        rows = await session.execute(
            select(Group.external_id, Member.external_id, MemberActivity.day, MemberActivity.messages,
                   MemberActivity.commands, MemberActivity.first_at, MemberActivity.last_at)
            .join(Group, Group.id == MemberActivity.group_id)  # type: ignore[arg-type]
            .join(Member, Member.id == MemberActivity.member_id)  # type: ignore[arg-type]
            .order_by(Group.external_id, Member.external_id, MemberActivity.day)
        )
    return [tuple(r) for r in rows.all()]  # type: ignore[misc]


def fail_delivery(bot, monkeypatch, exc: Exception) -> list[int]:
    """Make the simulator door's delivery raise; returns the list of attempted event ids."""
    attempts: list[int] = []

    async def deliver(event, replies):
        attempts.append(event.id)
        raise exc

    monkeypatch.setattr(bot.runtime.channels["simulator"], "deliver", deliver)
    return attempts


# -- a failing handler ----------------------------------------------------------------------------


async def test_failing_handler_is_logged_with_the_event_id_and_other_replies_are_delivered(bot, caplog):
    async def explode(event, ctx):
        raise RuntimeError("kaboom")

    async def echo(event, ctx):
        return f"收到：{event.text}"

    bot.runtime.registry.feature("test").on(TextMessage)(explode)
    bot.runtime.registry.feature("test").on(TextMessage)(echo)
    caplog.set_level(logging.ERROR, logger="qunbot.dispatch")

    status, body = await bot.post_json("/api/simulator/messages", {"group": "g1", "user": "u1", "text": "你好"})
    assert status == 200
    assert [r["text"] for r in body["replies"]] == ["收到：你好"]
    assert await bot_messages(bot) == ["收到：你好"]

    [failure] = [r for r in caplog.records if r.name == "qunbot.dispatch"]
    async with bot.runtime.db.session() as session:
        [row] = (await session.execute(select(InboxMessage))).scalars().all()
    assert failure.levelno == logging.ERROR
    assert failure.event_id == row.id  # type: ignore[attr-defined]
    assert failure.handler == "test.explode"  # type: ignore[attr-defined]
    assert failure.exc_info is not None and failure.exc_info[0] is RuntimeError
    # The event is finished (not retried: the other handlers' work stands), with the failure noted.
    assert row.status == "done" and row.attempts == 1
    assert row.error is not None and "test.explode" in row.error and "kaboom" in row.error

    # The bot keeps answering, commands included (the broken handler fails again, logged again).
    caplog.clear()
    _, body = await bot.post_json("/api/simulator/messages", {"group": "g1", "user": "u2", "text": "帮助"})
    texts = [r["text"] for r in body["replies"]]
    assert texts[0] == "收到：帮助" and texts[1].startswith(HELP_HEADER) and len(texts) == 2
    assert len([r for r in caplog.records if r.name == "qunbot.dispatch"]) == 1
    assert (await bot_messages(bot))[-2:] == texts


# -- command parsing ------------------------------------------------------------------------------


async def test_command_words_reach_the_command_and_ordinary_chat_gets_no_reply(bot):
    seen: list[tuple[str, str]] = []

    async def spy(event, ctx):
        seen.append((event.name, event.args))

    bot.runtime.registry.feature("test").on(Command)(spy)

    spellings = {
        "帮助": "",
        "/help": "",
        "@群助手 帮助": "",
        "@群助手\u2005帮助": "",  # WeChat puts a four-per-em space after an @-mention
        "／ｈｅｌｐ": "",  # full-width, as typed on a Chinese keyboard
        "  帮助  ": "",
        "\u3000帮助": "",  # ideographic space
        "/HELP": "",
        "帮助  签到   怎么用": "签到 怎么用",
    }
    help_texts = set()
    for text, args in spellings.items():
        seen.clear()
        _, body = await bot.post_json("/api/simulator/messages", {"group": "g1", "user": "u1", "text": text})
        assert len(body["replies"]) == 1, text
        if not args:
            help_texts.add(body["replies"][0]["text"])
        assert seen == [("帮助", args)], text
    [help_text] = help_texts
    assert help_text.startswith(HELP_HEADER)

    for text in ("帮助我一下", "/helpme", "请问帮助在哪", "今天天气不错", "@群助手", "@群助手 你好"):
        seen.clear()
        _, body = await bot.post_json("/api/simulator/messages", {"group": "g1", "user": "u1", "text": text})
        assert body["replies"] == [], text
        assert seen == [], text


# -- activity -------------------------------------------------------------------------------------


async def test_activity_counts_messages_and_commands_per_member_group_and_local_day(bot):
    # 16:30 UTC is 00:30 the next day in Asia/Shanghai, the default timezone.
    at = datetime(2026, 1, 1, 16, 30, tzinfo=UTC)
    for minutes, text in enumerate(["早上好", "今天吃什么", "帮助"]):
        await accept_and_process(bot, text_event(text, at=at + timedelta(minutes=minutes)))
    assert await activity_rows(bot) == [
        ("g1", "u1", date(2026, 1, 2), 2, 1, at, at + timedelta(minutes=2)),
    ]

    # Still 2026-01-01 locally; another member; another group: each its own row.
    before_midnight = datetime(2026, 1, 1, 15, 59, 59, tzinfo=UTC)
    await accept_and_process(bot, text_event("晚安", at=before_midnight))
    await accept_and_process(bot, text_event("大家好", user="u2", name="小红", at=at))
    await accept_and_process(bot, text_event("/help", group="g2", at=at))
    assert await activity_rows(bot) == [
        ("g1", "u1", date(2026, 1, 1), 1, 0, before_midnight, before_midnight),
        ("g1", "u1", date(2026, 1, 2), 2, 1, at, at + timedelta(minutes=2)),
        ("g1", "u2", date(2026, 1, 2), 1, 0, at, at),
        ("g2", "u1", date(2026, 1, 2), 0, 1, at, at),
    ]


async def test_activity_uses_the_groups_own_timezone(bot):
    await accept_and_process(bot, text_event("hello", group="london"))  # creates the group
    async with bot.runtime.db.session() as session:
        await session.execute(update(Group).where(Group.external_id == "london").values(timezone="Europe/London"))
    at = datetime(2026, 1, 1, 16, 30, tzinfo=UTC)
    await accept_and_process(bot, text_event("下午好", group="london", at=at))
    await accept_and_process(bot, text_event("早上好", group="g1", at=at))
    days = {(g, d) for g, _, d, *_ in await activity_rows(bot)}
    assert ("london", date(2026, 1, 1)) in days  # London: 16:30 on 1 January
    assert ("g1", date(2026, 1, 2)) in days  # default Asia/Shanghai: 00:30 on 2 January


async def test_activity_first_and_last_times_hold_when_events_are_processed_out_of_order(bot):
    at = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)
    await accept_and_process(bot, text_event("后发的消息", at=at + timedelta(minutes=10)))
    await accept_and_process(bot, text_event("先发的消息（恢复后才处理）", at=at))
    [(_, _, _, messages, _, first_at, last_at)] = await activity_rows(bot)
    assert messages == 2
    assert (first_at, last_at) == (at, at + timedelta(minutes=10))


async def test_a_retried_event_counts_its_message_once(bot, monkeypatch):
    fail_delivery(bot, monkeypatch, ConnectionError("发送超时"))
    event = text_event("帮助")
    assert await accept_and_process(bot, event) is None
    monkeypatch.undo()
    [claimed] = await inbox_store.claim(bot.runtime.db, [event.id], bot.runtime.inbox.lease)
    retry = event_from_json(claimed.event_type, claimed.payload, event_id=claimed.id)
    assert await bot.runtime.inbox.process(retry, claimed.attempts)
    assert (await inbox_row(bot, event.id)).status == "done"
    [(_, _, _, messages, commands, _, _)] = await activity_rows(bot)
    assert (messages, commands) == (0, 1)


async def test_an_event_finished_twice_counts_once_and_a_batch_sums_per_member(bot):
    # A slow worker whose lease expired finishes after the process that took the event over: two done
    # marks for one event must still count it once.
    first = text_event("今天天气不错")
    await accept_and_process(bot, first)
    assert await bot.runtime.inbox.process(first) == []
    # Many messages from one member finished in one journal batch make one row with the sum.
    events = [text_event(f"第{n}条") for n in range(20)]
    for event in events:
        assert await bot.runtime.inbox.accept(event)
    await asyncio.gather(*(bot.runtime.inbox.process(e) for e in events))
    [(_, _, _, messages, commands, _, _)] = await activity_rows(bot)
    assert (messages, commands) == (21, 0)


# -- failures and recovery ------------------------------------------------------------------------


async def test_failed_attempts_are_counted_and_the_last_one_is_final(db_url, bot_factory, monkeypatch):
    bot = await bot_factory(make_config(db_url, inbox={"max_attempts": 3}))
    inbox = bot.runtime.inbox
    event = text_event("帮助")
    message_id = await inbox.accept(event)
    assert message_id is not None

    # Attempt 1 fails in a stage (recording the member), before any handler runs.
    async def broken_record(session, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("storage.groups.ensure_member", broken_record)
    assert await inbox.process(event) is None
    monkeypatch.undo()
    row = await inbox_row(bot, message_id)
    assert (row.status, row.attempts, row.error, row.lease_until) == ("pending", 1, "OSError: disk full", None)
    assert await bot_messages(bot) == []

    # Attempts 2 and 3 fail in delivery; each is claimed the way the recovery scan claims it.
    delivered = fail_delivery(bot, monkeypatch, ConnectionError("群聊接口超时"))
    for attempt, status in ((2, "pending"), (3, "failed")):
        async with bot.runtime.db.session() as session:
            assert message_id in await inbox_store.due_for_recovery(session, older_than=utcnow() + timedelta(1))
        [claimed] = await inbox_store.claim(bot.runtime.db, [message_id], inbox.lease)
        assert claimed.attempts == attempt
        retry = event_from_json(claimed.event_type, claimed.payload, event_id=claimed.id)
        assert await inbox.process(retry, claimed.attempts) is None
        row = await inbox_row(bot, message_id)
        assert (row.status, row.attempts, row.error) == (status, attempt, "ConnectionError: 群聊接口超时")
    assert delivered == [message_id, message_id]

    # A failed event is given up on: no scan takes it again.
    async with bot.runtime.db.session() as session:
        assert await inbox_store.due_for_recovery(session, older_than=utcnow() + timedelta(1)) == []
    assert await inbox_store.claim(bot.runtime.db, [message_id], inbox.lease) == []


async def test_events_left_by_a_crashed_process_are_recovered_exactly_once(db_url, bot_factory, monkeypatch):
    config = make_config(db_url)
    crashed = await bot_factory(config)
    # One event accepted and never processed (the process died right after acknowledging the platform) ...
    lost = text_event("帮助", key="lost")
    lost_id = await crashed.runtime.inbox.accept(lost)
    # ... and one whose first attempt failed in delivery.
    fail_delivery(crashed, monkeypatch, ConnectionError("网络中断"))
    failed = text_event("/help", key="failed")
    failed_id = await crashed.runtime.inbox.accept(failed)
    assert await crashed.runtime.inbox.process(failed) is None
    assert lost_id is not None and failed_id is not None
    await crashed.server.close()

    # The dead process's lease runs out; the failed attempt is older than the scan's grace period.
    past = utcnow() - timedelta(minutes=1)
    db = Database(db_url)
    try:
        async with db.session() as session:
            await session.execute(update(InboxMessage).where(InboxMessage.id == lost_id).values(lease_until=past))
            await session.execute(update(InboxMessage).where(InboxMessage.id == failed_id).values(received_at=past))
            lost_row, failed_row = await session.get(InboxMessage, lost_id), await session.get(InboxMessage, failed_id)
    finally:
        await db.close()
    assert lost_row is not None and failed_row is not None
    assert (lost_row.status, failed_row.status, failed_row.attempts) == ("processing", "pending", 1)

    # Two live processes scan for abandoned events at the same moment; each event is processed by one. (They
    # scan every second rather than every 5 s, only so that the test doesn't wait for the first scan.)
    rescan = make_config(db_url, inbox={"recovery_interval_seconds": 1})
    survivors = await asyncio.gather(bot_factory(rescan), bot_factory(rescan))
    deadline = time.monotonic() + 9
    while time.monotonic() < deadline:
        rows = [await inbox_row(survivors[0], i) for i in (lost_id, failed_id)]
        if all(r.status == "done" for r in rows):
            break
        await asyncio.sleep(0.2)
    await asyncio.gather(*(s.runtime.inbox.drain() for s in survivors))
    rows = [await inbox_row(survivors[0], i) for i in (lost_id, failed_id)]
    assert [(r.status, r.attempts) for r in rows] == [("done", 2), ("done", 2)]
    messages = await bot_messages(survivors[0])
    assert len(messages) == 2 and all(m.startswith(HELP_HEADER) for m in messages)


# -- duplicates -----------------------------------------------------------------------------------


async def test_fifty_concurrent_accepts_of_one_message_store_it_once(bot):
    inbox = bot.runtime.inbox
    ids = await asyncio.gather(*(inbox.accept(text_event("帮助", key="same")) for _ in range(50)))
    new = [i for i in ids if i is not None]
    assert len(new) == 1 and ids.count(None) == 49
    # Later copies (a platform retry), in their own batch, are duplicates too.
    assert await inbox.accept(text_event("帮助", key="same")) is None
    # The key is unique per door, not across doors.
    assert await inbox.accept(TextMessage("other", "same", "g1", utcnow())) not in (None, new[0])
    async with bot.runtime.db.session() as session:
        count = (await session.execute(
            select(func.count()).select_from(InboxMessage).where(InboxMessage.message_key == "same"))).scalar_one()
    assert count == 2


async def test_concurrent_accepts_in_two_processes_store_a_message_once(db_url, bot_factory):
    config = make_config(db_url)
    first, second = await asyncio.gather(bot_factory(config), bot_factory(config))
    keys = [f"k{n}" for n in range(10)]
    calls = [b.runtime.inbox.accept(text_event("hi", key=k)) for k in keys for b in (first, second) for _ in range(5)]
    ids = await asyncio.gather(*calls)
    new = [i for i in ids if i is not None]
    assert len(new) == len(set(new)) == len(keys)
    async with first.runtime.db.session() as session:
        stored = (await session.execute(select(func.count()).select_from(InboxMessage))).scalar_one()
    assert stored == len(keys)


# -- probes: per-message checks read with the speaker ------------------------------------------------


async def test_probes_are_read_with_a_known_speaker_and_absent_when_the_speaker_is_written(bot):
    registry = bot.runtime.registry
    registry.probe("test.members", "SELECT count(*) FROM memberships WHERE group_id = g.id AND left_at IS NULL")
    seen: list[dict] = []

    @registry.on(TextMessage)
    async def capture(event, ctx):
        seen.append(dict(ctx.probes))

    await accept_and_process(bot, text_event("你好", user="u1"))  # u1 is new: written, not probed
    await accept_and_process(bot, text_event("在吗", user="u1"))  # known now: one read with the probes
    await accept_and_process(bot, text_event("大家好", user="u2", name="小红"))
    await accept_and_process(bot, text_event("再说一句", user="u2", name="小红"))
    assert "test.members" not in seen[0] and "test.members" not in seen[2]
    assert seen[1]["test.members"] == 1 and seen[3]["test.members"] == 2
    assert seen[1]["faq.group_revision"] is None and seen[1]["lottery.open"] == 0
    with pytest.raises(ValueError, match="twice"):
        registry.probe("test.members", "SELECT 1")
