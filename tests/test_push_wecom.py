"""Scheduled posts through the WeCom app door, against the fake WeCom over real sockets, on SQLite and PostgreSQL.

Customer groups (客户群) take a post only as an add_msg_template task their owner sends from the WeCom client:
the delivery waits in state "awaiting" until the owner confirms (then sent) or the task expires (then failed,
and the task cancelled), each step with its reason in `qunbot push runs`. App chats the app created get posts
straight away with appchat/send. Time is driven by passing `now` (the background jobs run on the real clock,
years before these tests' dates, and the task job's own timer is set far beyond the test).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import select, update

from bot.push_spec import parse_schedule
from scheduler.push import PushService, service
from storage import push as store
from storage import wecom_push as wstore
from storage.groups import Group, ensure_group
from storage.push import PushDailyCount, PushDelivery, PushPost, PushRun
from tests.conftest import make_config
from tests.fakes.wecom_server import FakeWeCom
from tests.test_lottery import cli
from tests.wecom_helpers import CORP_ID, wecom_env

SECRET = "s3cret"
AGENT_ID = 1000002
SHANGHAI = "Asia/Shanghai"
# 09:00 in Shanghai on 1 May 2030.
T0 = datetime(2030, 5, 1, 1, 0, tzinfo=UTC)
BEFORE = T0 - timedelta(hours=12)
ADD_MSG_TEMPLATE = "externalcontact/add_msg_template"


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeWeCom]:
    # Requested before bot_factory, so the bots stop before the fake does.
    async with FakeWeCom(corp_id=CORP_ID, corp_secret=SECRET) as server:
        yield server


def config(db_url: str, fake: FakeWeCom, *, push: dict[str, Any] | None = None, **wecom: Any) -> Any:
    """The WeCom app against the fake; quiet hours off; the task job's own timer far beyond the test."""
    section = wecom_env(api_base_url=fake.base_url, corp_secret=SECRET, agent_id=AGENT_ID,
                        sync_welcome_template=False, group_msg_poll_seconds=3600, **wecom)
    return make_config(db_url, wecom=section, push={"quiet_hours": "", **(push or {})})


async def wecom_groups(bot: Any, *chats: str) -> list[Group]:
    async with bot.runtime.db.session() as session:
        return [await ensure_group(session, "wecom", chat, f"群{chat}") for chat in chats]


async def add_post(bot: Any, schedule: str, content: str, groups: list[Group], *, name: str | None = None) -> PushPost:
    """A post made by ops (as `qunbot push add --group wecom:… ` does), created before the tests' times."""
    fields = store.PostFields(schedule=parse_schedule(schedule, tz=SHANGHAI, now=BEFORE), schedule_text=schedule,
                              timezone=SHANGHAI, target_kind=store.GROUPS, content=content,
                              group_ids=tuple(g.id for g in groups), name=name)  # type: ignore[misc]
    async with bot.runtime.db.session() as session:
        return await store.create_post(session, fields, source=store.CLI, created_by="test", now=BEFORE)


def push_of(bot: Any) -> PushService:
    found = service(bot.runtime)
    assert found is not None
    return found


def job_of(bot: Any) -> Any:
    return bot.runtime.channels["wecom"].group_msgs


async def fire(bot: Any, post: PushPost, at: datetime) -> int:
    """The post's timer goes off at `at` and the outbox takes what is due; how many deliveries it took."""
    assert await push_of(bot).fire(post.id, now=at)  # type: ignore[arg-type]
    return await push_of(bot).deliver_due(now=at)


async def states(bot: Any, post: PushPost | None = None) -> dict[tuple[datetime, str], tuple[str, str]]:
    """(run time, chat) → (delivery state, reason)."""
    query = (select(PushDelivery, PushRun.scheduled_at, Group.external_id)
             .join(PushRun, PushRun.id == PushDelivery.run_id).join(Group, Group.id == PushDelivery.group_id))
    if post is not None:
        query = query.where(PushRun.post_id == post.id)
    async with bot.runtime.db.session() as session:
        rows = (await session.execute(query)).all()
    return {(at, chat): (d.status, d.reason) for d, at, chat in rows}


