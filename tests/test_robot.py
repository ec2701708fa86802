"""The WeCom group robot (群机器人) door end to end: webhook sends to the fake WeCom, the per-robot rate limit
kept by two runtimes on one database, retries and recorded failures, and callback mode (encrypted XML in,
passive replies or webhook sends out), through real sockets, on SQLite and PostgreSQL.

Each test checks what a member would see (the message in the group, once) or what an operator would
notice (a recorded failure, a clear 4xx and a log line for bad input, a key that never reaches the log).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import select, update

from bot.channels.base import PostFailed
from bot.channels.robot import UnknownGroup
from bot.channels.robot_api import RobotSendError, split_text
from bot.channels.wecom_crypto import CallbackCrypto, parse_xml, parse_xml_root
from bot.config import ConfigError
from bot.dispatcher import DIRECT_SCOPE
from bot.events import Reply, TextMessage
from scheduler.lottery import run_due_draws
from storage.checkin import Checkin
from storage.db import utcnow
from storage.inbox import InboxMessage
from storage.kv import ApiFailure
from storage.lottery import Lottery, LotteryWinner
from storage.robot import RobotChat, RobotReply
from tests.conftest import make_config
from tests.door_helpers import count, eventually, logged, rows
from tests.fakes.wecom_server import WEBHOOK_SEND_PATH, WEBHOOK_UPLOAD_PATH, FakeWeCom
from tests.wecom_helpers import AES_KEY, CORP_ID, TOKEN

PATH = "/wecom/robot"
KEY = "robot-key-0001"  # the robot whose callbacks come from CHAT
PUSH_KEY = "push-key-0002"  # a push-only robot, configured for the group "销售群"
CHAT = "wrkSFfCgAAtest01"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
CREATED_ID = re.compile(r"（编号 (\d+)）")
HELP_HEADER = "我可以帮你做这些事："


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeWeCom]:
    # Requested before bot_factory so the bots stop before the fake does.
    async with FakeWeCom() as server:
        server.add_robot(KEY)
        server.add_robot(PUSH_KEY)
        yield server


def robot_env(fake: FakeWeCom, *, callback: bool = True, **extra: Any) -> dict[str, Any]:
    """The robot config section for tests (the secrets would come from the environment)."""
    values: dict[str, Any] = {"enabled": True, "api_base_url": fake.base_url, "backoff_seconds": 0.05,
                              "keys": json.dumps({"销售群": f"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={PUSH_KEY}"})}
    if callback:
        # WeCom's whole budget: tests that read the answer from the callback response must not miss it
        # on a loaded machine; tests of the late path set their own short budget.
        values |= {"token": TOKEN, "encoding_aes_key": AES_KEY, "reply_budget_seconds": 4.5}
    return values | extra


async def robot_bot(bot_factory: Any, db_url: str, fake: FakeWeCom, *, callback: bool = True,
                    sections: dict[str, Any] | None = None, **extra: Any) -> Any:
    return await bot_factory(make_config(db_url, robot=robot_env(fake, callback=callback, **extra), **(sections or {})))


def channel(bot: Any) -> Any:
    return bot.runtime.channels["robot"]


# -- playing WeCom's callbacks -------------------------------------------------------------------------


def crypto() -> CallbackCrypto:
    return CallbackCrypto(TOKEN, AES_KEY, "", replay_window_seconds=0)


def message_xml(msgid: str, content: str = "@小助手 帮助", *, user: str = "zhangsan", name: str = "张三",
                chat: str = CHAT, chat_type: str = "group", msgtype: str = "text", key: str = KEY,
                inner: str | None = None) -> str:
    """A decrypted robot callback as the docs show it (群机器人回调说明)."""
    body = inner if inner is not None else f"<Text><Content><![CDATA[{content}]]></Content></Text>"
    return (f"<xml><WebhookUrl><![CDATA[http://in.qyapi.weixin.qq.com/cgi-bin/webhook/send?key={key}]]></WebhookUrl>"
            f"<MsgId><![CDATA[{msgid}]]></MsgId><ChatId><![CDATA[{chat}]]></ChatId><ChatType>{chat_type}</ChatType>"
            f"<From><UserId>{user}</UserId><Name><![CDATA[{name}]]></Name><Alias><![CDATA[{user}]]></Alias></From>"
            f"<GetChatInfoUrl><![CDATA[https://qyapi.weixin.qq.com/cgi-bin/webhook/get_chat_info?code=C]]></GetChatInfoUrl>"
            f"<MsgType>{msgtype}</MsgType>{body}</xml>")


def encrypt(xml: str, *, timestamp: str | None = None, nonce: str | None = None,
            receive_id: str = "") -> tuple[dict[str, str], bytes]:
    """(query params, body) of a callback as WeCom posts it: <xml><Encrypt/></xml>, receiveid empty."""
    nonce = nonce or secrets.token_hex(5)
    encrypted, signature, ts = CallbackCrypto(TOKEN, AES_KEY, receive_id, 0).encrypt(
        xml, nonce, timestamp or str(int(time.time())))
    return {"msg_signature": signature, "timestamp": ts, "nonce": nonce}, \
        f"<xml><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>".encode()


def open_reply(raw: bytes) -> str | None:
    """The passive reply's markdown, after checking its signature; None for an empty answer."""
    if not raw:
        return None
    outer = parse_xml(raw)
    assert set(outer) == {"Encrypt", "MsgSignature", "TimeStamp", "Nonce"}, outer
    plain = crypto().open(str(outer["MsgSignature"]), str(outer["TimeStamp"]), str(outer["Nonce"]),
                          str(outer["Encrypt"]))
    root = parse_xml_root(plain)
    assert root.findtext("MsgType") == "markdown"
    return root.findtext("Markdown/Content")


