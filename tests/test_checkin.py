"""Daily check-in, points, levels, leaderboard, admin grants and deductions, group timezones.

Every storage test runs on SQLite and on PostgreSQL (the `db_url` fixture) through real sockets: members talk
through the simulator's HTTP API (`POST /api/simulator/messages`) or, in a 1:1 chat, through the WeCom app
callback against the fake WeCom server. The simulator stamps events with `bot.channels.simulator.utcnow`,
which the `clock` fixture controls; the WeCom door takes the time from the payload's CreateTime.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import select

from bot.cli import main as cli_main
from bot.config import ConfigError, load_config
from bot.events import event_from_json
from storage import inbox as inbox_store
from storage.audit import AuditEntry
from storage.checkin import Checkin, CheckinDayCount
from storage.groups import Group, Member
from storage.points import PointsEntry
from tests.conftest import make_config
from tests.fakes.wecom_server import FakeWeCom
from tests.test_pipeline import accept_and_process, fail_delivery, text_event
from tests.wecom_helpers import CORP_ID, callback, text_xml, wecom_env

SIM = "/api/simulator/messages"
NAMES = {"u1": "小明", "u2": "小红", "boss": "管理员老王"}
DONE = re.compile(r"^✅ (.+) 签到成功，今天第 (\d+) 个签到！\n🔥 连续签到 (\d+) 天，获得 (\d+) 积分(.*)\n💰 当前积分 (-?\d+) · 等级「(.+)」$")
ALREADY = re.compile(r"^(.+) 今天已经签到过了（(\d\d:\d\d)，今天第 (\d+) 个），明天再来吧～\n🔥 连续签到 (\d+) 天 · 💰 当前积分 (-?\d+)$")
# 00:00 on 1 March 2026 in Asia/Shanghai (UTC+8, no daylight saving).
MARCH_1 = datetime(2026, 2, 28, 16, 0, tzinfo=UTC)


class Clock:
    """The simulator's clock: every message is stamped with `now`."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def set(self, now: datetime) -> None:
        self.now = now

    def day(self, n: int, hour: int = 9) -> None:
        """`hour` o'clock (Asia/Shanghai) on day `n` of March 2026."""
        self.now = MARCH_1 + timedelta(days=n - 1, hours=hour)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock(MARCH_1 + timedelta(hours=9))
    monkeypatch.setattr("bot.channels.simulator.utcnow", lambda: c.now)
    return c