async def sent_at(bot: Any, chat: str) -> list[datetime | None]:
    async with bot.runtime.db.session() as session:
        rows = await session.execute(select(PushDelivery.sent_at).join(Group, Group.id == PushDelivery.group_id)
                                     .where(Group.external_id == chat))
        return list(rows.scalars())


def task_of(fake: FakeWeCom, sender: str) -> dict[str, Any]:
    [body] = [t for t in fake.msg_templates if t["sender"] == sender]
    return body


# -- customer groups -------------------------------------------------------------------------------------


async def test_customer_group_posts_make_one_task_per_owner_awaiting_confirmation_until_sent(
        db_url, fake, bot_factory, monkeypatch, capsys):
    fake.add_group_chat("wrA1", name="读书会一群", owner="zhangsan")
    fake.add_group_chat("wrA2", name="读书会二群", owner="zhangsan")
    fake.add_group_chat("wrB1", name="跑步群", owner="lisi")
    bot = await bot_factory(config(db_url, fake))
    groups = await wecom_groups(bot, "wrA1", "wrA2", "wrB1")
    post = await add_post(bot, "每天 09:00", "早上好，今天是{date}", groups, name="morning")

    assert await fire(bot, post, T0) == 3
    # Queued for each group's owner (read with groupchat/get), nothing at WeCom yet.
    assert await states(bot) == {
        (T0, "wrA1"): (store.AWAITING, "queued for an add_msg_template task to the group owner zhangsan"),
        (T0, "wrA2"): (store.AWAITING, "queued for an add_msg_template task to the group owner zhangsan"),
        (T0, "wrB1"): (store.AWAITING, "queued for an add_msg_template task to the group owner lisi")}
    assert fake.msg_templates == []
    async with bot.runtime.db.session() as session:
        owners = dict((await session.execute(select(Group.external_id, Group.owner))).all())
    assert owners == {"wrA1": "zhangsan", "wrA2": "zhangsan", "wrB1": "lisi"}

    # The task job: one task per owner, with all their groups.
    assert await job_of(bot).run_once(T0 + timedelta(seconds=5))
    assert fake.calls_to(ADD_MSG_TEMPLATE) == 2
    zhang, li = task_of(fake, "zhangsan"), task_of(fake, "lisi")
    assert (zhang["chat_type"], zhang["chat_id_list"], zhang["text"]) == (
        "group", ["wrA1", "wrA2"], {"content": "早上好，今天是2030年5月1日"})
    assert li["chat_id_list"] == ["wrB1"]
    got = await states(bot)
    for chat, task in (("wrA1", zhang), ("wrA2", zhang), ("wrB1", li)):
        status, reason = got[(T0, chat)]
        assert status == store.AWAITING
        assert reason.startswith(f"awaiting confirmation by the group owner {task['sender']} in the WeCom client: "
                                 f"task {task['msgid']}, created 2030-05-01 01:00 UTC, given up at 2030-05-02 01:00 UTC")
    code, out, _ = await cli(monkeypatch, capsys, db_url, "push", "runs", "morning")
    assert code == 0
    assert "  wecom/wrA1 (群wrA1)\tawaiting\tattempts 1  awaiting confirmation by the group owner zhangsan" in out
    assert "3 deliveries: 0 pending, 0 sending, 0 sent, 0 failed, 0 skipped, 3 awaiting" in out

    # Looked at again before anyone confirmed: still awaiting, and no task is created twice.
    await job_of(bot).run_once(T0 + timedelta(minutes=10))
    assert {s for s, _ in (await states(bot)).values()} == {store.AWAITING}
    assert fake.calls_to("externalcontact/get_groupmsg_task") == 2

    # zhangsan sends it from the client, leaving 读书会二群 out; lisi has not yet.
    fake.confirm_group_msg(zhang["msgid"], leave_out=["wrA2"])
    await job_of(bot).run_once(T0 + timedelta(minutes=20))
    got = await states(bot)
    assert got[(T0, "wrA1")] == (store.SENT, f"sent by the group owner zhangsan (task {zhang['msgid']})")
    assert got[(T0, "wrA2")] == (store.FAILED, "the owner sent the task without this group (send result status 0)")
    assert got[(T0, "wrB1")][0] == store.AWAITING
    [when] = await sent_at(bot, "wrA1")
    assert when is not None and abs((when - datetime.now(UTC)).total_seconds()) < 60  # WeCom's send time

    fake.confirm_group_msg(li["msgid"])
    await job_of(bot).run_once(T0 + timedelta(minutes=30))
    assert (await states(bot))[(T0, "wrB1")][0] == store.SENT
    code, out, _ = await cli(monkeypatch, capsys, db_url, "push", "runs", "morning")
    assert "3 deliveries: 0 pending, 0 sending, 2 sent, 1 failed, 0 skipped, 0 awaiting" in out
    assert "wecom/wrA2 (群wrA2)\tfailed\tattempts 1  the owner sent the task without this group" in out
    assert fake.calls_to(ADD_MSG_TEMPLATE) == 2


