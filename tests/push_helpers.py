"""Scheduled posts through real `qunbot run` processes and the fake WeCom's group robots: shared by the crash
test, the two-process test and the benchmarks (bench/push_fanout.py, bench/push_two_processes.py).

- `seed_robot_groups` makes robot groups as production has them after each group's robot called back once:
  a group row (door "robot", the ChatId) and the chat's webhook key (robot_chats), one robot per group;
- `add_post` records a post as `qunbot push add` does (any schedule, including a one-time post at a
  second's precision, which people cannot type but the table takes);
- `BotProcess` starts `python -m bot run` with its configuration in the environment, as in production,
  its log in a file; it stops with SIGINT or dies with SIGKILL;
- `delivery_states` and `wait_until_settled` read the outcome back from the database.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import func, insert, select

from bot.push_spec import Schedule
from storage import push as store
from storage.db import Database, utcnow
from storage.groups import Group
from storage.robot import RobotChat
from tests.fakes.wecom_server import FakeWeCom
from tests.wecom_helpers import AES_KEY, TOKEN

ROOT = Path(__file__).resolve().parent.parent
BATCH = 1000


def robot_key(prefix: str, n: int) -> str:
    """The webhook key of robot `n` (what WeCom would hand out; letters, digits and dashes)."""
    return f"{prefix}-key-{n:05d}"


def chat_id(prefix: str, n: int) -> str:
    return f"wr{prefix}{n:05d}"


async def seed_robot_groups(db: Database, fake: FakeWeCom, count: int, *, prefix: str = "g") -> list[tuple[str, str]]:
    """`count` robot groups, each with its own robot (known to the fake): [(chat id, webhook key)]."""
    now = utcnow()
    pairs = [(chat_id(prefix, n), robot_key(prefix, n)) for n in range(count)]
    for _, key in pairs:
        fake.add_robot(key)
    from bot.channels.robot_api import key_hash

    for start in range(0, count, BATCH):
        chunk = pairs[start:start + BATCH]
        async with db.session() as session:
            await session.execute(insert(Group), [
                {"channel": "robot", "external_id": chat, "name": f"群{chat[-5:]}", "created_at": now}
                for chat, _ in chunk])
            await session.execute(insert(RobotChat), [
                {"chat_id": chat, "chat_type": "group", "webhook_key": key, "key_hash": key_hash(key),
                 "first_seen_at": now, "updated_at": now} for chat, key in chunk])
    return pairs


async def add_post(db: Database, schedule: Schedule, content: str, *, name: str, now: datetime | None = None,
                   tz: str = "Asia/Shanghai", tag: str | None = None) -> int:
    """A post to every live robot group, or to those with `tag` (as `qunbot push add --all --channel robot`
    or `--tag` makes it)."""
    fields = store.PostFields(schedule=schedule, schedule_text=schedule.describe(tz), timezone=tz,
                              target_kind=store.TAG if tag else store.ALL, target_tag=tag, target_channel="robot",
                              content=content, name=name)
    async with db.session() as session:
        post = await store.create_post(session, fields, source=store.CLI, created_by="bench", now=now or utcnow())
    assert post.id is not None
    return post.id


async def tag_groups(db: Database, chats: list[str], tag: str) -> None:
    """Tag robot groups (as `qunbot push tag add` does)."""
    async with db.session() as session:
        ids = (await session.execute(select(Group.id).where(Group.channel == "robot", Group.external_id.in_(chats)))).scalars()  # type: ignore[attr-defined, call-overload]
        for group_id in ids:
            await store.add_tag(session, group_id, tag)


async def delivery_states(db: Database, post_id: int | None = None) -> Counter[str]:
    """Deliveries by state (of one post's runs, or of all)."""
    async with db.read_session() as session:
        return Counter(await store.delivery_counts(session, post_id))


async def run_ids(db: Database, post_id: int) -> list[int]:
    async with db.read_session() as session:
        rows = await session.execute(select(store.PushRun.id).where(store.PushRun.post_id == post_id)  # type: ignore[call-overload]
                                     .order_by(store.PushRun.scheduled_at))
        return list(rows.scalars())


async def wait_until_settled(db: Database, post_id: int, expected: int, *, within: float,
                             poll: float = 0.2) -> Counter[str]:
    """Wait until the post has `expected` deliveries and none is pending or sending; the final counts."""
    deadline = time.monotonic() + within
    while True:
        states = await delivery_states(db, post_id)
        if sum(states.values()) >= expected and not states[store.PENDING] and not states[store.SENDING]:
            return states
        if time.monotonic() > deadline:
            raise AssertionError(f"deliveries not settled within {within:g} s: {dict(states)}")
        await asyncio.sleep(poll)


async def delivery_count(db: Database, post_id: int) -> int:
    async with db.read_session() as session:
        return int((await session.execute(
            select(func.count()).select_from(store.PushDelivery).join(store.PushRun)
            .where(store.PushRun.post_id == post_id))).scalar_one())  # type: ignore[arg-type]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bot_env(db_url: str, fake_url: str, port: int, **settings: Any) -> dict[str, str]:
    """The environment of a `qunbot run` process with the robot door against the fake WeCom and scheduled
    posts on; `settings` are further QUNBOT_* values by key (`push_lease_seconds=5`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUNBOT_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    values: dict[str, Any] = {
        "database_url": db_url, "database_auto_migrate": False, "server_port": port, "simulator_enabled": False,
        "robot_enabled": True, "robot_api_base_url": fake_url, "robot_token": TOKEN, "robot_encoding_aes_key": AES_KEY,
        "push_quiet_hours": "", "push_daily_cap": 0, "log_level": "INFO", **settings}
    for key, value in values.items():
        env[f"QUNBOT_{key.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def cli_env(db_url: str) -> dict[str, str]:
    """The environment of a `qunbot` CLI command on this database (nothing else configured)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUNBOT_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env | {"QUNBOT_DATABASE_URL": db_url, "QUNBOT_DATABASE_AUTO_MIGRATE": "false"}


def qunbot_cli(db_url: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `python -m bot ARGS` (the `qunbot` command) as its own process."""
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=ROOT, env=cli_env(db_url),  # noqa: S603
                          capture_output=True, text=True, timeout=timeout)


@dataclass
class BotProcess:
    """A `python -m bot run` process; its log (stderr) goes to `log_path`."""

    db_url: str
    fake_url: str
    log_path: Path
    settings: dict[str, Any] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    # Between the interpreter and "-m bot run" (e.g. ["-m", "cProfile", "-o", "bot.prof"] to profile it).
    python_args: list[str] = field(default_factory=list)

    def start(self) -> BotProcess:
        env = bot_env(self.db_url, self.fake_url, self.port, **self.settings)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, *self.python_args, "-m", "bot", "run"], cwd=ROOT, env=env,  # noqa: S603
                                         stdout=subprocess.DEVNULL, stderr=log)
        return self

    async def wait_healthy(self, within: float = 30.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + within
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"bot exited with {self.proc.returncode}:\n{self.log_tail()}")
                try:
                    async with http.get(f"http://127.0.0.1:{self.port}/healthz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"bot on port {self.port} did not become healthy:\n{self.log_tail()}")

    def kill9(self) -> None:
        """SIGKILL: no shutdown, no lease given back, nothing flushed."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGINT and wait; the exit code (killed if it does not stop in time)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -9

    def cpu_seconds(self) -> float:
        """User plus system CPU time the process has used so far (Linux)."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def per_key_counts(fake: FakeWeCom, keys: list[str] | None = None) -> Counter[str]:
    """Messages the fake accepted, per robot key."""
    counts = Counter(m["key"] for m in fake.webhook_messages)
    if keys is not None:
        for key in keys:
            counts.setdefault(key, 0)
    return counts


async def pg_database(admin_url: str, prefix: str = "qunbot_push") -> str:
    """A new, empty PostgreSQL database; its URL."""
    import secrets

    import asyncpg

    name = f"{prefix}_{secrets.token_hex(3)}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return admin_url.rsplit("/", 1)[0] + "/" + name


async def drop_pg_database(admin_url: str, url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await conn.close()


# -- checking runs against what the fake received ---------------------------------------------------------

SENT_LINE = re.compile(r"push delivery sent delivery=(\d+) ")


def deliveries_sent_by(log_text: str) -> set[int]:
    """Ids of the deliveries a process recorded as sent, from its log."""
    return {int(m.group(1)) for m in SENT_LINE.finditer(log_text)}


@dataclass
class RunReport:
    run_id: int
    post: str
    scheduled_at: datetime
    recorded_by: str
    targets: int
    states: Counter[str]
    retried: int
    # deliveries by the process that recorded them sent (index into the logs given)
    sent_by: Counter[int]
    # messages of this post the fake accepted between this run's time and the next run's
    at_fake: int


async def run_reports(db: Database, fake: FakeWeCom, post_names: dict[int, str], logs: list[str]) -> list[RunReport]:
    """Every run of the posts, with its deliveries' states, which process sent them, and how many messages of
    the post the fake accepted in the run's slot (from its time until the post's next run). A message is
    recognised by the post's name at the start of its text ("【name】…")."""
    by_process = [deliveries_sent_by(text) for text in logs]
    async with db.read_session() as session:
        runs = (await session.execute(select(store.PushRun).where(store.PushRun.post_id.in_(list(post_names)))  # type: ignore[attr-defined]
                                      .order_by(store.PushRun.post_id, store.PushRun.scheduled_at))).scalars().all()  # type: ignore[arg-type]
        rows = (await session.execute(select(store.PushDelivery.id, store.PushDelivery.run_id, store.PushDelivery.status,  # type: ignore[call-overload]
                                             store.PushDelivery.attempts)
                                      .where(store.PushDelivery.run_id.in_([r.id for r in runs])))).all()  # type: ignore[attr-defined]
    to_wall = time.time() - time.monotonic()
    accepted: dict[str, list[float]] = {name: [] for name in post_names.values()}
    for message in fake.webhook_messages:
        content = str((message.get("text") or message.get("markdown") or {}).get("content", ""))
        name = content[1:content.find("】")] if content.startswith("【") else ""
        if name in accepted:
            accepted[name].append(message["at"] + to_wall)
    reports = []
    for n, run in enumerate(runs):
        assert run.id is not None
        mine = [r for r in rows if r.run_id == run.id]
        name = post_names[run.post_id]
        start = run.scheduled_at.timestamp()
        following = runs[n + 1] if n + 1 < len(runs) and runs[n + 1].post_id == run.post_id else None
        end = following.scheduled_at.timestamp() if following else float("inf")
        reports.append(RunReport(
            run.id, name, run.scheduled_at, run.instance, run.targets, Counter(r.status for r in mine),
            sum(1 for r in mine if r.attempts > 1),
            Counter(i for r in mine for i, sent in enumerate(by_process) if r.id in sent),
            sum(1 for t in accepted[name] if start <= t < end)))
    return reports