@pytest.fixture(params=["UTC", "America/Los_Angeles"])
def server_timezone(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test with the process's local time in another zone (TZ), restored afterwards."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = request.param
    time.tzset()
    try:
        yield request.param
    finally:
        if before is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = before
        time.tzset()


async def say(bot: Any, text: str, *, user: str = "u1", group: str = "g1", name: str | None = None,
              role: str | None = None, message_id: str | None = None) -> list[dict[str, Any]]:
    body: dict[str, Any] = {"group": group, "user": user, "name": name or NAMES.get(user, user), "text": text}
    if role:
        body["role"] = role
    if message_id:
        body["message_id"] = message_id
    status, data = await bot.post_json(SIM, body)
    assert status == 200, data
    return data["replies"]


async def said(bot: Any, text: str, **kwargs: Any) -> str:
    """The one reply to a message."""
    [reply] = await say(bot, text, **kwargs)
    return reply["text"]


async def query(bot: Any, statement: Any) -> list[tuple[Any, ...]]:
    async with bot.runtime.db.session() as session:
        return [tuple(r) for r in (await session.execute(statement)).all()]


async def checkin_rows(bot: Any) -> list[tuple[str, str, date, int, int]]:
    """(group, member, local day, position, points) of every check-in."""
    return await query(bot, select(Group.external_id, Member.external_id, Checkin.day, Checkin.position,
                                   Checkin.points)
                       .join(Group, Group.id == Checkin.group_id).join(Member, Member.id == Checkin.member_id)
                       .order_by(Group.external_id, Checkin.day, Checkin.position))


async def ledger_rows(bot: Any) -> list[tuple[str, int, str, str | None]]:
    """(member, delta, kind, ref) of every ledger row, in order."""
    return await query(bot, select(Member.external_id, PointsEntry.delta, PointsEntry.kind, PointsEntry.ref)
                       .join(Member, Member.id == PointsEntry.member_id).order_by(PointsEntry.id))


def done(text: str) -> dict[str, Any]:
    match = DONE.match(text)
    assert match, text
    name, position, streak, points, bonus, balance, level = match.groups()
    return {"name": name, "position": int(position), "streak": int(streak), "points": int(points),
            "bonus": bonus, "balance": int(balance), "level": level}


def already(text: str) -> dict[str, Any]:
    match = ALREADY.match(text)
    assert match, text
    name, at, position, streak, balance = match.groups()
    return {"name": name, "time": at, "position": int(position), "streak": int(streak), "balance": int(balance)}


# -- the check-in and its reply ---------------------------------------------------------------------------


async def test_checkin_reply_gives_streak_points_balance_and_position(bot, clock):
    [first] = await say(bot, "签到")
    assert first == {"text": "✅ 小明 签到成功，今天第 1 个签到！\n🔥 连续签到 1 天，获得 10 积分\n"
                             "💰 当前积分 10 · 等级「新人」", "mentions": ["u1"]}
    clock.set(clock.now + timedelta(minutes=5))
    assert done(await said(bot, "/checkin", user="u2"))["position"] == 2
    # A second check-in the same day, by any spelling, is told so (with the first one's local time).
    clock.set(clock.now + timedelta(hours=3))
    for spelling in ("打卡", "@群助手 签到", "／ｃｈｅｃｋｉｎ"):
        assert already(await said(bot, spelling)) == {"name": "小明", "time": "09:00", "position": 1, "streak": 1,
                                                      "balance": 10}
    assert await checkin_rows(bot) == [("g1", "u1", date(2026, 3, 1), 1, 10), ("g1", "u2", date(2026, 3, 1), 2, 10)]
    ids = [str(i) for (i,) in await query(bot, select(Checkin.id).order_by(Checkin.id))]
    # One ledger row per check-in, its ref the check-in's id.
    assert await ledger_rows(bot) == [("u1", 10, "checkin", ids[0]), ("u2", 10, "checkin", ids[1])]


async def test_checkins_count_per_group(bot, clock):
    assert done(await said(bot, "签到", group="g1"))["position"] == 1
    assert done(await said(bot, "签到", group="g2"))["position"] == 1
    assert done(await said(bot, "签到", group="g2", user="u2"))["position"] == 2
    assert [(g, m) for g, m, *_ in await checkin_rows(bot)] == [("g1", "u1"), ("g2", "u1"), ("g2", "u2")]


async def _concurrent_checkins(bots: list[Any]) -> None:
    replies = await asyncio.gather(*(said(bots[n % len(bots)], "签到") for n in range(200)))
    successes = [r for r in replies if r.startswith("✅")]
    assert len(successes) == 1, successes
    assert done(successes[0]) == {"name": "小明", "position": 1, "streak": 1, "points": 10, "bonus": "",
                                  "balance": 10, "level": "新人"}
    others = [already(r) for r in replies if not r.startswith("✅")]
    assert len(others) == 199
    assert all(o == {"name": "小明", "time": "09:00", "position": 1, "streak": 1, "balance": 10} for o in others)
    assert await checkin_rows(bots[0]) == [("g1", "u1", date(2026, 3, 1), 1, 10)]
    assert [(m, d, k) for m, d, k, _ in await ledger_rows(bots[0])] == [("u1", 10, "checkin")]
    assert await query(bots[0], select(CheckinDayCount.checkins)) == [(1,)]


async def test_200_concurrent_checkins_from_one_member_make_one(bot, clock):
    await _concurrent_checkins([bot])


async def test_200_concurrent_checkins_split_across_two_processes_make_one(db_url, bot_factory, clock):
    config = make_config(db_url)
    bots = list(await asyncio.gather(bot_factory(config), bot_factory(config)))
    await _concurrent_checkins(bots)


async def test_positions_under_concurrency_from_many_members_are_1_to_n(db_url, bot_factory, clock):
    config = make_config(db_url)
    bots = list(await asyncio.gather(bot_factory(config), bot_factory(config)))
    users = [f"m{n:02d}" for n in range(60)]
    # Every member twice at once: one of each pair is a duplicate and must not take a number.
    replies = await asyncio.gather(*(said(bots[n % 2], "签到", user=u, name=f"成员{u}")
                                     for n, u in enumerate(users + users)))
    wins = [done(r) for r in replies if r.startswith("✅")]
    assert sorted(w["name"] for w in wins) == sorted(f"成员{u}" for u in users)
    assert sorted(w["position"] for w in wins) == list(range(1, 61))
    rows = await checkin_rows(bots[0])
    assert sorted(p for *_, p, _ in rows) == list(range(1, 61))
    # The "already" answers name the same position the member's own check-in got.
    by_name = {w["name"]: w["position"] for w in wins}
    assert all(by_name[a["name"]] == a["position"] for a in (already(r) for r in replies if not r.startswith("✅")))
    assert await query(bots[0], select(CheckinDayCount.checkins)) == [(60,)]


async def test_a_retried_event_answers_as_the_first_time_and_pays_once(bot, monkeypatch):
    # The first attempt checks in, then delivering the reply fails (the process could as well have died).
    fail_delivery(bot, monkeypatch, ConnectionError("发送超时"))
    event = text_event("签到", at=MARCH_1 + timedelta(hours=9))
    assert await accept_and_process(bot, event) is None
    monkeypatch.undo()
    [claimed] = await inbox_store.claim(bot.runtime.db, [event.id], bot.runtime.inbox.lease)
    retry = event_from_json(claimed.event_type, claimed.payload, event_id=claimed.id)
    [reply] = await bot.runtime.inbox.process(retry, claimed.attempts)
    # The member never saw the first answer: the retry gives it, not "already checked in".
    assert done(reply.text) == {"name": "小明", "position": 1, "streak": 1, "points": 10, "bonus": "",
                                "balance": 10, "level": "新人"}
    assert len(await ledger_rows(bot)) == 1
    # A different message the same day is a second check-in attempt.
    [again] = await accept_and_process(bot, text_event("签到", at=MARCH_1 + timedelta(hours=10)))
    assert already(again.text)["position"] == 1
    assert await checkin_rows(bot) == [("g1", "u1", date(2026, 3, 1), 1, 10)]


# -- local days: the group's timezone, not the server's ------------------------------------------------


async def test_2359_and_0001_shanghai_time_are_two_checkins_with_the_server_clock_elsewhere(
        bot, clock, server_timezone):
    assert time.strftime("%Z", time.localtime()) in ("UTC", "PST", "PDT")
    clock.set(datetime(2026, 3, 1, 15, 59, tzinfo=UTC))  # 23:59 on 1 March in Asia/Shanghai
    assert done(await said(bot, "签到"))["streak"] == 1
    clock.set(datetime(2026, 3, 1, 16, 1, tzinfo=UTC))  # 00:01 on 2 March
    second = done(await said(bot, "签到"))
    assert (second["streak"], second["position"], second["balance"]) == (2, 1, 20)
    clock.set(datetime(2026, 3, 1, 23, 0, tzinfo=UTC))  # 07:00 on 2 March: still the same local day
    assert already(await said(bot, "签到"))["time"] == "00:01"
    assert [(d, p) for _, _, d, p, _ in await checkin_rows(bot)] == [(date(2026, 3, 1), 1), (date(2026, 3, 2), 1)]


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeWeCom]:
    # Requested before bot_factory so the bots stop before the fake does.
    async with FakeWeCom(corp_id=CORP_ID, corp_secret="s3cret") as server:
        yield server


