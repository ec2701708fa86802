"""Benchmark: the console's dashboard on 1,000 groups and 1,000,000 member_activity rows.

Data (all of it inside the dashboard's 30-day window, the worst case): 1,000 groups of 100 members
(100,000 members and stays, 10 % of them left in the window), 1,000,000 activity rows (about 33 active
members per group and day), 300,000 check-ins, 30,000 daily FAQ counts. Bulk-loaded with executemany on
SQLite and COPY on PostgreSQL, then ANALYZE (VACUUM ANALYZE on PostgreSQL).

Measured, per backend:
- the storage queries behind each answer (storage/dashboard.py), first run and the median of the next ones;
- the API through a real socket with a logged-in session: GET /console/api/dashboard (overall and one
  group) and /console/api/groups, as the server's own time (its Server-Timing header) and the client's.
Target: every dashboard answer under 1 s of server time.

Run: .venv/bin/python -m bench.console_dashboard [--backends sqlite,postgresql] [--groups 1000] [--rows 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.callback_path import drop_pg, free_port, pg_database
from bot.config import load_config
from storage import dashboard as board
from storage.db import Database, utcnow
from storage.migrate import upgrade

TZ = "Asia/Shanghai"
DAYS = 30
PER_GROUP = 100
TARGET_MS = 1000.0


def generate(groups: int, rows: int, today: date, now: datetime) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows (explicit ids), deterministic."""
    rng = random.Random(7)
    pairs = groups * DAYS
    base, extra = divmod(rows, pairs)
    data: dict[str, list[tuple[Any, ...]]] = {k: [] for k in (
        "groups", "members", "memberships", "member_activity", "checkins", "faq_daily_counts")}
    stay_id = activity_id = checkin_id = 0
    for g in range(1, groups + 1):
        data["groups"].append((g, "simulator", f"bench-g{g}", f"压测群{g}", None, None, now - timedelta(days=90), None))
        first = (g - 1) * PER_GROUP + 1
        for m in range(first, first + PER_GROUP):
            data["members"].append((m, "simulator", f"bench-u{m}", f"成员{m}", None, now - timedelta(days=90), now))
            joined = now - timedelta(days=rng.uniform(0, 60))
            left = None
            if rng.random() < 0.10:
                left = min(now, joined + timedelta(days=rng.uniform(0, 30)))
            stay_id += 1
            data["memberships"].append((stay_id, g, m, joined, "link", None, left, "left" if left else None))
        for d in range(DAYS):
            day = today - timedelta(days=d)
            n = base + (1 if (g * DAYS + d) % pairs < extra else 0)
            active = rng.sample(range(first, first + PER_GROUP), n)
            at = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=2)
            for m in active:
                activity_id += 1
                data["member_activity"].append((activity_id, g, m, day, rng.randint(1, 20), rng.randint(0, 3), at, at))
            for position, m in enumerate(active[:10], start=1):
                checkin_id += 1
                data["checkins"].append((checkin_id, g, m, day, position, 10, None, at))
            data["faq_daily_counts"].append((g, day, rng.randint(0, 5), rng.randint(0, 2), rng.randint(0, 3)))
    return data


COLUMNS = {
    "groups": ("id", "channel", "external_id", "name", "owner", "timezone", "created_at", "dismissed_at"),
    "members": ("id", "channel", "external_id", "name", "kind", "created_at", "updated_at"),
    "memberships": ("id", "group_id", "member_id", "joined_at", "join_scene", "inviter_id", "left_at", "leave_scene"),
    "member_activity": ("id", "group_id", "member_id", "day", "messages", "commands", "first_at", "last_at"),
    "checkins": ("id", "group_id", "member_id", "day", "position", "points", "event_ref", "at"),
    "faq_daily_counts": ("group_id", "day", "answered", "suggested", "unanswered"),
}


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, date):
        return value.isoformat()
    return value


def load_sqlite(path: str, data: dict[str, list[tuple[Any, ...]]]) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA synchronous=OFF")
        for table, columns in COLUMNS.items():
            marks = ", ".join("?" * len(columns))
            conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",  # noqa: S608 - constants
                             ([_sqlite_value(v) for v in row] for row in data[table]))
        conn.commit()
        conn.execute("ANALYZE")
        conn.commit()
    finally:
        conn.close()


async def load_postgres(url: str, data: dict[str, list[tuple[Any, ...]]]) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        for table, columns in COLUMNS.items():
            await conn.copy_records_to_table(table, records=data[table], columns=list(columns))
            if "id" in columns:
                await conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


async def measure(fn: Callable[[], Awaitable[Any]], repeat: int = 5) -> tuple[float, float, float]:
    """(first run ms, median ms of the next `repeat`, max ms of those)."""
    times = []
    for _ in range(repeat + 1):
        started = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - started) * 1000)
    rest = times[1:]
    return times[0], statistics.median(rest), max(rest)


