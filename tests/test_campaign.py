"""Campaigns end to end: phases gate their posts, countdowns read the campaign's timezone, milestone reminders
go out once across two runtimes (to a group, and one to one through the WeCom app against the fake WeCom
server) with failures on record, the summary's figures against seeded data, the CLI, and the 活动 command's
permissions.

Every test runs on SQLite and on PostgreSQL (the `db_url` fixture), over real sockets. Time is driven by
passing `now` (the background jobs run on the real clock, years before these tests' dates).
"""

from __future__ import annotations

import asyncio
import re
import time as systime
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio
from sqlalchemy import select, update

from bot.channels.base import PostFailed
from bot.config import ConfigError, load_config
from bot.events import Reply
from bot.push_spec import parse_schedule
from scheduler.campaign import run_reminders, settings_of
from scheduler.lottery import run_due_draws
from scheduler.push import PushService
from storage import campaign as store
from storage import lottery as lottery_store
from storage import push as push_store
from storage.activity import record_activity
from storage.audit import AuditEntry
from storage.campaign import BURST, LONGTAIL, REVIEW, WARMUP, CampaignReminder
from storage.checkin import Checkin
from storage.groups import Group, ensure_member
from storage.lottery import Lottery, PrizeSpec
from tests.conftest import make_config
from tests.fakes.wecom_server import FakeWeCom
from tests.test_lottery import cli, say
from tests.test_push import FakeDoor, config_in, fresh_post, group_row, push_of, quiet_off, runs, transcript
from tests.wecom_helpers import CORP_ID, wecom_env

SHANGHAI = "Asia/Shanghai"
BEFORE = datetime(2030, 4, 30, 1, 0, tzinfo=UTC)  # 09:00 on 30 April in Shanghai


def may(day: int) -> date:
    return date(2030, 5, day)


def at_shanghai(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2030, 5, day, hour, minute, tzinfo=ZoneInfo(SHANGHAI)).astimezone(UTC)


async def make_campaign(bot: Any, *, groups: list[Group], phases: dict[str, tuple[date, date]], name: str = "may",
                        title: str = "五月大促", key: date = may(5), now: datetime = BEFORE,
                        **extra: Any) -> store.Plan:
    """A campaign made by ops (as `qunbot campaign add` does), created at `now`."""
    fields = store.CampaignFields(name=name, title=title, timezone=SHANGHAI, key_date=key, phases=phases,
                                  target_kind=store.GROUPS, group_ids=tuple(g.id for g in groups),  # type: ignore[misc]
                                  **{"key_name": "开售", **extra})
    async with bot.runtime.db.session() as session:
        campaign = await store.create_campaign(session, fields, created_by="test", now=now)
        return await store.load_plan(session, campaign)


async def campaign_post(bot: Any, plan: store.Plan, phase: str | None, schedule: str, content: str,
                        now: datetime = BEFORE) -> push_store.PushPost:
    """A post of the campaign (and phase), with the campaign's groups (as `qunbot push add --campaign`)."""
    async with bot.runtime.db.session() as session:
        targets = await store.post_targets(session, plan.campaign)
        fields = push_store.PostFields(schedule=parse_schedule(schedule, tz=SHANGHAI, now=now), schedule_text=schedule,
                                       timezone=SHANGHAI, content=content, campaign_id=plan.id, phase=phase, **targets)
        return await push_store.create_post(session, fields, source=push_store.CLI, created_by="test", now=now)


def spy_posts(bot: Any, channel: str = "simulator") -> list[tuple[str, Reply]]:
    """Record what a door is asked to post (mentions included), then post it."""
    posts: list[tuple[str, Reply]] = []
    door = bot.runtime.channels[channel]
    original = door.post

    async def post(group: str, replies: list[Reply]) -> None:
        posts.extend((group, r) for r in replies)
        await original(group, replies)

    door.post = post
    return posts


async def reminders(bot: Any) -> dict[str, tuple[str, int, str]]:
    async with bot.runtime.db.session() as session:
        rows = (await session.execute(select(CampaignReminder).order_by(CampaignReminder.id))).scalars()
        return {r.milestone: (r.status, r.attempts, r.reason) for r in rows}


# -- phases gate posts -----------------------------------------------------------------------------------


async def test_a_post_fires_only_on_its_phases_days_in_the_campaigns_timezone(db_url, bot_factory, monkeypatch, capsys):
    bot = await bot_factory(config_in(db_url, "UTC", push=quiet_off(daily_cap=0, grace_seconds=7200)))
    g1 = await group_row(bot, "g1", name="读书会")
    plan = await make_campaign(bot, groups=[g1], phases={WARMUP: (may(1), may(2)), BURST: (may(4), may(5))})
    warm = await campaign_post(bot, plan, WARMUP, "每天 09:00", "预热")
    # 07:30 in Shanghai is 23:30 UTC the day before: the phase's days are Shanghai's days.
    burst = await campaign_post(bot, plan, BURST, "每天 07:30", "爆发")
    # No phase: every day of the campaign, the gap between its phases included; {phase} says where it is.
    whole = await campaign_post(bot, plan, None, "每天 12:00", "{phase}")
    push = push_of(bot)
    clock = datetime(2030, 4, 29, tzinfo=UTC)
    while clock < datetime(2030, 5, 8, tzinfo=UTC):  # the bot runs for nine days, its sync every hour
        await push.sync(clock)
        clock += timedelta(hours=1)
    assert [r.scheduled_at for r in await runs(bot, warm.id)] == [at_shanghai(1, 9), at_shanghai(2, 9)]
    assert [r.scheduled_at for r in await runs(bot, burst.id)] == [at_shanghai(4, 7, 30), at_shanghai(5, 7, 30)]
    assert [r.scheduled_at for r in await runs(bot, whole.id)] == [at_shanghai(d, 12) for d in range(1, 6)]
    assert await push.deliver_due(now=clock) == 9
    assert sorted(await transcript(bot)) == sorted(["预热"] * 2 + ["爆发"] * 2 + ["预热", "预热", "两个阶段之间", "爆发", "爆发"])

    # Ops add a post to the burst phase from the command line: it takes the campaign's groups, and its
    # preview starts on the phase's first day.
    code, out, err = await cli(monkeypatch, capsys, db_url, "push", "add", "--campaign", "may", "--phase", "爆发",
                               "--schedule", "每天 20:00", "--text", "{campaign}：距{days_until:开售}天")
    assert code == 0, err
    assert "-> groups simulator/g1" in out and "phase 爆发: fires only from 2030-05-04 to 2030-05-05" in out
    assert "2030-05-04 20:00 Asia/Shanghai (2030-05-04 12:00 UTC)\n  2030-05-05 20:00" in out
    assert "2030-05-06" not in out and "五月大促：距1天" in out
    code, _, err = await cli(monkeypatch, capsys, db_url, "push", "add", "--campaign", "may", "--phase", "长尾",
                             "--schedule", "每天 20:00", "--text", "x")
    assert code == 2 and "campaign may has no 长尾 phase (its phases: 预热, 爆发)" in err

    # Removing the campaign removes its posts (their runs stay).
    code, out, _ = await cli(monkeypatch, capsys, db_url, "campaign", "remove", "may")
    assert out.strip() == f"campaign {plan.id} may removed with its post(s) 1, 2, 3, 4"
    async with bot.runtime.db.session() as session:
        assert await push_store.list_posts(session) == []
    await push.sync(datetime(2030, 5, 4, 12, tzinfo=UTC))
    assert push.timers == {}