def wecom_config(db_url: str, fake: FakeWeCom) -> Any:
    return make_config(db_url, wecom=wecom_env(api_base_url=fake.base_url, corp_secret="s3cret", agent_id=1000002,
                                               sync_welcome_template=False))


async def wecom_say(bot: Any, fake: FakeWeCom, msg_id: int, text: str, user: str, at: datetime) -> str:
    """A 1:1 message to the app at `at` (CreateTime); the text the app sent back with message/send."""
    sent = len(fake.sent_messages)
    params, body = callback(text_xml(msg_id, text, user=user, created=int(at.timestamp())))
    async with bot.http.post(bot.url("/wecom/callback"), params=params, data=body) as resp:
        assert (resp.status, await resp.text()) == (200, "success")
    await bot.runtime.inbox.drain()
    [message] = fake.sent_messages[sent:]
    assert message["touser"] == user
    return message["text"]["content"]


async def test_wecom_direct_checkins_follow_shanghai_days_from_createtime(db_url, fake, bot_factory,
                                                                          server_timezone):
    bot = await bot_factory(wecom_config(db_url, fake))
    late = datetime(2026, 3, 1, 15, 59, tzinfo=UTC)  # 23:59 Asia/Shanghai
    assert done(await wecom_say(bot, fake, 7001, "签到", "zhangsan", late))["streak"] == 1
    second = done(await wecom_say(bot, fake, 7002, "签到", "zhangsan", late + timedelta(minutes=2)))
    assert (second["streak"], second["balance"]) == (2, 20)
    assert already(await wecom_say(bot, fake, 7003, "打卡", "zhangsan", late + timedelta(hours=1)))["streak"] == 2
    assert [(g, d) for g, _, d, _, _ in await checkin_rows(bot)] == [("@direct", date(2026, 3, 1)),
                                                                      ("@direct", date(2026, 3, 2))]


