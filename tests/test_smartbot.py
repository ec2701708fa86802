"""The WeCom smart bot (智能机器人) door end to end: encrypted JSON callbacks in, passive replies and
response_url posts out, through real sockets, on SQLite and PostgreSQL.

Each test checks what a member would see (the reply in the chat, once) or what an operator would notice
(a clear 4xx and a log line for bad input, nothing stored).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import select

from bot.channels.smartbot import stream_id_for
from bot.dispatcher import DIRECT_SCOPE
from bot.events import TextMessage
from storage.checkin import Checkin
from storage.groups import Group, Member
from storage.inbox import InboxMessage
from storage.kv import ApiFailure
from storage.smartbot import SmartbotReply
from tests.conftest import make_config
from tests.door_helpers import SLOW_ANSWER, count, eventually, rows, seen_texts, slow_handler
from tests.fakes.wecom_server import FakeWeCom
from tests.smartbot_helpers import (
    BOT_ID,
    PATH,
    crypto,
    encrypt,
    enter_chat,
    message,
    post,
    refresh,
    smartbot_env,
)
from tests.wecom_helpers import CORP_ID

HELP_HEADER = "我可以帮你做这些事："
THINKING = "⏳ 正在处理，请稍候…"


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeWeCom]:
    # Requested before bot_factory so the bots stop before the fake does.
    async with FakeWeCom() as server:
        yield server


def config(db_url: str, fake: FakeWeCom | None = None, **smartbot: Any) -> Any:
    values = {"response_url_prefix": fake.base_url if fake else "https://qyapi.weixin.qq.com/", **smartbot}
    return make_config(db_url, smartbot=smartbot_env(**values))


async def smartbot(bot_factory: Any, db_url: str, fake: FakeWeCom | None = None, **smartbot: Any) -> Any:
    return await bot_factory(config(db_url, fake, **smartbot))


async def reply_row(bot: Any, msgid: str) -> SmartbotReply:
    [(row,)] = await rows(bot, select(SmartbotReply).where(SmartbotReply.msgid == msgid))
    return row


def channel(bot: Any) -> Any:
    return bot.runtime.channels["smartbot"]


def finished(reply: dict[str, Any] | None) -> str:
    """The content of a finished stream reply (fails on anything else)."""
    assert reply is not None and reply["msgtype"] == "stream", reply
    assert reply["stream"]["finish"] is True, reply
    return reply["stream"]["content"]


# ---- URL verification --------------------------------------------------------------------------------------


async def test_url_verification_answers_the_plain_echostr(db_url, bot_factory):
    bot = await smartbot(bot_factory, db_url)
    nonce, ts = "1597212914", str(int(time.time()))
    encrypted, signature, _ = crypto().encrypt("6302457198341536071", nonce, ts)
    params = {"msg_signature": signature, "timestamp": ts, "nonce": nonce, "echostr": encrypted}
    async with bot.http.get(bot.url(PATH), params=params) as resp:
        assert resp.status == 200
        assert await resp.read() == b"6302457198341536071"
    # The self-built app's official vector carries the CorpID as receiveid: not a smart bot's.
    official = {"msg_signature": "012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb", "timestamp": "1476416373",
                "nonce": "47744683",
                "echostr": "fsi1xnbH4yQh0+PJxcOdhhK6TDXkjMyhEPA7xB2TGz6b+g7xyAbEkRxN/3cNXW9qdqjnoVzEtpbhnFyq6SVHyA=="}
    old_bot = await smartbot(bot_factory, db_url, replay_window_seconds=0)
    async with old_bot.http.get(old_bot.url(PATH), params=official) as resp:
        assert resp.status == 403
    params["msg_signature"] = "0" * 40
    async with bot.http.get(bot.url(PATH), params=params) as resp:
        assert resp.status == 403


# ---- messages answered inline ------------------------------------------------------------------------------


@pytest.mark.parametrize(("bot_name", "text"), [("", "@机器人 帮助"), ("群助手", "帮助 @群助手"),
                                                ("群助手", "@群助手\u2005帮助")])
async def test_group_mention_is_answered_inline_with_the_help(db_url, bot_factory, bot_name, text):
    bot = await smartbot(bot_factory, db_url, bot_name=bot_name)
    status, reply = await post(bot, message("m-help-1", text, chatid="wrGroup1"))
    assert status == 200
    content = finished(reply)
    assert content.startswith(HELP_HEADER) and "签到" in content
    assert reply["stream"]["id"] == stream_id_for("m-help-1")
    # The group is recorded under its chatid, the sender under their userid.
    assert await rows(bot, select(Group.channel, Group.external_id)) == [("smartbot", "wrGroup1")]
    assert await rows(bot, select(Member.external_id)) == [("zhangsan",)]
    row = await reply_row(bot, "m-help-1")
    assert (row.status, row.via, row.content) == ("delivered", "inline", content)


async def test_single_chat_is_answered_and_kept_in_the_direct_scope(db_url, bot_factory):
    bot = await smartbot(bot_factory, db_url)
    status, reply = await post(bot, message("m-single-1", "帮助", chatid=None, user="lisi"))
    assert status == 200 and finished(reply).startswith(HELP_HEADER)
    assert await rows(bot, select(Group.external_id)) == [(DIRECT_SCOPE,)]


async def test_mixed_and_voice_messages_are_read_as_text(db_url, bot_factory):
    bot = await smartbot(bot_factory, db_url)
    seen = seen_texts(bot)
    mixed = message("m-mixed-1", chatid="wrGroup1", msgtype="mixed", mixed={"msg_item": [
        {"msgtype": "text", "text": {"content": "@机器人 今天"}},
        {"msgtype": "image", "image": {"url": "https://example.invalid/a.png"}},
        {"msgtype": "text", "text": {"content": "天气怎样"}},
    ]})
    assert (await post(bot, mixed))[0] == 200
    status, reply = await post(bot, message("m-voice-1", "帮助", chatid=None, msgtype="voice"))
    assert status == 200 and finished(reply).startswith(HELP_HEADER)
    assert seen == ["今天\n天气怎样"]  # 帮助 is a command, not plain text


async def test_a_quoted_message_is_context_only_and_triggers_nothing(db_url, bot_factory):
    bot = await smartbot(bot_factory, db_url)
    seen = seen_texts(bot)
    quoting = message("m-quote-1", "@机器人 你好", chatid="wrGroup1",
                      quote={"msgtype": "text", "text": {"content": "签到"}})
    assert await post(bot, quoting) == (200, None)  # nothing to say: an empty answer
    assert seen == ["你好"]
    assert await count(bot, Checkin) == 0
    # The quote does not stop the message's own command either.
    status, reply = await post(bot, message("m-quote-2", "@机器人 帮助", chatid="wrGroup1",
                                             quote={"msgtype": "text", "text": {"content": "签到"}}))
    assert finished(reply).startswith(HELP_HEADER)
    assert await count(bot, Checkin) == 0


async def test_images_and_bare_mentions_get_a_hint_without_being_stored(db_url, bot_factory):
    bot = await smartbot(bot_factory, db_url)
    status, reply = await post(bot, message("m-img-1", chatid=None, msgtype="image",
                                             image={"url": "https://example.invalid/a.png"}))
    assert status == 200 and "文字" in finished(reply)
    status, reply = await post(bot, message("m-bare-1", "@机器人", chatid="wrGroup1"))
    assert status == 200 and "帮助" in finished(reply)
    assert await count(bot, InboxMessage) == 0


async def test_enter_chat_is_answered_with_the_greeting(db_url, bot_factory):
    bot = await smartbot(bot_factory, db_url)
    status, reply = await post(bot, enter_chat("e-enter-1", user="wangwu"))
    assert status == 200
    assert reply == {"msgtype": "text", "text": {"content": bot.runtime.templates.raw("welcome.enter_chat")}}
    # WeCom's retry of the event gets the same greeting; it was processed once.
    assert (await post(bot, enter_chat("e-enter-1", user="wangwu")))[1] == reply
    assert await count(bot, InboxMessage) == 1


async def test_enter_chat_gets_no_greeting_when_welcomes_are_off(db_url, bot_factory):
    bot = await bot_factory(make_config(db_url, smartbot=smartbot_env(), welcome={"enabled": False}))
    assert await post(bot, enter_chat("e-enter-2")) == (200, None)


async def test_checkin_through_a_group_mention(db_url, bot_factory):
    bot = await smartbot(bot_factory, db_url)
    status, reply = await post(bot, message("m-checkin-1", "@机器人 签到", chatid="wrGroup9", user="zhaoliu"))
    assert status == 200
    content = finished(reply)
    assert "签到成功" in content
    assert await count(bot, Checkin) == 1
    # A second message the same day is told so; WeCom's retry of the first gets the first answer again.
    assert "已经签到" in finished((await post(bot, message("m-checkin-2", "@机器人 签到", chatid="wrGroup9",
                                                              user="zhaoliu")))[1])
    assert finished((await post(bot, message("m-checkin-1", "@机器人 签到", chatid="wrGroup9",
                                             user="zhaoliu")))[1]) == content
    assert await count(bot, Checkin) == 1


async def test_faq_and_lottery_entry_through_group_mentions(db_url, bot_factory):
    bot = await bot_factory(make_config(db_url, smartbot=smartbot_env(), admins={"bot_admins": "smartbot:boss"}))

    async def say(n: int, text: str, user: str = "zhangsan") -> str:
        status, reply = await post(bot, message(f"m-feature-{n}", f"@机器人 {text}", chatid="wrGroup5", user=user))
        assert status == 200
        return finished(reply)

    answer = "在「我的-订单」里点「申请售后」，按页面地址寄回即可。"
    assert "怎么申请退货" in await say(1, f"问答 添加 怎么申请退货？ | {answer} | 退货流程|想退货", user="boss")
    assert answer in await say(2, "请问怎么申请退货")
    assert "企微福利" in await say(3, "抽奖 创建 企微福利 | 一等奖x2 | 明天 20:00", user="boss")
    assert "已参加「企微福利」抽奖" in await say(4, "参加抽奖")


# ---- slow replies: stream, refresh, response_url ----------------------------------------------------------


async def test_a_slow_reply_streams_and_refreshes_get_it_when_ready(db_url, fake, bot_factory):
    bot = await smartbot(bot_factory, db_url, fake, reply_budget_seconds=0.2, stream_grace_seconds=600)
    release = slow_handler(bot)
    url = fake.new_response_url()
    status, reply = await post(bot, message("m-slow-1", "@机器人 慢", response_url=url))
    assert status == 200
    stream_id = stream_id_for("m-slow-1")
    assert reply == {"msgtype": "stream", "stream": {"id": stream_id, "finish": False, "content": THINKING}}
    # A refresh while the handler still works: still thinking.
    assert (await post(bot, refresh(stream_id)))[1] == reply
    release.set()
    await channel(bot).drain()
    status, reply = await post(bot, refresh(stream_id))
    assert status == 200 and finished(reply) == SLOW_ANSWER
    # Another refresh (or WeCom's retry of the message) gets the same content; response_url stays unused.
    assert finished((await post(bot, refresh(stream_id)))[1]) == SLOW_ANSWER
    assert finished((await post(bot, message("m-slow-1", "@机器人 慢", response_url=url)))[1]) == SLOW_ANSWER
    await channel(bot).sweep()
    assert fake.responses == []
    row = await reply_row(bot, "m-slow-1")
    assert (row.status, row.via) == ("delivered", "stream")


async def test_a_slow_reply_nobody_refreshes_is_posted_once_to_response_url(db_url, fake, bot_factory):
    bot = await smartbot(bot_factory, db_url, fake, reply_budget_seconds=0.2, stream_grace_seconds=0.05,
                         sweep_interval_seconds=0.05)
    release = slow_handler(bot)
    url = fake.new_response_url()
    status, reply = await post(bot, message("m-slow-2", "@机器人 慢", response_url=url))
    assert reply["stream"]["finish"] is False
    release.set()
    await eventually(lambda: len(fake.responses) == 1, what="the response_url post")
    assert fake.responses == [{"msgtype": "markdown", "markdown": {"content": SLOW_ANSWER},
                               "response_code": url.rsplit("=", 1)[1]}]
    await channel(bot).sweep()
    await channel(bot).sweep()
    assert len(fake.responses) == 1 and len(fake.requests) == 1
    row = await reply_row(bot, "m-slow-2")
    assert (row.status, row.via, row.attempts) == ("delivered", "response_url", 1)
    # A late refresh only closes the stream; a late retry of the message gets nothing more.
    assert finished((await post(bot, refresh(stream_id_for("m-slow-2"))))[1]) == ""
    assert await post(bot, message("m-slow-2", "@机器人 慢", response_url=url)) == (200, None)


async def test_a_refused_response_url_is_recorded_not_retried(db_url, fake, bot_factory):
    bot = await smartbot(bot_factory, db_url, fake, reply_budget_seconds=0.2, stream_grace_seconds=0.05,
                         sweep_interval_seconds=60)
    release = slow_handler(bot)
    url = fake.new_response_url(age=3700)  # WeCom refuses it: more than an hour old
    await post(bot, message("m-slow-3", "@机器人 慢", response_url=url))
    release.set()
    await channel(bot).drain()
    await eventually(lambda: _ready_long_enough(bot, "m-slow-3"), what="the grace to pass")
    await channel(bot).sweep()
    await channel(bot).sweep()
    assert fake.responses == [] and fake.calls_to("/cgi-bin/aibot/response") == 1
    row = await reply_row(bot, "m-slow-3")
    assert row.status == "failed" and "expired" in (row.error or "")
    assert await rows(bot, select(ApiFailure.api)) == [("aibot/response",)]
    # The stream, if WeCom still asks, says it failed rather than thinking forever.
    assert "出错" in finished((await post(bot, refresh(stream_id_for("m-slow-3"))))[1])


async def _ready_long_enough(bot: Any, msgid: str) -> bool:
    row = await reply_row(bot, msgid)
    return row.ready_at is not None and (time.time() - row.ready_at.timestamp()) > 0.05


async def test_a_slow_reply_with_nothing_to_say_closes_the_stream(db_url, bot_factory):
    bot = await smartbot(bot_factory, db_url, reply_budget_seconds=0.2)
    release = asyncio.Event()

    async def slow_and_silent(event: TextMessage, ctx: Any) -> None:
        await release.wait()

    bot.runtime.registry.on(TextMessage)(slow_and_silent)
    status, reply = await post(bot, message("m-silent-1", "@机器人 嗯嗯"))
    assert reply["stream"]["finish"] is False
    release.set()
    await channel(bot).drain()
    assert finished((await post(bot, refresh(stream_id_for("m-silent-1"))))[1]) == \
        bot.runtime.templates.raw("smartbot.no_reply")


async def test_a_refresh_reaching_another_process_is_answered_from_the_database(db_url, bot_factory):
    one = await smartbot(bot_factory, db_url, reply_budget_seconds=0.2)
    two = await smartbot(bot_factory, db_url, reply_budget_seconds=0.2)
    release = slow_handler(one, two)
    status, reply = await post(one, message("m-two-1", "@机器人 慢"))
    stream_id = reply["stream"]["id"]
    assert (await post(two, refresh(stream_id)))[1]["stream"] == {"id": stream_id, "finish": False,
                                                                  "content": THINKING}
    release.set()
    await channel(one).drain()
    assert finished((await post(two, refresh(stream_id)))[1]) == SLOW_ANSWER


async def test_an_unknown_stream_is_closed(db_url, bot_factory):
    bot = await smartbot(bot_factory, db_url)
    status, reply = await post(bot, refresh("qbnosuchstream"))
    assert status == 200 and finished(reply) == ""


# ---- WeCom's retries -----------------------------------------------------------------------------------------


async def test_retries_in_a_row_get_the_same_answer_and_are_processed_once(db_url, bot_factory):
    bot = await smartbot(bot_factory, db_url)
    seen = seen_texts(bot)
    answers = [await post(bot, message("m-retry-1", "@机器人 早上好")) for _ in range(4)]
    assert answers == [(200, None)] * 4
    answers = [await post(bot, message("m-retry-2", "@机器人 帮助")) for _ in range(4)]
    assert len({finished(reply) for _, reply in answers}) == 1
    assert seen == ["早上好"]
    assert await count(bot, InboxMessage) == 2 and await count(bot, SmartbotReply) == 2


async def test_concurrent_retries_are_processed_once(db_url, bot_factory):
    bot = await smartbot(bot_factory, db_url)
    seen = seen_texts(bot)
    copies = [post(bot, message("m-retry-3", "@机器人 在吗")) for _ in range(4)]
    assert await asyncio.gather(*copies) == [(200, None)] * 4
    answers = await asyncio.gather(*[post(bot, message("m-retry-4", "@机器人 帮助")) for _ in range(4)])
    assert {status for status, _ in answers} == {200}
    assert len({finished(reply) for _, reply in answers}) == 1
    assert seen == ["在吗"]
    assert await count(bot, InboxMessage) == 2


# ---- bad input -------------------------------------------------------------------------------------------


def _bad(kind: str) -> tuple[dict[str, str], bytes]:
    good = message("m-bad-1")
    if kind == "signature":
        params, body = encrypt(good)
        return {**params, "msg_signature": "0" * 40}, body
    if kind == "base64":
        params, body = encrypt(good)
        # Re-sign a ciphertext that is not base64, so only the decoding can refuse it.
        from bot.channels.wecom_crypto import signature
        from tests.wecom_helpers import TOKEN

        params["msg_signature"] = signature(TOKEN, params["timestamp"], params["nonce"], "@@not base64@@")
        return params, json.dumps({"encrypt": "@@not base64@@"}).encode()
    if kind == "receiveid":
        return encrypt(good, receive_id=CORP_ID)
    if kind == "outer json":
        params, _ = encrypt(good)
        return params, b"{not json"
    if kind == "inner json":
        return encrypt("{\"msgid\": ")
    if kind == "not an object":
        return encrypt("[1, 2, 3]")
    if kind == "no encrypt":
        params, _ = encrypt(good)
        return params, b'{"encrypted": "x"}'
    if kind == "oversized":
        params, _ = encrypt(good)
        return params, b'{"encrypt": "' + b"A" * 70_000 + b'"}'
    if kind == "stale":
        return encrypt(good, timestamp=str(int(time.time()) - 3600))
    if kind == "no msgid":
        return encrypt({k: v for k, v in good.items() if k != "msgid"})
    if kind == "no sender":
        return encrypt({k: v for k, v in good.items() if k != "from"})
    if kind == "text not a string":
        return encrypt({**good, "text": {"content": 5}})
    if kind == "other bot":
        return encrypt({**good, "aibotid": "aibSOMEONEELSE"})
    raise AssertionError(kind)


@pytest.mark.parametrize(("kind", "status", "reason"), [
    ("signature", 403, "signature mismatch"), ("base64", 400, "not valid base64"),
    ("receiveid", 403, "receiveid mismatch"), ("outer json", 400, "body is not valid JSON"),
    ("inner json", 400, "decrypted message is not valid JSON"), ("not an object", 400, "not a JSON object"),
    ("no encrypt", 400, "no encrypt field"), ("oversized", 413, "exceeds"), ("stale", 403, "replay window"),
    ("no msgid", 400, "without msgid"), ("no sender", 400, "no from.userid"),
    ("text not a string", 400, "text.content missing"), ("other bot", 403, "aibotid"),
])
async def test_bad_callbacks_get_a_clear_error_and_store_nothing(db_url, bot_factory, caplog, kind, status, reason):
    bot = await smartbot(bot_factory, db_url, bot_id=BOT_ID)
    params, body = _bad(kind)
    with caplog.at_level(logging.WARNING, logger="qunbot.smartbot"):
        async with bot.http.post(bot.url(PATH), params=params, data=body) as resp:
            assert resp.status == status
            assert await resp.text() == "rejected"  # the reason is logged, never echoed
    [record] = [r for r in caplog.records if r.getMessage() == "smartbot callback rejected"]
    assert reason in record.reason and record.status == status
    assert await count(bot, InboxMessage) == 0 and await count(bot, SmartbotReply) == 0
    # The bot is fine afterwards.
    assert finished((await post(bot, message("m-after-bad")))[1]).startswith(HELP_HEADER)


@pytest.mark.parametrize("payload", [
    {"msgid": "m-unknown-1", "aibotid": BOT_ID, "msgtype": "video", "from": {"userid": "u"}},
    {"msgid": "m-unknown-2", "aibotid": BOT_ID, "msgtype": "event", "from": {"userid": "u"},
     "event": {"eventtype": "feedback_event"}},
    {"msgid": "m-unknown-3", "aibotid": BOT_ID, "msgtype": "event", "from": {"userid": "u"}, "event": "odd"},
])
async def test_unknown_message_and_event_types_are_ignored_with_a_log_line(db_url, bot_factory, caplog, payload):
    bot = await smartbot(bot_factory, db_url)
    with caplog.at_level(logging.INFO, logger="qunbot.smartbot"):
        assert await post(bot, payload) == (200, None)
    assert any(r.getMessage() == "smartbot callback ignored" for r in caplog.records)
    assert await count(bot, InboxMessage) == 0


# ---- the fake's response_url ----------------------------------------------------------------------------


async def test_fake_response_url_takes_one_post_within_the_hour(fake):
    import aiohttp

    body = {"msgtype": "markdown", "markdown": {"content": "hi"}}
    async with aiohttp.ClientSession() as http:
        url = fake.new_response_url()
        answers = []
        for _ in range(2):
            async with http.post(url, json=body) as resp:
                answers.append((await resp.json())["errcode"])
        async with http.post(fake.new_response_url(age=3601), json=body) as resp:
            answers.append((await resp.json())["errcode"])
    assert answers[0] == 0 and answers[1] != 0 and answers[2] != 0
    assert len(fake.responses) == 1
