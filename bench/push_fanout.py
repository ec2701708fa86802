"""Benchmark: one scheduled post fanned out to many WeCom group robots, each group with its own robot.

The bot runs as a real `qunbot run` process (its configuration in the environment, as in production); the
fake WeCom runs in this process on loopback, answering every webhook call after `--latency` (50 ms) and
keeping WeCom's 20-a-minute limit per robot. Groups and their robots are seeded as production has them
after each robot called back once (robot_chats); the post is recorded as `qunbot push add --all` makes
it, as a one-time post two seconds ahead, and the bot's own timer fires it.

a) one post to `--groups` (1,000) groups: time from firing to the last delivery, sends per second, p50/p99
   delivery lag (accepted at the fake − scheduled time); every group got it exactly once and no robot got
   more than 20 in any 60 s (both counted from the fake's log); compared with the bare cost measured in
   the same run: the same number of concurrent aiohttp posts to the same fake with the same latency.
b) one post to `--big` (10,000) groups with the fake answering 45009 ("api freq out of limit") to
   `--fault-rate` (10 %) of calls, drawn from a seeded generator: every group got it exactly once; the
   time and the retries.

Run: .venv/bin/python -m bench.push_fanout [--backends sqlite,postgresql] [--big-backends postgresql]
     [--groups 1000] [--big 10000] [--latency 0.05] [--fault-rate 0.1] [--concurrency N] [--seed 7]
(about 2 minutes as it is; scenario b on SQLite too, `--big-backends sqlite,postgresql`, adds about 1.5)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import aiohttp
from sqlalchemy import func, select

from bot.push_spec import Schedule
from storage import push as store
from storage.db import Database, utcnow
from storage.migrate import upgrade
from tests.fakes.wecom_server import WEBHOOK_SEND_PATH, FakeWeCom
from tests.push_helpers import (
    BotProcess,
    add_post,
    drop_pg_database,
    pg_database,
    seed_robot_groups,
    wait_until_settled,
)

RATE_LIMIT, RATE_WINDOW = 20, 60.0
LEAD_SECONDS = 2.0  # the post is due this long after it is recorded (the bot's sync finds it and sets its timer)


@dataclass
class Result:
    label: str
    targets: int
    seconds: float  # firing → last delivery accepted by the fake
    first: float  # firing → first delivery accepted
    sends_per_second: float
    lag_p50: float
    lag_p99: float
    lag_max: float
    calls: int  # webhook calls that reached the fake (refused ones included)
    refused: int  # 45009 answers injected
    retried_deliveries: int  # deliveries the outbox took more than once
    most_per_robot_window: int
    bot_cpu_seconds: float
    states: dict[str, int]


def most_in_window(times: list[float], window: float) -> int:
    """The most of `times` within any span shorter than `window`."""
    times = sorted(times)
    best = start = 0
    for end, at in enumerate(times):
        while at - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


async def baseline(fake: FakeWeCom, count: int) -> float:
    """The bare cost: `count` concurrent webhook posts (each robot one message) with one aiohttp session
    configured like the bot's (aiohttp's default 100 connections); seconds until the last answer."""
    keys = [f"baseline-{n:05d}" for n in range(count)]
    for key in keys:
        fake.add_robot(key)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:

        async def one(key: str) -> None:
            body = {"chatid": "wrBaseline", "msgtype": "text", "text": {"content": "早上好，基准群！"}}
            async with http.post(fake.base_url + WEBHOOK_SEND_PATH, params={"key": key}, json=body) as resp:
                data = await resp.json()
                assert data["errcode"] == 0, data

        await one("baseline-00000")  # connect once, like a bot that has been running
        start = time.perf_counter()
        await asyncio.gather(*(one(key) for key in keys))
        return time.perf_counter() - start


async def fan_out(label: str, url: str, tmp: Path, *, targets: int, fault_rate: float, seed: int,
                  settings: dict[str, object], fake: FakeWeCom, profile: bool = False) -> Result:
    """Seed `targets` robot groups, start a bot process, fire one post to all of them, check and measure."""
    await upgrade(url)
    db = Database(url)
    bot = BotProcess(url, fake.base_url, tmp / f"{label}.log", settings)
    if profile:
        bot.python_args = ["-m", "cProfile", "-o", str(tmp / f"{label}.prof")]
    try:
        pairs = await seed_robot_groups(db, fake, targets, prefix=label[:1])
        keys = {key for _, key in pairs}
        bot.start()
        await bot.wait_healthy()
        fake.fail_randomly(WEBHOOK_SEND_PATH, 45009, fault_rate, seed=seed)
        calls_before, refused_before = fake.calls_to(WEBHOOK_SEND_PATH), fake.random_faults_answered
        run_at = utcnow() + timedelta(seconds=LEAD_SECONDS)
        post_id = await add_post(db, Schedule("once", run_at=run_at), "早上好，{group_name}！今天是{date} {weekday}",
                                 name=f"bench-{label}")
        cpu_before = bot.cpu_seconds()
        states = await wait_until_settled(db, post_id, targets, within=600)
        cpu = bot.cpu_seconds() - cpu_before
        fake.fail_randomly(WEBHOOK_SEND_PATH, 45009, 0)
        code = bot.stop()
        assert code == 0, f"bot exited with {code}:\n{bot.log_tail()}"
        assert "Traceback" not in bot.log_text(), bot.log_tail()
        async with db.read_session() as session:
            run = (await session.execute(select(store.PushRun).where(store.PushRun.post_id == post_id))).scalar_one()  # type: ignore[arg-type]
            retried = (await session.execute(select(func.count()).select_from(store.PushDelivery).where(
                store.PushDelivery.run_id == run.id, store.PushDelivery.attempts > 1))).scalar_one()  # type: ignore[arg-type]
    finally:
        bot.stop()
        await db.close()

    # What the robots posted, from the fake's log: once per group, within WeCom's limit.
    to_wall = time.time() - time.monotonic()
    by_key: dict[str, list[float]] = defaultdict(list)
    for message in fake.webhook_messages:
        if message["key"] in keys:
            by_key[message["key"]].append(message["at"] + to_wall)
    twice = {k: len(v) for k, v in by_key.items() if len(v) > 1}
    missing = keys - set(by_key)
    assert states == {store.SENT: targets}, states
    assert not missing, f"{len(missing)} groups got nothing"
    assert not twice, f"{len(twice)} groups got the post more than once"
    most = max(most_in_window(v, RATE_WINDOW) for v in by_key.values())
    assert most <= RATE_LIMIT, f"a robot got {most} messages within {RATE_WINDOW:g} s"
    calls, refused = fake.calls_to(WEBHOOK_SEND_PATH) - calls_before, fake.random_faults_answered - refused_before
    over_limit = calls - refused - targets  # refused by the fake for going over a robot's limit
    assert over_limit == 0, f"{over_limit} calls went over a robot's limit"

    accepted = sorted(t for v in by_key.values() for t in v)
    fired = run.created_at.timestamp()
    lags = sorted(t - run.scheduled_at.timestamp() for t in accepted)
    seconds = accepted[-1] - fired
    return Result(label, targets, seconds, accepted[0] - fired, targets / seconds, statistics.median(lags),
                  lags[min(len(lags) - 1, int(len(lags) * 0.99))], lags[-1],
                  calls, refused, retried, most, cpu, dict(states))


def show(r: Result) -> None:
    print(f"  {r.label}: {r.targets} groups in {r.seconds:.2f} s from firing to the last delivery, "
          f"{r.sends_per_second:.0f} sends/s (first after {r.first * 1000:.0f} ms); delivery lag p50 {r.lag_p50 * 1000:.0f} ms, "
          f"p99 {r.lag_p99 * 1000:.0f} ms, max {r.lag_max * 1000:.0f} ms", flush=True)
    print(f"    webhook calls {r.calls} ({r.refused} answered 45009 at random and retried, none over a robot's limit); "
          f"deliveries taken again by the "
          f"outbox: {r.retried_deliveries}; every group once: yes; most messages of one robot in "
          f"{RATE_WINDOW:g} s: {r.most_per_robot_window} (limit {RATE_LIMIT}); bot CPU {r.bot_cpu_seconds:.1f} s "
          f"({r.bot_cpu_seconds * 1000 / r.targets:.1f} ms per delivery)", flush=True)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="sqlite,postgresql", help="databases of scenario a")
    parser.add_argument("--big-backends", default="postgresql",
                        help="databases of scenario b (default postgresql, the production database, to keep the "
                             "default run near 2 minutes; sqlite,postgresql for both)")
    parser.add_argument("--groups", type=int, default=1000, help="targets of scenario a (default 1000)")
    parser.add_argument("--big", type=int, default=10000, help="targets of scenario b (default 10000; 0 skips it)")
    parser.add_argument("--latency", type=float, default=0.05, help="the fake's answer latency in seconds")
    parser.add_argument("--fault-rate", type=float, default=0.1, help="share of calls answered 45009 in scenario b")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--concurrency", type=int, help="push.concurrency of the bot (default: the bot's default)")
    parser.add_argument("--pg-admin-url", default=os.environ.get("TEST_PG_URL",
                                                                 "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--keep-logs", action="store_true", help="print where the bot logs are and keep them")
    parser.add_argument("--profile", action="store_true", help="run the bot under cProfile (kept with the logs)")
    args = parser.parse_args()
    settings: dict[str, object] = {"push_sync_interval_seconds": 0.5, "push_daily_cap": 10}
    if args.concurrency:
        settings["push_concurrency"] = args.concurrency
    tmp = Path(tempfile.mkdtemp(prefix="qunbot-push-bench-"))
    started = time.monotonic()
    print(f"fake WeCom on loopback answering in {args.latency * 1000:.0f} ms; the bot: a `qunbot run` process with "
          f"the default settings but push.sync_interval_seconds 0.5, quiet hours off"
          + (f", push.concurrency {args.concurrency}" if args.concurrency else ""), flush=True)
    small, big = args.backends.split(","), args.big_backends.split(",")
    for backend in [b for b in ("sqlite", "postgresql") if b in small + big]:
        print(f"{backend}:", flush=True)
        for label, targets, fault_rate in (("a", args.groups, 0.0), ("b", args.big, args.fault_rate)):
            if targets <= 0 or backend not in (small if label == "a" else big):
                continue
            url = (f"sqlite:///{tmp}/{backend}-{label}.db" if backend == "sqlite"
                   else await pg_database(args.pg_admin_url, "qunbot_bench_push"))
            async with FakeWeCom() as fake:
                fake.latency = args.latency
                base = await baseline(fake, targets) if label == "a" else None
                fake.webhook_messages.clear()
                try:
                    result = await fan_out(label, url, tmp, targets=targets, fault_rate=fault_rate, seed=args.seed, settings=settings, fake=fake,
                                           profile=args.profile)
                finally:
                    if backend != "sqlite":
                        await drop_pg_database(args.pg_admin_url, url)
            show(result)
            if base is not None:
                print(f"    baseline: {targets} concurrent aiohttp posts to the same fake: {base:.2f} s "
                      f"({targets / base:.0f} posts/s); the fan-out takes {result.seconds / base:.1f}x that",
                      flush=True)
    print(f"(whole run {time.monotonic() - started:.0f} s)")
    if args.keep_logs or args.profile:
        print(f"bot logs in {tmp}")
    else:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