async def test_wecom_direct_chat_checkin_counts_in_the_1to1_scope(db_url, fake, bot_factory):
    bot = await bot_factory(wecom_config(db_url, fake))
    now = datetime.now(UTC)
    first = done(await wecom_say(bot, fake, 7101, "签到", "zhangsan", now))
    second = done(await wecom_say(bot, fake, 7102, "/checkin", "lisi", now))
    assert (first["position"], second["position"]) == (1, 2)
    card = await wecom_say(bot, fake, 7103, "积分", "zhangsan", now)
    assert "💰 积分：10" in card and "✅ 今天已签到" in card
    # Replies in a 1:1 chat mention nobody; the scope is the door's 1:1 group.
    assert all("mentioned_list" not in m.get("text", {}) for m in fake.sent_messages)
    assert await query(bot, select(Group.channel, Group.external_id).join(Checkin, Checkin.group_id == Group.id)
                       .distinct()) == [("wecom", "@direct")]


async def test_a_group_with_its_own_timezone(bot, clock):
    # Members may not change it; a group admin can, with the zone's name in any case.
    assert await said(bot, "时区 Asia/Tokyo", group="tokyo") == "抱歉，「时区」只有群管理员可以使用哦。"
    refused = await said(bot, "时区 Mars/Olympus", group="tokyo", user="boss", role="admin")
    assert refused.startswith("⚠️ 不认识时区「Mars/Olympus」") and "用法：时区" in refused
    clock.set(datetime(2026, 3, 1, 15, 30, tzinfo=UTC))  # 00:30 on 2 March in Tokyo, 23:30 on 1 March in Shanghai
    changed = await said(bot, "时区 asia/tokyo", group="tokyo", user="boss", role="admin")
    assert changed.startswith("本群时区已设为 Asia/Tokyo，当地时间 2026-03-02 00:30")
    assert (await said(bot, "时区", group="tokyo", user="boss", role="admin")).startswith(
        "本群时区：Asia/Tokyo，当地时间 2026-03-02 00:30")
    assert (await said(bot, "时区", group="g1", user="boss", role="admin")).startswith(
        "本群时区：Asia/Shanghai（默认），当地时间 2026-03-01 23:30")

    done(await said(bot, "签到", group="tokyo"))
    done(await said(bot, "签到", group="g1"))
    clock.set(datetime(2026, 3, 1, 16, 30, tzinfo=UTC))  # 01:30 on 2 March in Tokyo, 00:30 in Shanghai
    assert already(await said(bot, "签到", group="tokyo"))["time"] == "00:30"
    assert done(await said(bot, "签到", group="g1"))["streak"] == 2
    assert [(g, d) for g, _, d, _, _ in await checkin_rows(bot)] == [
        ("g1", date(2026, 3, 1)), ("g1", date(2026, 3, 2)), ("tokyo", date(2026, 3, 2))]

    # Back to the bot's default; every change and attempt is in the audit log.
    assert (await said(bot, "时区 默认", group="tokyo", user="boss", role="admin")).startswith(
        "本群时区已恢复默认（Asia/Shanghai）")
    assert await query(bot, select(Group.timezone).where(Group.external_id == "tokyo")) == [(None,)]
    audit = await query(bot, select(AuditEntry.actor, AuditEntry.command, AuditEntry.args, AuditEntry.result)
                        .where(AuditEntry.group == "tokyo").order_by(AuditEntry.id))
    assert audit == [("u1", "时区", "Asia/Tokyo", "refused"), ("boss", "时区", "Mars/Olympus", "usage"),
                     ("boss", "时区", "asia/tokyo", "ok"), ("boss", "时区", "", "ok"), ("boss", "时区", "默认", "ok")]


