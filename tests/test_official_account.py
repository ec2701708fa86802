"""The WeChat Official Account (公众号) door end to end: signed or encrypted XML callbacks in, passive replies out,
through real sockets, on SQLite and PostgreSQL, in plain, compatible and safe mode.

Each test checks what a follower would see (the passive reply, once) or what an operator would notice (a
clear 4xx and a log line for bad input, nothing stored).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from bot.channels.official_account import fit, plain_signature, text_reply_xml
from bot.channels.wecom_crypto import parse_xml
from bot.config import ConfigError, load_config
from bot.dispatcher import DIRECT_SCOPE
from bot.events import Reply
from scheduler.lottery import run_due_draws
from storage.checkin import Checkin
from storage.db import utcnow
from storage.groups import Group, Member, Membership
from storage.inbox import InboxMessage
from storage.lottery import Lottery, LotteryEntry
from storage.official_account import OfficialAccountReply
from tests.conftest import make_config
from tests.door_helpers import SLOW_ANSWER, count, eventually, rows, seen_texts, slow_handler
from tests.official_account_helpers import (
    ACCOUNT,
    APP_ID,
    MODES,
    OTHER_AES_KEY,
    PATH,
    event_xml,
    new_msg_id,
    oa_env,
    post,
    request,
    say,
    signed,
    text_xml,
)
from tests.wecom_helpers import AES_KEY, CORP_ID, TOKEN

GREETING = "你好，我是群助手🤖\n发送「帮助」看看我能做什么，也可以直接问我问题。"
HINT = "我现在只能读懂文字消息哦（开通了语音识别的语音也可以）。发送「帮助」看看我能做什么。"
CREATED_ID = re.compile(r"（编号 (\d+)）")


async def oa_bot(bot_factory: Any, db_url: str, mode: str, **extra: Any) -> Any:
    sections = {k: extra.pop(k) for k in ("admins", "welcome", "templates") if k in extra}
    return await bot_factory(make_config(db_url, official_account=oa_env(mode, **extra), **sections))


def channel(bot: Any) -> Any:
    return bot.runtime.channels["official_account"]


# ---- URL verification ------------------------------------------------------------------------------------------


def test_the_plain_signature_matches_the_official_examples():
    # developers.weixin.qq.com, 消息推送 / 消息加解密说明: Token "AAAAA".
    assert plain_signature("AAAAA", "1714036504", "1514711492") == "f464b24fc39322e44b38aa78f5edd27bd1441696"
    assert plain_signature("AAAAA", "1714037059", "486452656") == "899cf89e464efb63f54ddac96b0a0a235f53aa78"


@pytest.mark.parametrize("mode", MODES)
async def test_url_verification_answers_echostr_as_it_came(db_url, bot_factory, mode):
    bot = await oa_bot(bot_factory, db_url, mode)
    echostr = "4375120948345356249"
    async with bot.http.get(bot.url(PATH), params={**signed(), "echostr": echostr}) as resp:
        assert resp.status == 200 and await resp.read() == echostr.encode()
    async with bot.http.get(bot.url(PATH), params={**signed(), "signature": "0" * 40, "echostr": echostr}) as resp:
        assert resp.status == 403 and await resp.text() == "rejected"


async def test_url_verification_with_the_official_example(db_url, bot_factory):
    # The official example is from 2024: no replay window, so its timestamp still passes.
    bot = await bot_factory(make_config(db_url, official_account=oa_env(
        "plain", token="AAAAA", replay_window_seconds=0)))
    params = {"signature": "f464b24fc39322e44b38aa78f5edd27bd1441696", "echostr": "4375120948345356249",
              "timestamp": "1714036504", "nonce": "1514711492"}
    async with bot.http.get(bot.url(PATH), params=params) as resp:
        assert resp.status == 200 and await resp.text() == "4375120948345356249"


# ---- what followers see ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_faq_checkin_and_lottery_entry_get_passive_replies(db_url, bot_factory, mode):
    bot = await oa_bot(bot_factory, db_url, mode, admins={"bot_admins": "official_account:oBoss"})
    answer = "在「我的-订单」里点「申请售后」，按页面地址寄回即可。"
    assert "怎么申请退货" in await say(bot, f"问答 添加 怎么申请退货？ | {answer} | 退货流程|想退货", mode, openid="oBoss")
    assert answer in await say(bot, "请问怎么申请退货", mode)

    first = await say(bot, "签到", mode, openid="oZhang")
    assert "签到成功" in first
    assert "已经签到" in await say(bot, "签到", mode, openid="oZhang")
    [(group, user)] = await rows(bot, select(Group.external_id, Member.external_id).join(
        Checkin, Checkin.group_id == Group.id).join(Member, Member.id == Checkin.member_id))
    assert (group, user) == (DIRECT_SCOPE, "oZhang")  # the follower's OpenID, in the door's 1:1 scope

    created = await say(bot, "抽奖 创建 公众号福利 | 一等奖x1 | 明天 20:00", mode, openid="oBoss")
    assert "公众号福利" in created
    assert "已参加「公众号福利」抽奖" in await say(bot, "参加抽奖", mode, openid="oZhang")
    assert await count(bot, LotteryEntry) == 1


async def test_compatible_mode_also_takes_plain_requests_and_answers_them_plain(db_url, bot_factory):
    bot = await oa_bot(bot_factory, db_url, "compatible")
    assert "签到成功" in await say(bot, "签到", "plain")  # `post` checks the reply came back unencrypted


@pytest.mark.parametrize("mode", MODES)
async def test_a_follow_is_greeted_once(db_url, bot_factory, mode):
    bot = await oa_bot(bot_factory, db_url, mode)
    follow = event_xml("subscribe", openid="oNew", created=int(time.time()), EventKey="qrscene_123")
    answers = [await post(bot, follow, mode) for _ in range(3)]  # WeChat's retries carry the same CreateTime
    for status, reply in answers:
        assert status == 200 and reply is not None
        assert (reply["ToUserName"], reply["FromUserName"], reply["Content"]) == ("oNew", ACCOUNT, GREETING)
    assert await count(bot, InboxMessage) == 1


async def test_no_greeting_when_welcomes_are_off(db_url, bot_factory):
    bot = await oa_bot(bot_factory, db_url, "safe", welcome={"enabled": False})
    assert await post(bot, event_xml("subscribe", openid="oNew"), "safe") == (200, None)


async def test_an_unfollow_ends_the_followers_stay_in_the_direct_scope(db_url, bot_factory):
    bot = await oa_bot(bot_factory, db_url, "safe")
    await say(bot, "签到", "safe", openid="oLeaving")
    assert await rows(bot, select(Membership.left_at)) == [(None,)]
    assert await post(bot, event_xml("unsubscribe", openid="oLeaving"), "safe") == (200, None)
    await bot.runtime.inbox.drain()
    [(left_at, scene)] = await rows(bot, select(Membership.left_at, Membership.leave_scene))
    assert left_at is not None and scene == "left"


@pytest.mark.parametrize("mode", MODES)
async def test_voice_with_wechats_transcript_is_read_as_text(db_url, bot_factory, mode):
    bot = await oa_bot(bot_factory, db_url, mode)
    xml = text_xml(new_msg_id(), "", msg_type="voice", MediaId="m1", Format="amr", Recognition="签到。")
    status, reply = await post(bot, xml, mode)
    assert status == 200 and "签到成功" in reply["Content"]


@pytest.mark.parametrize("xml", [
    text_xml("5001", "", msg_type="image", PicUrl="http://mmbiz.qpic.cn/x", MediaId="m1"),
    text_xml("5002", "", msg_type="voice", MediaId="m2", Format="amr"),  # no speech recognition
    text_xml("5003", "", msg_type="location", Location_X="23.1", Location_Y="113.3", Scale="20", Label="某地"),
    text_xml("5004", "", msg_type="link", Title="标题", Description="描述", Url="https://example.com"),
])
async def test_messages_the_bot_cannot_read_get_a_hint_and_store_nothing(db_url, bot_factory, xml):
    bot = await oa_bot(bot_factory, db_url, "safe")
    status, reply = await post(bot, xml, "safe")
    assert status == 200 and reply["Content"] == HINT and reply["ToUserName"] == "oFollower1"
    assert await count(bot, InboxMessage) == 0


@pytest.mark.parametrize("xml", [
    text_xml("5101", "", msg_type="miniprogrampage"),
    event_xml("CLICK", EventKey="MENU_1"),
    event_xml("SCAN", EventKey="123", Ticket="t"),
    event_xml("TEMPLATESENDJOBFINISH", Status="success"),
])
async def test_unknown_message_types_and_other_events_are_ignored_with_a_log_line(db_url, bot_factory, caplog, xml):
    bot = await oa_bot(bot_factory, db_url, "safe")
    with caplog.at_level(logging.INFO, logger="qunbot.official_account"):
        assert await post(bot, xml, "safe") == (200, None)
    assert any(r.getMessage() == "official account callback ignored" for r in caplog.records)
    assert await count(bot, InboxMessage) == 0


# ---- the 5 s budget and WeChat's retries ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_retries_of_one_msgid_get_the_same_reply_and_are_handled_once(db_url, bot_factory, mode):
    bot = await oa_bot(bot_factory, db_url, mode)
    msg_id = new_msg_id()
    answers = [await say(bot, "签到", mode, msg_id=msg_id) for _ in range(4)]
    assert len(set(answers)) == 1 and "签到成功" in answers[0]
    copies = await asyncio.gather(*[post(bot, text_xml(msg_id, "签到"), mode) for _ in range(3)])
    assert {reply["Content"] for _, reply in copies} == {answers[0]}
    assert await count(bot, Checkin) == 1 and await count(bot, InboxMessage) == 1
    assert await count(bot, OfficialAccountReply) == 1


async def test_concurrent_first_copies_are_handled_once(db_url, bot_factory):
    bot = await oa_bot(bot_factory, db_url, "safe")
    seen = seen_texts(bot)
    msg_id = new_msg_id()
    answers = await asyncio.gather(*[post(bot, text_xml(msg_id, "早上好"), "safe") for _ in range(4)])
    assert answers == [(200, None)] * 4  # nothing to say: "success"
    assert seen == ["早上好"]


async def test_a_retry_reaching_another_process_waits_for_the_reply_there(db_url, bot_factory):
    one = await oa_bot(bot_factory, db_url, "safe")
    two = await oa_bot(bot_factory, db_url, "safe")
    release = slow_handler(one, two)
    seen = seen_texts(one, two)
    xml = text_xml(new_msg_id(), "慢")
    first = asyncio.create_task(post(one, xml, "safe"))
    await eventually(lambda: _stored(one), what="the message in the inbox")
    retry = asyncio.create_task(post(two, xml, "safe"))
    await asyncio.sleep(0.3)  # the retry is waiting on the other process's work
    release.set()
    for status, reply in await asyncio.gather(first, retry):
        assert status == 200 and reply["Content"] == SLOW_ANSWER
    assert seen == ["慢"]


async def _stored(bot: Any) -> bool:
    return await count(bot, InboxMessage) == 1


async def test_a_reply_later_than_the_budget_answers_success_and_a_retry_gets_the_reply(db_url, bot_factory):
    bot = await oa_bot(bot_factory, db_url, "safe", reply_budget_seconds=0.2)
    release = slow_handler(bot)
    xml = text_xml(new_msg_id(), "慢")
    assert await post(bot, xml, "safe") == (200, None)  # "success": WeChat neither retries nor shows an error
    release.set()
    await channel(bot).drain()
    status, reply = await post(bot, xml, "safe")
    assert status == 200 and reply["Content"] == SLOW_ANSWER


async def test_an_operator_can_say_something_instead_of_a_late_reply(db_url, bot_factory, tmp_path: Path):
    texts = tmp_path / "texts.toml"
    texts.write_text('[official_account]\nslow = "处理时间较长，请稍后再发一次。"\n', encoding="utf-8")
    bot = await oa_bot(bot_factory, db_url, "safe", reply_budget_seconds=0.2, templates={"file": str(texts)})
    release = slow_handler(bot)
    status, reply = await post(bot, text_xml(new_msg_id(), "慢"), "safe")
    assert status == 200 and reply["Content"] == "处理时间较长，请稍后再发一次。"
    release.set()
    await channel(bot).drain()


# ---- what the door cannot do -------------------------------------------------------------------------------------


async def test_a_lottery_drawn_in_the_direct_scope_is_kept_for_the_result_command(db_url, bot_factory, caplog):
    bot = await oa_bot(bot_factory, db_url, "safe", admins={"bot_admins": "official_account:oBoss"})
    number = int(CREATED_ID.search(await say(bot, "抽奖 创建 关注福利 | 一等奖x1 | 明天 20:00", "safe",
                                             openid="oBoss")).group(1))
    for openid in ("oA", "oB"):
        assert "已参加「关注福利」抽奖" in await say(bot, "参加抽奖", "safe", openid=openid)
    async with bot.runtime.db.session() as session:
        await session.execute(update(Lottery).where(Lottery.id == number)
                              .values(deadline=utcnow() - timedelta(seconds=1)))
    with caplog.at_level(logging.INFO, logger="qunbot.lottery"):
        await run_due_draws(bot.runtime, "drawer")
        await eventually(lambda: _announced(bot), what="the draw to be settled")
    # Nothing could be posted: the door has no proactive send; followers ask for the result.
    assert any("kept for 抽奖 结果" in r.getMessage() for r in caplog.records)
    assert not channel(bot).capabilities.can_post_proactively
    assert "参与名单哈希" in await say(bot, f"抽奖 结果 {number}", "safe", openid="oA")


async def _announced(bot: Any) -> bool:
    return (await rows(bot, select(Lottery.announced_at)))[0][0] is not None


async def test_the_door_declares_passive_replies_only(db_url, bot_factory):
    bot = await oa_bot(bot_factory, db_url, "safe")
    caps = channel(bot).capabilities
    assert (caps.can_reply, caps.can_post_proactively, caps.sees_joins, caps.greets, caps.markdown,
            caps.mentions) == (True, False, False, True, False, False)
    with pytest.raises(NotImplementedError):
        await channel(bot).post(DIRECT_SCOPE, [Reply("hi")])


# ---- a changed EncodingAESKey -----------------------------------------------------------------------------------


async def test_messages_under_the_previous_key_are_answered_under_it(db_url, bot_factory):
    bot = await oa_bot(bot_factory, db_url, "safe", encoding_aes_key=OTHER_AES_KEY, previous_encoding_aes_key=AES_KEY)
    status, reply = await post(bot, text_xml(new_msg_id(), "签到"), "safe", key=AES_KEY)
    assert status == 200 and "签到成功" in reply["Content"]  # `post` opened the reply with the previous key
    status, reply = await post(bot, text_xml(new_msg_id(), "帮助"), "safe", key=OTHER_AES_KEY)
    assert status == 200 and reply["Content"]


# ---- bad input ---------------------------------------------------------------------------------------------------

DOCTYPE = ('<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY boom "签到">]>'
           '<xml><ToUserName>gh_x</ToUserName><FromUserName>oEvil</FromUserName><CreateTime>1</CreateTime>'
           '<MsgType>text</MsgType><Content>&boom;</Content><MsgId>1</MsgId></xml>')


def _bad(kind: str, style: str) -> tuple[dict[str, str], bytes]:
    good = text_xml(new_msg_id(), "签到")
    if kind == "signature":
        query, body = request(good, style)
        return {**query, "signature": "0" * 40}, body
    if kind == "msg_signature":
        query, body = request(good, style)
        return {**query, "msg_signature": "0" * 40}, body
    if kind == "bad xml":
        query, _ = request(good, style)
        return query, b"<xml><ToUserName>gh_x</ToUserName"
    if kind == "doctype outside":
        query, _ = request(good, style)
        return query, DOCTYPE.encode()
    if kind == "doctype inside":
        return request(DOCTYPE, style)
    if kind == "oversized":
        return request(text_xml(new_msg_id(), "签" * 30_000), style)
    if kind == "stale":
        return request(good, style, timestamp=str(int(time.time()) - 3600))
    if kind == "wrong appid":
        return request(good, style, app_id=CORP_ID)
    if kind == "no msgid":
        return request(re.sub(r"<MsgId>\d+</MsgId>", "", good), style)
    if kind == "no sender":
        return request(re.sub(r"<FromUserName>.*?</FromUserName>", "", good), style)
    if kind == "encrypted in plain mode":
        return request(good, "safe")
    if kind == "plain in safe mode":
        return request(good, "plain")
    if kind == "unknown encrypt_type":
        query, body = request(good, style)
        return {**query, "encrypt_type": "rsa"}, body
    if kind == "no Encrypt":
        query, _ = request(good, style)
        return query, good.encode()
    raise AssertionError(kind)


BAD = [
    # (mode the account is in, kind, status, reason in the log)
    *[(mode, "bad xml", 400, "malformed") for mode in MODES],
    *[(mode, "doctype outside", 400, "unsafe XML") for mode in MODES],
    *[(mode, "oversized", 413, "exceeds") for mode in MODES],
    *[(mode, "stale", 403, "replay window") for mode in MODES],
    *[(mode, "no msgid", 400, "MsgId") for mode in MODES],
    *[(mode, "no sender", 400, "FromUserName") for mode in MODES],
    *[(mode, "unknown encrypt_type", 400, "encrypt_type") for mode in MODES],
    ("plain", "signature", 403, "signature mismatch"),
    ("compatible", "msg_signature", 403, "signature mismatch"),
    ("safe", "msg_signature", 403, "signature mismatch"),
    ("compatible", "doctype inside", 400, "unsafe XML"),
    ("safe", "doctype inside", 400, "unsafe XML"),
    ("compatible", "wrong appid", 403, "receiveid mismatch"),
    ("safe", "wrong appid", 403, "receiveid mismatch"),
    ("safe", "no Encrypt", 400, "no Encrypt element"),
    ("plain", "encrypted in plain mode", 400, "mode is plain"),
    ("safe", "plain in safe mode", 400, "mode is safe"),
]


@pytest.mark.parametrize(("mode", "kind", "status", "reason"), BAD, ids=[f"{m}-{k}" for m, k, _, _ in BAD])
async def test_bad_callbacks_get_a_clear_error_and_store_nothing(db_url, bot_factory, caplog, mode, kind, status,
                                                                  reason):
    bot = await oa_bot(bot_factory, db_url, mode)
    # Compatible mode gets both kinds of body; this one checks the XML inside the ciphertext too.
    style = "safe" if (mode, kind) == ("compatible", "doctype inside") else mode
    query, body = _bad(kind, style)
    with caplog.at_level(logging.WARNING, logger="qunbot.official_account"):
        async with bot.http.post(bot.url(PATH), params=query, data=body) as resp:
            assert resp.status == status
            assert await resp.text() == "rejected"  # the reason is logged, never echoed
    [record] = [r for r in caplog.records if r.getMessage() == "official account callback rejected"]
    assert reason in record.reason and record.status == status
    assert await count(bot, InboxMessage) == 0 and await count(bot, OfficialAccountReply) == 0
    assert await count(bot, Checkin) == 0
    # The bot is fine afterwards.
    assert "签到成功" in await say(bot, "签到", mode)


# ---- rendering and configuration ---------------------------------------------------------------------------------


def test_reply_text_survives_xml_specials_and_is_cut_to_wechats_limit():
    tricky = "a]]>b <c> & d\x01"
    fields = parse_xml(text_reply_xml(to_user="oX", from_user=ACCOUNT, content=tricky, created=1))
    assert fields == {"ToUserName": "oX", "FromUserName": ACCOUNT, "CreateTime": "1", "MsgType": "text",
                      "Content": "a]]>b <c> & d"}
    long = fit("签" * 1000)
    assert len(long.encode()) <= 2048 and long.endswith("…")


def _env(**values: str) -> dict[str, str]:
    return {f"QUNBOT_OFFICIAL_ACCOUNT_{k.upper()}": v for k, v in values.items()}


def test_config_requires_what_each_mode_needs_and_keeps_secrets_out_of_files(tmp_path: Path):
    plain = load_config(None, environ=_env(enabled="true", mode="plain", token=TOKEN))
    assert plain.official_account.mode == "plain"
    with pytest.raises(ConfigError, match="official_account.encoding_aes_key: required .* safe mode"):
        load_config(None, environ=_env(enabled="true", token=TOKEN, app_id=APP_ID))
    with pytest.raises(ConfigError, match="official_account.app_id: required .* compatible mode"):
        load_config(None, environ=_env(enabled="true", mode="compatible", token=TOKEN, encoding_aes_key=AES_KEY))
    with pytest.raises(ConfigError, match="official_account.token: required"):
        load_config(None, environ=_env(enabled="true", mode="plain"))
    with pytest.raises(ConfigError, match="official_account.mode"):
        load_config(None, environ=_env(mode="secure"))
    with pytest.raises(ConfigError, match="must differ from smartbot.path"):
        load_config(None, environ={**_env(enabled="true", mode="plain", token=TOKEN, path="/bot"),
                                   "QUNBOT_SMARTBOT_ENABLED": "true", "QUNBOT_SMARTBOT_PATH": "/bot",
                                   "QUNBOT_SMARTBOT_TOKEN": TOKEN, "QUNBOT_SMARTBOT_ENCODING_AES_KEY": AES_KEY})
    file = tmp_path / "config.toml"
    for secret in ("token", "encoding_aes_key", "previous_encoding_aes_key"):
        file.write_text(f'[official_account]\n{secret} = "x"\n', encoding="utf-8")
        with pytest.raises(ConfigError, match=f"QUNBOT_OFFICIAL_ACCOUNT_{secret.upper()} instead"):
            load_config(file, environ={})