async def call(bot: Any, xml: str, **kwargs: Any) -> tuple[int, str | None]:
    """Send a callback to a bot; (HTTP status, the passive reply's markdown or None)."""
    params, body = encrypt(xml, **kwargs)
    async with bot.http.post(bot.url(PATH), params=params, data=body) as resp:
        raw = await resp.read()
        return resp.status, (open_reply(raw) if resp.status == 200 else None)


# ---- webhook sends ------------------------------------------------------------------------------------


async def test_each_message_type_reaches_the_robots_group(db_url, fake, bot_factory):
    bot = await robot_bot(bot_factory, db_url, fake, callback=False)
    robot = channel(bot)
    await robot.post("销售群", [Reply("今晚八点直播，记得来！", mentions=["zhangsan", "@all"])])
    await robot.post("销售群", [Reply("**本周榜单**\n第一名：李四", mentions=["lisi"], markdown=True)])
    await robot.post_image("销售群", PNG)
    articles = [{"title": "中秋礼品领取", "url": "https://example.invalid/gift", "description": "今年有好礼",
                 "picurl": "https://example.invalid/gift.png"}]
    await robot.post_news("销售群", articles)
    await robot.post_file("销售群", b"name,points\nzhangsan,10\n", "points.csv")

    text, markdown, image, news, file = fake.robot_messages(PUSH_KEY)
    # A configured push-only robot posts into its own group: no chatid.
    assert text == {"msgtype": "text", "text": {"content": "今晚八点直播，记得来！", "mentioned_list": ["zhangsan", "@all"]}}
    assert markdown == {"msgtype": "markdown", "markdown": {"content": "**本周榜单**\n第一名：李四\n<@lisi>"}}
    assert image == {"msgtype": "image", "image": {"base64": base64.b64encode(PNG).decode(),
                                                   "md5": hashlib.md5(PNG).hexdigest()}}  # noqa: S324
    assert news == {"msgtype": "news", "news": {"articles": articles}}
    [(media_id, media)] = fake.robot_media.items()
    assert file == {"msgtype": "file", "file": {"media_id": media_id}}
    assert (media["filename"], media["data"]) == ("points.csv", b"name,points\nzhangsan,10\n")
    assert fake.calls_to(WEBHOOK_UPLOAD_PATH) == 1 and fake.calls_to(WEBHOOK_SEND_PATH) == 5


async def test_oversized_or_malformed_messages_are_refused_before_sending(db_url, fake, bot_factory):
    bot = await robot_bot(bot_factory, db_url, fake, callback=False)
    robot, client = channel(bot), channel(bot).client
    with pytest.raises(ValueError, match="2097152"):
        await robot.post_image("销售群", PNG + b"\x00" * (2 * 1024 * 1024))
    with pytest.raises(ValueError, match="JPG or PNG"):
        await robot.post_image("销售群", b"GIF89a" + b"\x00" * 10)
    with pytest.raises(ValueError, match="1..8 articles"):
        await robot.post_news("销售群", [{"title": f"t{n}", "url": "https://example.invalid"} for n in range(9)])
    with pytest.raises(ValueError, match="title and a url"):
        await robot.post_news("销售群", [{"title": "no link"}])
    with pytest.raises(ValueError, match="4096"):
        await client.send_markdown(PUSH_KEY, "长" * 1366)
    with pytest.raises(ValueError, match="2048"):
        await client.send_text(PUSH_KEY, "长" * 683)
    with pytest.raises(ValueError, match="bytes"):
        await robot.post_file("销售群", b"tiny", "a.txt")
    assert fake.requests == []


