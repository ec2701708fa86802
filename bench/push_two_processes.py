"""Two `qunbot run` processes on one PostgreSQL running per-minute scheduled posts: each run delivered once.

Both processes run every post's timer and an outbox worker, as in production; nothing elects a leader. The
posts ("* * * * *", in Asia/Shanghai) go to robot groups, each with its own robot, through the fake WeCom
on loopback (`--latency`): one post to all groups, one to the groups tagged "vip" (every other one), one
more to all. After `--minutes` whole minutes the posts are paused (`qunbot push pause`, at half past, when
nothing is waiting), and the run is checked:

- every minute of the window has exactly one run of each post (no minute missed, none recorded twice);
- every run has one delivery per target group, all sent on their first attempt;
- the fake accepted, for each run, exactly its number of targets (counted in the run's minute), and each
  group got each post exactly as many times as the post ran.

It prints one line per run: its time, which process recorded it, its deliveries, which process sent them
(from the processes' logs), and what the fake got.

Run: .venv/bin/python -m bench.push_two_processes [--minutes 10] [--groups 50] [--latency 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from collections import Counter
from datetime import timedelta
from pathlib import Path

from bot.push_spec import Schedule
from storage import push as store
from storage.db import Database, utcnow
from storage.migrate import upgrade
from tests.fakes.wecom_server import FakeWeCom
from tests.push_helpers import (
    BotProcess,
    add_post,
    drop_pg_database,
    pg_database,
    qunbot_cli,
    run_reports,
    seed_robot_groups,
    tag_groups,
    wait_until_settled,
)

POSTS = (("早安", None), ("会员", "vip"), ("整点", None))  # (name, tag)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, default=10, help="whole minutes of runs (default 10)")
    parser.add_argument("--groups", type=int, default=50, help="robot groups (default 50)")
    parser.add_argument("--latency", type=float, default=0.05, help="the fake WeCom's answer latency in seconds")
    parser.add_argument("--pg-admin-url", default=os.environ.get("TEST_PG_URL",
                                                                 "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs")
    args = parser.parse_args()

    url = await pg_database(args.pg_admin_url, "qunbot_two_processes")
    await upgrade(url)
    db = Database(url)
    tmp = Path(tempfile.mkdtemp(prefix="qunbot-two-processes-"))
    fake = FakeWeCom()
    await fake.start()
    fake.latency = args.latency
    bots = [BotProcess(url, fake.base_url, tmp / f"process-{n}.log", {"push_sync_interval_seconds": 10})
            for n in (1, 2)]
    ok = False
    try:
        pairs = await seed_robot_groups(db, fake, args.groups, prefix="t")
        vip = [chat for n, (chat, _) in enumerate(pairs) if n % 2 == 0]
        await tag_groups(db, vip, "vip")
        now = utcnow()
        post_ids = {await add_post(db, Schedule("cron", cron="* * * * *"), f"【{name}】{{group_name}} {{date}}",
                                   name=name, tag=tag, now=now): name for name, tag in POSTS}
        for bot in bots:
            bot.start()
        for bot in bots:
            await bot.wait_healthy()
        first = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        last = first + timedelta(minutes=args.minutes - 1)
        print(f"two processes on {url.rsplit('/', 1)[1]}; {args.groups} groups ({len(vip)} vip), 3 posts every minute; "
              f"runs from {first:%H:%M} to {last:%H:%M} UTC; fake latency {args.latency * 1000:.0f} ms", flush=True)
        stop_at = last + timedelta(seconds=30)
        while (left := (stop_at - utcnow()).total_seconds()) > 0:
            for bot in bots:
                assert bot.proc is not None and bot.proc.poll() is None, f"a process died:\n{bot.log_tail()}"
            await asyncio.sleep(min(left, 5))
        for name in post_ids.values():
            done = qunbot_cli(url, "push", "pause", name)
            assert done.returncode == 0, done.stderr
        expected_deliveries = args.minutes * (2 * args.groups + len(vip))
        for post_id in post_ids:
            await wait_until_settled(db, post_id, 0, within=120)
        for bot in bots:
            code = bot.stop()
            assert code == 0, f"exit {code}:\n{bot.log_tail()}"
            assert "Traceback" not in bot.log_text(), bot.log_tail()

        reports = await run_reports(db, fake, post_ids, [bot.log_text() for bot in bots])
        print(f"{'run time (UTC)':<16} {'post':<4} {'recorded by':<24} {'targets':>7} {'sent':>5} "
              f"{'by 1':>5} {'by 2':>5} {'at fake':>7}")
        for r in sorted(reports, key=lambda r: (r.scheduled_at, r.run_id)):
            print(f"{r.scheduled_at:%Y-%m-%d %H:%M}  {r.post:<4} {r.recorded_by:<24} {r.targets:>7} "
                  f"{r.states[store.SENT]:>5} {r.sent_by[0]:>5} {r.sent_by[1]:>5} {r.at_fake:>7}", flush=True)

        # Exactly once: a run per post and minute, each delivered once to each target group.
        minutes = [first + timedelta(minutes=n) for n in range(args.minutes)]
        for name in post_ids.values():
            times = [r.scheduled_at for r in reports if r.post == name]
            assert times == minutes, f"{name}: runs at {[f'{t:%H:%M}' for t in times]}"
        for r in reports:
            want = len(vip) if r.post == "会员" else args.groups
            assert r.targets == want and r.states == {store.SENT: want}, r
            assert r.retried == 0 and sum(r.sent_by.values()) == want and r.at_fake == want, r
        by_group = Counter((m["chatid"], m["text"]["content"][1:3]) for m in fake.webhook_messages)
        for chat, _ in pairs:
            for name, tag in POSTS:
                assert by_group[(chat, name)] == (args.minutes if tag is None or chat in vip else 0), (chat, name)
        assert sum(by_group.values()) == expected_deliveries
        sent_by: Counter[int] = Counter()
        for r in reports:
            sent_by.update(r.sent_by)
        recorded_by = Counter(r.recorded_by.split(":")[1] for r in reports)
        print(f"{len(reports)} runs, {expected_deliveries} deliveries, each group got each of its posts once a minute: "
              f"exactly once. Runs recorded by pid {dict(recorded_by)}; deliveries sent by process 1: {sent_by[0]}, "
              f"process 2: {sent_by[1]}.", flush=True)
        ok = True
    finally:
        for bot in bots:
            bot.stop()
        await fake.stop()
        await db.close()
        if args.keep:
            print(f"database {url}; logs in {tmp}")
        else:
            await drop_pg_database(args.pg_admin_url, url)
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