async def test_the_per_period_cap_skips_posts_beyond_it_and_a_failed_task_gives_its_slot_back(
        db_url, fake, bot_factory):
    fake.add_group_chat("wrA1", owner="zhangsan")
    bot = await bot_factory(config(db_url, fake, group_msg_cap=2, group_msg_confirm_hours=2))
    groups = await wecom_groups(bot, "wrA1")
    post = await add_post(bot, "每天 09:00", "每日打卡提醒", groups)
    days = [T0 + timedelta(days=n) for n in range(4)]

    for day in days[:3]:
        assert await fire(bot, post, day) == 1
    got = await states(bot)
    assert [got[(d, "wrA1")][0] for d in days[:3]] == [store.AWAITING, store.AWAITING, store.SKIPPED]
    assert got[(days[2], "wrA1")][1] == ("WeCom customer-group cap reached: 2 mass messages per month "
                                         "(2030-05, Asia/Shanghai) already sent or awaiting confirmation")
    group_id = groups[0].id
    assert await wstore.quota_used(bot.runtime.db, wstore.group_key(group_id), "2030-05") == 2  # type: ignore[arg-type]

    # One task per run (one text, one owner, but two runs); the owner sends the first, never the second.
    created = days[2] + timedelta(minutes=1)
    await job_of(bot).run_once(created)
    assert fake.calls_to(ADD_MSG_TEMPLATE) == 2
    fake.confirm_group_msg(fake.msg_templates[0]["msgid"])
    await job_of(bot).run_once(created + timedelta(hours=2))
    got = await states(bot)
    assert got[(days[0], "wrA1")][0] == store.SENT
    assert got[(days[1], "wrA1")] == (store.FAILED, "not confirmed by the group owner zhangsan within 2 h: task "
                                      f"{fake.msg_templates[1]['msgid']} cancelled at WeCom")
    # The expired task gave its slot back: the next day's post is queued again.
    assert await wstore.quota_used(bot.runtime.db, wstore.group_key(group_id), "2030-05") == 1  # type: ignore[arg-type]
    assert await fire(bot, post, days[3]) == 1
    assert (await states(bot))[(days[3], "wrA1")][0] == store.AWAITING


async def test_wecom_refusing_a_group_over_its_own_limit_is_recorded_failed_with_the_reason(
        db_url, fake, bot_factory):
    fake.add_group_chat("wrA1", owner="zhangsan")
    fake.group_msg_month_limit = 1  # WeCom's own count; the bot's cap is off
    bot = await bot_factory(config(db_url, fake, group_msg_cap=0))
    post = await add_post(bot, "每天 09:00", "每日打卡提醒", await wecom_groups(bot, "wrA1"))
    for n in range(2):
        at = T0 + timedelta(days=n)
        await fire(bot, post, at)
        await job_of(bot).run_once(at)
        fake.confirm_group_msg(fake.msg_templates[n]["msgid"])
        await job_of(bot).run_once(at + timedelta(minutes=10))
    got = await states(bot)
    assert got[(T0, "wrA1")][0] == store.SENT
    assert got[(T0 + timedelta(days=1), "wrA1")] == (
        store.FAILED, "not sent by WeCom: the group already received its share of mass messages for the period "
                      "(send result status 3)")