# -- streaks, bonus tiers, cap ----------------------------------------------------------------------------


async def test_a_missed_day_breaks_the_streak(bot, clock):
    streaks = []
    for day in (1, 2, 3, 5, 6):
        clock.day(day)
        streaks.append(done(await said(bot, "签到"))["streak"])
    assert streaks == [1, 2, 3, 1, 2]
    # The day after, not checked in yet: the streak is still alive; a day later it is gone.
    clock.day(7)
    card = await said(bot, "积分")
    assert "🔥 连续签到：2 天" in card and "⏰ 今天还没签到" in card
    clock.day(8)
    assert "🔥 连续签到：0 天" in await said(bot, "积分")


async def test_streak_bonus_tiers_and_the_daily_cap(db_url, bot_factory, clock):
    bot = await bot_factory(make_config(db_url, checkin={"base_points": 10, "streak_bonus": "[[3, 5], [5, 12]]",
                                                         "daily_cap": 20}))
    earned = []
    for day in range(1, 8):
        clock.day(day)
        reply = done(await said(bot, "签到"))
        earned.append((reply["streak"], reply["points"], reply["bonus"]))
    assert earned == [
        (1, 10, ""), (2, 10, ""),
        (3, 15, "（含连续签到奖励 5 分）"), (4, 15, "（含连续签到奖励 5 分）"),
        # 10 + 12 is capped at 20.
        (5, 20, "（含连续签到奖励 10 分）"), (6, 20, "（含连续签到奖励 10 分）"), (7, 20, "（含连续签到奖励 10 分）"),
    ]
    assert [d for _, d, _, _ in await ledger_rows(bot)] == [10, 10, 15, 15, 20, 20, 20]
    assert done(await said(bot, "签到", user="u2"))["points"] == 10  # a new streak starts at the base again
    assert "💰 积分：110" in await said(bot, "积分")


# -- ledger, balance and level ----------------------------------------------------------------------------


async def test_balance_and_level_come_from_the_ledger(db_url, bot_factory, clock):
    bot = await bot_factory(make_config(db_url, checkin={"levels": '[[0, "新人"], [15, "活跃"], [30, "达人"]]'}))
    assert done(await said(bot, "签到"))["level"] == "新人"
    assert "🏅 等级：新人（再得 5 分升为「活跃」）" in await said(bot, "积分")
    assert await said(bot, "加分 @小明 25 活动奖励", user="boss", role="admin") == \
        "已给 小明 加 25 分（活动奖励），当前积分 35。"
    assert await said(bot, "扣分 小明 30 刷屏 广告", user="boss", role="admin") == \
        "已扣 小明 30 分（刷屏 广告），当前积分 5。"
    card = await said(bot, "积分")
    # Deductions lower the balance, never the level (35 points earned in all).
    assert "💰 积分：5\n🏅 等级：达人（最高等级）" in card
    refused = await said(bot, "扣分 @小明 6 刷屏", user="boss", role="admin")
    assert refused.startswith("⚠️ 小明 只有 5 分，不能扣 6 分")
    boss = (await query(bot, select(Member.id).where(Member.external_id == "boss")))[0][0]
    rows = await query(bot, select(PointsEntry.delta, PointsEntry.kind, PointsEntry.reason, PointsEntry.actor_id)
                       .order_by(PointsEntry.id))
    assert rows == [(10, "checkin", "每日签到（连续 1 天）", None), (25, "grant", "活动奖励", boss),
                    (-30, "deduct", "刷屏 广告", boss)]


