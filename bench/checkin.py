"""Benchmark: the check-in against the same pipeline without it, and the derived figures on a long history.

1. `签到` through the simulator API (every request a different member, so every one is a real check-in:
   row, ledger row, streak, position counter) against `帮助` (same door, inbox, dispatcher and activity
   recording, no check-in), in the same run, at the given concurrency: requests per second and p50/p99.
2. Derived figures on a group with a year of history (members × days check-ins and ledger rows): one
   member's streak (365 days long) against a member with a 1-day streak, the 积分 card, and the three
   leaderboards.

Run: .venv/bin/python -m bench.checkin [--backends sqlite,postgresql] [--requests 400] [--members 500]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import aiohttp
from aiohttp import web
from sqlalchemy import text

from bench.callback_path import drop_pg, free_port, pg_database
from bot.app import create_app
from bot.config import load_config
from storage import checkin as checkin_store
from storage.checkin import Checkin
from storage.db import Database
from storage.groups import Group, Member, Membership
from storage.migrate import upgrade
from storage.points import PointsEntry


async def http_run(url: str, text: str, requests: int, concurrency: int, run: str) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) for `requests` messages from distinct members, `concurrency` at a time."""
    latencies: list[float] = []
    queue = list(range(requests))

    async def worker(http: aiohttp.ClientSession) -> None:
        while queue:
            n = queue.pop()
            started = time.perf_counter()
            async with http.post(url, json={"group": f"bench-{run}", "user": f"{run}-{n}", "text": text}) as resp:
                body = await resp.json()
                assert resp.status == 200 and body["replies"], body
            latencies.append((time.perf_counter() - started) * 1000)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
        started = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return requests / elapsed, statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1]


async def pipeline(db_url: str, requests: int, concurrency: int) -> None:
    config = load_config(None, environ={"QUNBOT_DATABASE_URL": db_url, "QUNBOT_DATABASE_AUTO_MIGRATE": "false",
                                        "QUNBOT_LOG_LEVEL": "WARNING"})
    runner = web.AppRunner(create_app(config), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}/api/simulator/messages"
    try:
        await http_run(url, "帮助", 50, concurrency, "warm")  # connections, prepared statements
        for rnd in range(2):  # alternate, so neither gets only the cold or the warm half
            for name, text in (("帮助 (baseline)", "帮助"), ("签到", "签到")):
                rps, p50, p99 = await http_run(url, text, requests, concurrency, f"{text}{rnd}")
                print(f"  {name:<16} round {rnd + 1}: {rps:7.0f} req/s   p50 {p50:6.1f} ms   p99 {p99:6.1f} ms")
    finally:
        await runner.cleanup()


async def seed_history(db: Database, members: int, days: int, today: date) -> tuple[int, int, int]:
    """A group where member k checked in on each of the last `days` days except a gap at day k % days."""
    async with db.session() as session:
        session.add(group := Group(channel="bench", external_id="history"))
        session.add_all([Member(channel="bench", external_id=f"m{k}", name=f"成员{k}") for k in range(members)])
        await session.flush()
        ids = list((await session.execute(
            Member.__table__.select().with_only_columns(Member.id).where(Member.channel == "bench")  # type: ignore[attr-defined]
            .order_by(Member.id))).scalars())
        at = datetime.now(UTC)
        session.add_all([Membership(group_id=group.id, member_id=m, joined_at=at) for m in ids])
        for k, member_id in enumerate(ids):
            gap = k % days if k else -1  # member 0 has an unbroken streak of `days` days
            rows = [{"group_id": group.id, "member_id": member_id, "day": today - timedelta(days=d), "position": k + 1,
                     "points": 10, "at": at} for d in range(days) if d != gap]
            await session.execute(Checkin.__table__.insert(), rows)  # type: ignore[attr-defined]
            await session.execute(PointsEntry.__table__.insert(), [  # type: ignore[attr-defined]
                {"group_id": group.id, "member_id": member_id, "delta": 10, "kind": "checkin", "reason": "",
                 "ref": f"bench-{member_id}-{n}", "at": at} for n in range(len(rows))])
        return group.id, ids[0], ids[1]  # type: ignore[return-value]


async def timed(db: Database, what: str, fn, repeat: int = 20) -> None:  # noqa: ANN001
    times = []
    for _ in range(repeat):
        async with db.session() as session:
            started = time.perf_counter()
            await fn(session)
            times.append((time.perf_counter() - started) * 1000)
    print(f"  {what:<44} median {statistics.median(times):7.2f} ms   max {max(times):7.2f} ms")


async def derived(db_url: str, members: int, days: int) -> None:
    from bot.config import CheckinConfig
    from handlers.checkin import member_card

    db = Database(db_url)
    today = date(2026, 6, 30)
    try:
        started = time.perf_counter()
        group_id, long_member, short_member = await seed_history(db, members, days, today)
        async with db.session() as session:
            # A year of rows arrives at once here; in production the tables' statistics follow as they grow.
            await session.execute(text("ANALYZE"))
        print(f"  seeded {members} members × {days} days in {time.perf_counter() - started:.1f} s")
        async with db.session() as session:
            group = await session.get(Group, group_id)
            streaks = await checkin_store.current_streaks(session, group_id, today, [long_member, short_member])
        print(f"  streaks: member 0 = {streaks[long_member]} days, member 1 = {streaks[short_member]} day(s)")
        cfg = CheckinConfig()
        await timed(db, f"streak, {streaks[long_member]}-day streak",
                    lambda s: checkin_store.current_streaks(s, group_id, today, [long_member]))
        await timed(db, f"streak, {streaks[short_member]}-day streak",
                    lambda s: checkin_store.current_streaks(s, group_id, today, [short_member]))
        await timed(db, "积分 card (balance, level, streak, month)",
                    lambda s: member_card(s, cfg, group, long_member, today))  # type: ignore[arg-type]
        for by in (checkin_store.BY_POINTS, checkin_store.BY_STREAK, checkin_store.BY_CHECKINS):
            await timed(db, f"leaderboard by {by} (top 10 + caller)",
                        lambda s, by=by: checkin_store.leaderboard(s, group_id, by=by, today=today, limit=10,
                                                                   me=short_member), repeat=5)
    finally:
        await db.close()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--requests", type=int, default=400, help="messages per measured run (default 400)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (default 16)")
    parser.add_argument("--members", type=int, default=500, help="members in the history group (default 500)")
    parser.add_argument("--days", type=int, default=365, help="days of history (default 365)")
    parser.add_argument("--pg-admin-url", default=os.environ.get("TEST_PG_URL",
                                                                 "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()
    for backend in args.backends.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            if backend == "sqlite":
                url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            else:
                url = await pg_database(args.pg_admin_url)
            try:
                await upgrade(url)
                print(f"{backend}: pipeline, {args.requests} messages from distinct members, "
                      f"{args.concurrency} in flight")
                await pipeline(url, args.requests, args.concurrency)
                print(f"{backend}: derived figures on {args.members} members × {args.days} days")
                await derived(url, args.members, args.days)
            finally:
                if backend != "sqlite":
                    await drop_pg(args.pg_admin_url, url)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
