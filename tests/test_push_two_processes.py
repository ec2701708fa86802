"""Two real `qunbot run` processes on one PostgreSQL running scheduled posts every 2 and 5 seconds: each run is
recorded once and delivered once to each group (the short version of bench/push_two_processes.py, which
runs per-minute posts for 10 minutes).

A fixed interval this short cannot be typed (people get a minute at least) but the table takes it, and
both processes time it with APScheduler as they would any post. Each group has its own robot on the
fake WeCom; the fake's log is what the groups saw.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

from sqlalchemy import update

from bot.push_spec import Schedule
from storage import push as store
from storage.db import Database, utcnow
from tests.conftest import _truncate_pg
from tests.fakes.wecom_server import FakeWeCom
from tests.push_helpers import (
    BotProcess,
    add_post,
    run_reports,
    seed_robot_groups,
    tag_groups,
    wait_until_settled,
)

GROUPS = 20
RUN_SECONDS = 20


async def test_two_processes_deliver_each_run_of_a_two_second_post_once_per_group(pg_template, tmp_path):
    await _truncate_pg(pg_template)
    db = Database(pg_template)
    fake = FakeWeCom()
    await fake.start()
    bots = [BotProcess(pg_template, fake.base_url, tmp_path / f"process-{n}.log",
                       {"push_sync_interval_seconds": 1, "push_poll_interval_seconds": 0.5}) for n in (1, 2)]
    try:
        fake.latency = 0.02
        pairs = await seed_robot_groups(db, fake, GROUPS, prefix="i")
        vip = [chat for n, (chat, _) in enumerate(pairs) if n % 2]
        await tag_groups(db, vip, "vip")
        for bot in bots:
            bot.start()
        for bot in bots:
            await bot.wait_healthy()
        now = utcnow()
        posts = {await add_post(db, Schedule("interval", interval_seconds=2), "【每两秒】{group_name}", name="每两秒",
                                now=now): "每两秒",
                 await add_post(db, Schedule("interval", interval_seconds=5), "【每五秒】{group_name}", name="每五秒",
                                tag="vip", now=now): "每五秒"}
        await asyncio.sleep(RUN_SECONDS)
        # Stop the posts where they are, without skipping what is still waiting (as pausing would): the
        # processes' next sync drops the timers, and a timer that goes off meanwhile finds the post off.
        async with db.session() as session:
            await session.execute(update(store.PushPost).values(enabled=False, revision=store.PushPost.revision + 1))
        stopped = utcnow()
        for post_id in posts:
            await wait_until_settled(db, post_id, 0, within=30)
        await asyncio.sleep(0.5)  # any send still on its way to the fake (there should be none)
        for bot in bots:
            assert bot.stop() == 0, bot.log_tail()
            assert "Traceback" not in bot.log_text(), bot.log_tail()

        reports = await run_reports(db, fake, posts, [bot.log_text() for bot in bots])
        # (A vip group gets both: at most 11 + 5 messages in these 20 s, within its robot's 20 a minute.)
        for name, every, targets in (("每两秒", 2, GROUPS), ("每五秒", 5, len(vip))):
            mine = [r for r in reports if r.post == name]
            times = [r.scheduled_at for r in mine]
            # One run per firing, none missed: consecutive times, `every` seconds apart, up to the stop.
            assert len(times) >= RUN_SECONDS // every - 2, times
            assert all(b - a == timedelta(seconds=every) for a, b in zip(times, times[1:], strict=False)), times
            assert stopped - times[-1] < timedelta(seconds=every + 2)
            for r in mine:
                assert r.targets == targets and r.states == {store.SENT: targets} and r.retried == 0, r
                assert sum(r.sent_by.values()) == targets, r
            # What the groups saw: each group got the post once per run.
            got = Counter(m["chatid"] for m in fake.webhook_messages if m["text"]["content"].startswith(f"【{name}】"))
            want = [chat for chat, _ in pairs] if name == "每两秒" else vip
            assert got == {chat: len(mine) for chat in want}, got
        assert len(fake.webhook_messages) == sum(r.targets for r in reports)
        recorded = Counter(r.recorded_by for r in reports)
        sent = sum((r.sent_by for r in reports), Counter())
        print(f"\n{len(reports)} runs recorded by {dict(recorded)}; deliveries sent by process 1: {sent[0]}, "
              f"process 2: {sent[1]}")
    finally:
        for bot in bots:
            bot.stop()
        await fake.stop()
        await db.close()