async def test_deductions_may_go_below_zero_where_configured(db_url, bot_factory, clock):
    bot = await bot_factory(make_config(db_url, checkin={"allow_negative_balance": True}))
    await say(bot, "你好")
    assert await said(bot, "扣分 @小明 7 刷屏", user="boss", role="admin") == "已扣 小明 7 分（刷屏），当前积分 -7。"
    assert "💰 积分：-7\n🏅 等级：新人" in await said(bot, "积分")


async def test_grant_and_deduct_are_for_group_admins_checked_and_audited(bot, clock):
    await say(bot, "你好", user="u2")
    assert await said(bot, "加分 @小红 10 奖励") == "抱歉，「加分」只有群管理员可以使用哦。"
    for malformed, problem in (("加分 @小红", ""), ("加分 @小红 10", "请写上原因"), ("加分 @小红 0 奖励", "积分数要写成"),
                               ("加分 @小黑 10 奖励", "没有在本群找到「小黑」")):
        reply = await said(bot, malformed, user="boss", role="admin")
        assert reply.endswith("用法：加分 @成员 数量 原因") and problem in reply, reply
    assert await said(bot, "加分 @小红 10 奖励", user="boss", role="admin") == "已给 小红 加 10 分（奖励），当前积分 10。"
    audit = await query(bot, select(AuditEntry.source, AuditEntry.actor, AuditEntry.result, AuditEntry.detail)
                        .order_by(AuditEntry.id))
    assert [(s, a, r) for s, a, r, _ in audit] == [("chat", "u1", "refused")] + [("chat", "boss", "usage")] * 4 + [
        ("chat", "boss", "ok")]
    assert audit[-1][3] == "+10 to u2 (奖励); balance 10"
    assert [(m, d, k) for m, d, k, _ in await ledger_rows(bot)] == [("u2", 10, "grant")]


async def test_a_retried_grant_pays_once(bot, monkeypatch):
    await accept_and_process(bot, text_event("你好", user="u2", name="小红"))
    fail_delivery(bot, monkeypatch, ConnectionError("发送超时"))
    event = text_event("加分 @小红 10 奖励", user="boss", name="老王")
    bot.runtime.config.admins.bot_admins = ["boss"]
    assert await accept_and_process(bot, event) is None
    monkeypatch.undo()
    [claimed] = await inbox_store.claim(bot.runtime.db, [event.id], bot.runtime.inbox.lease)
    [reply] = await bot.runtime.inbox.process(event_from_json(claimed.event_type, claimed.payload,
                                                              event_id=claimed.id), claimed.attempts)
    assert reply.text == "已给 小红 加 10 分（奖励），当前积分 10。"
    assert [(m, d, k) for m, d, k, _ in await ledger_rows(bot)] == [("u2", 10, "grant")]


# -- the leaderboard --------------------------------------------------------------------------------------


async def test_points_leaderboard_shares_ranks_on_ties_and_adds_the_callers_own(db_url, bot_factory, clock):
    bot = await bot_factory(make_config(db_url, checkin={"leaderboard_size": 3}))
    points = {"a": 30, "b": 20, "c": 20, "d": 10, "e": 50}
    for user in points:
        await say(bot, "你好", user=user, name=f"阿{user.upper()}")
    for user, amount in points.items():
        await say(bot, f"加分 {user} {amount} 活动", user="boss", role="admin")
    # e has left the group: no longer ranked.
    status, _ = await bot.post_json("/api/simulator/leaves", {"group": "g1", "users": ["e"]})
    assert status == 200
    assert await said(bot, "排行", user="d", name="阿D") == "\n".join([
        "🏆 本群积分榜", "1. 阿A\u300030 分", "2. 阿B\u300020 分", "2. 阿C\u300020 分", "……", "4. 阿D\u300010 分（你）"])
    assert await said(bot, "/rank", user="c", name="阿C") == "\n".join([
        "🏆 本群积分榜", "1. 阿A\u300030 分", "2. 阿B\u300020 分", "2. 阿C\u300020 分（你）"])
    assert (await said(bot, "排行", user="boss", role="admin")).endswith("\n你还没有上榜，发送「签到」开始吧！")
    assert (await said(bot, "排行 乱写")).endswith("用法：排行 [积分|连续|签到]")