# -- countdowns ------------------------------------------------------------------------------------------


async def test_countdowns_count_on_the_campaigns_day_in_every_groups_timezone(db_url, bot_factory, monkeypatch, capsys):
    monkeypatch.setenv("TZ", "UTC")
    systime.tzset()
    try:
        bot = await bot_factory(config_in(db_url, "UTC", push=quiet_off()))
        la = await group_row(bot, "la", name="洛杉矶群", tz="America/Los_Angeles")
        tokyo = await group_row(bot, "tokyo", name="东京群", tz="Asia/Tokyo")
        plan = await make_campaign(bot, groups=[la, tokyo], key=may(10), dates={"直播": may(8)},
                                   phases={WARMUP: (may(1), may(3)), BURST: (may(4), may(10))})
        # 07:00 on 7 May in Shanghai: 23:00 UTC on 6 May, 16:00 on 6 May in Los Angeles, 08:00 on 7 May in Tokyo.
        fired = at_shanghai(7, 7)
        post = await campaign_post(bot, plan, BURST, "每天 07:00",
                                   "{group_name} {date}｜{campaign}·{phase}｜距开售 {days_left} 天｜"
                                   "直播 {days_until:直播}｜预热结束 {days_until:预热结束}｜开售 {days_until:开售}",
                                   now=fired - timedelta(hours=1))
        push = push_of(bot)
        assert fired == datetime(2030, 5, 6, 23, tzinfo=UTC)
        [run_id] = await push.fire(post.id, now=fired)
        assert await push.deliver_due(now=fired) == 2
        # The group's own day for {date}; the campaign's day (7 May: three days to the 10th) for the countdowns.
        assert await transcript(bot, "la") == ["洛杉矶群 2030年5月6日｜五月大促·爆发｜距开售 3 天｜直播 1｜预热结束 -4｜开售 3"]
        assert await transcript(bot, "tokyo") == ["东京群 2030年5月7日｜五月大促·爆发｜距开售 3 天｜直播 1｜预热结束 -4｜开售 3"]

        # A post's variables are checked when it is made: campaign ones only in a campaign's posts, and only
        # dates the campaign (or push.dates) names.
        code, _, err = await cli(monkeypatch, capsys, db_url, "push", "add", "--all", "--schedule", "每天 9:00",
                                 "--text", "还有 {days_left} 天")
        assert code == 2 and "unknown variable {days_left}" in err
        code, _, err = await cli(monkeypatch, capsys, db_url, "push", "add", "--campaign", "may", "--schedule",
                                 "每天 9:00", "--text", "{days_until:发布会}")
        assert code == 2 and "or of the campaign, got '发布会'" in err
    finally:
        monkeypatch.undo()
        systime.tzset()


# -- milestone reminders ---------------------------------------------------------------------------------


async def test_milestone_reminders_reach_ops_once_from_two_runtimes_and_late_ones_are_recorded(
        db_url, bot_factory, monkeypatch, capsys):
    config = make_config(db_url, campaign={"reminder_target": "simulator:ops", "reminder_days_before": "[3, 1]"})
    first, second = await bot_factory(config), await bot_factory(config)
    spied_first, spied_second = spy_posts(first), spy_posts(second)
    g1 = await group_row(first, "g1")
    await make_campaign(first, groups=[g1], phases={WARMUP: (may(1), may(3)), BURST: (may(4), may(5))},
                        owner="张三", ops_users=("zhangsan", "lisi"))
    assert spied_first == spied_second == []

    # 10:00 on 1 May in Shanghai: the warm-up starts. Both runtimes' jobs run at once, twice.
    sent = 0
    for _ in range(2):
        sent += sum(await asyncio.gather(run_reminders(first.runtime, "first", at_shanghai(1, 10)),
                                         run_reminders(second.runtime, "second", at_shanghai(1, 10))))
    assert sent == 1
    [text] = await transcript(first, "ops")
    assert text == ("📣 活动「五月大促」今天进入【预热】阶段（5月1日至5月3日）。\n距开售（5月5日）还有 4 天。\n"
                    "全部阶段：预热 5月1日至5月3日；爆发 5月4日至5月5日\n负责人：张三")
    [(group, reply)] = spied_first + spied_second
    assert (group, reply.mentions) == ("ops", ["zhangsan", "lisi"])

    # Both were down on 2 May (three days before the key date): found two days later, beyond the day of
    # grace, that reminder is recorded as skipped; 4 May's two milestones go out once each.
    await asyncio.gather(run_reminders(first.runtime, "first", at_shanghai(4, 10, 5)),
                         run_reminders(second.runtime, "second", at_shanghai(4, 10, 5)))
    texts = await transcript(first, "ops")
    assert len(texts) == 3
    [burst] = [t for t in texts if "【爆发】" in t]
    [countdown] = [t for t in texts if t.startswith("⏳")]
    assert burst.startswith("📣 活动「五月大促」今天进入【爆发】阶段（5月4日至5月5日）。\n距开售（5月5日）还有 1 天。")
    assert countdown == ("⏳ 活动「五月大促」：距开售（5月5日）还有 1 天。\n当前：爆发阶段（5月4日至5月5日）\n"
                        "全部阶段：预热 5月1日至5月3日；爆发 5月4日至5月5日\n负责人：张三")
    got = await reminders(first)
    assert got["phase:warmup"][:2] == got["phase:burst"][:2] == got["before:1"][:2] == (store.SENT, 1)
    assert got["before:3"] == (store.SKIPPED, 0, "missed: found 48.1 h after its time (grace 24.0 h)")
    for _ in range(2):
        await run_reminders(first.runtime, "first", at_shanghai(5, 10))
    assert len(await transcript(first, "ops")) == 3

    code, out, _ = await cli(monkeypatch, capsys, db_url, "campaign", "show", "may")
    assert code == 0
    assert re.search(r"^  phase:warmup\t2030-05-01 10:00 Asia/Shanghai\tsimulator:ops\tsent\tattempts 1$", out, re.M)
    assert re.search(r"^  before:3\t2030-05-02 10:00 Asia/Shanghai\tsimulator:ops\tskipped\tattempts 0\tmissed: ", out,
                     re.M)


@pytest_asyncio.fixture
async def fake() -> Any:
    async with FakeWeCom(corp_id=CORP_ID, corp_secret="s3cret") as server:
        yield server


