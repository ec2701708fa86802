"""kill -9 in the middle of a scheduled post's fan-out, then a restart: every group gets the post, and the only
duplicates are sends that were in flight when the process died.

The bot runs as a real `python -m bot run` process (configuration in the environment), posting through the
group robot door to the fake WeCom on loopback (50 ms per call). 500 groups, each with its own robot, get
one post; once the fake has accepted some (not all) of them the process gets SIGKILL: no shutdown, no
lease given back. What was in flight is read from the database right after the kill (deliveries in
'sending'); a second process then takes those over when their lease (`push.lease_seconds`, short here)
runs out, and sends the rest. The fake's log is the proof: each group's count, and which groups got two.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from bot.push_spec import Schedule
from storage import push as store
from storage.db import Database, utcnow
from storage.groups import Group
from tests.fakes.wecom_server import FakeWeCom
from tests.push_helpers import (
    BotProcess,
    add_post,
    per_key_counts,
    qunbot_cli,
    seed_robot_groups,
    wait_until_settled,
)

GROUPS = 500
CONCURRENCY = 16
LEASE_SECONDS = 3.0
SETTINGS: dict[str, Any] = {
    # A dead process's claims are taken over after this lease (it must outlast one send's timeout).
    "push_lease_seconds": LEASE_SECONDS, "push_send_timeout_seconds": 2.5, "robot_timeout_seconds": 2,
    "robot_max_wait_seconds": 2, "push_concurrency": CONCURRENCY, "push_sync_interval_seconds": 0.5,
    "push_poll_interval_seconds": 0.2}


async def in_flight(db: Database, post_id: int) -> dict[int, str]:
    """Deliveries of the post in 'sending' (claimed, outcome not recorded): delivery id → group's chat id."""
    async with db.read_session() as session:
        rows = await session.execute(
            select(store.PushDelivery.id, Group.external_id).join(Group, Group.id == store.PushDelivery.group_id)  # type: ignore[call-overload]
            .join(store.PushRun, store.PushRun.id == store.PushDelivery.run_id)
            .where(store.PushRun.post_id == post_id, store.PushDelivery.status == store.SENDING))
        return {int(i): str(g) for i, g in rows.all()}


async def test_kill_9_mid_fan_out_then_restart_sends_to_every_group_with_duplicates_only_from_in_flight_sends(
        db_url, tmp_path):
    db = Database(db_url)
    fake = FakeWeCom()
    await fake.start()
    first = second = None
    try:
        fake.latency = 0.05
        pairs = await seed_robot_groups(db, fake, GROUPS, prefix="k")
        key_of = dict(pairs)
        keys = list(key_of.values())
        first = BotProcess(db_url, fake.base_url, tmp_path / "first.log", SETTINGS).start()
        await first.wait_healthy()
        post_id = await add_post(db, Schedule("once", run_at=utcnow() + timedelta(seconds=1)), "早上好，{group_name}！",
                                 name="crash")

        # Some, not all, delivered: kill -9.
        deadline = time.monotonic() + 30
        while len(fake.webhook_messages) < GROUPS // 5:
            assert time.monotonic() < deadline, f"the fan-out did not start:\n{first.log_tail()}"
            await asyncio.sleep(0.002)
        first.kill9()
        flying = await in_flight(db, post_id)
        await asyncio.sleep(0.3)  # calls the fake was still answering when the process died finish now
        at_kill = per_key_counts(fake)
        assert 0 < sum(at_kill.values()) < GROUPS
        assert 0 < len(flying) <= CONCURRENCY, flying  # a process holds at most push.concurrency claims
        assert "Traceback" not in first.log_text(), first.log_tail()

        # A new process finishes the fan-out: the pending ones at once, the dead one's claims after their lease.
        restarted = time.monotonic()
        second = BotProcess(db_url, fake.base_url, tmp_path / "second.log", SETTINGS).start()
        await second.wait_healthy()
        states = await wait_until_settled(db, post_id, GROUPS, within=40)
        took = time.monotonic() - restarted
        assert states == {store.SENT: GROUPS}, states
        assert took < 30, f"the takeover took {took:.1f} s"

        # The fake's records: every group has the post; a group got it twice only if its delivery was in flight
        # at the kill (sent by the dead process, not yet recorded), so the duplicates are at most those.
        counts = per_key_counts(fake, keys)
        assert min(counts[k] for k in keys) >= 1
        assert max(counts[k] for k in keys) <= 2
        twice = {k for k in keys if counts[k] == 2}
        flying_keys = {key_of[chat] for chat in flying.values()}
        assert twice <= flying_keys, twice - flying_keys
        assert len(twice) <= len(flying)
        for key in twice:  # the first copy came from the dead process: the fake had it by the kill
            assert at_kill[key] == 1

        # Deliveries taken over count a second attempt; every other one was sent on its first.
        async with db.read_session() as session:
            attempts = dict((await session.execute(
                select(store.PushDelivery.id, store.PushDelivery.attempts)
                .join(store.PushRun, store.PushRun.id == store.PushDelivery.run_id)
                .where(store.PushRun.post_id == post_id))).all())
        assert {attempts[d] for d in flying} == {2}
        assert {n for d, n in attempts.items() if d not in flying} == {1}

        # `qunbot push runs` (the CLI, its own process) shows the run with every delivery sent.
        shown = qunbot_cli(db_url, "push", "runs", "crash")
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert lines[0].startswith(f"run 1  post {post_id} crash  ") and lines[0].endswith(f"{GROUPS} target(s)")
        delivered = [line for line in lines[1:-1] if line.startswith("  robot/")]
        assert len(delivered) == GROUPS and all("\tsent\t" in line for line in delivered)
        assert sum("\tattempts 2 " in line for line in delivered) == len(flying)
        assert lines[-1] == (f"summary (post {post_id}): 1 runs (0 late, 0 skipped); {GROUPS} deliveries: "
                             f"0 pending, 0 sending, {GROUPS} sent, 0 failed, 0 skipped, 0 awaiting")
        print(f"\n{db.dialect}: killed after {sum(at_kill.values())} of {GROUPS} accepted, {len(flying)} in flight; "
              f"duplicates {len(twice)}; restart to all sent {took:.1f} s")
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.stop()
        await fake.stop()
        await db.close()
    assert second is not None and second.proc is not None and second.proc.returncode == 0, second.log_tail()
    assert "Traceback" not in second.log_text(), second.log_tail()


async def test_a_claim_takes_at_most_the_deliveries_asked_for(db_url):
    """The bound above needs it: a process holds at most push.concurrency claims, also right after a large run
    was recorded (PostgreSQL planned the old IN (subquery … LIMIT) so that the limit bounded nothing)."""
    db = Database(db_url)
    fake = FakeWeCom()
    try:
        await seed_robot_groups(db, fake, 200, prefix="c")
        now = utcnow()
        post_id = await add_post(db, Schedule("once", run_at=now), "早上好", name="claims", now=now - timedelta(minutes=1))
        async with db.session() as session:
            post = await store.get_post(session, post_id)
            assert post is not None
            await store.record_run(session, post, now, now=now)
        taken = [await store.claim(db, channels=["robot"], holder=f"p{n}", now=now, lease_seconds=60, limit=8)
                 for n in range(3)]
        assert [len(t) for t in taken] == [8, 8, 8]
        assert len({c.id for t in taken for c in t}) == 24
    finally:
        await db.close()