async def test_unconfirmed_and_unknown_tasks_are_recorded_failed_never_dropped_or_created_twice(
        db_url, fake, bot_factory, monkeypatch, capsys):
    for chat in ("wrA1", "wrA2", "wrA3"):
        fake.add_group_chat(chat, owner="zhangsan")
    bot = await bot_factory(config(db_url, fake, group_msg_confirm_hours=2))
    g1, g2, g3 = await wecom_groups(bot, "wrA1", "wrA2", "wrA3")
    expiring = await add_post(bot, "每天 09:00", "直播预告", [g1], name="live")
    await fire(bot, expiring, T0)
    await job_of(bot).run_once(T0)
    [task] = fake.msg_templates
    await job_of(bot).run_once(T0 + timedelta(hours=1, minutes=59))
    assert (await states(bot, expiring))[(T0, "wrA1")][0] == store.AWAITING

    # Two hours on, unsent: cancelled at WeCom (the owner can no longer send it) and recorded failed.
    await job_of(bot).run_once(T0 + timedelta(hours=2))
    assert (await states(bot, expiring))[(T0, "wrA1")] == (
        store.FAILED, f"not confirmed by the group owner zhangsan within 2 h: task {task['msgid']} cancelled at WeCom")
    assert fake.group_msg_tasks[task["msgid"]]["status"] == "cancelled"
    with pytest.raises(ValueError, match="cancelled"):
        fake.confirm_group_msg(task["msgid"])
    # Its slots came back: the group's month, and the day's push.daily_cap.
    assert await wstore.quota_used(bot.runtime.db, wstore.group_key(g1.id), "2030-05") == 0  # type: ignore[arg-type]
    async with bot.runtime.db.session() as session:
        assert [c.sent for c in (await session.execute(select(PushDailyCount))).scalars()] == [0]

    # add_msg_template times out (a 502): it may have created the task, so it is not called again; the
    # delivery is failed with the reason instead of risking the owner getting it twice.
    unsure = await add_post(bot, "每天 12:00", "周末活动", [g2], name="unsure")
    at = T0 + timedelta(hours=3)
    assert await fire(bot, unsure, at) == 1
    fake.http_fail_next(ADD_MSG_TEMPLATE, 502)
    await job_of(bot).run_once(at)
    await job_of(bot).run_once(at + timedelta(hours=1))
    assert fake.calls_to(ADD_MSG_TEMPLATE) == 2
    [(status, reason)] = (await states(bot, unsure)).values()
    assert status == store.FAILED and reason.startswith(
        "add_msg_template outcome unknown (externalcontact/add_msg_template no answer: HTTP 502): not tried again")

    # A process died between recording a task and WeCom's answer: once its lease ran out, the task's
    # deliveries are recorded failed, and no other process creates it again.
    died = await add_post(bot, "每天 13:00", "新品上架", [g3], name="died")
    at = T0 + timedelta(hours=4)
    assert await fire(bot, died, at) == 1
    [batch] = await wstore.ready_batches(bot.runtime.db, channel="wecom", now=at, settle_seconds=60)
    assert await wstore.open_task(bot.runtime.db, run_id=batch.run_id, sender=batch.sender, text=batch.text,
                                  delivery_ids=[d for d, _ in batch.targets], holder="dead-process", now=at,
                                  lease_seconds=300)
    await job_of(bot).run_once(at + timedelta(seconds=60))
    assert (await states(bot, died))[(at, "wrA3")][0] == store.AWAITING  # its creator may still be at it
    await job_of(bot).run_once(at + timedelta(seconds=301))
    [(status, reason)] = (await states(bot, died)).values()
    assert status == store.FAILED and reason.startswith("add_msg_template outcome unknown: the process creating")
    assert fake.calls_to(ADD_MSG_TEMPLATE) == 2
    code, out, _ = await cli(monkeypatch, capsys, db_url, "push", "runs")
    assert "3 deliveries: 0 pending, 0 sending, 0 sent, 3 failed, 0 skipped, 0 awaiting" in out