async def test_long_text_is_split_at_line_breaks_and_cut_past_max_parts(db_url, fake, bot_factory):
    bot = await robot_bot(bot_factory, db_url, fake, callback=False, max_parts=2)
    lines = [f"第{n:03d}行：" + "好" * 40 for n in range(30)]  # 30 lines of ~130 bytes: ~3.9 KB
    await channel(bot).post("销售群", [Reply("\n".join(lines), mentions=["zhangsan"])])
    first, second = fake.robot_messages(PUSH_KEY)
    assert first["text"]["content"] + "\n" + second["text"]["content"] == "\n".join(lines)
    assert all(len(m["text"]["content"].encode()) <= 2048 for m in (first, second))
    # The mention goes with the last part, after the whole text.
    assert "mentioned_list" not in first["text"] and second["text"]["mentioned_list"] == ["zhangsan"]

    parts = split_text("\n".join(lines * 3), 2048, 2)
    assert len(parts) == 2 and parts[-1].endswith("…") and all(len(p.encode()) <= 2048 for p in parts)
    assert split_text("好" * 1000, 2048, 3) == ["好" * 682, "好" * 318]  # no line break: cut between characters


async def test_image_and_news_attachments_follow_their_caption(db_url, fake, bot_factory):
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    async def picture(request: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/png")

    app = web.Application()
    app.router.add_get("/poster.png", picture)
    images = TestServer(app, host="127.0.0.1")
    await images.start_server()
    try:
        bot = await robot_bot(bot_factory, db_url, fake, callback=False)
        articles = [{"title": "新品上架", "url": "https://example.invalid/new"}]
        await channel(bot).post("销售群", [
            Reply("今日海报", attachment={"kind": "image", "url": str(images.make_url("/poster.png"))}),
            Reply("", attachment={"kind": "image", "base64": base64.b64encode(PNG).decode(),
                                  "md5": hashlib.md5(PNG).hexdigest()}),  # noqa: S324
            Reply("本周推荐", markdown=True, attachment={"kind": "news", "articles": articles}),
        ])
    finally:
        await images.close()
    image = {"msgtype": "image", "image": {"base64": base64.b64encode(PNG).decode(),
                                           "md5": hashlib.md5(PNG).hexdigest()}}  # noqa: S324
    assert fake.robot_messages(PUSH_KEY) == [
        {"msgtype": "text", "text": {"content": "今日海报"}}, image, image,
        {"msgtype": "markdown", "markdown": {"content": "本周推荐"}},
        {"msgtype": "news", "news": {"articles": articles}},
    ]
    with pytest.raises(PostFailed, match="md5") as refused:
        await channel(bot).post("销售群", [Reply("", attachment={"kind": "image", "base64": "AAAA", "md5": "0" * 32})])
    assert refused.value.permanent


async def test_unknown_groups_and_direct_posts_are_refused(db_url, fake, bot_factory):
    bot = await robot_bot(bot_factory, db_url, fake, callback=False)
    with pytest.raises(PostFailed) as unknown:
        await channel(bot).post("没有机器人的群", [Reply("hi")])
    assert unknown.value.permanent and isinstance(unknown.value.__cause__, UnknownGroup)
    with pytest.raises(NotImplementedError):
        await channel(bot).post(DIRECT_SCOPE, [Reply("hi", mentions=["zhangsan"])])
    assert fake.requests == []


# ---- the rate limit, across processes ------------------------------------------------------------------


async def test_two_runtimes_send_25_messages_to_one_robot_within_its_limit(db_url, fake, bot_factory):
    # WeCom takes 20 a minute per robot; here 20 per 2 s, in the bot and in the fake alike.
    fake.robot_rate_window = 2.0
    config = make_config(db_url, robot=robot_env(fake, callback=False, rate_window_seconds=2.0))
    first, second = await bot_factory(config), await bot_factory(config)
    sends = [channel(first if n % 2 else second).post("销售群", [Reply(f"第{n}条")]) for n in range(25)]
    await asyncio.gather(*sends)
    got = fake.robot_messages(PUSH_KEY)
    assert sorted(m["text"]["content"] for m in got) == sorted(f"第{n}条" for n in range(25))
    assert fake.most_in_window(PUSH_KEY, 2.0) <= 20
    # Nothing was refused with 45009: the bots waited for their slots instead.
    assert fake.calls_to(WEBHOOK_SEND_PATH) == 25
    assert await count(first, ApiFailure) == 0


async def test_a_robot_at_its_limit_does_not_hold_up_another_robot(db_url, fake, bot_factory):
    fake.robot_rate_window = 2.0
    bot = await robot_bot(bot_factory, db_url, fake, rate_window_seconds=2.0)
    robot = channel(bot)
    await call(bot, message_xml("m-learn-1", "@小助手 你好"))  # the callback robot's chat becomes known
    busy = [asyncio.create_task(robot.post("销售群", [Reply(f"推送{n}")])) for n in range(21)]
    await eventually(lambda: len(fake.robot_messages(PUSH_KEY)) == 20, what="20 sends of the first robot")
    await robot.post(CHAT, [Reply("另一个机器人的消息")])
    await asyncio.gather(*busy)
    order = [(m["key"], m["text"]["content"]) for m in fake.webhook_messages if m["msgtype"] == "text"]
    # The other robot's message went out while the first robot's 21st still waited for its window.
    assert order.index((KEY, "另一个机器人的消息")) < len(order) - 1
    assert order[-1][0] == PUSH_KEY


async def test_a_robot_busy_past_the_wait_limit_asks_to_retry_later(db_url, fake, bot_factory):
    bot = await robot_bot(bot_factory, db_url, fake, callback=False, rate_limit=1, rate_window_seconds=30,
                          max_wait_seconds=0.5)
    await channel(bot).post("销售群", [Reply("第一条")])
    with pytest.raises(PostFailed) as busy:
        await channel(bot).post("销售群", [Reply("第二条")])
    assert not busy.value.permanent and 25 < busy.value.retry_after <= 31
    assert [m["text"]["content"] for m in fake.robot_messages(PUSH_KEY)] == ["第一条"]
    assert fake.calls_to(WEBHOOK_SEND_PATH) == 1  # the bot kept the limit itself: WeCom never refused


# ---- retries and failures ------------------------------------------------------------------------------


async def test_rate_limited_and_busy_answers_are_retried(db_url, fake, bot_factory):
    bot = await robot_bot(bot_factory, db_url, fake, callback=False)
    fake.fail_next(WEBHOOK_SEND_PATH, 45009)
    fake.fail_next(WEBHOOK_SEND_PATH, -1, times=2)
    await channel(bot).post("销售群", [Reply("重试后送达")])
    assert [m["text"]["content"] for m in fake.robot_messages(PUSH_KEY)] == ["重试后送达"]
    assert fake.calls_to(WEBHOOK_SEND_PATH) == 4
    assert await count(bot, ApiFailure) == 0


async def test_a_permanent_error_is_recorded_and_the_key_never_logged(db_url, fake, bot_factory, caplog):
    revoked = "revoked-key-0003"  # a robot removed from its group: WeCom no longer knows its key
    bot = await robot_bot(bot_factory, db_url, fake, callback=False, max_attempts=2,
                          keys=json.dumps({"旧群": revoked, "销售群": PUSH_KEY}))
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(PostFailed) as failed:
            await channel(bot).post("旧群", [Reply("发不出去")])
        assert failed.value.permanent  # a scheduled post is not retried
        cause = failed.value.__cause__
        assert isinstance(cause, RobotSendError) and (cause.errcode, cause.attempts) == (93000, 1)
        # -1 on every attempt: retried max_attempts times, then recorded too (and worth a later try).
        fake.fail_next(WEBHOOK_SEND_PATH, -1, times=2)
        with pytest.raises(PostFailed) as busy:
            await channel(bot).post("销售群", [Reply("一直繁忙")])
        assert not busy.value.permanent
    recorded = await rows(bot, select(ApiFailure.api, ApiFailure.errcode, ApiFailure.attempts, ApiFailure.errmsg,
                                      ApiFailure.detail).order_by(ApiFailure.id))
    assert [(api, code, n) for api, code, n, _, _ in recorded] == [("webhook/send", 93000, 1), ("webhook/send", -1, 2)]
    everything = logged(caplog) + repr(recorded) + str(failed.value) + str(cause)
    assert revoked not in everything and PUSH_KEY not in everything
    assert fake.robot_messages(PUSH_KEY) == []


# ---- callback mode -----------------------------------------------------------------------------------------


async def test_url_verification_answers_the_plain_echostr(db_url, fake, bot_factory):
    bot = await robot_bot(bot_factory, db_url, fake)
    nonce, ts = "1597212914", str(int(time.time()))
    encrypted, signature, _ = crypto().encrypt("8312645790512", nonce, ts)
    params = {"msg_signature": signature, "timestamp": ts, "nonce": nonce, "echostr": encrypted}
    async with bot.http.get(bot.url(PATH), params=params) as resp:
        assert (resp.status, await resp.read()) == (200, b"8312645790512")
    async with bot.http.get(bot.url(PATH), params={**params, "msg_signature": "0" * 40}) as resp:
        assert resp.status == 403


async def test_no_callback_routes_without_callback_secrets(db_url, fake, bot_factory):
    bot = await robot_bot(bot_factory, db_url, fake, callback=False)
    params, body = encrypt(message_xml("m-none-1"))
    async with bot.http.post(bot.url(PATH), params=params, data=body) as resp:
        assert resp.status in (404, 405)


async def test_help_is_answered_in_the_callback_response_and_the_chat_is_learned(db_url, fake, bot_factory, caplog):
    bot = await robot_bot(bot_factory, db_url, fake, bot_name="小助手")
    with caplog.at_level(logging.DEBUG):
        status, reply = await call(bot, message_xml("m-help-1", "@小助手\u2005帮助"))
    assert status == 200 and reply.startswith(HELP_HEADER)
    assert await rows(bot, select(RobotChat.chat_id, RobotChat.chat_type, RobotChat.webhook_key)) == \
        [(CHAT, "group", KEY)]
    [(row_status, via)] = await rows(bot, select(RobotReply.status, RobotReply.via))
    assert (row_status, via) == ("delivered", "passive")
    assert KEY not in logged(caplog)  # the WebhookUrl's key is a credential
    assert fake.webhook_messages == []


async def test_checkin_answers_in_the_chat_with_a_mention(db_url, fake, bot_factory):
    bot = await robot_bot(bot_factory, db_url, fake)
    status, reply = await call(bot, message_xml("m-checkin-1", "@小助手 签到", user="zhaoliu", name="赵六"))
    assert status == 200 and "签到成功" in reply and reply.endswith("<@zhaoliu>")
    assert await count(bot, Checkin) == 1
    # WeCom's retry of the same message gets the same answer and checks in nobody twice.
    assert await call(bot, message_xml("m-checkin-1", "@小助手 签到", user="zhaoliu")) == (200, reply)
    status, again = await call(bot, message_xml("m-checkin-2", "@小助手 签到", user="zhaoliu"))
    assert "已经签到" in again
    assert await count(bot, Checkin) == 1 and await count(bot, InboxMessage) == 2


async def test_faq_and_lottery_entry_through_mentions(db_url, fake, bot_factory):
    bot = await robot_bot(bot_factory, db_url, fake, sections={"admins": {"bot_admins": "robot:boss"}})

    async def say(n: int, text: str, user: str = "zhangsan") -> str:
        status, reply = await call(bot, message_xml(f"m-feature-{n}", f"@小助手 {text}", user=user))
        assert status == 200 and reply is not None
        return reply

    answer = "在「我的-订单」里点「申请售后」，按页面地址寄回即可。"
    assert "怎么申请退货" in await say(1, f"问答 添加 怎么申请退货？ | {answer} | 退货流程|想退货", user="boss")
    assert answer in await say(2, "请问怎么申请退货")
    assert "企微福利" in await say(3, "抽奖 创建 企微福利 | 一等奖x2 | 明天 20:00", user="boss")
    assert "已参加「企微福利」抽奖" in await say(4, "参加抽奖")


async def test_lottery_winners_are_announced_through_the_webhook_with_mentions(db_url, fake, bot_factory):
    bot = await robot_bot(bot_factory, db_url, fake, sections={"admins": {"bot_admins": "robot:boss"}})
    status, created = await call(bot, message_xml("m-lot-1", "@小助手 抽奖 创建 周五福利 | 幸运奖x2 | 明天 20:00",
                                                  user="boss"))
    number = int(CREATED_ID.search(created).group(1))
    users = ["zhangsan", "lisi", "wangwu"]
    for n, user in enumerate(users, 2):
        assert "已参加" in (await call(bot, message_xml(f"m-lot-{n}", "@小助手 参加抽奖", user=user)))[1]
    async with bot.runtime.db.session() as session:
        await session.execute(update(Lottery).where(Lottery.id == number)
                              .values(deadline=utcnow() - timedelta(seconds=1)))
    assert await run_due_draws(bot.runtime, "drawer") == 1
    [announcement] = fake.robot_messages(KEY)
    winners = [u for (u,) in await rows(bot, select(LotteryWinner.user).order_by(LotteryWinner.pick))]
    assert announcement["chatid"] == CHAT and announcement["msgtype"] == "text"
    assert announcement["text"]["content"].startswith(f"🎉「周五福利」开奖啦（编号 {number}）")
    assert announcement["text"]["mentioned_list"] == winners and set(winners) <= set(users)
    [(announced,)] = await rows(bot, select(Lottery.announced_at))
    assert announced is not None


async def test_a_slow_reply_goes_through_the_webhook_into_the_chat_once(db_url, fake, bot_factory):
    bot = await robot_bot(bot_factory, db_url, fake, reply_budget_seconds=0.2)
    release = asyncio.Event()

    async def slow(event: TextMessage, ctx: Any) -> Reply | None:
        if type(event) is TextMessage and event.text == "慢":
            await release.wait()
            return Reply("想好了", mentions=[event.sender.user])
        return None

    bot.runtime.registry.on(TextMessage)(slow)
    assert await call(bot, message_xml("m-slow-1", "@小助手 慢")) == (200, None)
    assert await call(bot, message_xml("m-slow-1", "@小助手 慢")) == (200, None)  # WeCom's retry meanwhile
    release.set()
    await channel(bot).drain()
    assert fake.robot_messages(KEY) == [{"chatid": CHAT, "msgtype": "markdown",
                                         "markdown": {"content": "想好了\n<@zhangsan>"}}]
    # A later retry of the message gets nothing more; the sweep finds nothing to send.
    assert await call(bot, message_xml("m-slow-1", "@小助手 慢")) == (200, None)
    await channel(bot).sweep()
    assert len(fake.webhook_messages) == 1
    [(row_status, via)] = await rows(bot, select(RobotReply.status, RobotReply.via))
    assert (row_status, via) == ("delivered", "webhook")


async def test_a_reply_too_long_for_the_callback_response_is_split_over_webhook_messages(db_url, fake, bot_factory):
    bot = await robot_bot(bot_factory, db_url, fake)
    long_reply = "\n".join(f"第{n:03d}条：" + "长" * 60 for n in range(30))  # ~5.7 KB, over markdown's 4096 bytes

    async def verbose(event: TextMessage, ctx: Any) -> Reply | None:
        return Reply(long_reply) if type(event) is TextMessage and event.text == "长文" else None

    bot.runtime.registry.on(TextMessage)(verbose)
    assert await call(bot, message_xml("m-long-1", "@小助手 长文")) == (200, None)
    await eventually(lambda: len(fake.robot_messages(KEY)) == 2, what="the two webhook parts")
    first, second = fake.robot_messages(KEY)
    assert first["chatid"] == second["chatid"] == CHAT
    assert first["markdown"]["content"] + "\n" + second["markdown"]["content"] == long_reply
    await eventually(lambda: _reply_status(bot, "m-long-1", ("delivered", "webhook")), what="the row settled")


async def _reply_status(bot: Any, msgid: str, expected: tuple[str, str]) -> bool:
    return [tuple(r) for r in await rows(bot, select(RobotReply.status, RobotReply.via)
                                         .where(RobotReply.msgid == msgid))] == [expected]


async def test_a_ready_reply_nobody_handed_over_is_swept_to_the_webhook(db_url, fake, bot_factory):
    bot = await robot_bot(bot_factory, db_url, fake, reply_grace_seconds=0.05)
    # The process that would have answered the callback died after the reply was ready.
    status, _ = await call(bot, message_xml("m-sweep-1", "@小助手 帮助"))
    async with bot.runtime.db.session() as session:
        await session.execute(update(RobotReply).values(status="ready", via=None))
    await asyncio.sleep(0.1)
    await channel(bot).sweep()
    await channel(bot).sweep()
    [sent] = fake.robot_messages(KEY)
    assert sent["chatid"] == CHAT and sent["markdown"]["content"].startswith(HELP_HEADER)


async def test_a_retry_reaching_another_process_gets_the_same_answer(db_url, fake, bot_factory):
    one = await robot_bot(bot_factory, db_url, fake)
    two = await robot_bot(bot_factory, db_url, fake)
    status, reply = await call(one, message_xml("m-two-1", "@小助手 签到"))
    assert "签到成功" in reply
    assert await call(two, message_xml("m-two-1", "@小助手 签到")) == (200, reply)
    assert await count(one, Checkin) == 1 and await count(one, InboxMessage) == 1


async def test_mixed_messages_and_single_chats(db_url, fake, bot_factory):
    bot = await robot_bot(bot_factory, db_url, fake)
    seen: list[tuple[str | None, str]] = []

    async def record(event: TextMessage, ctx: Any) -> None:
        if type(event) is TextMessage:
            seen.append((event.group, event.text))

    bot.runtime.registry.on(TextMessage)(record)
    mixed = ("<MixedMessage><MsgItem><MsgType>text</MsgType><Text><Content><![CDATA[@小助手 今天]]></Content></Text>"
             "</MsgItem><MsgItem><MsgType>image</MsgType><Image><ImageUrl><![CDATA[https://example.invalid/a.png]]>"
             "</ImageUrl></Image></MsgItem><MsgItem><MsgType>text</MsgType><Text><Content><![CDATA[天气怎样]]>"
             "</Content></Text></MsgItem></MixedMessage>")
    assert (await call(bot, message_xml("m-mixed-1", msgtype="mixed", inner=mixed)))[0] == 200
    status, reply = await call(bot, message_xml("m-single-1", "帮助", chat="wokSingle1", chat_type="single"))
    assert status == 200 and reply.startswith(HELP_HEADER)
    assert seen == [(CHAT, "今天\n天气怎样")]
    # A single chat's webhook is learned too: a slow reply there would go back into it.
    assert ("wokSingle1", "single") in [tuple(r) for r in await rows(bot, select(RobotChat.chat_id, RobotChat.chat_type))]


async def test_no_welcome_the_robot_sees_no_joins_but_greets_a_1to1_chat(db_url, fake, bot_factory):
    bot = await robot_bot(bot_factory, db_url, fake)
    assert channel(bot).capabilities.sees_joins is False and channel(bot).capabilities.posts_welcome is False
    # The only membership events a robot gets are about itself: nothing to welcome.
    added = "<Event><EventType><![CDATA[add_to_chat]]></EventType></Event>"
    assert await call(bot, message_xml("e-add-1", msgtype="event", inner=added)) == (200, None)
    assert await count(bot, InboxMessage) == 0
    entered = "<Event><EventType><![CDATA[enter_chat]]></EventType></Event>"
    status, reply = await call(bot, message_xml("e-enter-1", msgtype="event", inner=entered, chat="wokSingle2",
                                                chat_type="single"))
    assert (status, reply) == (200, bot.runtime.templates.raw("welcome.enter_chat"))
    assert fake.webhook_messages == []


async def test_images_and_bare_mentions_get_a_hint_without_being_stored(db_url, fake, bot_factory):
    bot = await robot_bot(bot_factory, db_url, fake)
    image = "<Image><ImageUrl><![CDATA[https://example.invalid/a.png]]></ImageUrl></Image>"
    status, reply = await call(bot, message_xml("m-img-1", msgtype="image", inner=image, chat="wokS",
                                                chat_type="single"))
    assert status == 200 and reply == bot.runtime.templates.raw("robot.unsupported")
    assert await call(bot, message_xml("m-bare-1", "@小助手")) == (200, bot.runtime.templates.raw("robot.empty"))
    assert await count(bot, InboxMessage) == 0


# ---- bad input ------------------------------------------------------------------------------------------------


DOCTYPE = '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY boom "签到">]>'


def _bad(kind: str) -> tuple[dict[str, str], bytes]:
    good = message_xml("m-bad-1", "@小助手 签到")
    if kind == "signature":
        params, body = encrypt(good)
        return {**params, "msg_signature": "0" * 40}, body
    if kind == "stale":
        return encrypt(good, timestamp=str(int(time.time()) - 3600))
    if kind == "outer xml":
        params, _ = encrypt(good)
        return params, b"<xml><Encrypt>not closed"
    if kind == "outer doctype":
        params, _ = encrypt(good)
        return params, (DOCTYPE + "<xml><Encrypt>&boom;</Encrypt></xml>").encode()
    if kind == "inner doctype":
        return encrypt(DOCTYPE + good.replace("签到", "&boom;"))
    if kind == "inner xml":
        return encrypt("<xml><MsgId>1</MsgId")
    if kind == "receiveid":
        return encrypt(good, receive_id=CORP_ID)
    if kind == "no encrypt":
        params, _ = encrypt(good)
        return params, b"<xml><ToUserName>x</ToUserName></xml>"
    if kind == "no msgid":
        return encrypt(good.replace("<MsgId><![CDATA[m-bad-1]]></MsgId>", ""))
    if kind == "no sender":
        return encrypt(re.sub(r"<From>.*</From>", "", good))
    if kind == "oversized":
        params, _ = encrypt(good)
        return params, b"<xml><Encrypt>" + b"A" * 70_000 + b"</Encrypt></xml>"
    raise AssertionError(kind)


@pytest.mark.parametrize(("kind", "status", "reason"), [
    ("signature", 403, "signature mismatch"), ("stale", 403, "replay window"), ("outer xml", 400, "malformed"),
    ("outer doctype", 400, "unsafe XML"), ("inner doctype", 400, "unsafe XML"), ("inner xml", 400, "malformed"),
    ("receiveid", 403, "receiveid mismatch"), ("no encrypt", 400, "no Encrypt"), ("no msgid", 400, "MsgId"),
    ("no sender", 400, "From.UserId"), ("oversized", 413, "exceeds"),
])
async def test_bad_callbacks_get_a_clear_error_and_store_nothing(db_url, fake, bot_factory, caplog, kind, status,
                                                                 reason):
    bot = await robot_bot(bot_factory, db_url, fake)
    params, body = _bad(kind)
    with caplog.at_level(logging.WARNING, logger="qunbot.robot"):
        async with bot.http.post(bot.url(PATH), params=params, data=body) as resp:
            assert resp.status == status
            assert await resp.text() == "rejected"  # the reason is logged, never echoed
    [record] = [r for r in caplog.records if r.getMessage() == "robot callback rejected"]
    assert reason in record.reason and record.status == status
    for model in (InboxMessage, RobotReply, RobotChat, Checkin):
        assert await count(bot, model) == 0
    # The bot is fine afterwards.
    assert (await call(bot, message_xml("m-after-bad", "@小助手 帮助")))[1].startswith(HELP_HEADER)


@pytest.mark.parametrize(("msgtype", "inner", "chat_type", "what"), [
    ("video", "<Video/>", "group", "msgtype video"),
    ("attachment", "<Attachment><CallbackId>b</CallbackId></Attachment>", "group", "msgtype attachment"),
    ("event", "<Event><EventType>delete_from_chat</EventType></Event>", "group", "event delete_from_chat"),
    ("text", "<Text><Content>@小助手 签到</Content></Text>", "blackboard", "chattype blackboard"),
])
async def test_unknown_kinds_are_ignored_with_a_log_line(db_url, fake, bot_factory, caplog, msgtype, inner, chat_type,
                                                         what):
    bot = await robot_bot(bot_factory, db_url, fake)
    with caplog.at_level(logging.INFO, logger="qunbot.robot"):
        assert await call(bot, message_xml("m-unknown-1", msgtype=msgtype, inner=inner, chat_type=chat_type)) == \
            (200, None)
    [record] = [r for r in caplog.records if r.getMessage() == "robot callback ignored"]
    assert record.what == what
    assert await count(bot, InboxMessage) == 0 and await count(bot, Checkin) == 0


# ---- configuration --------------------------------------------------------------------------------------------


def test_robot_keys_come_from_the_environment_and_are_checked(tmp_path):
    from bot.config import load_config, redacted

    env = {"QUNBOT_ROBOT_ENABLED": "true",
           "QUNBOT_ROBOT_KEYS": json.dumps({"销售群": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=abc-1",
                                            "wrChat": "def_2"})}
    config = load_config(None, environ=env)
    assert config.robot.keys == {"销售群": "abc-1", "wrChat": "def_2"} and not config.robot.callback
    assert redacted(config)["robot"]["keys"] == "***"
    with pytest.raises(ConfigError, match="needs a robot"):
        load_config(None, environ={"QUNBOT_ROBOT_ENABLED": "true"})
    with pytest.raises(ConfigError, match="robot.encoding_aes_key"):
        load_config(None, environ={"QUNBOT_ROBOT_ENABLED": "true", "QUNBOT_ROBOT_TOKEN": TOKEN})
    with pytest.raises(ConfigError, match="robot.keys") as bad:
        load_config(None, environ={**env, "QUNBOT_ROBOT_KEYS": json.dumps({"g": "not a key!"})})
    assert "not a key" not in str(bad.value)  # a key, even a wrong one, is never echoed
    file = tmp_path / "qunbot.toml"
    file.write_text('[robot]\nkeys = {g = "abc"}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="QUNBOT_ROBOT_KEYS"):
        load_config(file, environ={})