async def test_reminders_message_ops_one_to_one_through_the_wecom_app_and_failures_are_recorded(
        db_url, bot_factory, fake):
    config = make_config(db_url, wecom=wecom_env(api_base_url=fake.base_url, corp_secret="s3cret", agent_id=1000002,
                                                 sync_welcome_template=False),
                         campaign={"reminder_target": "wecom:@direct", "reminder_days_before": "[]",
                                   "reminder_max_attempts": 2, "reminder_retry_seconds": 60})
    first, second = await bot_factory(config), await bot_factory(config)
    g1 = await group_row(first, "g1")
    phases = {BURST: (may(1), may(2)), REVIEW: (may(6), may(6))}
    await make_campaign(first, groups=[g1], phases=phases, ops_users=("zhangsan", "lisi"))
    await make_campaign(first, groups=[g1], phases=phases, name="quiet", title="无人值守")  # no ops users
    await make_campaign(first, groups=[g1], phases=phases, name="robot", title="机器人群", ops_users=("wangwu",),
                        reminder_target="robot:ops")  # a door no process has here

    async def both(now: datetime) -> None:
        await asyncio.gather(run_reminders(first.runtime, "first", now), run_reminders(second.runtime, "second", now))

    # The first try is refused by WeCom (not a rate limit): recorded, retried a minute later, then sent once.
    fake.fail_next("message/send", 60020)
    await both(at_shanghai(1, 10))
    async with first.runtime.db.session() as session:
        rows = {(r.campaign_id, r.milestone): r for r in (await session.execute(select(CampaignReminder))).scalars()}
    assert (rows[(1, "phase:burst")].status, rows[(1, "phase:burst")].attempts) == (store.PENDING, 1)
    assert "attempt 1 failed: WeComAPIError: /cgi-bin/message/send failed: errcode=60020" in rows[(1, "phase:burst")].reason
    assert (rows[(2, "phase:burst")].status, rows[(2, "phase:burst")].reason) == (
        store.SKIPPED, "no ops users to message one to one on wecom (--ops)")
    assert rows[(3, "phase:burst")].status == store.PENDING  # waits for a process with the robot door
    await both(at_shanghai(1, 10, 1))
    [message] = [m for m in fake.sent_messages if m["touser"] == "zhangsan|lisi"]
    assert message["text"]["content"].startswith("📣 活动「五月大促」今天进入【爆发】阶段（5月1日至5月2日）。")
    await both(at_shanghai(1, 10, 5))
    assert len(fake.sent_messages) == 1

    # The review phase: WeCom refuses twice, and two attempts is all this config allows.
    fake.fail_next("message/send", 60020, times=2)
    await both(at_shanghai(6, 10))
    await both(at_shanghai(6, 10, 1))
    await both(at_shanghai(6, 10, 5))
    async with first.runtime.db.session() as session:
        rows = {(r.campaign_id, r.milestone): r for r in (await session.execute(select(CampaignReminder))).scalars()}
    review = rows[(1, "phase:review")]
    assert (review.status, review.attempts) == (store.FAILED, 2)
    assert review.reason.startswith("gave up after 2 attempts: WeComAPIError: /cgi-bin/message/send failed: errcode=60020")
    # Nobody had the robot door for a day: its reminder is recorded as failed rather than left waiting.
    robot = rows[(3, "phase:burst")]
    assert (robot.status, robot.reason) == (store.FAILED, "not sent within 24.0 h of its time: no running process "
                                                          "sent it through the robot door")
    assert len(fake.sent_messages) == 1


def test_bad_campaign_settings_are_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"campaign.reminder_target .*robot:ops"):
        make_config("sqlite:///x.db", campaign={"reminder_target": "ops room"})
    with pytest.raises(ConfigError, match=r"campaign.reminder_time"):
        make_config("sqlite:///x.db", campaign={"reminder_time": "25:00"})


# -- the summary -----------------------------------------------------------------------------------------


