"""Scheduled posts end to end: timezones, missed runs, two runtimes on one database, retries, quiet hours and
the daily cap, previews, chat commands with permissions, config-declared posts, and APScheduler driving it.

Every test runs on SQLite and on PostgreSQL (the `db_url` fixture) with the simulator door over real
sockets (its posts show in GET /api/simulator/messages) and, where a door must fail on cue, a fake door.
Time is driven by passing `now` to the service (the background jobs run on the real clock, years before
these tests' dates, so they never touch them).
"""

from __future__ import annotations

import asyncio
import re
import time as systime
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from bot.channels.base import Capabilities, Channel, PostFailed
from bot.config import ConfigError
from bot.events import Reply
from bot.push_spec import parse_schedule
from scheduler.push import PushService, next_runs, service
from storage import push as store
from storage.audit import AuditEntry
from storage.groups import Group, ensure_group
from storage.push import PushDelivery, PushPost, PushRun
from tests.conftest import make_config
from tests.test_lottery import cli, say

SHANGHAI = "Asia/Shanghai"
# 09:00 in Shanghai on 1 May 2030 is 01:00 UTC.
T0 = datetime(2030, 5, 1, 1, 0, tzinfo=UTC)
BEFORE = T0 - timedelta(hours=12)


# -- helpers -------------------------------------------------------------------------------------------


def push_of(bot: Any) -> PushService:
    found = service(bot.runtime)
    assert found is not None, "push service not started"
    return found


async def group_row(bot: Any, external: str, *, channel: str = "simulator", name: str | None = None,
                    tz: str | None = None) -> Group:
    async with bot.runtime.db.session() as session:
        group = await ensure_group(session, channel, external, name)
        if tz:
            await session.execute(update(Group).where(Group.id == group.id).values(timezone=tz))
            group.timezone = tz
    return group


async def add_post(bot: Any, schedule: str, content: str, *, groups: list[Group] | None = None, tz: str = SHANGHAI,
                   now: datetime = BEFORE, kind: str = "text", payload: dict | None = None, name: str | None = None,
                   target: str = store.GROUPS, tag: str | None = None) -> PushPost:
    """A post made by ops (as `qunbot push add` does), created at `now`."""
    fields = store.PostFields(schedule=parse_schedule(schedule, tz=tz, now=now), schedule_text=schedule, timezone=tz,
                              target_kind=target, content=content, kind=kind, payload=payload, target_tag=tag,
                              group_ids=tuple(g.id for g in groups or ()), name=name)  # type: ignore[misc]
    async with bot.runtime.db.session() as session:
        post = await store.create_post(session, fields, source=store.CLI, created_by="test", now=now)
    return post


async def fresh_post(bot: Any, post_id: int) -> PushPost:
    async with bot.runtime.db.session() as session:
        post = await store.get_post(session, post_id, include_removed=True)
    assert post is not None
    return post


async def transcript(bot: Any, group: str = "g1") -> list[str]:
    """What the bot posted into a simulated group, read through the simulator's HTTP API."""
    status, data = await bot.get_json("/api/simulator/messages", group=group)
    assert status == 200
    return [m["text"] for m in data["messages"] if m["from_bot"]]


async def deliveries(bot: Any, post_id: int | None = None) -> list[tuple[PushDelivery, PushRun, str]]:
    query = (select(PushDelivery, PushRun, Group.external_id).join(PushRun, PushRun.id == PushDelivery.run_id)
             .join(Group, Group.id == PushDelivery.group_id).order_by(PushRun.scheduled_at, Group.external_id))
    if post_id is not None:
        query = query.where(PushRun.post_id == post_id)
    async with bot.runtime.db.session() as session:
        return [(d, r, g) for d, r, g in (await session.execute(query)).all()]


async def runs(bot: Any, post_id: int) -> list[PushRun]:
    async with bot.runtime.db.session() as session:
        rows = await session.execute(select(PushRun).where(PushRun.post_id == post_id).order_by(PushRun.scheduled_at))
        return list(rows.scalars())


class FakeDoor(Channel):
    """A door that posts into memory and fails on cue: `script[group]` is a list of outcomes, one per try
    (an exception to raise, or None to succeed); an exhausted script succeeds."""

    name = "fake"
    title = "Fake door (tests)"
    reaches = "nothing"
    capabilities = Capabilities(can_reply=True, can_post_proactively=True, images=True)

    def __init__(self, runtime: Any) -> None:
        super().__init__(runtime)
        self.script: dict[str, list[Exception | None]] = {}
        self.posted: list[tuple[str, Reply]] = []
        self.tries: list[str] = []

    async def post(self, group: str, replies: list[Reply]) -> None:
        self.tries.append(group)
        outcomes = self.script.get(group) or []
        outcome = outcomes.pop(0) if outcomes else None
        if outcome is not None:
            raise outcome
        self.posted.extend((group, r) for r in replies)