async def test_streak_and_monthly_checkin_leaderboards(bot, clock):
    days = {"a": [1, 2, 3], "b": [2, 3], "c": [3], "d": [1, 3], "f": [1, 2]}
    for day in (1, 2, 3):
        clock.day(day)
        for user, checked in days.items():
            if day in checked:
                await say(bot, "签到", user=user, name=f"阿{user.upper()}")
    # On day 3 f has not checked in yet, so f's streak (days 1-2) is still alive; d's is 1 (day 2 missed).
    assert await said(bot, "排行 连续", user="a", name="阿A") == "\n".join([
        "🔥 本群连续签到榜", "1. 阿A\u3000连续 3 天（你）", "2. 阿B\u3000连续 2 天", "2. 阿F\u3000连续 2 天",
        "4. 阿C\u3000连续 1 天", "4. 阿D\u3000连续 1 天"])
    # On day 4 f's streak is broken (day 3 missed); the others' are alive until they miss today.
    clock.day(4)
    assert await said(bot, "排行 连续", user="f", name="阿F") == "\n".join([
        "🔥 本群连续签到榜", "1. 阿A\u3000连续 3 天", "2. 阿B\u3000连续 2 天", "3. 阿C\u3000连续 1 天",
        "3. 阿D\u3000连续 1 天", "你还没有上榜，发送「签到」开始吧！"])
    clock.day(3, hour=20)
    assert await said(bot, "排行 签到", user="c", name="阿C") == "\n".join([
        "📅 本群本月签到榜", "1. 阿A\u30003 天", "2. 阿B\u30002 天", "2. 阿D\u30002 天", "2. 阿F\u30002 天",
        "5. 阿C\u30001 天（你）"])
    # A new month starts a new monthly board.
    clock.set(datetime(2026, 3, 31, 16, 30, tzinfo=UTC))  # 00:30 on 1 April
    done(await said(bot, "签到", user="b", name="阿B"))
    assert await said(bot, "/rank checkins", user="b", name="阿B") == "📅 本群本月签到榜\n1. 阿B\u30001 天（你）"


async def test_an_empty_leaderboard(bot, clock):
    assert await said(bot, "排行 连续") == "还没有人上榜，发送「签到」做第一个吧！"


# -- the command line ---------------------------------------------------------------------------------------


async def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], db_url: str,
              *args: str) -> tuple[int, str, str]:
    monkeypatch.setenv("QUNBOT_DATABASE_URL", db_url)
    monkeypatch.setenv("QUNBOT_DATABASE_AUTO_MIGRATE", "false")
    capsys.readouterr()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        code = await asyncio.to_thread(cli_main, list(args))
    finally:
        # The command sets up logging to (captured) stderr for the process: give the test its logging back.
        root.handlers[:], root.level = handlers, level
    out, err = capsys.readouterr()
    return code, out, err