async def test_a_group_that_changed_hands_is_refused_for_its_old_owner_and_the_next_post_goes_to_the_new_one(
        db_url, fake, bot_factory):
    fake.add_group_chat("wrA1", owner="wangwu")
    bot = await bot_factory(config(db_url, fake))
    [group] = await wecom_groups(bot, "wrA1")
    async with bot.runtime.db.session() as session:  # known from before the group changed hands
        await session.execute(update(Group).where(Group.id == group.id).values(owner="zhangsan"))
    post = await add_post(bot, "每天 09:00", "早上好", [group])
    await fire(bot, post, T0)
    await job_of(bot).run_once(T0)
    assert (await states(bot))[(T0, "wrA1")] == (
        store.FAILED, "WeCom refused this group for owner zhangsan (add_msg_template fail_list); its owner is read "
                      "again for the next post")
    tomorrow = T0 + timedelta(days=1)
    await fire(bot, post, tomorrow)
    await job_of(bot).run_once(tomorrow)
    assert task_of(fake, "wangwu")["chat_id_list"] == ["wrA1"]
    assert (await states(bot))[(tomorrow, "wrA1")][1].startswith("awaiting confirmation by the group owner wangwu")


async def test_two_processes_queue_and_create_each_task_once(db_url, fake, bot_factory):
    for n in range(6):
        fake.add_group_chat(f"wrA{n}", owner="zhangsan" if n < 4 else "lisi")
    cfg = config(db_url, fake, push={"concurrency": 2})
    first, second = await bot_factory(cfg), await bot_factory(cfg)
    groups = await wecom_groups(first, *[f"wrA{n}" for n in range(6)])
    same = await add_post(first, "每天 09:00", "早上好", groups)
    own = await add_post(first, "每天 09:00", "{group_name}，早上好", groups[:2])

    # Both processes' timers fire and both outboxes deliver at once: every delivery queued once.
    await asyncio.gather(push_of(first).fire(same.id, now=T0), push_of(second).fire(same.id, now=T0),  # type: ignore[arg-type]
                         push_of(first).fire(own.id, now=T0), push_of(second).fire(own.id, now=T0))  # type: ignore[arg-type]
    taken = await asyncio.gather(push_of(first).deliver_due(now=T0), push_of(second).deliver_due(now=T0))
    assert sum(taken) == 8
    # Both create tasks at once (even without the job's lease): each group is in one task.
    created = await asyncio.gather(job_of(first).create_tasks(T0), job_of(second).create_tasks(T0))
    # "早上好" to each owner's groups, and one task per group for the text with its name in it.
    assert sum(created) == 4 == fake.calls_to(ADD_MSG_TEMPLATE)
    chats = sorted(c for t in fake.msg_templates for c in t["chat_id_list"])
    assert chats == sorted([f"wrA{n}" for n in range(6)] + ["wrA0", "wrA1"])
    assert sorted(t["text"]["content"] for t in fake.msg_templates if len(t["chat_id_list"]) == 1) == [
        "群wrA0，早上好", "群wrA1，早上好"]
    # The job itself runs in one process at a time (a database lease).
    ran = await asyncio.gather(job_of(first).run_once(T0), job_of(second).run_once(T0))
    assert sorted(ran) == [False, True]
    assert fake.calls_to(ADD_MSG_TEMPLATE) == 4