@pytest.fixture
def fake_door() -> type[FakeDoor]:
    """The fake door's class; a test adds an instance to a runtime (`runtime.add_channel`)."""
    return FakeDoor


def config_in(db_url: str, timezone: str, **sections: Any) -> Any:
    """make_config, with the bot's default timezone set."""
    config = make_config(db_url, **sections)
    config.timezone = timezone
    return config


def quiet_off(**push: Any) -> dict[str, Any]:
    return {"quiet_hours": "", **push}


# -- timezones: the must-show ----------------------------------------------------------------------------


async def test_a_post_at_nine_in_shanghai_fires_at_one_utc_with_the_server_clock_in_utc(
        db_url, bot_factory, monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    systime.tzset()
    try:
        bot = await bot_factory(config_in(db_url, "UTC", push=quiet_off()))
        g1 = await group_row(bot, "g1", name="读书会", tz=SHANGHAI)
        post = await add_post(bot, "每天 09:00", "早上好，{group_name}！今天是{date} {weekday}", groups=[g1])
        push = push_of(bot)

        # The schedule, and the APScheduler trigger this process runs for it, read 09:00 in Shanghai.
        assert next_runs(post, 2, BEFORE) == [T0, T0 + timedelta(days=1)]
        await push.sync(BEFORE)
        job = bot.runtime.scheduler.get_job(f"push:{post.id}")
        assert job is not None and str(job.trigger.timezone) == SHANGHAI
        assert job.trigger.get_next_fire_time(None, BEFORE) == T0
        assert push.next_fire_time(post.id).astimezone(UTC).hour == 1  # the real next firing: 01:00 UTC

        assert await push.fire(post.id, now=T0 - timedelta(seconds=1)) == []  # 00:59:59 UTC: not yet
        [run_id] = await push.fire(post.id, now=T0)
        [run] = await runs(bot, post.id)
        assert (run.id, run.scheduled_at, run.late, run.status) == (run_id, T0, False, store.RUN_SCHEDULED)
        assert await push.deliver_due(now=T0 + timedelta(seconds=1)) == 1
        assert await transcript(bot) == ["早上好，读书会！今天是2030年5月1日 星期三"]
    finally:
        monkeypatch.undo()
        systime.tzset()


# -- missed runs -----------------------------------------------------------------------------------------


async def test_missed_runs_within_grace_are_sent_once_marked_late_and_older_ones_skipped(
        db_url, bot_factory, monkeypatch, capsys):
    config = make_config(db_url, push=quiet_off(grace_seconds=7200, daily_cap=0))
    bot = await bot_factory(config)
    g1 = await group_row(bot, "g1", name="读书会")
    hourly = await add_post(bot, "0 * * * *", "整点报时", groups=[g1], name="hourly", now=T0 - timedelta(hours=5))
    once = await add_post(bot, "2030-05-01 09:00", "一次性通知", groups=[g1], name="once",
                          now=T0 - timedelta(hours=5))

    # The bot was down from T0-5h to T0+30min; the catch-up at start-up (a sync) finds five hourly firings
    # and the one-time post.
    back = T0 + timedelta(minutes=30)
    await push_of(bot).sync(back)
    got = {(r.post_id, r.scheduled_at): r for p in (hourly, once) for r in await runs(bot, p.id)}
    hours = [T0 - timedelta(hours=n) for n in (4, 3, 2, 1, 0)]
    assert sorted(got) == sorted([(hourly.id, h) for h in hours] + [(once.id, T0)])
    for h in hours[:3]:  # 4h30, 3h30 and 2h30 before `back`: beyond the 2 h grace period
        assert (got[(hourly.id, h)].status, got[(hourly.id, h)].reason) == (store.RUN_SKIPPED, "missed")
    for key in [(hourly.id, hours[3]), (hourly.id, hours[4]), (once.id, T0)]:  # 1h30 and 30 min: late
        assert (got[key].status, got[key].late, got[key].reason) == (store.RUN_SCHEDULED, True, "late")

    # A second start (another process, or a restart) at the same moment records nothing again.
    other = await bot_factory(config)
    await push_of(other).sync(back)
    assert len(await runs(bot, hourly.id)) == 5 and len(await runs(bot, once.id)) == 1

    # Both outboxes deliver: each late run once.
    sent = await asyncio.gather(push_of(bot).deliver_due(now=back), push_of(other).deliver_due(now=back))
    assert sum(sent) == 3
    assert sorted(await transcript(bot)) == sorted(["整点报时", "整点报时", "一次性通知"])
    assert {(d.status, d.reason) for d, _, _ in await deliveries(bot)} == {(store.SENT, "late")}

    code, out, _ = await cli(monkeypatch, capsys, db_url, "push", "runs")
    assert code == 0
    assert out.count("LATE") == 3 and out.count("skipped: missed") == 3
    assert "2030-05-01 09:00 Asia/Shanghai (2030-05-01 01:00 UTC)" in out
    assert "summary (all posts): 6 runs (3 late, 3 skipped); 3 deliveries: 0 pending, 0 sending, 3 sent" in out
    code, out, _ = await cli(monkeypatch, capsys, db_url, "push", "runs", "hourly", "--limit", "2")
    assert out.count("run ") == 2 and "summary (post 1): 5 runs (2 late, 3 skipped)" in out


async def test_coalescing_sends_only_the_latest_missed_run(db_url, bot_factory):
    bot = await bot_factory(make_config(db_url, push=quiet_off(grace_seconds=86400, coalesce_missed=True)))
    g1 = await group_row(bot, "g1")
    post = await add_post(bot, "0 * * * *", "整点", groups=[g1], now=T0 - timedelta(hours=3, minutes=30))
    await push_of(bot).sync(T0 + timedelta(minutes=10))
    got = await runs(bot, post.id)
    assert [(r.status, r.reason) for r in got] == [(store.RUN_SKIPPED, "superseded by a later missed run")] * 3 + [
        (store.RUN_SCHEDULED, "late")]
    assert await push_of(bot).deliver_due(now=T0 + timedelta(minutes=10)) == 1


# -- several runtimes on one database --------------------------------------------------------------------


async def test_two_runtimes_record_and_deliver_every_run_once_per_group(db_url, bot_factory):
    config = make_config(db_url, push=quiet_off(daily_cap=0, concurrency=4))
    first, second = await bot_factory(config), await bot_factory(config)
    groups = [await group_row(first, f"g{n}", name=f"群{n}") for n in range(12)]
    start = T0 - timedelta(minutes=1)
    post = await add_post(first, "0 * * * *", "{group_name} 整点报时", target=store.ALL, now=start)
    tag_post = await add_post(first, "30 * * * *", "VIP 专享", target=store.TAG, tag="vip", now=start)
    async with first.runtime.db.session() as session:
        for g in groups[:5]:
            await store.add_tag(session, g.id, "vip")  # type: ignore[arg-type]
    hours = [T0 + timedelta(hours=n) for n in range(3)]
    for hour in hours:
        for now in (hour, hour + timedelta(minutes=30)):
            # Both processes' timers go off at once, and both run their catch-up: one run each time.
            await asyncio.gather(push_of(first).fire(post.id, now=now), push_of(second).fire(post.id, now=now),
                                 push_of(first).fire(tag_post.id, now=now), push_of(second).sync(now))
            await asyncio.gather(push_of(first).deliver_due(now=now), push_of(second).deliver_due(now=now))
    assert [r.scheduled_at for r in await runs(first, post.id)] == hours
    assert len(await runs(first, tag_post.id)) == 3
    rows = await deliveries(first)
    assert len(rows) == 3 * 12 + 3 * 5
    assert {(d.status, d.attempts) for d, _, _ in rows} == {(store.SENT, 1)}
    for n, g in enumerate(groups):
        expected = [f"群{n} 整点报时", *(["VIP 专享"] if n < 5 else [])] * 3
        assert sorted(await transcript(first, g.external_id)) == sorted(expected)


async def test_a_delivery_claimed_by_a_dead_process_is_taken_over_after_its_lease(db_url, bot_factory):
    config = make_config(db_url, push=quiet_off(lease_seconds=120))
    bot = await bot_factory(config)
    groups = [await group_row(bot, f"g{n}") for n in range(3)]
    post = await add_post(bot, "每天 09:00", "早安", groups=groups)
    await push_of(bot).fire(post.id, now=T0)
    # Another process claims all three and dies before sending.
    dead = await store.claim(bot.runtime.db, channels=["simulator"], holder="dead:1", now=T0, lease_seconds=120, limit=10)
    assert len(dead) == 3
    assert await push_of(bot).deliver_due(now=T0 + timedelta(seconds=119)) == 0  # the lease still holds
    assert await push_of(bot).deliver_due(now=T0 + timedelta(seconds=121)) == 3  # taken over
    assert {(d.status, d.attempts, d.lease_holder) for d, _, _ in await deliveries(bot)} == {(store.SENT, 2, None)}
    for g in groups:
        assert await transcript(bot, g.external_id) == ["早安"]
    # The dead process's late outcome is not recorded over the takeover.
    assert not await store.finish(bot.runtime.db, dead[0].id, "dead:1", status=store.FAILED, reason="x", now=T0)


async def test_a_door_only_another_process_has_waits_for_it_and_is_skipped_when_none_has_it(
        db_url, bot_factory, fake_door):
    config = make_config(db_url, push=quiet_off(unserved_timeout_seconds=600))
    bot = await bot_factory(config)
    g1 = await group_row(bot, "g1")
    elsewhere = await group_row(bot, "room", channel="fake")
    post = await add_post(bot, "每天 09:00", "早安", groups=[g1, elsewhere])
    push = push_of(bot)
    await push.fire(post.id, now=T0)
    assert await push.deliver_due(now=T0) == 1  # only its own door's delivery
    state = {g: d.status for d, _, g in await deliveries(bot)}
    assert state == {"g1": store.SENT, "room": store.PENDING}

    # A live worker with the fake door (another process) keeps it waiting for that process ...
    await store.heartbeat(bot.runtime.db, "other-process", ["fake"], T0 + timedelta(seconds=700))
    await push.sync(T0 + timedelta(seconds=710))
    assert {g: d.status for d, _, g in await deliveries(bot)}["room"] == store.PENDING
    # ... and that process sends it.
    other = await bot_factory(config)
    door = fake_door(other.runtime)
    other.runtime.add_channel(door)
    other_push = PushService(other.runtime)
    assert await other_push.deliver_due(now=T0 + timedelta(seconds=711)) == 1
    assert door.posted == [("room", Reply("早安"))]

    # Next day nobody has the fake door any more: skipped, with the reason, after the timeout.
    await push.fire(post.id, now=T0 + timedelta(days=1))
    await push.deliver_due(now=T0 + timedelta(days=1))
    await push.sync(T0 + timedelta(days=1, seconds=599))
    rows = [(d.status, d.reason) for d, r, g in await deliveries(bot) if g == "room" and r.scheduled_at > T0]
    assert rows == [(store.PENDING, "")]
    await push.sync(T0 + timedelta(days=1, seconds=601))
    rows = [(d.status, d.reason) for d, r, g in await deliveries(bot) if g == "room" and r.scheduled_at > T0]
    assert rows == [(store.SKIPPED, "no running process has the fake door enabled (waited 600 s)")]


# -- failures --------------------------------------------------------------------------------------------


async def test_transient_failures_are_retried_with_backoff_and_permanent_ones_recorded(
        db_url, bot_factory, fake_door):
    bot = await bot_factory(make_config(db_url, push=quiet_off(max_attempts=3, retry_base_seconds=10)))
    door = fake_door(bot.runtime)
    bot.runtime.add_channel(door)
    push = PushService(bot.runtime)
    names = ["busy", "badkey", "throttled", "broken", "slow"]
    groups = [await group_row(bot, n, channel="fake") for n in names]
    door.script = {"busy": [PostFailed("errcode -1: system busy")],
                   "badkey": [PostFailed("errcode 93000: invalid webhook url", permanent=True)],
                   "throttled": [PostFailed("errcode 45009: api freq out of limit", retry_after=30)] * 2,
                   "broken": [RuntimeError("connection reset")] * 5}
    post = await add_post(bot, "每天 09:00", "早安", groups=groups)
    await push.fire(post.id, now=T0)
    assert await push.deliver_due(now=T0) == 5

    def state() -> dict[str, tuple[str, int, str]]:
        return {g: (d.status, d.attempts, d.reason) for d, _, g in rows}

    rows = await deliveries(bot)
    assert state()["busy"] == (store.PENDING, 1, "attempt 1 failed: errcode -1: system busy; retry at 01:00:10 UTC")
    assert state()["badkey"] == (store.FAILED, 1, "errcode 93000: invalid webhook url")
    assert state()["throttled"] == (store.PENDING, 0, "rate limited, retry in 30 s: errcode 45009: api freq out of limit")
    assert state()["broken"][:2] == (store.PENDING, 1)
    assert state()["slow"][:2] == (store.SENT, 1)

    assert await push.deliver_due(now=T0 + timedelta(seconds=9)) == 0  # backoff not over
    assert await push.deliver_due(now=T0 + timedelta(seconds=10)) == 2  # busy (sent) and broken (again)
    assert await push.deliver_due(now=T0 + timedelta(seconds=30)) == 2  # throttled (throttled again), broken
    assert await push.deliver_due(now=T0 + timedelta(seconds=60)) == 1  # throttled: sent
    rows = await deliveries(bot)
    assert state()["busy"][:2] == (store.SENT, 2)
    assert state()["throttled"][:2] == (store.SENT, 1)
    assert state()["broken"] == (store.FAILED, 3, "gave up after 3 attempts: RuntimeError: connection reset")
    assert sorted(g for g, _ in door.posted) == ["busy", "slow", "throttled"]
    assert door.tries.count("broken") == 3 and door.tries.count("badkey") == 1


async def test_what_a_door_cannot_show_or_a_dismissed_group_is_skipped_with_the_reason(db_url, bot_factory):
    bot = await bot_factory(make_config(db_url, push=quiet_off()))
    g1, g2 = await group_row(bot, "g1"), await group_row(bot, "g2")
    async with bot.runtime.db.session() as session:
        await session.execute(update(Group).where(Group.id == g2.id).values(dismissed_at=BEFORE))
    image = await add_post(bot, "每天 09:00", "海报", groups=[g1, g2], kind="image",
                           payload={"url": "https://example.com/a.png"})
    text = await add_post(bot, "每天 09:00", "早安", groups=[g1, g2])
    push = push_of(bot)
    await push.sync(T0)
    await push.deliver_due(now=T0)
    got = {(r.post_id, g): (d.status, d.reason) for d, r, g in await deliveries(bot)}
    assert got == {(image.id, "g1"): (store.SKIPPED, "the simulator door cannot post images"),
                   (image.id, "g2"): (store.SKIPPED, "group dismissed"),
                   (text.id, "g1"): (store.SENT, ""),
                   (text.id, "g2"): (store.SKIPPED, "group dismissed")}
    assert await transcript(bot) == ["早安"]


# -- guardrails ------------------------------------------------------------------------------------------


async def test_quiet_hours_defer_to_their_end_and_the_daily_cap_skips_with_the_reason(db_url, bot_factory):
    bot = await bot_factory(config_in(db_url, "UTC", push={"quiet_hours": "22:00-08:00", "daily_cap": 5}))
    g1 = await group_row(bot, "g1", tz=SHANGHAI)
    push = push_of(bot)
    night = await add_post(bot, "每天 23:00", "晚安", groups=[g1])
    eleven = T0 + timedelta(hours=14)  # 23:00 in Shanghai
    await push.fire(night.id, now=eleven)
    assert await push.deliver_due(now=eleven) == 1
    [(d, _, _)] = await deliveries(bot, night.id)
    assert (d.status, d.attempts) == (store.PENDING, 0)
    assert d.reason == "quiet hours 22:00-08:00 (Asia/Shanghai): deferred to 2030-05-02 08:00"
    assert d.next_attempt_at == T0 + timedelta(hours=23)  # 08:00 in Shanghai
    assert await push.deliver_due(now=T0 + timedelta(hours=22, minutes=59)) == 0
    assert await push.deliver_due(now=T0 + timedelta(hours=23)) == 1
    assert await transcript(bot) == ["晚安"]

    # The group's admin sets a cap of 2 a day in chat; three posts that day: the third is skipped.
    [reply] = await say(bot, "定时 上限 2", "boss", role="owner")
    assert "上限已设为：2" in reply["text"]
    day = T0 + timedelta(days=2)  # 3 May, 09:00 in Shanghai
    posts = [await add_post(bot, f"每天 {h}:00", f"第{h}点", groups=[g1]) for h in (10, 11, 12)]
    for n, post in enumerate(posts, 1):
        await push.fire(post.id, now=day + timedelta(hours=n))
        await push.deliver_due(now=day + timedelta(hours=n))
    got = [(d.status, d.reason) for post in posts for d, _, _ in await deliveries(bot, post.id)]
    assert got == [(store.SENT, ""), (store.SENT, ""),
                   (store.SKIPPED, "daily cap reached: 2 posts on 2030-05-03 (Asia/Shanghai)")]
    # A new local day starts a new count.
    await push.fire(posts[0].id, now=day + timedelta(days=1, hours=1))
    assert await push.deliver_due(now=day + timedelta(days=1, hours=1)) == 1
    assert (await transcript(bot))[-1] == "第10点"

    # Quiet hours off for this group: a post at 23:00 goes out at once.
    [reply] = await say(bot, "定时 免打扰 关闭", "boss", role="owner")
    assert "不设免打扰" in reply["text"]
    await push.fire(night.id, now=eleven + timedelta(days=3))
    await push.deliver_due(now=eleven + timedelta(days=3))
    assert (await transcript(bot))[-1] == "晚安"


# -- preview ---------------------------------------------------------------------------------------------


async def test_preview_shows_the_next_runs_in_the_posts_timezone_and_the_content_for_a_group(
        db_url, bot, monkeypatch, capsys):
    for user, name in (("u1", "小明"), ("u2", "小红")):
        await bot.post_json("/api/simulator/joins", {"group": "g1", "users": [{"user": user, "name": name}]})
        await say(bot, "签到", user)
    code, out, err = await cli(
        monkeypatch, capsys, bot.runtime.config.database.url, "push", "add", "--name", "morning", "--schedule",
        "0 9 * * 1-5", "--timezone", SHANGHAI, "--group", "g1",
        "--text", "{group_name} 早上好！今天{date}{weekday}，{member_count} 位成员，昨天 {yesterday_checkins} 人签到，"
                  "距 2099 年还有 {days_until:2099-01-01} 天")
    assert code == 0, err
    code, out, _ = await cli(monkeypatch, capsys, bot.runtime.config.database.url, "push", "preview", "morning",
                             "--count", "4")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "next runs of post 1 (cron 0 9 * * 1-5, Asia/Shanghai):"
    times = [datetime.strptime(line.strip()[:16], "%Y-%m-%d %H:%M").replace(tzinfo=ZoneInfo(SHANGHAI))
             for line in lines[1:5]]
    assert all(t.hour == 9 and t.minute == 0 and t.weekday() < 5 for t in times) and times == sorted(times)
    assert all(f"({t.astimezone(UTC):%Y-%m-%d} 01:00 UTC)" in line for t, line in zip(times, lines[1:5], strict=True))
    first = times[0]
    today = datetime.now(ZoneInfo(SHANGHAI)).date()
    checkins = 2 if first.date() - timedelta(days=1) == today else 0
    weekday = "星期一 星期二 星期三 星期四 星期五 星期六 星期日".split()[first.weekday()]
    days = (datetime(2099, 1, 1).date() - first.date()).days
    assert lines[5] == "content for simulator/g1 (演示群), text:"
    assert lines[6] == (f"演示群 早上好！今天{first.year}年{first.month}月{first.day}日{weekday}，2 位成员，"
                        f"昨天 {checkins} 人签到，距 2099 年还有 {days} 天")

    [reply] = await say(bot, "定时 预览 1", "boss", role="owner")  # not the group's own post
    assert "本群没有编号为 1 的定时推送" in reply["text"]


# -- chat commands ---------------------------------------------------------------------------------------


async def test_admins_manage_their_own_groups_posts_in_chat_members_are_refused(bot):
    refused = await say(bot, "定时 添加 每天 9:00 早上好", "u1")
    assert refused[0]["text"] == "抱歉，「定时」只有群管理员可以使用哦。"
    [created] = await say(bot, "定时 添加 每天 9:00 早上好，今天是{date}！\n记得签到", "boss", role="owner")
    assert created["text"].startswith("⏰ 定时推送已添加（编号 1）\n时间：每天 9:00（Asia/Shanghai）\n下次发送：")
    async with bot.runtime.db.session() as session:
        post = await store.get_post(session, 1)
    assert post is not None and post.content == "早上好，今天是{date}！\n记得签到"  # as typed, line break kept
    assert (post.source, post.cron, post.timezone) == (store.CHAT, "0 9 * * *", SHANGHAI)
    assert push_of(bot).next_fire_time(1) is not None  # its timer runs at once

    [listing] = await say(bot, "定时", "boss")
    assert "【1】✅ 每天 9:00" in listing["text"] and "免打扰：22:00-08:00" in listing["text"]
    [preview] = await say(bot, "定时 预览 1", "boss")
    assert "接下来的发送时间（Asia/Shanghai）：\n• " in preview["text"] and "记得签到" in preview["text"]

    # Malformed: the usage hint with what is wrong.
    [bad] = await say(bot, "定时 添加 每天 25:00 早上好", "boss")
    assert bad["text"].startswith("⚠️ 看不懂时间") and "用法：定时 [列表]" in bad["text"]
    [bad] = await say(bot, "定时 添加 每天 9:00 {名字}你好", "boss")
    assert "不认识的变量 {名字}" in bad["text"]
    [bad] = await say(bot, "定时 添加 每天 9:00", "boss")
    assert "请写上时间和要发送的内容" in bad["text"]
    [bad] = await say(bot, "定时 添加 2020-01-01 09:00 过去", "boss")
    assert "已经过去了" in bad["text"]
    [bad] = await say(bot, "定时 暂停", "boss")
    assert "请给出定时推送的编号" in bad["text"]
    [bad] = await say(bot, "定时 飞", "boss")
    assert "没有「飞」这个操作" in bad["text"]

    # Another group's admin cannot touch it.
    [other] = await say(bot, "定时 暂停 1", "boss2", group="g2", role="owner")
    assert "本群没有编号为 1 的定时推送" in other["text"]

    [paused] = await say(bot, "定时 暂停 1", "boss")
    assert paused["text"] == "⏸ 定时推送 1 已暂停。恢复：定时 恢复 1"
    assert push_of(bot).next_fire_time(1) is None
    [resumed] = await say(bot, "定时 恢复 1", "boss")
    assert resumed["text"].startswith("▶️ 定时推送 1 已恢复，下次发送：")
    [removed] = await say(bot, "定时 删除 1", "boss")
    assert removed["text"] == "🗑 定时推送 1 已删除。"
    [listing] = await say(bot, "定时", "boss")
    assert "本群还没有定时推送" in listing["text"]

    async with bot.runtime.db.session() as session:
        audit = [(a.actor, a.command, a.result) for a in
                 (await session.execute(select(AuditEntry).order_by(AuditEntry.id))).scalars()]
    assert ("u1", "定时", "refused") in audit and ("boss", "定时", "usage") in audit
    assert audit.count(("boss", "定时", "ok")) >= 5


async def test_a_retried_add_command_adds_one_post(bot):
    body = {"group": "g1", "user": "boss", "name": "老板", "role": "owner", "text": "定时 添加 每2小时 喝水"}
    status, first = await bot.post_json("/api/simulator/messages", body)
    assert status == 200
    from bot.events import Command, Person

    # The inbox runs the very same event again (a crash after processing, before it was marked done).
    event = Command("simulator", "again", "g1", datetime.now(UTC), sender=Person("boss", "老板"),
                    text=body["text"], name="定时", args="添加 每2小时 喝水")
    async with bot.runtime.db.session() as session:
        post = await store.get_post(session, 1)
    assert post is not None
    event.id = post.event_id
    ctx = await bot.runtime.dispatcher.dispatch(event, bot.runtime.channels["simulator"])
    assert ctx.replies[0].text == first["replies"][0]["text"]
    async with bot.runtime.db.session() as session:
        assert len(await store.list_posts(session)) == 1


# -- config-declared posts -------------------------------------------------------------------------------


def _config_posts(content: str = "早上好 {group_name}", **extra: Any) -> str:
    import json

    posts = [{"name": "morning", "schedule": "0 9 * * *", "groups": ["g1", "simulator:g2"], "content": content},
             {"name": "vip", "schedule": "every 2h", "tag": "vip", "kind": "markdown", "content": "**VIP**", **extra}]
    return json.dumps(posts, ensure_ascii=False)


async def test_config_declared_posts_are_upserted_by_name_at_start_up(db_url, bot_factory):
    bot = await bot_factory(make_config(db_url, push={"posts": _config_posts()}))
    async with bot.runtime.db.session() as session:
        posts = {p.name: p for p in await store.list_posts(session)}
        groups = [g.external_id for g in await store.listed_groups(session, posts["morning"].id)]  # type: ignore[arg-type]
    assert set(posts) == {"morning", "vip"} and {p.source for p in posts.values()} == {store.CONFIG}
    assert (posts["morning"].cron, posts["morning"].timezone, groups) == ("0 9 * * *", SHANGHAI, ["g1", "g2"])
    assert (posts["vip"].interval_seconds, posts["vip"].target_tag, posts["vip"].kind) == (7200, "vip", "markdown")
    assert set(push_of(bot).timers) == {p.id for p in posts.values()}

    # The same config again (a second process, a restart): nothing changes.
    again = await bot_factory(make_config(db_url, push={"posts": _config_posts()}))
    async with again.runtime.db.session() as session:
        same = {p.name: p for p in await store.list_posts(session)}
    assert {n: (p.id, p.revision) for n, p in same.items()} == {n: (p.id, p.revision) for n, p in posts.items()}

    # Changed content: the same post, a new revision; a post dropped from the file is removed.
    import json

    changed = json.loads(_config_posts("早安 {group_name}"))[:1]
    third = await bot_factory(make_config(db_url, push={"posts": json.dumps(changed, ensure_ascii=False)}))
    async with third.runtime.db.session() as session:
        live = {p.name: p for p in await store.list_posts(session)}
        vip = await store.get_post(session, posts["vip"].id, include_removed=True)
    assert list(live) == ["morning"] and live["morning"].id == posts["morning"].id
    assert (live["morning"].content, live["morning"].revision) == ("早安 {group_name}", posts["morning"].revision + 1)
    assert vip is not None and vip.removed_at is not None
    # The first process's sync follows the change.
    await push_of(bot).sync()
    assert set(push_of(bot).timers) == {posts["morning"].id}


@pytest.mark.parametrize(("posts", "message"), [
    ('[{"name": "a", "schedule": "每天 25:00", "all": true, "content": "x"}]', "push.posts.0.schedule"),
    ('[{"name": "a", "schedule": "0 9 * * *", "all": true, "content": "{nope}"}]', "unknown variable {nope}"),
    ('[{"name": "a", "schedule": "0 9 * * *", "all": true, "tag": "x", "content": "x"}]', "exactly one of"),
    ('[{"name": "a", "schedule": "0 9 * * *", "all": true, "kind": "image", "payload": {}}]', "an image needs"),
    ('[{"name": "a", "schedule": "0 9 * * *", "all": true, "content": "x"},'
     ' {"name": "a", "schedule": "0 8 * * *", "all": true, "content": "y"}]', "post names must be different"),
])
def test_bad_config_posts_are_refused_naming_the_key(posts, message):
    with pytest.raises(ConfigError) as exc:
        make_config("sqlite:///x.db", push={"posts": posts})
    assert message in str(exc.value) and "push.posts" in str(exc.value)


def test_bad_push_settings_are_refused():
    with pytest.raises(ConfigError, match=r"push.quiet_hours .*22:00-08:00"):
        make_config("sqlite:///x.db", push={"quiet_hours": "night"})
    with pytest.raises(ConfigError, match=r"push.lease_seconds .*send_timeout_seconds"):
        make_config("sqlite:///x.db", push={"send_timeout_seconds": 60, "lease_seconds": 30})


# -- APScheduler drives it, on the real clock ------------------------------------------------------------


async def test_the_timer_fires_a_post_on_time_and_the_outbox_posts_it(db_url, bot_factory):
    bot = await bot_factory(make_config(db_url, push=quiet_off(sync_interval_seconds=3600)))
    g1 = await group_row(bot, "g1")
    now = datetime.now(UTC)
    post = await add_post(bot, "2099-01-01 09:00", "准时到达", groups=[g1], now=now)
    # A one-time post due in a moment (minutes are the finest a person types; the table takes any time).
    due = now + timedelta(seconds=1.5)
    async with bot.runtime.db.session() as session:
        await session.execute(update(PushPost).where(PushPost.id == post.id).values(run_at=due))
    await push_of(bot).refresh(post.id)  # what the chat command does after a change; else the next sync
    assert push_of(bot).next_fire_time(post.id) == due
    deadline = asyncio.get_running_loop().time() + 15
    while await transcript(bot) != ["准时到达"]:
        assert asyncio.get_running_loop().time() < deadline, "the post never arrived"
        await asyncio.sleep(0.1)
    [run] = await runs(bot, post.id)
    assert run.scheduled_at == due and not run.late
    [(d, _, _)] = await deliveries(bot, post.id)
    assert d.status == store.SENT and d.sent_at is not None and d.sent_at - due < timedelta(seconds=5)


async def test_posts_changed_from_the_cli_reach_a_running_bot_at_its_next_sync(db_url, bot, monkeypatch, capsys):
    url = bot.runtime.config.database.url
    code, out, err = await cli(monkeypatch, capsys, url, "push", "add", "--schedule", "每天 08:00", "--tag", "vip",
                               "--text", "hello")
    assert code == 0, err
    push = push_of(bot)
    await push.sync()
    assert push.next_fire_time(1) is not None
    code, out, _ = await cli(monkeypatch, capsys, url, "push", "pause", "1")
    assert (code, out.strip()) == (0, "post 1 paused")
    await push.sync()
    assert push.next_fire_time(1) is None and 1 not in push.timers
    await cli(monkeypatch, capsys, url, "push", "resume", "1")
    await push.sync()
    assert push.next_fire_time(1) is not None
    code, out, _ = await cli(monkeypatch, capsys, url, "push", "list")
    assert re.search(r"^1\ton\tcron 0 8 \* \* \* \(Asia/Shanghai\)\ttag vip\tnext ", out, re.M)
    code, _, err = await cli(monkeypatch, capsys, url, "push", "add", "--schedule", "0 9 * * *", "--all",
                             "--text", "{oops}")
    assert code == 2 and "unknown variable {oops}" in err
    code, out, _ = await cli(monkeypatch, capsys, url, "push", "tag", "add", "vip", "--group", "g1", "--group", "g2")
    assert out.splitlines() == ["simulator/g1 tagged vip", "simulator/g2 tagged vip"]
    code, out, _ = await cli(monkeypatch, capsys, url, "push", "limits", "--group", "g1", "--quiet-hours", "off",
                             "--daily-cap", "3")
    assert out.strip() == "simulator/g1: quiet hours none (Asia/Shanghai); daily cap 3"
    async with bot.runtime.db.session() as session:
        audit = [(a.source, a.command, a.result) for a in (await session.execute(select(AuditEntry))).scalars()]
    assert ("cli", "push add", "ok") in audit and ("cli", "push pause", "ok") in audit
    assert ("cli", "push add", "usage") in audit and ("cli", "push limits", "ok") in audit


class ReplyOnlyDoor(Channel):
    """A door that answers but cannot post on its own (like the smart bot's HTTP callback)."""

    name = "replyonly"
    title = "Reply-only door (tests)"
    capabilities = Capabilities(can_reply=True)


async def test_chat_posts_are_refused_where_they_could_never_be_delivered(bot):
    from bot.events import Person, TextMessage

    door = ReplyOnlyDoor(bot.runtime)
    owner = Person("boss", "老板", role="owner")
    event = TextMessage("replyonly", "k1", "room1", datetime.now(UTC), sender=owner, text="定时 添加 每天 9:00 早上好")
    ctx = await bot.runtime.dispatcher.dispatch(event, door)
    assert [r.text for r in ctx.replies] == ["抱歉，机器人在这个群（replyonly）不能主动发消息，定时推送无法送达。"]
    direct = TextMessage("replyonly", "k2", None, datetime.now(UTC), sender=owner, text="定时 添加 每天 9:00 早上好")
    ctx = await bot.runtime.dispatcher.dispatch(direct, door)
    assert [r.text for r in ctx.replies] == ["定时推送只能在群里设置。"]
    async with bot.runtime.db.session() as session:
        assert await store.list_posts(session) == []


async def test_pausing_a_post_skips_what_it_still_had_waiting(db_url, bot_factory, monkeypatch, capsys):
    bot = await bot_factory(config_in(db_url, "UTC", push={"quiet_hours": "22:00-08:00"}))
    g1 = await group_row(bot, "g1", tz=SHANGHAI)
    post = await add_post(bot, "每天 23:00", "晚安", groups=[g1], name="night")
    eleven = T0 + timedelta(hours=14)
    await push_of(bot).fire(post.id, now=eleven)
    await push_of(bot).deliver_due(now=eleven)  # deferred to 08:00
    code, out, _ = await cli(monkeypatch, capsys, db_url, "push", "pause", "night")
    assert (code, out.strip()) == (0, "post 1 paused")
    assert await push_of(bot).deliver_due(now=T0 + timedelta(hours=23)) == 0
    assert [(d.status, d.reason) for d, _, _ in await deliveries(bot)] == [(store.SKIPPED, "post paused")]
    assert await transcript(bot) == []