async def test_the_summary_counts_posts_lotteries_and_check_ins_against_seeded_data(
        db_url, bot_factory, monkeypatch, capsys):
    bot = await bot_factory(config_in(db_url, "UTC", push=quiet_off(daily_cap=0, grace_seconds=3600)))
    door = FakeDoor(bot.runtime)
    bot.runtime.add_channel(door)
    push = PushService(bot.runtime)
    g1, g2, g3 = [await group_row(bot, g, channel="fake", tz=SHANGHAI) for g in ("g1", "g2", "g3")]
    plan = await make_campaign(bot, groups=[g1, g2], phases={WARMUP: (may(1), may(2)), BURST: (may(3), may(4))},
                               key=may(4))
    warm = await campaign_post(bot, plan, WARMUP, "每天 09:00", "预热")
    burst = await campaign_post(bot, plan, BURST, "每天 10:00", "爆发")
    other = await campaign_post(bot, plan, None, "每天 11:00", "不计入")  # removed before it ever fired
    code, _, _ = await cli(monkeypatch, capsys, db_url, "push", "remove", str(other.id))

    # 1 May: g1 gets the warm-up post, g2's door refuses it for good.
    door.script = {"g2": [PostFailed("errcode 93000: invalid webhook url", permanent=True)]}
    await push.fire(warm.id, now=at_shanghai(1, 9))
    await push.deliver_due(now=at_shanghai(1, 9))
    # 2 May: the bot was down at 09:00; back at 09:30 it sends both, late.
    await push.sync(at_shanghai(2, 9, 30))
    await push.deliver_due(now=at_shanghai(2, 9, 30))
    # 3 May: g2 has been dismissed: its delivery is skipped.
    async with bot.runtime.db.session() as session:
        await session.execute(update(Group).where(Group.id == g2.id).values(dismissed_at=at_shanghai(3, 8)))
    await push.fire(burst.id, now=at_shanghai(3, 10))
    await push.deliver_due(now=at_shanghai(3, 10))
    # 4 May: down from 09:00 to 13:00; 10:00 is beyond the hour of grace: that run is skipped as missed.
    await push.sync(at_shanghai(4, 13))
    assert await push.deliver_due(now=at_shanghai(4, 13)) == 0

    # Check-ins: the week before (24-30 April), the campaign's days so far (1-4 May), and some that must
    # not count (23 April, 5 May, and g3, which is not in the campaign).
    async with bot.runtime.db.session() as session:
        m = {u: (await ensure_member(session, "fake", u)).id for u in ("m1", "m2", "m3", "m4", "m5")}

        def checkin(group: Group, member: str, day: date) -> Checkin:
            return Checkin(group_id=group.id, member_id=m[member], day=day, at=BEFORE)

        session.add_all([checkin(g1, "m1", date(2030, 4, d)) for d in range(23, 31)])  # 7 in the week before
        session.add_all([checkin(g1, u, may(d)) for u in ("m1", "m2") for d in range(1, 6)])  # 8 during + 5 May
        session.add_all([checkin(g2, "m3", may(3)), checkin(g3, "m4", may(2))])
        for member, group, day in (("m1", g1, may(1)), ("m2", g1, may(2)), ("m3", g2, may(2)), ("m1", g1, may(2)),
                                   ("m5", g3, may(2)), ("m1", g1, date(2030, 4, 28))):
            await record_activity(session, group_id=group.id, member_id=m[member], day=day, at=BEFORE, command=False)

        # Lotteries: one drawn in g1 (3 entrants, 1 winner), one open in g2 (2 entrants, one also in the
        # first), one in g1 not linked to the campaign.
        async def lottery(group: Group, title: str, members: list[str], stock: int = 1) -> Lottery:
            real_now = datetime.now(UTC)
            made, _ = await lottery_store.create_lottery(session, group_id=group.id, title=title, keyword=f"kw{title}",
                                                         deadline=real_now + timedelta(hours=1),
                                                         prizes=[PrizeSpec("奖品", stock)], now=real_now)
            for user in members:
                await lottery_store.join(session, made, member_id=m[user], user=user, at=real_now, event_id=None,
                                         max_entrants=100)
            return made

        drawn = await lottery(g1, "预热抽奖", ["m1", "m2", "m3"])
        still_open = await lottery(g2, "爆发抽奖", ["m3", "m4"])
        unlinked = await lottery(g1, "日常抽奖", ["m1", "m2"])
        await session.execute(update(Lottery).where(Lottery.id.in_([drawn.id, unlinked.id]))  # type: ignore[union-attr]
                              .values(deadline=datetime.now(UTC) - timedelta(seconds=1)))
    await run_due_draws(bot.runtime, "drawer")
    for lot in (drawn, still_open, drawn):
        code, out, err = await cli(monkeypatch, capsys, db_url, "campaign", "lottery", "add", "may", str(lot.id))
        assert code == 0, err
    assert out.strip() == f"lottery {drawn.id} counted in campaign {plan.id} may (no change)"

    async with bot.runtime.db.session() as session:
        figures = await store.summary(session, plan, today=may(4))
        group_figures = await store.summary(session, plan, today=may(4), group_id=g1.id)
    assert (figures.posts, figures.runs, figures.runs_skipped) == (3, 4, 1)
    total = figures.total
    assert (total.sent, total.late, total.failed, total.skipped, total.pending) == (4, 2, 1, 1, 0)
    assert {p: (f.sent, f.late, f.failed, f.skipped) for p, f in figures.by_phase.items()} == {
        WARMUP: (3, 2, 1, 0), BURST: (1, 0, 0, 1)}
    assert [(lot.title, lot.status, lot.entrants, lot.winners) for lot in figures.lotteries] == [
        ("预热抽奖", lottery_store.DRAWN, 3, 1), ("爆发抽奖", lottery_store.OPEN, 2, 0)]
    assert (figures.entrants, figures.unique_entrants, figures.winners, figures.groups) == (5, 4, 1, 2)
    before, during = figures.before, figures.during
    assert during is not None
    assert (before.first, before.last, before.checkins, before.checkin_members, before.active_members) == (
        date(2030, 4, 24), date(2030, 4, 30), 7, 1, 1)
    assert (during.first, during.last, during.days, during.checkins, during.checkin_members) == (may(1), may(4), 4, 9, 3)
    assert (during.active_members, during.messages) == (3, 4)
    assert (during.checkins_per_day, before.checkins_per_day) == (2.25, 1.0)
    gt = group_figures.total
    assert (gt.sent, gt.late, gt.failed, gt.skipped) == (3, 1, 0, 0)
    assert [lot.title for lot in group_figures.lotteries] == ["预热抽奖"]
    assert group_figures.during is not None and group_figures.during.checkins == 8

    # The same figures from the command line, for everyone and for one group.
    import bot.cli.campaign as campaign_cli

    monkeypatch.setattr(campaign_cli, "utcnow", lambda: at_shanghai(4, 20))
    code, out, _ = await cli(monkeypatch, capsys, db_url, "campaign", "summary", "may")
    assert code == 0
    assert out.splitlines() == [
        f"campaign {plan.id} may: 五月大促 — 2 group(s), as of 2030-05-04 (Asia/Shanghai)",
        "posts: 3, runs: 4 (1 skipped: missed or superseded)",
        "deliveries: 4 sent (2 late), 1 failed, 1 skipped, 0 pending",
        "  预热: 3 sent (2 late), 1 failed, 0 skipped, 0 pending",
        "  爆发: 1 sent (0 late), 0 failed, 1 skipped, 0 pending",
        "lotteries: 2, 5 entries by 4 member(s), 1 winner(s)",
        f"  {drawn.id} 预热抽奖 (g1, drawn): 3 entrant(s), 1 winner(s)",
        f"  {still_open.id} 爆发抽奖 (g2, open): 2 entrant(s), 0 winner(s)",
        "before (2030-04-24..2030-04-30, 7 days): 7 check-ins by 1 member(s), 1.0/day; 1 active member(s), 1 message(s)",
        "during (2030-05-01..2030-05-04, 4 days): 9 check-ins by 3 member(s), 2.2/day (+125% per day); "
        "3 active member(s), 4 message(s)",
    ]
    code, out, _ = await cli(monkeypatch, capsys, db_url, "campaign", "summary", "may", "--group", "fake:g1")
    assert "group fake/g1" in out and "deliveries: 3 sent (1 late), 0 failed, 0 skipped, 0 pending" in out


# -- the command line ------------------------------------------------------------------------------------