async def test_a_task_carries_at_most_the_apis_number_of_groups_and_a_busy_wecom_is_tried_again(
        db_url, fake, bot_factory, monkeypatch):
    monkeypatch.setattr("bot.channels.wecom_push.MSG_TEMPLATE_MAX_CHATS", 2)  # 2000 at WeCom
    for n in range(5):
        fake.add_group_chat(f"wrA{n}", owner="zhangsan")
    bot = await bot_factory(config(db_url, fake))
    client = bot.runtime.wecom
    client._backoff_base, client._backoff_max = 0.001, 0.002  # the client's own retries, quickly
    post = await add_post(bot, "每天 09:00", "早上好", await wecom_groups(bot, *[f"wrA{n}" for n in range(5)]))
    assert await fire(bot, post, T0) == 5

    # WeCom is busy through all of the client's tries: refused before anything was done, so the first task's
    # groups are queued again with the reason, the others wait, and the next pass creates the tasks.
    fake.fail_next(ADD_MSG_TEMPLATE, -1, times=4)
    await job_of(bot).run_once(T0)
    assert fake.msg_templates == [] and fake.calls_to(ADD_MSG_TEMPLATE) == 4
    assert sorted(r for _, r in (await states(bot)).values()) == [
        "add_msg_template failed, trying again: externalcontact/add_msg_template errcode -1: system busy"] * 2 + [
        "queued for an add_msg_template task to the group owner zhangsan"] * 3
    assert {s for s, _ in (await states(bot)).values()} == {store.AWAITING}
    await job_of(bot).run_once(T0 + timedelta(seconds=30))
    assert [len(t["chat_id_list"]) for t in fake.msg_templates] == [2, 2, 1]
    assert sorted(c for t in fake.msg_templates for c in t["chat_id_list"]) == [f"wrA{n}" for n in range(5)]
    assert all(r.startswith("awaiting confirmation by the group owner zhangsan") for _, r in (await states(bot)).values())


# -- app chats -------------------------------------------------------------------------------------------


async def test_app_chat_posts_arrive_at_once_transient_errors_are_retried_and_limits_defer(
        db_url, fake, bot_factory):
    fake.appchats = {"ops-room", "vip-room"}
    bot = await bot_factory(config(db_url, fake, appchat_ids="ops-room,vip-room,gone-room", appchat_per_day=4,
                                   push={"retry_base_seconds": 10}))
    ops, vip, gone = await wecom_groups(bot, "ops-room", "vip-room", "gone-room")
    post = await add_post(bot, "每天 09:00", "{group_name} 早会", [ops, vip, gone])

    fake.http_fail_next("appchat/send", 502, only={"chatid": "ops-room"})  # the first send there gets no answer
    assert await fire(bot, post, T0) == 3
    got = await states(bot)
    sent = {m["chatid"]: m["text"]["content"] for m in fake.appchat_messages}
    assert len(sent) == 1 and sent.popitem()[1].endswith(" 早会")
    failed = [chat for (_, chat), (s, _) in got.items() if s == store.PENDING]
    assert len(failed) == 1 and got[(T0, failed[0])][1].startswith(
        "attempt 1 failed: appchat/send no answer: HTTP 502; retry at 01:00:10 UTC")
    assert got[(T0, "gone-room")] == (store.FAILED, "appchat/send errcode 40050: invalid chatid")

    # The retry goes through; no confirmation is involved.
    assert await push_of(bot).deliver_due(now=T0 + timedelta(seconds=10)) == 1
    got = await states(bot)
    assert got[(T0, "ops-room")][0] == got[(T0, "vip-room")][0] == store.SENT
    assert sorted(m["chatid"] for m in fake.appchat_messages) == ["ops-room", "vip-room"]
    assert {m["text"]["content"] for m in fake.appchat_messages} == {"群ops-room 早会", "群vip-room 早会"}
    assert fake.msg_templates == []

    # The app's appchat/send limit per day (4 here; three counted: two sent, one unanswered; WeCom's refusal
    # of gone-room posted nothing) defers the sends beyond it without using up a try.
    assert await fire(bot, post, T0 + timedelta(days=1)) == 3
    got = {chat: v for (at, chat), v in (await states(bot)).items() if at > T0}
    waiting = [reason for s, reason in got.values() if s == store.PENDING]
    assert len(waiting) == 2 and all(
        r.startswith("rate limited, retry in ") and r.endswith("appchat/send limit reached (200 a minute, 4 a day)")
        for r in waiting)
    assert len(fake.appchat_messages) == 2 + sum(s == store.SENT for s, _ in got.values())
