"""Benchmark: drawing a lottery with 10,000 and 100,000 entrants, on SQLite and PostgreSQL.

For each size it prints the pure algorithm's time (bot.lottery_draw.draw: sort, hash, picks) and the full
draw as the bot runs it (claim with a lease, read the frozen entrant list, draw, write round, winners and
proof in one transaction), i.e. including the database reads and writes. Setting up the entrants is not
timed. Target: under a second for 10,000 entrants.

Run: .venv/bin/python -m bench.lottery_draw [--sizes 10000 100000] [--backends sqlite postgresql] [--repeat 3]
PostgreSQL: a scratch database is created next to $TEST_PG_URL (default postgresql://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy import insert, select, update

from bot import lottery_draw
from storage import lottery as store
from storage.db import Database, utcnow
from storage.groups import Member, ensure_group
from storage.lottery import LotteryEntry, PrizeSpec
from storage.migrate import upgrade

PRIZES = [PrizeSpec("一等奖", 1), PrizeSpec("二等奖", 10), PrizeSpec("三等奖", 100)]
PG_ADMIN_URL = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def pure_algorithm(size: int, repeat: int) -> float:
    """Median seconds of bot.lottery_draw.draw over `size` entrants."""
    ids = [f"wm{n:08d}{uuid.uuid4().hex[:6]}" for n in range(size)]
    times = []
    for _ in range(repeat):
        seed = lottery_draw.new_seed()
        start = time.perf_counter()
        lottery_draw.draw(seed, ids, [(p.name, p.stock) for p in PRIZES])
        times.append(time.perf_counter() - start)
    return statistics.median(times)


async def seed_lottery(db: Database, size: int, tag: str) -> int:
    """A lottery with `size` entrants (bulk-inserted, untimed), its deadline passed."""
    now = utcnow()
    async with db.session() as session:
        group = await ensure_group(session, "bench", f"group-{tag}")
        lottery, _ = await store.create_lottery(session, group_id=group.id, title=f"bench {size}",  # type: ignore[arg-type]
                                                keyword=f"kw{tag}", deadline=now - timedelta(seconds=1),
                                                prizes=PRIZES, now=now - timedelta(hours=1))
        users = [f"wm{tag}{n:08d}" for n in range(size)]
        for chunk in range(0, size, 5000):
            part = users[chunk:chunk + 5000]
            await session.execute(insert(Member), [{"channel": "bench", "external_id": u, "name": u,
                                                    "created_at": now, "updated_at": now} for u in part])
            ids = dict((await session.execute(select(Member.external_id, Member.id)
                                              .where(Member.external_id.in_(part)))).all())  # type: ignore[attr-defined]
            await session.execute(insert(LotteryEntry), [{"lottery_id": lottery.id, "member_id": ids[u], "user": u,
                                                          "joined_at": now} for u in part])
        await session.execute(update(store.Lottery).where(store.Lottery.id == lottery.id)
                              .values(entrant_count=size))
        return lottery.id  # type: ignore[return-value]


async def full_draw(db: Database, lottery_id: int) -> float:
    """Seconds for the bot's draw: claim, read the entrants, draw, record."""
    holder = f"bench-{uuid.uuid4().hex[:6]}"
    start = time.perf_counter()
    claimed = await store.claim(db, lottery_id, holder=holder, lease_seconds=60, now=utcnow())
    assert claimed is not None
    assert await store.record_draw(db, lottery_id, holder=holder, actor="bench", now=utcnow(), keep_lease=True)
    elapsed = time.perf_counter() - start
    async with db.session() as session:
        lottery = await store.get_lottery(session, lottery_id)
        assert lottery is not None and not await store.verify_stored(session, lottery)
    return elapsed


async def run_backend(url: str, sizes: list[int], repeat: int) -> dict[int, float]:
    await upgrade(url)
    db = Database(url)
    try:
        results = {}
        for size in sizes:
            times = []
            for r in range(repeat):
                lottery_id = await seed_lottery(db, size, f"{size}x{r}{uuid.uuid4().hex[:4]}")
                times.append(await full_draw(db, lottery_id))
            results[size] = statistics.median(times)
        return results
    finally:
        await db.close()


async def postgres_url() -> tuple[str, str]:
    import asyncpg

    name = f"qunbot_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name, name


async def drop_postgres(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the median is printed")
    args = parser.parse_args()

    winners = sum(p.stock for p in PRIZES)
    print(f"prizes: {', '.join(f'{p.name} x{p.stock}' for p in PRIZES)} ({winners} winners); median of {args.repeat}")
    for size in args.sizes:
        print(f"pure algorithm      {size:>7} entrants: {pure_algorithm(size, args.repeat) * 1000:8.1f} ms")
    for backend in args.backends:
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                results = await run_backend(f"sqlite:///{Path(tmp) / 'bench.db'}", args.sizes, args.repeat)
        else:
            url, name = await postgres_url()
            try:
                results = await run_backend(url, args.sizes, args.repeat)
            finally:
                await drop_postgres(name)
        for size, seconds in results.items():
            verdict = "" if size != 10_000 else ("  (target < 1000 ms: met)" if seconds < 1 else "  (target < 1000 ms: MISSED)")
            print(f"draw with DB {backend:<10} {size:>7} entrants: {seconds * 1000:8.1f} ms{verdict}")


if __name__ == "__main__":
    asyncio.run(main())