async def test_campaigns_are_managed_from_the_command_line_with_mistakes_explained_and_audited(
        db_url, bot, monkeypatch, capsys):
    async def run(*args: str) -> tuple[int, str, str]:
        return await cli(monkeypatch, capsys, db_url, "campaign", *args)

    base = ["add", "--name", "d11", "--title", "双十一", "--group", "g1", "--group", "g2", "--key-date", "2030-11-11"]
    for extra, problem in [
        (["--phase", "预热=2030-11-01..11-09", "--phase", "爆发=2030-11-08..2030-11-11"],
         "phase 爆发 must start after 预热 ends"),
        (["--phase", "热身=2030-11-01"], "unknown phase '热身'"),
        (["--phase", "预热=2030-11-31"], "no such date '2030-11-31'"),
        (["--phase", "预热=2030-11-05..2030-11-01"], "ends before it starts"),
        (["--phase", "预热"], "--phase wants NAME=VALUE"),
        (["--phase", "预热=2030-11-01", "--remind-to", "ops"], "a reminder target looks like robot:ops"),
        (["--phase", "预热=2030-11-01", "--date", "爆发=2030-11-10"], "'爆发' cannot name a date"),
        (["--phase", "预热=2030-11-01", "--remind-days", "7,x"], "reminder days are whole numbers"),
        (["--phase", "预热=2030-11-01", "--timezone", "Mars/Base"], "unknown timezone 'Mars/Base'"),
    ]:
        code, _, err = await run(*base, *extra)
        assert code == 2 and problem in err, (extra, err)

    code, out, err = await run(*base, "--key-name", "开售", "--phase", "预热=2030-11-01..11-07",
                               "--phase", "burst=2030-11-08..2030-11-11", "--phase", "复盘=2030-11-15",
                               "--date", "直播=2030-11-10", "--owner", "张三", "--ops", "zhangsan,lisi",
                               "--remind-to", "robot:ops", "--remind-days", "3,1")
    assert code == 0, err
    assert out.splitlines()[:2] == ["campaign 1 d11 added: 双十一 (Asia/Shanghai), 开售 2030-11-11",
                                    "phases: 预热 2030-11-01..2030-11-07; 爆发 2030-11-08..2030-11-11; 复盘 2030-11-15"]
    code, _, err = await run(*base, "--phase", "预热=2030-11-01")
    assert code == 2 and "a live campaign is already named 'd11'" in err

    code, out, _ = await run("list")
    assert re.fullmatch(r"1 d11\t双十一\tnot started\t\d+ day\(s\) to 开售 2030-11-11\t2030-11-01\.\.2030-11-15 "
                        r"\(Asia/Shanghai\)\tgroups simulator/g1, simulator/g2\n", out)
    code, out, err = await cli(monkeypatch, capsys, db_url, "push", "add", "--campaign", "d11", "--phase", "复盘",
                               "--schedule", "每天 10:00", "--text", "复盘会：{campaign}", "--group", "g1")
    assert code == 0, err
    code, out, _ = await run("show", "1")
    lines = out.splitlines()
    assert lines[:6] == ["campaign 1 d11: 双十一  [not started]",
                         lines[1], "  预热 (warmup)\t2030-11-01..2030-11-07", "  爆发 (burst)\t2030-11-08..2030-11-11",
                         "  复盘 (review)\t2030-11-15", "  date 直播\t2030-11-10"]
    assert "targets: groups simulator/g1, simulator/g2 (2 group(s) now)" in lines
    assert "owner: 张三; ops: zhangsan, lisi; reminders to: robot:ops; days before: 3,1" in lines
    assert "  1\t复盘\ton\tcron 0 10 * * *\tnext 2030-11-15 02:00 UTC\t复盘会：{campaign}" in lines

    code, _, err = await run("lottery", "add", "d11", "99")
    assert code == 2 and "no lottery 99" in err
    code, _, err = await run("show", "nope")
    assert code == 2 and "no campaign 'nope'" in err

    code, out, _ = await run("remove", "d11")
    assert out.strip() == "campaign 1 d11 removed with its post(s) 1"
    code, out, _ = await run("list")
    assert out.strip() == "(no campaigns)"
    code, out, _ = await run("list", "--removed")
    assert "\tremoved\t" in out
    code, out, _ = await run("summary", "1")  # a removed campaign's figures stay for the review
    assert code == 0 and out.startswith("campaign 1 d11: 双十一 — 2 group(s)")
    async with bot.runtime.db.session() as session:
        audit = [(a.source, a.command, a.result) for a in (await session.execute(select(AuditEntry))).scalars()]
    assert audit.count(("cli", "campaign add", "usage")) == 10
    assert ("cli", "campaign add", "ok") in audit and ("cli", "campaign remove", "ok") in audit
    assert ("cli", "campaign lottery add", "usage") in audit


# -- the chat command ------------------------------------------------------------------------------------


async def test_group_admins_see_their_groups_campaigns_in_chat_and_members_are_refused(db_url, bot_factory):
    # (No sync while the test runs: the run below is recorded on time, by the test, not late by a sync.)
    bot = await bot_factory(make_config(db_url, push={"sync_interval_seconds": 3600}))
    now = datetime.now(UTC)
    today = now.astimezone(ZoneInfo(SHANGHAI)).date()
    g1 = await group_row(bot, "g1")
    phases = {WARMUP: (today - timedelta(days=2), today), BURST: (today + timedelta(days=1), today + timedelta(days=3)),
              LONGTAIL: (today + timedelta(days=4), today + timedelta(days=6))}
    plan = await make_campaign(bot, groups=[g1], phases=phases, key=today + timedelta(days=3), owner="张三", now=now)
    # One warm-up post went out in the group (an hourly post, made 90 minutes ago, fired once since).
    post = await campaign_post(bot, plan, WARMUP, "every 1h", "预热", now=now - timedelta(minutes=90))
    async with bot.runtime.db.session() as session:
        await push_store.set_group_settings(session, g1.id, now, quiet_hours="")  # type: ignore[arg-type]
    fired = post.anchor_at + timedelta(hours=1)
    assert len(await push_of(bot).fire(post.id, now=fired)) == 1
    # The bot's own outbox (on the real clock: the run is half an hour old) sends it.
    deadline = asyncio.get_running_loop().time() + 10
    while await transcript(bot) != ["预热"]:
        assert asyncio.get_running_loop().time() < deadline, "the post never arrived"
        await asyncio.sleep(0.05)

    refused = await say(bot, "活动", "u1")
    assert refused[0]["text"] == "抱歉，「活动」只有群管理员可以使用哦。"
    [listing] = await say(bot, "活动", "boss", role="owner")

    def day_text(day: date) -> str:
        return f"{day.month}月{day.day}日"

    assert listing["text"] == (f"📅 本群参与的活动：\n【1】五月大促（may）\n当前：预热阶段（{day_text(phases[WARMUP][0])}至"
                               f"{day_text(today)}）\n距开售（{day_text(today + timedelta(days=3))}）还有 3 天\n"
                               "查看活动在本群的数据：活动 名称（或编号）")
    [detail] = await say(bot, "活动 may", "boss")
    lines = detail["text"].splitlines()
    assert lines[0] == "📅 活动「五月大促」（may，编号 1）"
    assert lines[1].startswith(f"阶段：预热 {day_text(phases[WARMUP][0])}至{day_text(today)}；爆发 ")
    assert lines[4] == "负责人：张三" and lines[5] == f"📊 本群数据（截至{day_text(today)}）："
    assert lines[6] == "推送：已发送 1 条（其中迟发 0 条），失败 0 条，跳过 0 条，待发送 0 条"
    assert lines[7] == "抽奖：本群没有计入这个活动的抽奖"
    assert lines[8] == "签到：活动期间 0 次、0 人（日均 0）；活动前 7 天 0 次、0 人（日均 0）；日均变化 n/a"
    [same] = await say(bot, "活动 1", "boss")
    assert same["text"] == detail["text"]

    # Another group's admin neither sees it nor its figures.
    [other] = await say(bot, "活动", "boss3", group="g3", role="owner")
    assert other["text"] == "本群目前没有参与任何活动。"
    [other] = await say(bot, "活动 may", "boss3", group="g3")
    assert other["text"] == "本群没有参与「may」这个活动（发送「活动」查看本群参与的活动）。"
    async with bot.runtime.db.session() as session:
        audit = [(a.actor, a.command, a.result) for a in
                 (await session.execute(select(AuditEntry).order_by(AuditEntry.id))).scalars()]
    assert ("u1", "活动", "refused") in audit and ("boss", "活动", "ok") in audit


