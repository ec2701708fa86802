"""The WeCom self-built app callback door, through real sockets, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import logging
import struct
import time

import pytest
from sqlalchemy import func, select

from bot.channels.wecom_crypto import signature
from bot.events import TextMessage
from storage.groups import Group, Member, Membership
from storage.inbox import InboxMessage
from tests.conftest import make_config
from tests.door_helpers import logged
from tests.wecom_helpers import AES_KEY, CORP_ID, TOKEN, callback, chat_change_xml, text_xml, wecom_env

PATH = "/wecom/callback"
VERIFY = {"msg_signature": "012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb", "timestamp": "1476416373", "nonce": "47744683",
          "echostr": "fsi1xnbH4yQh0+PJxcOdhhK6TDXkjMyhEPA7xB2TGz6b+g7xyAbEkRxN/3cNXW9qdqjnoVzEtpbhnFyq6SVHyA=="}
POST_QUERY = {"msg_signature": "0c3914025cb4b4d68103f6bfc8db550f79dcf48e", "timestamp": "1476422779", "nonce": "1597212914"}
POST_ENCRYPT = ("Kl7kjoSf6DMD1zh7rtrHjFaDapSCkaOnwu3bqLc5tAybhhMl9pFeK8NslNPVdMwmBQTNoW4mY7AIjeLvEl3NyeTkAgGzBhzTtRLNshw2AEew+kkYcD+Fq72Kt00fT0WnN87hGrW8SqGc+NcT3mu87Ha3dz1pSDi6GaUA6A0sqfde0VJPQbZ9U+3JWcoD4Z5jaU0y9GSh010wsHF8KZD24YhmZH4ch4Ka7ilEbjbfvhKkNL65HHL0J6EYJIZUC2pFrdkJ7MhmEbU2qARR4iQHE7wy24qy0cRX3Mfp6iELcDNfSsPGjUQVDGxQDCWjayJOpcwocugux082f49HKYg84EpHSGXAyh+/oxwaWbvL6aSDPOYuPDGOCI8jmnKiypE+")
POST_BODY = f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><Encrypt><![CDATA[{POST_ENCRYPT}]]></Encrypt><AgentID><![CDATA[1000002]]></AgentID></xml>"


async def wecom_bot(bot_factory, db_url, **wecom):
    return await bot_factory(make_config(db_url, wecom=wecom_env(**wecom)))


async def post(bot, params, body):
    async with bot.http.post(bot.url(PATH), params=params, data=body) as resp:
        return resp.status, await resp.text()


async def inbox_rows(bot):
    async with bot.runtime.db.session() as session:
        return list((await session.execute(select(InboxMessage).order_by(InboxMessage.id))).scalars())


def count_calls(*bots):
    """Register a handler on each bot that counts the text messages it processes."""
    seen: list[str] = []

    async def counter(event, ctx):
        seen.append(event.key)

    for b in bots:
        b.runtime.registry.on(TextMessage)(counter)
    return seen


async def settle(*bots):
    for b in bots:
        await b.runtime.inbox.drain()


async def test_official_verify_vector_over_http(db_url, bot_factory):
    bot = await wecom_bot(bot_factory, db_url, replay_window_seconds=0)
    async with bot.http.get(bot.url(PATH), params=VERIFY) as resp:
        assert resp.status == 200
        assert await resp.read() == b"1288432023552776189"


async def test_official_message_vector_over_http(db_url, bot_factory):
    bot = await wecom_bot(bot_factory, db_url, replay_window_seconds=0)
    seen = count_calls(bot)
    assert await post(bot, POST_QUERY, POST_BODY) == (200, "success")
    await settle(bot)
    [row] = await inbox_rows(bot)
    assert (row.channel, row.message_key, row.status) == ("wecom", "msg:1456453720", "done")
    assert '"text":"你好"' in row.payload and "ChenJiaShun" in row.payload
    assert seen == ["msg:1456453720"]


async def test_replay_window_is_on_by_default(db_url, bot_factory, caplog):
    bot = await wecom_bot(bot_factory, db_url)
    with caplog.at_level(logging.WARNING, "qunbot.wecom"):
        assert (await post(bot, POST_QUERY, POST_BODY))[0] == 403
        async with bot.http.get(bot.url(PATH), params=VERIFY) as resp:
            assert resp.status == 403
    assert await inbox_rows(bot) == []
    assert "replay window" in logged(caplog)


def _raw_cipher(plain: bytes) -> str:
    from wechatpy.crypto.cryptography import WeChatCipher

    key = base64.b64decode(AES_KEY + "=")
    return base64.b64encode(WeChatCipher(key).encrypt(plain)).decode()


def _signed(encrypted: str, ts: str | None = None) -> tuple[dict[str, str], bytes]:
    ts = ts or str(int(time.time()))
    params = {"msg_signature": signature(TOKEN, ts, "n1", encrypted), "timestamp": ts, "nonce": "n1"}
    return params, f"<xml><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>".encode()


def bad_inputs():
    msg = text_xml(1).encode()
    good_plain = b"0123456789abcdef" + struct.pack(">I", len(msg)) + msg + CORP_ID.encode()
    pad = 32 - len(good_plain) % 32
    bad_pad = good_plain + bytes(pad - 1) + bytes([pad])  # the count is right, the padding bytes are not
    zero_pad = good_plain + bytes(pad)  # a zero count
    wrong_len = b"0123456789abcdef" + struct.pack(">I", 10_000) + msg + CORP_ID.encode()
    wrong_len += bytes([32 - len(wrong_len) % 32]) * (32 - len(wrong_len) % 32)
    params, body = callback(text_xml(2))
    yield "wrong signature", 403, {**params, "msg_signature": "0" * 40}, body
    yield "bad base64", 400, *_signed("not*base64!!")
    yield "truncated ciphertext", 400, *_signed(base64.b64encode(b"x" * 40).decode())
    yield "bad padding", 400, *_signed(_raw_cipher(bad_pad))
    yield "zero padding", 400, *_signed(_raw_cipher(zero_pad))
    yield "length past the end", 400, *_signed(_raw_cipher(wrong_len))
    yield "wrong receiveid", 403, *callback(text_xml(3), receive_id="wwSomebodyElse")
    yield "stale timestamp", 403, *callback(text_xml(4), timestamp=str(int(time.time()) - 3600))
    yield "future timestamp", 403, *callback(text_xml(5), timestamp=str(int(time.time()) + 3600))
    yield "malformed outer xml", 400, params, b"<xml><Encrypt>abc"
    yield "no Encrypt element", 400, params, b"<xml><Other>1</Other></xml>"
    yield "doctype in outer xml", 400, params, b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><xml><Encrypt>&a;</Encrypt></xml>'
    bomb = '<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><xml><MsgType>text</MsgType><Content>&b;</Content><MsgId>9</MsgId></xml>'
    yield "entity trick inside the ciphertext", 400, *callback(bomb)
    yield "malformed inner xml", 400, *callback("<xml><MsgType>text</MsgType")
    yield "missing nonce", 400, {k: v for k, v in params.items() if k != "nonce"}, body
    yield "oversized body", 413, params, b"<xml><Encrypt>" + b"A" * 200_000 + b"</Encrypt></xml>"


BAD_INPUT_NAMES = [case[0] for case in bad_inputs()]


@pytest.mark.parametrize("name", BAD_INPUT_NAMES)
async def test_bad_input_is_refused_logged_and_stores_nothing(name, db_url, bot_factory, caplog):
    # Built now, not at collection, so the timestamps are fresh.
    _, status, params, body = next(case for case in bad_inputs() if case[0] == name)
    bot = await wecom_bot(bot_factory, db_url)
    with caplog.at_level(logging.WARNING, "qunbot.wecom"):
        got, _ = await post(bot, params, body)
    assert got == status, name
    assert "callback rejected" in caplog.text
    assert await inbox_rows(bot) == []
    # The bot still answers.
    assert (await post(bot, *callback(text_xml(77))))[0] == 200


async def test_secrets_never_reach_the_log(db_url, bot_factory, caplog):
    bot = await wecom_bot(bot_factory, db_url)
    with caplog.at_level(logging.DEBUG):
        await post(bot, *callback(text_xml(5)))
        await post(bot, {"msg_signature": "0" * 40, "timestamp": str(int(time.time())), "nonce": "x"}, b"<xml/>")
        await settle(bot)
    assert TOKEN not in logged(caplog) and AES_KEY not in logged(caplog)


async def test_a_retry_and_duplicates_are_processed_once(db_url, bot_factory):
    bot = await wecom_bot(bot_factory, db_url)
    seen = count_calls(bot)
    params, body = callback(text_xml(1001))
    for _ in range(4):  # the original plus WeCom's three retries
        assert await post(bot, params, body) == (200, "success")
    # The same four, concurrently, for another message.
    params2, body2 = callback(text_xml(1002))
    results = await asyncio.gather(*[post(bot, params2, body2) for _ in range(4)])
    assert all(r == (200, "success") for r in results)
    await settle(bot)
    assert sorted(seen) == ["msg:1001", "msg:1002"]
    assert [r.status for r in await inbox_rows(bot)] == ["done", "done"]


async def test_two_instances_sharing_one_database_process_once(db_url, bot_factory):
    first = await wecom_bot(bot_factory, db_url)
    second = await wecom_bot(bot_factory, db_url)
    seen = count_calls(first, second)
    deliveries = []
    for n in range(20):
        params, body = callback(text_xml(2000 + n))
        # Four copies of each message, split across both instances, all at once.
        deliveries += [post(first, params, body), post(second, params, body),
                       post(first, params, body), post(second, params, body)]
    results = await asyncio.gather(*deliveries)
    assert all(status == 200 for status, _ in results)
    await settle(first, second)
    assert sorted(seen) == sorted(f"msg:{2000 + n}" for n in range(20))
    assert len(await inbox_rows(first)) == 20


async def test_customer_group_events_become_memberships(db_url, bot_factory):
    bot = await wecom_bot(bot_factory, db_url)
    t = int(time.time())
    events = [
        chat_change_xml("wrChat1", "create", created=t),
        chat_change_xml("wrChat1", "update", "add_member", ["wmA", "wmB"], join_scene=3, created=t + 1, mem_ver="v1"),
        chat_change_xml("wrChat1", "update", "add_member", ["wmC"], join_scene=0, created=t + 2, comma_list=True, mem_ver="v2"),
        chat_change_xml("wrChat1", "update", "del_member", ["wmB"], quit_scene=1, created=t + 3, mem_ver="v3"),
    ]
    for xml in events:
        assert (await post(bot, *callback(xml)))[0] == 200
        await settle(bot)
    async with bot.runtime.db.session() as session:
        rows = (await session.execute(
            select(Member.external_id, Membership.join_scene, Membership.left_at, Membership.leave_scene)
            .join(Member, Member.id == Membership.member_id).order_by(Member.external_id)
        )).all()
    assert [(r[0], r[1], r[2] is not None, r[3]) for r in rows] == [
        ("wmA", "qrcode", False, None), ("wmB", "qrcode", True, "removed"), ("wmC", "invited", False, None)]
    assert (await post(bot, *callback(chat_change_xml("wrChat1", "dismiss", created=t + 4))))[0] == 200
    await settle(bot)
    async with bot.runtime.db.session() as session:
        group = (await session.execute(select(Group))).scalar_one()
        open_stays = (await session.execute(
            select(func.count()).select_from(Membership).where(Membership.left_at.is_(None)))).scalar_one()
    assert group.dismissed_at is not None and open_stays == 0


async def test_unknown_message_kinds_are_acknowledged_and_ignored(db_url, bot_factory, caplog):
    bot = await wecom_bot(bot_factory, db_url)
    image = text_xml(5).replace("<MsgType><![CDATA[text]]></MsgType>", "<MsgType><![CDATA[image]]></MsgType>")
    with caplog.at_level(logging.INFO, "qunbot.wecom"):
        assert await post(bot, *callback(image)) == (200, "success")
        assert await post(bot, *callback(chat_change_xml("wr1", "update", "change_name"))) == (200, "success")
    assert await inbox_rows(bot) == []
    assert "callback ignored" in caplog.text


async def test_trickling_body_is_cut_off_while_others_are_served(db_url, bot_factory):
    bot = await wecom_bot(bot_factory, db_url, body_timeout_seconds=1.0)
    params, body = callback(text_xml(31))
    host, port = bot.server.host, bot.server.port
    query = "&".join(f"{k}={v}" for k, v in params.items())
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"POST {PATH}?{query} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode())
    writer.write(body[:10])
    await writer.drain()
    started = time.monotonic()
    # Meanwhile another member's callback is answered at once.
    ok_started = time.monotonic()
    assert await post(bot, *callback(text_xml(32))) == (200, "success")
    assert time.monotonic() - ok_started < 0.5
    status_line = await asyncio.wait_for(reader.readline(), timeout=5)
    assert b"408" in status_line
    assert time.monotonic() - started < 3
    writer.close()
    await settle(bot)
    assert [r.message_key for r in await inbox_rows(bot)] == ["msg:32"]


async def test_declared_oversize_is_refused_before_the_body_is_sent(db_url, bot_factory):
    bot = await wecom_bot(bot_factory, db_url)
    params, _ = callback(text_xml(41))
    query = "&".join(f"{k}={v}" for k, v in params.items())
    reader, writer = await asyncio.open_connection(bot.server.host, bot.server.port)
    writer.write(f"POST {PATH}?{query} HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n".encode())
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), timeout=3)
    assert b"413" in status_line
    writer.close()