async def test_points_cli_shows_grants_deducts_and_ranks_with_an_audit_trail(db_url, bot, clock, monkeypatch,
                                                                              capsys):
    monkeypatch.setattr("getpass.getuser", lambda: "ops-alice")
    monkeypatch.setattr("bot.cli.points.utcnow", lambda: clock.now)
    done(await said(bot, "签到"))
    done(await said(bot, "签到", user="u2"))

    code, out, _ = await cli(monkeypatch, capsys, db_url, "points", "grant", "--group", "g1", "u2", "95",
                             "--reason", "活动奖励")
    assert (code, out) == (0, "u2\t+95\tbalance 105\n")
    code, out, err = await cli(monkeypatch, capsys, db_url, "points", "deduct", "--group", "g1", "u1", "11",
                               "--reason", "刷屏")
    assert code == 2 and "u1 has 10 points; cannot deduct 11" in err
    code, out, _ = await cli(monkeypatch, capsys, db_url, "points", "deduct", "--group", "g1", "小红", "5",
                             "--reason", "刷屏")
    assert (code, out) == (0, "u2\t-5\tbalance 100\n")

    code, out, _ = await cli(monkeypatch, capsys, db_url, "points", "show", "--group", "g1", "u2")
    assert code == 0
    lines = dict(line.split("\t", 1) for line in out.splitlines())
    assert (lines["balance"], lines["earned"], lines["streak"], lines["month"]) == ("100", "105", "1", "1")
    assert lines["level"] == "活跃成员 (next: 核心成员 at 500)"
    code, out, _ = await cli(monkeypatch, capsys, db_url, "points", "ledger", "--group", "g1", "u2")
    assert [line.split("\t")[1:] for line in out.splitlines()] == [
        ["-5", "deduct", "刷屏"], ["+95", "grant", "活动奖励"], ["+10", "checkin", "每日签到（连续 1 天）"]]
    code, out, _ = await cli(monkeypatch, capsys, db_url, "points", "rank", "--group", "g1")
    assert out == "1\t小红\t100\n2\t小明\t10\n"
    code, out, _ = await cli(monkeypatch, capsys, db_url, "points", "rank", "--group", "g1", "--by", "streak")
    assert out == "1\t小明\t1\n1\t小红\t1\n"

    code, _, err = await cli(monkeypatch, capsys, db_url, "points", "show", "--group", "nope", "u1")
    assert code == 2 and "no group 'nope'" in err
    code, _, err = await cli(monkeypatch, capsys, db_url, "points", "grant", "--group", "g1", "u1", "0",
                             "--reason", "x")
    assert code == 2 and "AMOUNT must be between 1 and" in err

    audit = await query(bot, select(AuditEntry.source, AuditEntry.actor, AuditEntry.command, AuditEntry.result)
                        .order_by(AuditEntry.id))
    assert audit == [("cli", "ops-alice", "points grant", "ok"), ("cli", "ops-alice", "points deduct", "refused"),
                     ("cli", "ops-alice", "points deduct", "ok")]
    assert [(m, d, k) for m, d, k, _ in await ledger_rows(bot)] == [
        ("u1", 10, "checkin"), ("u2", 10, "checkin"), ("u2", 95, "grant"), ("u2", -5, "deduct")]


# -- configuration ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("env,key,message", [
    ({"QUNBOT_CHECKIN_LEVELS": '[[10, "新人"]]'}, "checkin.levels", "the first level must start at 0"),
    ({"QUNBOT_CHECKIN_LEVELS": '[[0, "新人"], [200, "活跃"], [100, "达人"]]'}, "checkin.levels", "sorted by points"),
    ({"QUNBOT_CHECKIN_LEVELS": '[[0, "新人"], [100, "新人"]]'}, "checkin.levels", "names must be different"),
    ({"QUNBOT_CHECKIN_LEVELS": "新人"}, "checkin.levels", "valid tuple"),
    ({"QUNBOT_CHECKIN_STREAK_BONUS": "[[7, 10], [3, 5]]"}, "checkin.streak_bonus", "sorted by days"),
    ({"QUNBOT_CHECKIN_STREAK_BONUS": "[[3, 10], [7, 5]]"}, "checkin.streak_bonus", "never shrink"),
    ({"QUNBOT_CHECKIN_STREAK_BONUS": "[[0, 5]]"}, "checkin.streak_bonus", "days must be >= 1"),
    ({"QUNBOT_CHECKIN_DAILY_CAP": "5"}, "checkin.daily_cap", "at least base_points (10)"),
])
def test_invalid_points_rules_are_refused_naming_the_key(env, key, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, environ=env)
    text = str(info.value)
    assert key in text and message in text, text


def test_points_rules_from_the_environment_as_json():
    cfg = load_config(None, environ={"QUNBOT_CHECKIN_LEVELS": '[[0,"新人"],[100,"活跃"]]',
                                     "QUNBOT_CHECKIN_STREAK_BONUS": "[]", "QUNBOT_CHECKIN_DAILY_CAP": "0"}).checkin
    assert (cfg.levels, cfg.streak_bonus, cfg.daily_cap) == ([(0, "新人"), (100, "活跃")], [], 0)