async def test_the_chat_command_needs_a_group(bot):
    from bot.events import Person, TextMessage

    owner = Person("boss", "老板", role="owner")
    event = TextMessage("simulator", "k1", None, datetime.now(UTC), sender=owner, text="活动")
    ctx = await bot.runtime.dispatcher.dispatch(event, bot.runtime.channels["simulator"])
    assert [r.text for r in ctx.replies] in (["活动只能在群里查看。"], ["抱歉，「活动」只有群管理员可以使用哦。"])


# -- editing: one set of domain functions ----------------------------------------------------------------


async def test_editing_a_campaign_keeps_posts_runs_and_reminders_consistent(db_url, bot_factory):
    bot = await bot_factory(make_config(db_url, campaign={"reminder_days_before": "[3]"}))
    spied = spy_posts(bot)
    g1, g2 = await group_row(bot, "g1"), await group_row(bot, "g2")
    plan = await make_campaign(bot, groups=[g1], phases={WARMUP: (may(1), may(3)), BURST: (may(4), may(5))},
                               dates={"直播": may(4)}, reminder_target="simulator:ops", ops_users=("zhangsan",))
    burst = await campaign_post(bot, plan, BURST, "每天 20:00", "距开售还有 {days_left} 天")
    live = await campaign_post(bot, plan, WARMUP, "每天 09:00", "直播倒计时 {days_until:直播}")
    async with bot.runtime.db.session() as session:  # a post of its own, into g2 only: it keeps its targets
        own = await push_store.create_post(session, push_store.PostFields(
            schedule=parse_schedule("每天 12:00", tz=SHANGHAI, now=BEFORE), schedule_text="每天 12:00", timezone=SHANGHAI,
            target_kind=push_store.GROUPS, group_ids=(g2.id,), content="午安", campaign_id=plan.id),  # type: ignore[arg-type]
            source=push_store.CLI, created_by="test", now=BEFORE)
    settings = settings_of(bot.runtime.config)

    async def edit(now: datetime, **changes: Any) -> store.CampaignEdit:
        async with bot.runtime.db.session() as session:
            current = await store.fields_of(session, await store.plan_of(session, plan.id))  # type: ignore[arg-type]
            return await store.update_campaign(session, plan.id, replace(current, **changes), now=now, settings=settings)

    # 1 May: the warm-up reminder goes out. Then ops send reminders to a robot group no process here has:
    # the next one (3 days before the key date, 2 May) waits, pending.
    assert await run_reminders(bot.runtime, "p", at_shanghai(1, 10)) == 1
    noop = await edit(at_shanghai(1, 11))
    assert noop.changed == [] and noop.detail.endswith("no change")
    assert (await edit(at_shanghai(1, 12), reminder_target="robot:ops")).changed == ["reminder target"]
    await run_reminders(bot.runtime, "p", at_shanghai(2, 10))
    got = await reminders(bot)
    assert got["phase:warmup"][0] == store.SENT and got["before:3"][0] == store.PENDING

    # 2 May: the launch moves to 7 May, the burst with it; the warm-up now started in April; g2 joins; and the
    # reminders come back to the ops group.
    moved = await edit(at_shanghai(2, 12), key_date=may(7), phases={WARMUP: (date(2030, 4, 29), may(3)),
                                                                    BURST: (may(6), may(7))},
                       group_ids=(g1.id, g2.id), reminder_target="simulator:ops")
    assert moved.changed == ["targets", "key date", "phases", "reminder target"]
    assert moved.posts_followed == [burst.id, live.id]  # they had the campaign's groups; `own` had its own
    assert moved.reminders == ["before:3 re-planned for 2030-05-04 10:00"]
    async with bot.runtime.db.session() as session:
        targets = {p.id: sorted(g.external_id for g in await push_store.listed_groups(session, p.id))
                   for p in (burst, live, own)}
    assert targets == {burst.id: ["g1", "g2"], live.id: ["g1", "g2"], own.id: ["g2"]}
    got = await reminders(bot)
    assert got["phase:warmup"][0] == store.SENT and "before:3" not in got  # sent stays sent, even moved
    assert await run_reminders(bot.runtime, "p", at_shanghai(2, 12, 1)) == 0
    assert await run_reminders(bot.runtime, "p", at_shanghai(4, 10)) == 1  # the re-planned one, once
    assert [r.text.splitlines()[0] for _, r in spied] == [
        "📣 活动「五月大促」今天进入【预热】阶段（5月1日至5月3日）。", "⏳ 活动「五月大促」：距开售（5月7日）还有 3 天。"]

    # 4 May: the burst is brought forward to 3 May — already past: recorded as skipped, never sent late.
    earlier = await edit(at_shanghai(4, 12), phases={WARMUP: (may(1), may(2)), BURST: (may(3), may(7))})
    assert earlier.reminders == ["phase:burst (2030-05-03 10:00) already past: not reminded"]
    assert await run_reminders(bot.runtime, "p", at_shanghai(4, 12, 1)) == 0
    status, attempts, reason = (await reminders(bot))["phase:burst"]
    assert (status, attempts) == (store.SKIPPED, 0) and reason.startswith("already past when the campaign was edited")
    assert len(spied) == 2

    # The burst post fires on the burst's days as they are now (3 May, found too late: missed; 4 May), where
    # before the edits it would have waited for 6 May.
    await push_of(bot).fire(burst.id, now=at_shanghai(4, 20))
    assert [(r.scheduled_at, r.status) for r in await runs(bot, burst.id)] == [
        (at_shanghai(3, 20), push_store.RUN_SKIPPED), (at_shanghai(4, 20), push_store.RUN_SCHEDULED)]

    # What would break a post is refused, naming it; nothing changes.
    with pytest.raises(store.CampaignError, match=rf"phase 爆发 has post\(s\) {burst.id}") as refused:
        await edit(at_shanghai(4, 13), phases={WARMUP: (may(1), may(2))})
    assert refused.value.key == "phase_in_use"
    with pytest.raises(store.CampaignError, match=f"post {live.id} would no longer work"):
        await edit(at_shanghai(4, 13), dates={})
    await make_campaign(bot, groups=[g1], phases={BURST: (may(4), may(5))}, name="other")
    with pytest.raises(store.CampaignError, match="already named 'other'"):
        await edit(at_shanghai(4, 13), name="other")

    # A new timezone: posts that had the campaign's follow it (their schedules count from the edit).
    zoned = await edit(at_shanghai(4, 14), timezone="Asia/Tokyo")
    assert zoned.posts_followed == [burst.id, live.id, own.id]
    assert (await fresh_post(bot, burst.id)).timezone == "Asia/Tokyo"
    assert (await fresh_post(bot, burst.id)).covered_until >= at_shanghai(4, 14)