def report(what: str, first: float, median: float, worst: float, *, target: bool = True) -> bool:
    ok = max(first, worst) < TARGET_MS
    verdict = ("ok" if ok else "OVER 1 s") if target else ""
    print(f"  {what:<58} first {first:8.1f} ms   median {median:8.1f} ms   max {worst:8.1f} ms  {verdict}")
    return ok or not target


async def storage_queries(url: str, today: date) -> bool:
    db = Database(url)
    days = board.day_range(today, DAYS)
    ok = True
    try:
        async def overall() -> None:
            async with db.read_session() as session:
                await board.daily_series(session, days=days, tz=TZ, group_ids=None)
                await board.overview(session, group_ids=None)
                await board.most_active_groups(session, day=today, group_ids=None)

        async def one_group() -> None:
            async with db.read_session() as session:
                await board.daily_series(session, days=days, tz=TZ, group_ids={500})
                await board.overview(session, group_ids={500})

        async def admin_of_20() -> None:
            ids = set(range(100, 120))
            async with db.read_session() as session:
                await board.daily_series(session, days=days, tz=TZ, group_ids=ids)
                await board.overview(session, group_ids=ids)
                await board.most_active_groups(session, day=today, group_ids=ids)

        async def groups_page() -> None:
            async with db.read_session() as session:
                found, _ = await board.find_groups(session, group_ids=None, offset=0, limit=50)
                await board.group_stats(session, found, default_tz=TZ, now=utcnow())

        ok &= report("storage: dashboard, all 1,000 groups", *await measure(overall))
        ok &= report("storage: dashboard, one group", *await measure(one_group))
        ok &= report("storage: dashboard, a group admin's 20 groups", *await measure(admin_of_20))
        ok &= report("storage: groups page (50 groups with today's figures)", *await measure(groups_page))
    finally:
        await db.close()
    return ok


async def through_the_api(url: str) -> bool:
    from bot.app import create_app
    from bot.console.auth import hash_password
    from storage import console as console_store

    config = load_config(None, environ={"QUNBOT_DATABASE_URL": url, "QUNBOT_DATABASE_AUTO_MIGRATE": "false",
                                        "QUNBOT_LOG_LEVEL": "WARNING"})
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    ok = True
    try:
        db = Database(url)
        async with db.session() as session:
            await console_store.create_user(session, username="bench", password_hash=hash_password("bench password"),
                                            role=console_store.OPS_ADMIN)
        await db.close()
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.post(base + "/console/api/login", json={"username": "bench", "password": "bench password"}) as r:
                assert r.status == 200, await r.text()
            for what, path in (("API: GET /console/api/dashboard (all groups)", "/console/api/dashboard"),
                               ("API: GET /console/api/dashboard?group=500", "/console/api/dashboard?group=500"),
                               ("API: GET /console/api/groups (first page of 50)", "/console/api/groups")):
                server: list[float] = []
                client: list[float] = []
                for _ in range(6):
                    started = time.perf_counter()
                    async with http.get(base + path) as r:
                        body = await r.json()
                        assert r.status == 200, body
                        client.append((time.perf_counter() - started) * 1000)
                        server.append(float(r.headers["Server-Timing"].split("dur=")[1]))
                ok &= report(what + " — server", server[0], statistics.median(server[1:]), max(server[1:]))
                report(what + " — client", client[0], statistics.median(client[1:]), max(client[1:]), target=False)
                if path == "/console/api/dashboard":
                    active = body["series"]["active"]
                    print(f"    (today: {active[-1]} active members, {body['series']['checkins'][-1]} check-ins; "
                          f"{body['totals']['groups']} groups, {body['totals']['members']} members)")
    finally:
        await runner.cleanup()
    return ok


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=1_000_000, help="member_activity rows (default 1,000,000)")
    parser.add_argument("--pg-admin-url", default=os.environ.get("TEST_PG_URL",
                                                                 "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()
    now = utcnow()
    today = board.local_today(TZ, now)
    started = time.perf_counter()
    data = generate(args.groups, args.rows, today, now)
    print(f"generated {len(data['member_activity']):,} activity rows, {len(data['memberships']):,} stays, "
          f"{len(data['checkins']):,} check-ins over {args.groups:,} groups in {time.perf_counter() - started:.1f} s")
    all_ok = True
    for backend in args.backends.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.db'}" if backend == "sqlite" else await pg_database(args.pg_admin_url)
            try:
                await upgrade(url)
                started = time.perf_counter()
                if backend == "sqlite":
                    await asyncio.to_thread(load_sqlite, url.removeprefix("sqlite:///"), data)
                else:
                    await load_postgres(url, data)
                print(f"{backend}: bulk-loaded in {time.perf_counter() - started:.1f} s")
                all_ok &= await storage_queries(url, today)
                all_ok &= await through_the_api(url)
            finally:
                if backend != "sqlite":
                    await drop_pg(args.pg_admin_url, url)
    print("all dashboard answers under 1 s of server time" if all_ok else "SOME ANSWERS TOOK 1 s OR MORE")
    return 0 if all_ok else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
