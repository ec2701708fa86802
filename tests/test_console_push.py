"""The console's scheduled-post API end to end (real sockets, SQLite and PostgreSQL): the live preview (next run
times, rendered content, problems by field), create / edit / pause / resume / remove with the process's timer
rebuilt at once, the runs with each delivery's state and reason (sent, deferred by the group's quiet hours
set in the console, skipped by its daily cap, late), validation naming the field, and roles."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from bot.push_spec import Schedule
from scheduler.push import service
from storage import console as console_store
from storage import push as store
from storage.audit import AuditEntry
from storage.db import utcnow
from storage.push import PushPost
from tests.conftest import make_config
from tests.console_helpers import ConsoleClient, group_id, logged_in, say, seed_simulator

SHANGHAI = ZoneInfo("Asia/Shanghai")
WEEKDAYS = "星期一,星期二,星期三,星期四,星期五,星期六,星期日".split(",")
CONTENT = "早上好，{group_name}！今天是{date} {weekday}"


@pytest.fixture
async def bot(db_url, bot_factory):
    """The bot in Shanghai time, without default quiet hours (the tests set a group's own)."""
    config = make_config(db_url, push={"quiet_hours": ""})
    config.timezone = "Asia/Shanghai"
    return await bot_factory(config)


@pytest.fixture
async def ops(bot):
    client = await logged_in(bot, "ops", console_store.OPS_ADMIN)
    yield client
    await client.close()


def next_local(hour: int, minute: int, after: datetime | None = None) -> datetime:
    """The next hour:minute in Shanghai after `after` (now), in UTC."""
    local = (after or utcnow()).astimezone(SHANGHAI)
    at = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if at <= local:
        at += timedelta(days=1)
    return at.astimezone(ZoneInfo("UTC"))


def post_body(gids: list[int], schedule: str = "每天 9:00", **extra) -> dict:
    return {"schedule": schedule, "timezone": "Asia/Shanghai", "target_kind": "groups", "group_ids": gids,
            "kind": "text", "content": CONTENT, **extra}


async def send(client: ConsoleClient, method: str, path: str, body=None) -> tuple[int, dict]:
    status, data, _ = await client.request(method, path, body)
    return status, data


async def console_audit(bot) -> list[tuple[str, str, str]]:
    async with bot.runtime.db.read_session() as session:
        rows = (await session.execute(select(AuditEntry).where(AuditEntry.source == "console",
                                                               AuditEntry.command != "console login")
                                      .order_by(AuditEntry.id))).scalars().all()
    return [(e.command, e.group, e.detail) for e in rows]


async def test_preview_create_edit_pause_resume_and_remove_with_the_timer_following(bot, ops):
    await seed_simulator(bot)
    gid = await group_id(bot)
    # The preview as the user types: first half a schedule, then all of it.
    status, out = await send(ops, "POST", "/console/api/push/preview", {"schedule": "每天", "content": ""})
    assert status == 200 and out["ok"] is False and out["next_runs"] == []
    fields = {p["field"] for p in out["problems"]}
    assert {"schedule", "content", "group_ids"} <= fields
    assert next(p for p in out["problems"] if p["field"] == "schedule")["message"].startswith("看不懂时间「每天」")
    status, out = await send(ops, "POST", "/console/api/push/preview", post_body([gid]))
    assert status == 200 and out["ok"] is True and out["problems"] == [], out
    assert out["schedule"] == "cron 0 9 * * *" and out["group"]["external_id"] == "g1"
    first = next_local(9, 0)
    assert [r["at"] for r in out["next_runs"]] == [(first + timedelta(days=n)).isoformat() for n in range(5)]
    assert all(r["local"].endswith(" 09:00") for r in out["next_runs"])
    day = first.astimezone(SHANGHAI).date()
    assert out["content"] == f"早上好，演示群！今天是{day.year}年{day.month}月{day.day}日 {WEEKDAYS[day.weekday()]}"
    assert out["next_runs"][0]["weekday"] == WEEKDAYS[day.weekday()]

    status, post = await send(ops, "POST", "/console/api/push/posts", post_body([gid], name="morning"))
    assert status == 200, post
    assert (post["state"], post["source"], post["created_by"], post["name"]) == ("on", "console", "console:ops", "morning")
    assert [r["at"] for r in post["next_runs"]] == [r["at"] for r in out["next_runs"][:3]]
    push = service(bot.runtime)
    assert push is not None and push.next_fire_time(post["id"]) == first  # this process's timer, set at once
    _, listing = await ops.get("/console/api/push/posts")
    [row] = listing["posts"]
    assert row["id"] == post["id"] and row["can_write"] and row["groups"][0]["name"] == "演示群"

    # Edit: weekdays at 8:30; the preview of the edited post and the timer follow.
    status, edited = await send(ops, "PUT", f"/console/api/push/posts/{post['id']}",
                                post_body([gid], "工作日 8:30", content="开工啦 {weekday}", name="morning"))
    assert status == 200 and edited["schedule"] == "cron 30 8 * * mon-fri" and edited["content"] == "开工啦 {weekday}"
    runs = [datetime.fromisoformat(r["at"]) for r in edited["next_runs"]]
    assert all(r.astimezone(SHANGHAI).weekday() < 5 and r.astimezone(SHANGHAI).strftime("%H:%M") == "08:30"
               for r in runs)
    assert push.next_fire_time(post["id"]) == runs[0]
    status, one = await ops.get(f"/console/api/push/posts/{post['id']}")
    assert status == 200 and one["schedule_text"] == "工作日 8:30"

    status, paused = await send(ops, "POST", f"/console/api/push/posts/{post['id']}/pause")
    assert status == 200 and paused["state"] == "paused" and paused["next_runs"] == []
    assert push.next_fire_time(post["id"]) is None
    status, resumed = await send(ops, "POST", f"/console/api/push/posts/{post['id']}/resume")
    assert status == 200 and resumed["state"] == "on" and push.next_fire_time(post["id"]) == runs[0]
    status, removed = await send(ops, "DELETE", f"/console/api/push/posts/{post['id']}")
    assert status == 200 and removed["state"] == "removed" and push.next_fire_time(post["id"]) is None
    assert (await ops.get("/console/api/push/posts"))[1]["posts"] == []
    assert [p["state"] for p in (await ops.get("/console/api/push/posts?removed=true"))[1]["posts"]] == ["removed"]
    assert (await send(ops, "POST", f"/console/api/push/posts/{post['id']}/resume"))[0] == 404
    audit = await console_audit(bot)
    assert [(c, g) for c, g, _ in audit] == [("push add", "g1"), ("push edit", "g1"), ("push pause", "g1"),
                                             ("push resume", "g1"), ("push remove", "g1")]
    assert "schedule_text" in audit[1][2] and "content" in audit[1][2]


async def test_bad_posts_are_refused_with_the_field_named_and_nothing_is_created(bot, ops):
    await seed_simulator(bot)
    gid = await group_id(bot)
    cases = [
        (post_body([gid], "每月 9 点"), "schedule", "看不懂时间"),
        (post_body([gid], "2020-01-01 09:00"), "schedule", "已经过去"),
        (post_body([gid], "every 10s"), "schedule", "至少 1 分钟"),
        (post_body([gid], timezone="Mars/Base"), "timezone", "不认识时区"),
        (post_body([gid], content="你好 {nope}"), "content", "不认识的变量"),
        (post_body([gid], content="  "), "content", "请填写要发送的内容"),
        (post_body([gid], kind="image", payload={}), "payload", "图片或图文内容不对"),
        (post_body([]), "group_ids", "请至少选择一个群"),
        (post_body([424242]), "group_ids", "找不到群 424242"),
        ({**post_body([gid]), "target_kind": "tag"}, "tag", "请填写群标签"),
        ({**post_body([gid]), "target_kind": "all", "channel": "pigeon"}, "channel", "没有「pigeon」这个渠道"),
    ]
    for body, field, text in cases:
        status, data = await send(ops, "POST", "/console/api/push/posts", body)
        assert (status, data["error"], data["field"]) == (400, "bad_post", field), (body, data)
        assert text in data["message"], data
        status, preview = await send(ops, "POST", "/console/api/push/preview", body)
        assert status == 200 and not preview["ok"] and preview["problems"][0]["field"] == field
    for body, field in (({"timezone": "UTC"}, "schedule"), ({**post_body([gid]), "kind": "video"}, "kind"),
                        ({**post_body([gid]), "content": "长" * 4001}, "content")):
        status, data = await send(ops, "POST", "/console/api/push/posts", body)
        assert (status, data["error"], data["field"]) == (400, "bad_request", field), body
    assert (await send(ops, "POST", "/console/api/push/posts", post_body([gid], name="x")))[0] == 200
    status, data = await send(ops, "POST", "/console/api/push/posts", post_body([gid], name="x"))
    assert (status, data["field"]) == (400, "name") and "已有名为「x」" in data["message"]
    # A post declared in the config file is edited there (pausing it here is allowed).
    async with bot.runtime.db.session() as session:
        config_post = await store.create_post(session, store.PostFields(
            schedule=Schedule("cron", cron="0 9 * * *"), schedule_text="0 9 * * *", timezone="UTC",
            target_kind=store.ALL, content="hi", name="from-config"), source=store.CONFIG, created_by="config",
            now=utcnow())
    status, data = await send(ops, "PUT", f"/console/api/push/posts/{config_post.id}", post_body([gid]))
    assert (status, data["error"]) == (400, "config_post")
    assert (await send(ops, "POST", f"/console/api/push/posts/{config_post.id}/pause"))[0] == 200
    async with bot.runtime.db.read_session() as session:
        names = sorted(p.name or "" for p in (await session.execute(select(PushPost))).scalars())
    assert names == ["from-config", "x"]


async def test_runs_show_each_delivery_with_its_state_and_reason_and_the_console_limits_apply(bot, ops):
    await seed_simulator(bot, "g1")
    await seed_simulator(bot, "g2")
    g1, g2 = await group_id(bot, "g1"), await group_id(bot, "g2")
    # g1: quiet from 08:50 to 09:10 and one post a day, set in the console.
    status, limits = await send(ops, "PATCH", f"/console/api/groups/{g1}/push-settings",
                                {"quiet_hours": "08:50-09:10", "daily_cap": 1, "tags": ["vip", "北京"]})
    assert status == 200, limits
    assert (limits["quiet_hours"], limits["daily_cap"], limits["tags"]) == ("08:50-09:10", 1, ["vip", "北京"])
    assert (limits["effective_quiet_hours"], limits["default_quiet_hours"]) == ("08:50-09:10", "")
    _, a = await send(ops, "POST", "/console/api/push/posts", post_body([g1, g2], name="a"))
    _, b = await send(ops, "POST", "/console/api/push/posts", {**post_body([g1], "每天 9:30", name="b"),
                                                               "target_kind": "tag", "tag": "vip", "group_ids": []})
    assert b["target_kind"] == "tag" and b["target_tag"] == "vip"
    push = service(bot.runtime)
    t0 = next_local(9, 0)
    assert len(await push.fire(a["id"], now=t0)) == 1
    await push.deliver_due(now=t0)
    status, data = await ops.get(f"/console/api/push/runs?post={a['id']}")
    assert status == 200 and data["post"]["id"] == a["id"]
    [run] = data["runs"]
    assert (run["status"], run["late"], run["targets"], run["local"][-5:]) == ("scheduled", False, 2, "09:00")
    by_group = {d["group"]: d for d in run["deliveries"]}
    assert by_group["g2"]["status"] == "sent" and by_group["g2"]["sent_at"]
    assert by_group["g1"]["status"] == "pending"
    assert by_group["g1"]["reason"].startswith("quiet hours 08:50-09:10 (Asia/Shanghai): deferred to")
    await push.deliver_due(now=t0 + timedelta(minutes=11))
    assert len(await push.fire(b["id"], now=t0 + timedelta(minutes=30))) == 1
    await push.deliver_due(now=t0 + timedelta(minutes=30))
    # The next day, the process was down at 09:00: the run is recorded five minutes late, and sent.
    assert len(await push.fire(a["id"], now=t0 + timedelta(days=1, minutes=5))) == 1
    await push.deliver_due(now=t0 + timedelta(days=1, minutes=5))
    await push.deliver_due(now=t0 + timedelta(days=1, minutes=11))  # g1's quiet hours are over

    _, data = await ops.get("/console/api/push/runs")
    assert [(r["post_id"], r["late"]) for r in data["runs"]] == [(a["id"], True), (b["id"], False), (a["id"], False)]
    states = [(r["post_id"], d["group"], d["status"]) for r in data["runs"] for d in r["deliveries"]]
    assert sorted(states) == sorted([(a["id"], "g1", "sent"), (a["id"], "g2", "sent"), (b["id"], "g1", "skipped"),
                                     (a["id"], "g1", "sent"), (a["id"], "g2", "sent")])
    assert {d["group"]: d["reason"] for d in data["runs"][0]["deliveries"]}["g2"] == "late"
    skipped = data["runs"][1]["deliveries"][0]
    assert skipped["reason"].startswith("daily cap reached: 1 posts on")
    assert data["summary"]["runs"] == 3 and data["summary"]["late"] == 1
    assert data["summary"]["deliveries"] == {"pending": 0, "sending": 0, "sent": 4, "failed": 0, "skipped": 1,
                                            "awaiting": 0}
    _, only = await ops.get("/console/api/push/runs?state=skipped")
    assert [d["status"] for r in only["runs"] for d in r["deliveries"]] == ["skipped"]
    _, tags = await ops.get("/console/api/push/tags")
    assert [(t["tag"], [g["external_id"] for g in t["groups"]]) for t in tags["tags"]] == [("vip", ["g1"]), ("北京", ["g1"])]
    # The bot posted into the groups (the simulator's transcript).
    _, transcript = await bot.get_json("/api/simulator/messages", group="g2", after=0)
    assert sum(m["text"].startswith("早上好，g2！今天是") for m in transcript["messages"] if m["from_bot"]) == 2
    # Back to the defaults; bad values are refused with the field.
    status, limits = await send(ops, "PATCH", f"/console/api/groups/{g1}/push-settings",
                                {"quiet_hours": None, "daily_cap": None, "tags": []})
    assert (limits["quiet_hours"], limits["daily_cap"], limits["tags"], limits["effective_daily_cap"]) == (None, None, [], 10)
    for body, field in (({"quiet_hours": "晚上"}, "quiet_hours"), ({"daily_cap": 10_001}, "daily_cap"),
                        ({"daily_cap": -1}, "daily_cap"), ({"tags": [""]}, "tags")):
        status, data = await send(ops, "PATCH", f"/console/api/groups/{g1}/push-settings", body)
        assert (status, data["field"]) == (400, field), body
    commands = [c for c, _, _ in await console_audit(bot)]
    assert commands.count("push limits") == 2 and commands.count("push tag") == 2


async def test_a_viewer_reads_only_and_a_group_admin_manages_only_their_groups_posts(bot, ops):
    await seed_simulator(bot, "mine")
    await seed_simulator(bot, "theirs")
    mine, theirs = await group_id(bot, "mine"), await group_id(bot, "theirs")
    _, both = await send(ops, "POST", "/console/api/push/posts", post_body([mine, theirs]))
    _, everyone = await send(ops, "POST", "/console/api/push/posts", {**post_body([]), "target_kind": "all"})
    _, only_mine = await send(ops, "POST", "/console/api/push/posts", post_body([mine]))
    assert "定时推送已添加" in (await say(bot, "定时 添加 每天 20:00 晚安", "boss", "老板", role="owner", group="mine"))[0]
    viewer = await logged_in(bot, "viewer", console_store.OPS_VIEWER)
    ga = await logged_in(bot, "ga", console_store.GROUP_ADMIN, groups=[("simulator", "mine")])
    try:
        _, listing = await viewer.get("/console/api/push/posts")
        assert len(listing["posts"]) == 4 and not any(p["can_write"] for p in listing["posts"])
        assert (await send(viewer, "POST", "/console/api/push/preview", post_body([mine])))[0] == 200
        for method, path, body in (("POST", "/console/api/push/posts", post_body([mine])),
                                   ("PUT", f"/console/api/push/posts/{only_mine['id']}", post_body([mine])),
                                   ("POST", f"/console/api/push/posts/{only_mine['id']}/pause", None),
                                   ("DELETE", f"/console/api/push/posts/{only_mine['id']}", None),
                                   ("PATCH", f"/console/api/groups/{mine}/push-settings", {"daily_cap": 1})):
            status, data = await send(viewer, method, path, body)
            assert (status, data["error"]) == (403, "read_only"), path
        # The group admin sees the posts that concern only their group: the console's and the chat's.
        _, listing = await ga.get("/console/api/push/posts")
        assert sorted(p["source"] for p in listing["posts"]) == ["chat", "console"]
        assert listing["can_target_broadly"] is False
        chat_post = next(p for p in listing["posts"] if p["source"] == "chat")
        assert chat_post["owner_group"]["external_id"] == "mine" and chat_post["can_write"]
        status, made = await send(ga, "POST", "/console/api/push/posts", post_body([mine]))
        assert status == 200 and made["owner_group"]["external_id"] == "mine"  # listed in chat (定时 列表) too
        assert f"【{made['id']}】" in (await say(bot, "定时", "boss", "老板", role="owner", group="mine"))[0]
        refused = [
            ("POST", "/console/api/push/posts", post_body([mine, theirs]), 400, "group_ids"),
            ("POST", "/console/api/push/posts", {**post_body([]), "target_kind": "all"}, 400, "target_kind"),
            ("PUT", f"/console/api/push/posts/{both['id']}", post_body([mine]), 403, "other_group"),
            ("POST", f"/console/api/push/posts/{everyone['id']}/pause", None, 403, "other_group"),
            ("DELETE", f"/console/api/push/posts/{both['id']}", None, 403, "other_group"),
            ("GET", f"/console/api/push/posts/{both['id']}", None, 403, "other_group"),
            ("GET", f"/console/api/push/runs?post={everyone['id']}", None, 403, "other_group"),
            ("GET", f"/console/api/groups/{theirs}/push-settings", None, 403, "other_group"),
            ("PATCH", f"/console/api/groups/{theirs}/push-settings", {"daily_cap": 1}, 403, "other_group"),
            ("PATCH", f"/console/api/groups/{mine}/push-settings", {"tags": ["vip"]}, 403, "forbidden"),
            ("PATCH", f"/console/api/groups/{mine}/push-settings", {"daily_cap": 1001}, 400, "daily_cap"),
        ]
        for method, path, body, code, what in refused:
            status, data = await send(ga, method, path, body)
            assert status == code and (data["error"] == what or data.get("field") == what), (method, path, data)
        status, limits = await send(ga, "PATCH", f"/console/api/groups/{mine}/push-settings", {"daily_cap": 3})
        assert status == 200 and limits["daily_cap"] == 3 and limits["can_tag"] is False
        status, paused = await send(ga, "POST", f"/console/api/push/posts/{only_mine['id']}/pause")
        assert status == 200 and paused["state"] == "paused"
        _, runs = await ga.get("/console/api/push/runs")
        assert runs["runs"] == [] and runs["summary"]["runs"] == 0
        async with bot.runtime.db.read_session() as session:
            states = {p.id: p.enabled for p in (await session.execute(select(PushPost))).scalars()}
        assert states[both["id"]] and states[everyone["id"]] and not states[only_mine["id"]]
    finally:
        await viewer.close()
        await ga.close()