async def test_posts_join_and_leave_a_campaign_and_the_cli_edits_it_with_everything_audited(
        db_url, bot, monkeypatch, capsys):
    async def run(*args: str) -> tuple[int, str, str]:
        return await cli(monkeypatch, capsys, db_url, *args)

    today = datetime.now(UTC).astimezone(ZoneInfo(SHANGHAI)).date()

    def day(n: int) -> str:
        return (today + timedelta(days=n)).isoformat()

    code, _, err = await run("campaign", "add", "--name", "d11", "--title", "双十一", "--group", "g1",
                             "--key-date", day(20), "--key-name", "开售", "--phase", f"预热={day(10)}..{day(14)}",
                             "--phase", f"爆发={day(15)}..{day(20)}")
    assert code == 0, err
    code, out, err = await run("push", "add", "--name", "eve", "--group", "g1", "--schedule", "每天 20:00",
                               "--text", "晚上好")
    assert code == 0, err

    # Attach: the post fires only on the burst's days; the preview says so.
    code, out, err = await run("campaign", "attach", "d11", "eve", "--phase", "爆发")
    assert code == 0, err
    assert out.strip() == f"post 1 in campaign 1 d11, phase 爆发: fires only from {day(15)} to {day(20)} (Asia/Shanghai)"
    code, out, _ = await run("push", "preview", "eve")
    assert "next runs of post 1" in out and f"  {day(15)} 20:00 Asia/Shanghai" in out
    code, _, err = await run("campaign", "attach", "d11", "eve", "--phase", "长尾")
    assert code == 2 and "campaign d11 has no 长尾 phase (its phases: 预热, 爆发)" in err

    # Edit: the burst starts two days earlier; the post's next run follows. Mistakes are explained.
    code, out, err = await run("campaign", "edit", "d11", "--phase", f"爆发={day(13)}..{day(20)}")
    assert code == 2 and "phase 爆发 must start after 预热 ends" in err
    code, out, err = await run("campaign", "edit", "d11", "--phase", f"预热={day(10)}..{day(12)}", "--phase",
                               f"爆发={day(13)}..{day(20)}", "--title", "双十一大促", "--remind-days", "2")
    assert code == 0, err
    assert out.splitlines() == ["campaign 1 d11 edited: title, phases, reminder days",
                                f"phases: 预热 {day(10)}..{day(12)}; 爆发 {day(13)}..{day(20)}"]
    code, out, _ = await run("campaign", "show", "d11")
    assert f"next {day(13)} 12:00 UTC" in out and "days before: 2;" not in out
    code, out, err = await run("campaign", "edit", "d11", "--drop-phase", "爆发")
    assert code == 2 and "phase 爆发 has post(s) 1" in err
    code, out, err = await run("campaign", "edit", "d11", "--drop-phase", "长尾")
    assert code == 2 and "has no 长尾 phase" in err
    code, out, err = await run("campaign", "edit", "d11", "--remind-days", "default", "--key-name", "发售")
    assert code == 0 and out.startswith("campaign 1 d11 edited: key name, reminder days"), err

    # A post using the countdown can't leave the campaign until its content stops using it.
    code, out, err = await run("push", "add", "--campaign", "d11", "--phase", "爆发", "--schedule", "每天 9:00",
                               "--text", "距发售 {days_left} 天")
    assert code == 0, err
    code, _, err = await run("campaign", "detach", "d11", "2")
    assert code == 2 and "post 2 uses the campaign's variables" in err
    code, out, err = await run("campaign", "detach", "d11", "eve")
    assert code == 0 and out.strip() == "post 1 taken out of campaign 1 d11", err
    code, out, _ = await run("push", "preview", "eve")
    next_run = out.splitlines()[1]  # every evening again, from today or tomorrow
    assert next_run.startswith((f"  {day(0)} 20:00", f"  {day(1)} 20:00")), next_run

    async with bot.runtime.db.session() as session:
        audit = [(a.source, a.command, a.result) for a in
                 (await session.execute(select(AuditEntry).order_by(AuditEntry.id))).scalars()]
    assert [a for a in audit if a[1].startswith("campaign ")] == [
        ("cli", "campaign add", "ok"), ("cli", "campaign attach", "ok"), ("cli", "campaign attach", "usage"),
        ("cli", "campaign edit", "usage"), ("cli", "campaign edit", "ok"), ("cli", "campaign edit", "usage"),
        ("cli", "campaign edit", "usage"), ("cli", "campaign edit", "ok"), ("cli", "campaign detach", "usage"),
        ("cli", "campaign detach", "ok")]


def _config_file(tmp_path: Path, campaigns: str, posts: str = "") -> Path:
    path = tmp_path / "qunbot.toml"
    path.write_text(campaigns + "\n" + posts, encoding="utf-8")
    return path


async def test_campaigns_in_the_config_file_are_upserted_by_name_at_start_up(db_url, bot_factory, tmp_path,
                                                                             monkeypatch, capsys):
    today = datetime.now(UTC).astimezone(ZoneInfo(SHANGHAI)).date()
    first, last = today + timedelta(days=5), today + timedelta(days=9)
    campaign = f'''
[[campaigns]]
name = "d11"
title = "双十一大促"
key_date = {last.isoformat()}
key_name = "开售"
phases = {{"预热" = "{first.isoformat()}..{(first + timedelta(days=1)).isoformat()}", burst = "{(first + timedelta(days=2)).isoformat()}..{last.isoformat()}"}}
dates = {{"直播" = {last.isoformat()}}}
groups = ["simulator:g1", "g2"]
owner = "张三"
ops = ["zhangsan"]
remind_to = "simulator:ops"
'''
    post = '''
[[push.posts]]
name = "countdown"
campaign = "d11"
phase = "爆发"
schedule = "每天 20:00"
content = "{campaign}：距{days_until:开售}天，直播 {days_until:直播}"
'''
    env = {"QUNBOT_DATABASE_URL": db_url, "QUNBOT_DATABASE_AUTO_MIGRATE": "false"}
    config = load_config(_config_file(tmp_path, campaign, post), environ=env)
    bot = await bot_factory(config)
    async with bot.runtime.db.session() as session:
        [made] = await store.list_campaigns(session)
        plan = await store.load_plan(session, made)
        [countdown] = await push_store.list_posts(session)
        groups = [g.external_id for g in await push_store.listed_groups(session, countdown.id)]  # type: ignore[arg-type]
    assert (made.name, made.created_by, made.owner, made.ops, made.reminder_target) == (
        "d11", store.CONFIG_MAKER, "张三", ["zhangsan"], "simulator:ops")
    assert list(plan.phases) == [WARMUP, BURST] and plan.dates == {"直播": last}
    # The post takes the campaign's groups and timezone, and fires only in the burst.
    assert (countdown.campaign_id, countdown.phase, countdown.timezone, groups) == (made.id, BURST, SHANGHAI, ["g1", "g2"])

    # The same file again (a second process, a restart): nothing changes.
    again = await bot_factory(load_config(_config_file(tmp_path, campaign, post), environ=env))
    async with again.runtime.db.session() as session:
        same = await store.get_campaign(session, made.id)  # type: ignore[arg-type]
    assert same is not None and same.updated_at == made.updated_at

    # Edited elsewhere, a config campaign is refused; the file is where it changes.
    code, _, err = await cli(monkeypatch, capsys, db_url, "campaign", "edit", "d11", "--title", "别的")
    assert code == 2 and "declared in the config file" in err
    changed = campaign.replace('title = "双十一大促"', 'title = "双11"')
    third = await bot_factory(load_config(_config_file(tmp_path, changed, post), environ=env))
    async with third.runtime.db.session() as session:
        fresh = await store.get_campaign(session, made.id)  # type: ignore[arg-type]
        audit = [(a.source, a.command, a.detail) for a in (await session.execute(select(AuditEntry))).scalars()]
    assert fresh is not None and fresh.title == "双11"
    assert ("config", "campaign created", f"campaign {made.id} d11 created from the config file") in audit
    assert ("config", "campaign updated", f"campaign {made.id} d11 edited: title") in audit

    # Dropped from the file: removed with its posts (their history stays).
    fourth = await bot_factory(load_config(_config_file(tmp_path, ""), environ=env))
    async with fourth.runtime.db.session() as session:
        assert await store.list_campaigns(session) == [] and await push_store.list_posts(session) == []

    # Mistakes stop the configuration, naming the key.
    with pytest.raises(ConfigError, match=r"campaigns .*phase 爆发 must start after 预热 ends"):
        overlapping = campaign.replace(f'burst = "{(first + timedelta(days=2)).isoformat()}',
                                       f'burst = "{(first + timedelta(days=1)).isoformat()}')
        load_config(_config_file(tmp_path, overlapping), environ=env)
    with pytest.raises(ConfigError, match=r"push.posts.0.phase .*has no 长尾 phase"):
        load_config(_config_file(tmp_path, campaign, post.replace('phase = "爆发"', 'phase = "长尾"')), environ=env)
    with pytest.raises(ConfigError, match=r"push.posts.0.content .*'发布会'"):
        load_config(_config_file(tmp_path, campaign, post.replace("直播}", "发布会}")), environ=env)
    with pytest.raises(ConfigError, match="campaign names must be different"):
        load_config(_config_file(tmp_path, campaign + campaign), environ=env)


