"""The signed JSON gateway door end to end: signed events in, replies in the response or signed POSTs to a
gateway's outbound URL, through real sockets, on SQLite and PostgreSQL.

The gateway side is played by this file's own code (it signs and verifies with hmac directly, not with the
bot's helpers), so a mistake in the bot's signing cannot hide behind the same mistake in the test.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import importlib.util
import json
import logging
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import select, update

from bot.channels.base import PostFailed
from bot.dispatcher import DIRECT_SCOPE
from bot.events import Reply
from scheduler.lottery import run_due_draws
from storage.checkin import Checkin
from storage.db import utcnow
from storage.gateway import GatewayOutbox
from storage.groups import Group, Member
from storage.inbox import InboxMessage
from storage.kv import ApiFailure
from storage.lottery import Lottery, LotteryEntry
from tests.conftest import make_config
from tests.door_helpers import SLOW_ANSWER, count, eventually, rows
from tests.door_helpers import slow_handler as slow_handler_of

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "gateway_bridge.py"
PATH = "/gateway/events"
SECRET = "4f0c1b2a9d8e7f6a5b4c3d2e1f0a9b8c"  # test value; real ones come from QUNBOT_GATEWAY_SECRETS
OTHER_SECRET = "a-different-secret-of-some-length"
ROOM = "20001234@chatroom"


# ---- the gateway's side ------------------------------------------------------------------------------------


def signature(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class Bridge:
    """A gateway's outbound endpoint on loopback: checks each POST's signature and timestamp as a real
    bridge must, then records it, or answers with the statuses queued in `fail_with`."""

    def __init__(self, secret: str = SECRET) -> None:
        self.secret = secret
        self.messages: list[dict[str, Any]] = []
        self.attempts: list[str] = []  # the message id of every POST that passed the signature check
        self.bad_signatures = 0
        self.fail_with: list[int] = []
        self.always: int | None = None
        app = web.Application()
        app.router.add_post("/qunbot/outbound", self.handle)
        self.server = TestServer(app, host="127.0.0.1")

    @property
    def url(self) -> str:
        return str(self.server.make_url("/qunbot/outbound"))

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        ts = request.headers.get("X-Qunbot-Timestamp", "")
        expected = signature(self.secret, ts, body)
        if (not hmac.compare_digest(expected, request.headers.get("X-Qunbot-Signature", ""))
                or not ts.isdigit() or abs(time.time() - int(ts)) > 300
                or request.headers.get("X-Qunbot-Gateway") != "wechat"):
            self.bad_signatures += 1
            return web.json_response({"error": "bad signature"}, status=401)
        message = json.loads(body)
        self.attempts.append(message["id"])
        if self.always is not None:
            return web.json_response({"error": "refused"}, status=self.always)
        if self.fail_with:
            return web.json_response({"error": "busy"}, status=self.fail_with.pop(0))
        self.messages.append(message)
        return web.json_response({"ok": True})

    def texts(self) -> list[str]:
        return [m["text"] for m in self.messages]


@pytest_asyncio.fixture
async def bridge() -> AsyncIterator[Bridge]:
    # Requested before bot_factory so the bots stop before the bridge does.
    fake = Bridge()
    await fake.server.start_server()
    yield fake
    await fake.server.close()


def config(db_url: str, bridge: Bridge | None = None, *, sections: dict[str, dict[str, Any]] | None = None,
           **gateway: Any) -> Any:
    values: dict[str, Any] = {"enabled": True, "secrets": json.dumps({"wechat": SECRET}), **gateway}
    if bridge is not None:
        values.setdefault("outbound_urls", json.dumps({"wechat": bridge.url}))
    return make_config(db_url, gateway=values, **(sections or {}))


async def start(bot_factory: Any, db_url: str, bridge: Bridge | None = None, **gateway: Any) -> Any:
    return await bot_factory(config(db_url, bridge, **gateway))


def message(event_id: str, text: str, *, user: str = "wxid_a", name: str = "小明", group: str | None = ROOM,
            **extra: Any) -> dict[str, Any]:
    """A message event: in the group `group` (with the bot @-mentioned), or 1:1 when group is None."""
    return {"id": event_id, "type": "message", "group": {"id": group, "name": "读书会"} if group else None,
            "user": user, "name": name, "text": text, "mentions_bot": True, "time": int(time.time()), **extra}


def join(event_id: str, *users: tuple[str, str], inviter: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"id": event_id, "type": "join", "group": {"id": ROOM, "name": "读书会"},
                            "users": [{"id": u, "name": n} for u, n in users]}
    if inviter:
        body["inviter"] = inviter
    return body


def signed_headers(body: bytes, *, gateway: str = "wechat", secret: str = SECRET,
                   timestamp: str | None = None) -> dict[str, str]:
    ts = timestamp or str(int(time.time()))
    return {"Content-Type": "application/json", "X-Qunbot-Gateway": gateway, "X-Qunbot-Timestamp": ts,
            "X-Qunbot-Signature": signature(secret, ts, body)}


async def send(bot: Any, event: dict[str, Any] | bytes, **sign: Any) -> tuple[int, dict[str, Any]]:
    """POST an event, signed as the gateway signs it; (HTTP status, the JSON answer)."""
    body = event if isinstance(event, bytes) else json.dumps(event, ensure_ascii=False).encode()
    async with bot.http.post(bot.url(PATH), data=body, headers=signed_headers(body, **sign)) as resp:
        return resp.status, await resp.json()


async def say(bot: Any, event: dict[str, Any]) -> list[str]:
    """Send a message event; the texts of the replies in the response (which must not be pending)."""
    status, answer = await send(bot, event)
    assert status == 200, answer
    assert answer["pending"] is False and answer["duplicate"] is False, answer
    return [r["text"] for r in answer["replies"]]


def channel(bot: Any) -> Any:
    return bot.runtime.channels["gateway"]


def slow_handler(*bots: Any) -> asyncio.Event:
    """A handler that answers "慢" with two replies, the first mentioning the sender, once the event is set."""
    return slow_handler_of(*bots, answer=lambda event: [Reply(SLOW_ANSWER, mentions=[event.sender.user]),
                                                        Reply("第二条")])


# ---- features, end to end ----------------------------------------------------------------------------------


async def test_a_join_is_welcomed_in_the_response_with_mentions(db_url, bot_factory):
    bot = await start(bot_factory, db_url)
    status, answer = await send(bot, join("j-1", ("wxid_b", "小红"), ("wxid_c", "小刚"), inviter="wxid_a"))
    assert status == 200
    assert answer["id"] == "j-1" and answer["pending"] is False and answer["duplicate"] is False
    [reply] = answer["replies"]
    assert "小红" in reply["text"] and "小刚" in reply["text"] and "读书会" in reply["text"]
    # Mentions come back in the gateway's own user ids, for the gateway to render.
    assert sorted(reply["mentions"]) == ["wxid_b", "wxid_c"] and reply["markdown"] is False
    # Stored under "<gateway>:<id>", so two gateways never share a group or a member by accident.
    assert await rows(bot, select(Group.channel, Group.external_id, Group.name)) == [
        ("gateway", f"wechat:{ROOM}", "读书会")]
    assert sorted(await rows(bot, select(Member.external_id))) == [("wechat:wxid_a",), ("wechat:wxid_b",),
                                                                    ("wechat:wxid_c",)]
    [(status_, kind, target)] = await rows(bot, select(GatewayOutbox.status, GatewayOutbox.target_kind,
                                                       GatewayOutbox.target))
    assert (status_, kind, target) == ("inline", "group", ROOM)


async def test_a_leave_is_recorded_and_answered_with_nothing(db_url, bot_factory):
    bot = await start(bot_factory, db_url)
    await send(bot, join("j-2", ("wxid_b", "小红")))
    status, answer = await send(bot, {"id": "l-1", "type": "leave", "group": {"id": ROOM},
                                      "users": [{"id": "wxid_b"}], "scene": "removed"})
    assert (status, answer["replies"], answer["pending"]) == (200, [], False)
    assert await count(bot, InboxMessage) == 2


async def test_checkin_in_a_group_and_again_the_same_day(db_url, bot_factory):
    bot = await start(bot_factory, db_url)
    [done] = await say(bot, message("m-c1", "@群助手 签到"))
    assert "签到成功" in done and "小明" in done
    [again] = await say(bot, message("m-c2", "签到"))
    assert "已经签到" in again
    assert await count(bot, Checkin) == 1


async def test_faq_answer_and_lottery_entry(db_url, bot_factory):
    bot = await bot_factory(config(db_url, sections={"admins": {"bot_admins": "gateway:wechat:boss"}}))
    answer = "在「我的-订单」里点「申请售后」，按页面地址寄回即可。"
    [added] = await say(bot, message("m-f1", f"问答 添加 怎么申请退货？ | {answer} | 退货流程|想退货", user="boss"))
    assert "怎么申请退货" in added
    status, reply = await send(bot, message("m-f2", "请问怎么申请退货", user="wxid_q", name="小青"))
    assert status == 200 and answer in reply["replies"][0]["text"]
    assert reply["replies"][0]["mentions"] == ["wxid_q"]
    # A group owner, as the gateway reports it ("role"), may create a lottery; members join with its keyword.
    [created] = await say(bot, message("m-l1", "抽奖 创建 群福利 | 一等奖x1 | 明天 20:00", user="owner1", role="owner"))
    assert "群福利" in created
    [joined] = await say(bot, message("m-l2", "参加抽奖", user="wxid_q", name="小青"))
    assert "已参加「群福利」抽奖" in joined
    assert await count(bot, LotteryEntry) == 1


async def test_a_one_to_one_chat_is_answered_and_kept_in_the_direct_scope(db_url, bot_factory):
    bot = await start(bot_factory, db_url)
    [help_text] = await say(bot, message("m-d1", "帮助", group=None, user="wxid_solo"))
    assert "签到" in help_text
    assert await rows(bot, select(Group.external_id)) == [(DIRECT_SCOPE,)]
    [(kind, target)] = await rows(bot, select(GatewayOutbox.target_kind, GatewayOutbox.target))
    assert (kind, target) == ("user", "wxid_solo")


async def test_a_bare_mention_gets_a_hint_and_stores_nothing(db_url, bot_factory):
    bot = await start(bot_factory, db_url)
    assert await say(bot, message("m-e1", "@群助手")) == [bot.runtime.templates.raw("gateway.empty")]
    # Not addressed to the bot and nothing to read: no answer at all.
    assert await say(bot, message("m-e2", "  ", mentions_bot=False)) == []
    assert await count(bot, InboxMessage) == 0


# ---- later replies and posts: the outbound URL ------------------------------------------------------------


async def test_a_slow_reply_goes_to_the_outbound_url_signed(db_url, bridge, bot_factory):
    bot = await start(bot_factory, db_url, bridge, reply_budget_seconds=0.2)
    release = slow_handler(bot)
    status, answer = await send(bot, message("m-s1", "慢"))
    assert (status, answer["replies"], answer["pending"]) == (200, [], True)
    release.set()
    await eventually(lambda: len(bridge.messages) == 2, what="two outbound messages")
    first, second = bridge.messages
    assert first["text"] == SLOW_ANSWER and second["text"] == "第二条"  # in order
    assert first["group"] == {"id": ROOM} and first["user"] is None
    assert first["in_reply_to"] == "m-s1" and first["mentions"] == ["wxid_a"] and first["markdown"] is False
    assert first["type"] == "message" and first["gateway"] == "wechat" and first["id"] != second["id"]
    assert bridge.bad_signatures == 0

    async def all_delivered() -> bool:  # the bridge's 200 is recorded just after it answers
        return {s for (s,) in await rows(bot, select(GatewayOutbox.status))} == {"delivered"}

    await eventually(all_delivered, what="both outbox rows marked delivered")
    # The event, sent again, reports the original as finished and repeats nothing.
    status, again = await send(bot, message("m-s1", "慢"))
    assert (again["duplicate"], again["replies"], again["pending"]) == (True, [], False)


async def test_inline_off_sends_every_reply_to_the_outbound_url(db_url, bridge, bot_factory):
    bot = await start(bot_factory, db_url, bridge, reply_budget_seconds=0)
    status, answer = await send(bot, message("m-o1", "签到", group=None, user="wxid_solo"))
    assert (status, answer["replies"], answer["pending"]) == (200, [], True)
    await eventually(lambda: len(bridge.messages) == 1, what="the outbound reply")
    [sent] = bridge.messages
    assert sent["user"] == "wxid_solo" and sent["group"] is None and "签到成功" in sent["text"]


async def test_a_post_and_a_lottery_announcement_go_out_signed(db_url, bridge, bot_factory):
    # The scheduled draw job stays out of the way: the test runs the draw itself.
    bot = await bot_factory(config(db_url, bridge, sections={"lottery": {"job_interval_seconds": 3600}}))
    assert channel(bot).capabilities.can_post_proactively
    await channel(bot).post(f"wechat:{ROOM}", [Reply("今晚八点直播", mentions=["wechat:wxid_a", "other:x"])])
    await eventually(lambda: len(bridge.messages) == 1, what="the post")
    assert bridge.messages[0]["group"] == {"id": ROOM} and bridge.messages[0]["mentions"] == ["wxid_a"]
    assert bridge.messages[0]["in_reply_to"] is None
    # The 1:1 scope: each mentioned member gets it directly.
    await channel(bot).post(DIRECT_SCOPE, [Reply("你中奖了", mentions=["wechat:wxid_a", "wechat:wxid_b"])])
    await eventually(lambda: len(bridge.messages) == 3, what="the direct posts")
    assert sorted(m["user"] for m in bridge.messages[1:]) == ["wxid_a", "wxid_b"]
    # A lottery drawn at its deadline is announced in the group, winners mentioned.
    await say(bot, message("m-a1", "抽奖 创建 周末福利 | 一等奖x1 | 明天 20:00", user="owner1", role="owner"))
    await say(bot, message("m-a2", "参加抽奖", user="wxid_q", name="小青"))
    async with bot.runtime.db.session() as session:
        await session.execute(update(Lottery).values(deadline=utcnow() - timedelta(seconds=1)))
    assert await run_due_draws(bot.runtime, "test") == 1
    await eventually(lambda: len(bridge.messages) == 4, what="the announcement")
    announced = bridge.messages[3]
    assert "周末福利" in announced["text"] and announced["mentions"] == ["wxid_q"]


async def test_a_failing_outbound_url_is_retried_then_delivered(db_url, bridge, bot_factory):
    bot = await start(bot_factory, db_url, bridge, outbound_backoff_seconds=0.05, sweep_interval_seconds=0.05)
    bridge.fail_with = [503, 429]
    await channel(bot).post(f"wechat:{ROOM}", [Reply("第一条"), Reply("第二条")])
    await eventually(lambda: len(bridge.messages) == 2, what="delivery after retries")
    assert bridge.texts() == ["第一条", "第二条"]  # the second waited for the first
    first_id = bridge.messages[0]["id"]
    assert bridge.attempts.count(first_id) == 3  # the same message id on every attempt
    [(status, attempts, error)] = await rows(bot, select(GatewayOutbox.status, GatewayOutbox.attempts,
                                                         GatewayOutbox.last_error)
                                             .where(GatewayOutbox.message_id == first_id))
    assert (status, attempts) == ("delivered", 3) and "429" in error
    assert await count(bot, ApiFailure) == 0


async def test_an_unreachable_outbound_url_is_retried_until_it_answers(db_url, bot_factory):
    with socket.socket() as probe:  # a port nobody listens on yet
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/qunbot/outbound"
    bot = await start(bot_factory, db_url, outbound_urls=json.dumps({"wechat": url}),
                      outbound_backoff_seconds=0.05, sweep_interval_seconds=0.05)
    await channel(bot).post(f"wechat:{ROOM}", [Reply("有人吗")])
    await eventually(lambda: _attempts(bot, 2), what="two failed attempts")
    late = Bridge()
    late.server = TestServer(late.server.app, host="127.0.0.1", port=port)
    await late.server.start_server()
    try:
        await eventually(lambda: late.texts() == ["有人吗"], what="delivery once the gateway is up")
        await eventually(lambda: _finished(bot, "delivered"), what="the row marked delivered")
    finally:
        await late.server.close()
    [(status, error)] = await rows(bot, select(GatewayOutbox.status, GatewayOutbox.last_error))
    assert status == "delivered" and "Connect" in error


async def _attempts(bot: Any, n: int) -> bool:
    return (await rows(bot, select(GatewayOutbox.attempts)))[0][0] >= n


@pytest.mark.parametrize(("always", "attempts"), [(400, 1), (503, 3)])
async def test_a_permanently_failing_send_is_recorded(db_url, bridge, bot_factory, caplog, always, attempts):
    bot = await start(bot_factory, db_url, bridge, outbound_backoff_seconds=0.05, sweep_interval_seconds=0.05,
                      outbound_max_attempts=3)
    bridge.always = always
    with caplog.at_level(logging.WARNING, logger="qunbot.gateway"):
        await channel(bot).post(f"wechat:{ROOM}", [Reply("发不出去")])
        await eventually(lambda: _finished(bot), what="the send to be given up")
    [(status, tries, error)] = await rows(bot, select(GatewayOutbox.status, GatewayOutbox.attempts,
                                                      GatewayOutbox.last_error))
    assert (status, tries) == ("failed", attempts) and f"HTTP {always}" in error
    assert len(bridge.attempts) == attempts
    [(api, errcode, recorded)] = await rows(bot, select(ApiFailure.api, ApiFailure.errcode, ApiFailure.attempts))
    assert (api, errcode, recorded) == ("gateway/wechat", always, attempts)
    assert any(r.getMessage() == "gateway outbound send failed for good" for r in caplog.records)


async def test_a_gateway_with_another_secret_refuses_the_bot_and_the_bot_records_it(db_url, bot_factory):
    stranger = Bridge(secret=OTHER_SECRET)  # checks signatures with a secret the bot does not have
    await stranger.server.start_server()
    try:
        bot = await start(bot_factory, db_url, outbound_urls=json.dumps({"wechat": stranger.url}))
        await channel(bot).post(f"wechat:{ROOM}", [Reply("你好")])
        await eventually(lambda: _finished(bot), what="the refused send to be given up")

        async def recorded() -> bool:  # the failure is recorded just after the row is marked failed
            return await count(bot, ApiFailure) == 1

        await eventually(recorded, what="the failure recorded")
    finally:
        await stranger.server.close()
    assert stranger.bad_signatures == 1 and stranger.messages == []
    [(error,)] = await rows(bot, select(GatewayOutbox.last_error))
    assert "HTTP 401" in error and await count(bot, ApiFailure) == 1


async def _finished(bot: Any, status: str = "failed") -> bool:
    return [s for (s,) in await rows(bot, select(GatewayOutbox.status))] == [status]


async def test_a_late_reply_without_an_outbound_url_is_recorded_as_undeliverable(db_url, bot_factory):
    bot = await start(bot_factory, db_url, reply_budget_seconds=0.2)
    assert not channel(bot).capabilities.can_post_proactively
    release = slow_handler(bot)
    status, answer = await send(bot, message("m-n1", "慢"))
    assert answer["pending"] is True
    release.set()
    await channel(bot).drain()
    assert {(s, "no outbound URL" in e) for s, e in await rows(
        bot, select(GatewayOutbox.status, GatewayOutbox.last_error))} == {("failed", True)}
    assert await count(bot, ApiFailure) == 2
    # A post into a group of a gateway without an outbound URL is refused at once, for the caller to record.
    with pytest.raises(PostFailed, match="no outbound URL") as info:
        await channel(bot).post(f"wechat:{ROOM}", [Reply("公告")])
    assert info.value.permanent
    with pytest.raises(PostFailed, match="not configured"):
        await channel(bot).post(f"nosuch:{ROOM}", [Reply("公告")])


async def test_two_processes_send_each_outbox_row_once(db_url, bridge, bot_factory):
    one = await start(bot_factory, db_url, bridge, sweep_interval_seconds=60)
    two = await start(bot_factory, db_url, bridge, sweep_interval_seconds=60)
    for n in range(6):
        await channel(one).post(f"wechat:room{n % 3}", [Reply(f"通知{n}")])
    await asyncio.gather(*(channel(b).send_due() for b in (one, two, one, two)))
    await eventually(lambda: len(bridge.messages) == 6, what="all six posts")
    await asyncio.gather(channel(one).send_due(), channel(two).send_due())
    assert len(bridge.attempts) == 6 and len(set(bridge.attempts)) == 6
    for room in range(3):  # each chat in its order
        assert [m["text"] for m in bridge.messages if m["group"]["id"] == f"room{room}"] == [
            f"通知{room}", f"通知{room + 3}"]


# ---- duplicates ---------------------------------------------------------------------------------------------


async def test_a_duplicate_event_is_handled_once_by_two_processes(db_url, bot_factory):
    one, two = await start(bot_factory, db_url), await start(bot_factory, db_url)
    status, first = await send(one, message("m-dup-1", "签到"))
    assert status == 200 and "签到成功" in first["replies"][0]["text"]
    # The gateway lost the response and sends the event again, to the other process: same replies back.
    status, again = await send(two, message("m-dup-1", "签到"))
    assert status == 200 and again["duplicate"] is True and again["pending"] is False
    assert again["replies"] == first["replies"]
    # Copies arriving at both processes at once: one of them processes it.
    answers = await asyncio.gather(*(send(bot, message("m-dup-2", "签到", user="wxid_z", name="小智"))
                                     for bot in (one, two, one, two)))
    assert [a["duplicate"] for _, a in answers].count(False) == 1
    await channel(one).drain()
    await channel(two).drain()
    assert await count(bot=one, model=Checkin) == 2
    assert await count(one, InboxMessage) == 2


async def test_the_same_event_id_from_two_gateways_is_two_events(db_url, bot_factory):
    secrets = json.dumps({"wechat": SECRET, "tg": OTHER_SECRET})
    bot = await start(bot_factory, db_url, secrets=secrets)
    assert "签到成功" in (await say(bot, message("same-id", "签到")))[0]
    status, answer = await send(bot, message("same-id", "签到"), gateway="tg", secret=OTHER_SECRET)
    assert status == 200 and answer["duplicate"] is False and "签到成功" in answer["replies"][0]["text"]
    assert sorted(await rows(bot, select(Member.external_id))) == [("tg:wxid_a",), ("wechat:wxid_a",)]


async def test_a_retired_secret_still_verifies_while_listed(db_url, bot_factory):
    bot = await start(bot_factory, db_url, secrets=json.dumps({"wechat": [OTHER_SECRET, SECRET]}))
    assert (await send(bot, message("m-r1", "签到")))[0] == 200
    assert (await send(bot, message("m-r2", "签到"), secret=OTHER_SECRET))[0] == 200


# ---- bad input ----------------------------------------------------------------------------------------------


def _bad(kind: str) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of a bad request of the given kind."""
    good = json.dumps(message("m-bad", "签到"), ensure_ascii=False).encode()

    def signed(body: bytes | dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        raw = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
        return raw, signed_headers(raw)

    def without(key: str) -> dict[str, Any]:
        return {k: v for k, v in message("m-bad", "签到").items() if k != key}

    if kind == "wrong signature":
        return good, signed_headers(good, secret=OTHER_SECRET)
    if kind == "body changed after signing":
        return good.replace("签到".encode(), "帮助".encode()), signed_headers(good)
    if kind.startswith("missing header "):
        headers = signed_headers(good)
        del headers[kind.removeprefix("missing header ")]
        return good, headers
    if kind == "unknown gateway":
        return good, signed_headers(good, gateway="nosuch")
    if kind == "stale timestamp":
        return good, signed_headers(good, timestamp=str(int(time.time()) - 3600))
    if kind == "future timestamp":
        return good, signed_headers(good, timestamp=str(int(time.time()) + 3600))
    if kind == "timestamp not a number":
        return good, {**signed_headers(good), "X-Qunbot-Timestamp": "yesterday"}
    if kind == "malformed signature":
        return good, {**signed_headers(good), "X-Qunbot-Signature": "md5=abc"}
    if kind == "signature not hex":
        return good, {**signed_headers(good), "X-Qunbot-Signature": "sha256=" + "z" * 64}
    if kind == "malformed JSON":
        return signed(b'{"id": "m-bad", ')
    if kind == "not an object":
        return signed(b"[1, 2]")
    if kind == "oversized":
        return signed(message("m-bad", "签" * 30_000))
    if kind == "no id":
        return signed(without("id"))
    if kind == "no type":
        return signed(without("type"))
    if kind == "unknown type":
        return signed({**message("m-bad", "签到"), "type": "recall"})
    if kind == "no user":
        return signed(without("user"))
    if kind == "text not a string":
        return signed({**message("m-bad", "签到"), "text": 5})
    if kind == "bad role":
        return signed({**message("m-bad", "签到"), "role": "king"})
    if kind == "group without id":
        return signed({**message("m-bad", "签到"), "group": {"name": "读书会"}})
    if kind == "join without group":
        return signed({**join("j-bad", ("wxid_b", "小红")), "group": None})
    if kind == "join users not a list":
        return signed({**join("j-bad", ("wxid_b", "小红")), "users": "wxid_b"})
    if kind == "join user without id":
        return signed({**join("j-bad", ("wxid_b", "小红")), "users": [{"name": "小红"}]})
    if kind == "bad time":
        return signed({**message("m-bad", "签到"), "time": "now"})
    if kind == "mentions_bot not a bool":
        return signed({**message("m-bad", "签到"), "mentions_bot": "yes"})
    raise AssertionError(kind)


@pytest.mark.parametrize(("kind", "status", "reason"), [
    ("wrong signature", 401, "signature mismatch"),
    ("body changed after signing", 401, "signature mismatch"),
    ("missing header X-Qunbot-Signature", 401, "missing header X-Qunbot-Signature"),
    ("missing header X-Qunbot-Timestamp", 401, "missing header X-Qunbot-Timestamp"),
    ("missing header X-Qunbot-Gateway", 401, "missing header X-Qunbot-Gateway"),
    ("unknown gateway", 401, "unknown gateway"),
    ("stale timestamp", 401, "replay window"),
    ("future timestamp", 401, "replay window"),
    ("timestamp not a number", 401, "unix seconds"),
    ("malformed signature", 401, "sha256=<64 hex digits>"),
    ("signature not hex", 401, "sha256=<64 hex digits>"),
    ("malformed JSON", 400, "not valid JSON"),
    ("not an object", 400, "not a JSON object"),
    ("oversized", 413, "exceeds"),
    ("no id", 400, "field 'id'"),
    ("no type", 400, "field 'type'"),
    ("unknown type", 400, "field 'type' must be one of message, join, leave (got 'recall')"),
    ("no user", 400, "field 'user'"),
    ("text not a string", 400, "field 'text'"),
    ("bad role", 400, "field 'role'"),
    ("group without id", 400, "field 'group.id'"),
    ("join without group", 400, "field 'group' is required for join events"),
    ("join users not a list", 400, "field 'users'"),
    ("join user without id", 400, "field 'users[0].id'"),
    ("bad time", 400, "field 'time'"),
    ("mentions_bot not a bool", 400, "field 'mentions_bot'"),
])
async def test_bad_input_gets_a_clear_error_a_log_line_and_stores_nothing(db_url, bot_factory, caplog, kind,
                                                                          status, reason):
    bot = await start(bot_factory, db_url)
    body, headers = _bad(kind)
    with caplog.at_level(logging.WARNING, logger="qunbot.gateway"):
        async with bot.http.post(bot.url(PATH), data=body, headers=headers) as resp:
            assert resp.status == status
            answer = await resp.json()
    assert reason in answer["error"]
    [record] = [r for r in caplog.records if r.getMessage() == "gateway event rejected"]
    assert reason in record.reason and record.status == status
    assert SECRET not in caplog.text and OTHER_SECRET not in caplog.text
    assert await count(bot, InboxMessage) == 0 and await count(bot, GatewayOutbox) == 0
    assert await count(bot, Member) == 0
    # The bot is fine afterwards.
    assert "签到成功" in (await say(bot, message("m-after-bad", "签到")))[0]


async def test_a_replayed_request_is_only_a_duplicate(db_url, bot_factory):
    bot = await start(bot_factory, db_url)
    body = json.dumps(message("m-replay", "签到"), ensure_ascii=False).encode()
    headers = signed_headers(body)
    answers = []
    for _ in range(2):  # the very same signed request, captured and sent again within the window
        async with bot.http.post(bot.url(PATH), data=body, headers=headers) as resp:
            answers.append(await resp.json())
    assert [a["duplicate"] for a in answers] == [False, True]
    assert await count(bot, Checkin) == 1


def test_config_requires_a_secret_per_gateway():
    from bot.config import ConfigError, load_config

    base = {"QUNBOT_GATEWAY_ENABLED": "true"}
    with pytest.raises(ConfigError, match="QUNBOT_GATEWAY_SECRETS"):
        load_config(None, environ=base)
    with pytest.raises(ConfigError, match="no secret for gateway tg"):
        load_config(None, environ={**base, "QUNBOT_GATEWAY_SECRETS": json.dumps({"wechat": SECRET}),
                                   "QUNBOT_GATEWAY_OUTBOUND_URLS": json.dumps({"tg": "http://127.0.0.1:1/"})})
    with pytest.raises(ConfigError, match="at least 16 characters") as info:
        load_config(None, environ={**base, "QUNBOT_GATEWAY_SECRETS": json.dumps({"wechat": "short"})})
    assert "short" not in str(info.value).replace("shorter", "")
    with pytest.raises(ConfigError, match="gateway name"):
        load_config(None, environ={**base, "QUNBOT_GATEWAY_SECRETS": json.dumps({"We Chat": SECRET})})


# ---- the example bridge in docs/examples -----------------------------------------------------------------------


def _load_example() -> Any:
    spec = importlib.util.spec_from_file_location("gateway_bridge_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_example_bridge_talks_to_a_real_bot(db_url, bot_factory):
    """docs/examples/gateway_bridge.py as a user runs it: a console chat with the bot, both directions."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    bot = await start(bot_factory, db_url, outbound_urls=json.dumps({"wechat": f"http://127.0.0.1:{port}/outbound"}))
    env = {**os.environ, "QUNBOT_GATEWAY_SECRET": SECRET}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLE), "--qunbot", bot.url(PATH), "--gateway", "wechat",
        "--listen", f"127.0.0.1:{port}", "--group", ROOM, "--user", "wxid_console", "--name", "控制台",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    assert proc.stdin is not None and proc.stdout is not None

    async def read_until(needle: str) -> str:
        seen = []
        async with asyncio.timeout(15):
            while True:
                line = (await proc.stdout.readline()).decode()
                assert line, f"the bridge exited before printing {needle!r}: {''.join(seen)}"
                seen.append(line)
                if needle in line:
                    return line

    try:
        await read_until("listening")
        proc.stdin.write("签到\n".encode())
        await proc.stdin.drain()
        assert "签到成功" in await read_until("签到成功")
        # A post the bot makes on its own reaches the bridge's outbound endpoint, signature checked.
        await channel(bot).post(f"wechat:{ROOM}", [Reply("今晚八点直播", mentions=["wechat:wxid_console"])])
        line = await read_until("今晚八点直播")
        assert "@wxid_console" in line
        proc.stdin.close()
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert await count(bot, Checkin) == 1


def test_the_example_bridge_and_the_docs_sign_like_the_bot():
    example = _load_example()
    from bot.channels.gateway import sign

    body = b'{"id":"x","type":"message"}'
    documented = "sha256=6f2a7077646d981935d8df7568670b742bd3a20f2a86f5c26aca7843b91a56f3"
    assert documented in (ROOT / "docs" / "gateway.md").read_text(encoding="utf-8")
    assert example.sign(SECRET, "1700000000", body) == sign(SECRET, "1700000000", body) == signature(
        SECRET, "1700000000", body) == documented