async def test_group_admins_put_their_posts_into_their_groups_campaigns_in_chat(db_url, bot_factory):
    bot = await bot_factory(make_config(db_url, push={"sync_interval_seconds": 3600}))
    now = datetime.now(UTC)
    today = now.astimezone(ZoneInfo(SHANGHAI)).date()
    g1 = await group_row(bot, "g1")
    await group_row(bot, "g3")
    await make_campaign(bot, groups=[g1], now=now, key=today + timedelta(days=6),
                        phases={WARMUP: (today + timedelta(days=1), today + timedelta(days=2)),
                                BURST: (today + timedelta(days=3), today + timedelta(days=6))})
    [added] = await say(bot, "定时 添加 每天 20:00 今晚有福利", "boss", role="owner")
    assert "定时推送已添加（编号 1）" in added["text"]

    def text(replies: list[dict]) -> str:
        [reply] = replies
        return reply["text"]

    burst_day = (today + timedelta(days=3)).isoformat()
    attached = text(await say(bot, "定时 活动 1 may 爆发", "boss", role="owner"))
    assert attached.startswith("📅 定时推送 1 已加入活动「五月大促」（爆发），只在 ")
    assert attached.endswith(f"下次发送：{burst_day} 20:00")
    listing = text(await say(bot, "定时", "boss", role="owner"))
    assert "活动：五月大促·爆发" in listing and f"下次：{burst_day} 20:00" in listing
    detail = text(await say(bot, "活动 may", "boss", role="owner")).splitlines()
    assert detail[-2:] == ["⏰ 本群的活动推送：", f"【1】爆发 每天 20:00｜下次：{burst_day} 20:00｜今晚有福利"]

    # Mistakes get the reason and the usage; other groups' campaigns and posts are out of reach.
    for message, problem in (("定时 活动 1 may 长尾", "活动「五月大促」没有「长尾」阶段（它的阶段：预热、爆发）。"),
                             ("定时 活动 1 nope", "本群没有参与「nope」这个活动"),
                             ("定时 活动 1", "请写：定时 活动 <编号> <活动名称或编号>"),
                             ("定时 活动 1 may 热身", "不认识阶段「热身」")):
        reply = text(await say(bot, message, "boss", role="owner"))
        assert reply.startswith(f"⚠️ {problem}") and "\n用法：定时 [列表]" in reply, reply
    [other] = await say(bot, "定时 添加 每天 9:00 早", "boss3", group="g3", role="owner")
    assert "编号 2" in other["text"]
    assert "本群没有参与「may」这个活动" in text(await say(bot, "定时 活动 2 may", "boss3", group="g3", role="owner"))
    assert "本群没有编号为 1 的定时推送" in text(await say(bot, "定时 活动 1 取消", "boss3", group="g3", role="owner"))
    assert text(await say(bot, "定时 活动 1 may", "u1")) == "抱歉，「定时」只有群管理员可以使用哦。"

    detached = text(await say(bot, "定时 活动 1 取消", "boss", role="owner"))
    assert detached.startswith("定时推送 1 已退出活动「五月大促」，按原时间每天发送。下次发送：")
    assert burst_day not in detached
    assert text(await say(bot, "定时 活动 1 取消", "boss", role="owner")) == "定时推送 1 没有加入任何活动。"
    async with bot.runtime.db.session() as session:
        audit = [(a.command, a.result, a.detail) for a in
                 (await session.execute(select(AuditEntry).order_by(AuditEntry.id))).scalars()]
    assert ("定时", "ok", "post 1 in campaign 1 may, phase burst") in audit
    assert ("定时", "ok", "post 1 taken out of campaign 1 may") in audit
    assert sum(1 for c, r, _ in audit if (c, r) == ("定时", "usage")) == 6


def test_the_example_campaign_in_config_example_toml_is_valid(tmp_path):
    text = (Path(__file__).resolve().parent.parent / "config.example.toml").read_text(encoding="utf-8")
    head = text.split("\n[server]\n", 1)[0]
    lines = [re.sub(r"\s+# .*$", "", line[4:]) for line in head.splitlines() if line.startswith("#   ")
             and not line.startswith("#    ")]
    assert lines[0] == "[[campaigns]]"
    config = load_config(_config_file(tmp_path, "\n".join(lines)), environ={})
    [declared] = config.campaigns
    fields = declared.fields(config.timezone, (1, 2))
    assert (fields.name, fields.key_name, fields.reminder_days, fields.dates) == ("d11", "开售", (7, 3, 1),
                                                                               {"直播": date(2026, 11, 10)})
    assert fields.phases == {WARMUP: (date(2026, 11, 1), date(2026, 11, 7)), BURST: (date(2026, 11, 8), date(2026, 11, 11)),
                             REVIEW: (date(2026, 11, 15), date(2026, 11, 15))}
    assert (declared.groups, declared.ops, declared.remind_to) == (["simulator:g1", "robot:vip"], ["zhangsan", "lisi"],
                                                                   "robot:ops")
