"""The console's campaign API (real sockets, SQLite and PostgreSQL): the campaigns with their phases and
countdown, one campaign's posts, lotteries and review summary (storage.campaign's, as `qunbot campaign summary`
prints them); creating, editing and removing campaigns and putting posts into them through the same domain
functions as the CLI and chat, with the field named in validation errors; the live preview of an edit (the
countdown, its posts' next runs under the edited dates, reminders already sent staying sent); a viewer refused,
and a group admin limited to their groups."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from bot.console.api import api
from bot.console.schema import validate
from scheduler.campaign import settings_of
from storage import campaign as campaign_store
from storage import console as console_store
from storage.audit import AuditEntry
from storage.dashboard import local_today
from storage.db import utcnow
from tests.console_helpers import group_id, logged_in, say, seed_campaign, seed_simulator


def checked(method: str, path: str, status: int, answer: Any) -> Any:
    """A 200 answer that matches the schema its route declares."""
    assert status == 200, (method, path, answer)
    route = next(r for r in api.routes if r.method == method and re.fullmatch(re.sub(r"{\w+}", r"\\d+", r.path),
                                                                              path.split("?")[0]))
    assert validate(answer, route.response or {}, path) == [], (path, answer)
    return answer


async def test_campaigns_show_phases_countdown_posts_lotteries_and_the_summary(bot):
    await seed_simulator(bot, "g1")  # 小明 and 小红 check in today
    await seed_simulator(bot, "g2")
    await say(bot, "抽奖 创建 秋季福利 | 一等奖x1 | 明天 20:00 | 关键词 秋季抽奖", "boss", "老板", role="owner")
    await say(bot, "秋季抽奖", "u1", "小明")
    await say(bot, "秋季抽奖", "u2", "小红")
    cid = await seed_campaign(bot, "g1")
    today = local_today("Asia/Shanghai", utcnow())
    ops = await logged_in(bot, "ops", console_store.OPS_ADMIN)
    viewer = await logged_in(bot, "viewer", console_store.OPS_VIEWER)
    mine = await logged_in(bot, "mine", console_store.GROUP_ADMIN, groups=[("simulator", "g1")])
    other = await logged_in(bot, "other", console_store.GROUP_ADMIN, groups=[("simulator", "g2")])
    try:
        status, data = await ops.get("/console/api/campaigns")
        assert status == 200 and data["can_create"] is True
        [c] = data["campaigns"]
        assert (c["id"], c["title"], c["state"], c["phase"], c["phase_label"]) == (cid, "秋季大促", "during", "burst", "爆发")
        assert (c["days_left"], c["key_name"], c["key_date"]) == (2, "开售", (today + timedelta(days=2)).isoformat())
        assert [(p["label"], p["current"]) for p in c["phases"]] == [("预热", False), ("爆发", True)]
        assert [g["external_id"] for g in c["groups"]] == ["g1"] and c["owner"] == "张三" and c["can_write"] is True

        status, one = await ops.get(f"/console/api/campaigns/{cid}")
        assert status == 200
        [post] = one["posts"]
        assert post["phase_label"] == "爆发" and post["state"] == "on" and post["next_run"]
        s = one["summary"]
        assert s["group"] is None and s["posts"] == 1 and s["groups"] == 1
        assert [(lot["title"], lot["entrants"]) for lot in s["lotteries"]] == [("秋季福利", 2)]
        assert s["during"]["checkins"] == 2 and s["during"]["first"] == (today - timedelta(days=3)).isoformat()
        assert s["before"]["days"] == 7 and s["checkins_change"] == "n/a"  # no check-ins in the week before
        status, seen = await viewer.get(f"/console/api/campaigns/{cid}")
        assert status == 200 and seen["can_write"] is False

        # A group admin: only campaigns of their groups, their group's figures; this one is made only of
        # their group, so they may change it (and see its reminder settings).
        assert (await other.get("/console/api/campaigns"))[1]["campaigns"] == []
        status, data = await other.get(f"/console/api/campaigns/{cid}")
        assert (status, data["error"]) == (403, "other_group")
        status, theirs = await mine.get(f"/console/api/campaigns/{cid}")
        assert status == 200 and theirs["summary"]["group"]["external_id"] == "g1" and theirs["can_write"] is True
        g2 = await group_id(bot, "g2")
        status, data = await mine.get(f"/console/api/campaigns/{cid}?group={g2}")
        assert (status, data["error"]) == (403, "other_group")
        assert (await ops.get("/console/api/campaigns/4242"))[0] == 404
        assert (await ops.get("/console/api/campaigns?removed=true"))[1]["campaigns"][0]["id"] == cid
    finally:
        for client in (ops, viewer, mine, other):
            await client.close()


def definition(today: Any, g: int, **changes: Any) -> dict[str, Any]:
    day = lambda n: (today + timedelta(days=n)).isoformat()  # noqa: E731
    body = {"name": "d11", "title": "双十一大促", "timezone": "Asia/Shanghai", "key_date": day(10), "key_name": "开售",
            "phases": [{"phase": "预热", "first": day(1), "last": day(4)}, {"phase": "burst", "first": day(5), "last": day(10)}],
            "dates": [{"name": "直播", "day": day(9)}], "target_kind": "groups", "group_ids": [g], "owner": "张三",
            "ops_users": ["zhangsan"], "reminder_target": "simulator:ops", "reminder_days": [3, 1]}
    return {**body, **changes}


async def test_ops_create_edit_and_remove_campaigns_and_put_posts_into_them(bot):
    await seed_simulator(bot, "g1")
    await seed_simulator(bot, "g2")
    g1, g2 = await group_id(bot, "g1"), await group_id(bot, "g2")
    today = local_today("Asia/Shanghai", utcnow())

    def day(n: int) -> str:
        return (today + timedelta(days=n)).isoformat()

    assert "定时推送已添加（编号 1）" in (await say(bot, "定时 添加 每天 20:00 晚上好", "boss", "老板", role="owner"))[0]
    ops = await logged_in(bot, "ops", console_store.OPS_ADMIN)
    viewer = await logged_in(bot, "viewer", console_store.OPS_VIEWER)
    mine = await logged_in(bot, "mine", console_store.GROUP_ADMIN, groups=[("simulator", "g1")])
    other = await logged_in(bot, "other", console_store.GROUP_ADMIN, groups=[("simulator", "g2")])
    try:
        status, made, _ = await ops.request("POST", "/console/api/campaigns", definition(today, g1))
        made = checked("POST", "/console/api/campaigns", status, made)
        cid = made["id"]
        assert [(p["label"], p["first"], p["last"]) for p in made["phases"]] == [("预热", day(1), day(4)), ("爆发", day(5), day(10))]
        assert (made["days_left"], made["state"], made["reminder_days"], made["dates"]) == (
            10, "before", [3, 1], [{"name": "直播", "day": day(9)}])

        # Mistakes: 400 naming the field, in Chinese; nothing is made.
        for body, field, message in [
            (definition(today, g1), "name", "已经有一个叫「d11」的活动了。"),
            (definition(today, g1, name="x", phases=[{"phase": "预热", "first": day(1), "last": day(6)},
                                                     {"phase": "爆发", "first": day(5), "last": day(10)}]),
             "phases", "阶段「爆发」要在「预热」结束之后开始"),
            (definition(today, g1, name="x", key_date="11月31日"), "key_date", "看不懂日期「11月31日」"),
            (definition(today, g1, name="x", group_ids=[]), "group_ids", "请选择参与的群"),
            (definition(today, g1, name="x", phases=[{"phase": "热身", "first": day(1)}]), "phases", "不认识阶段「热身」"),
            (definition(today, g1, name="x", reminder_target="ops"), "reminder_target", "提醒发送到「ops」的写法不对"),
        ]:
            status, data, _ = await ops.request("POST", "/console/api/campaigns", body)
            assert (status, data["error"], data.get("field")) == (400, "bad_campaign", field), (body, data)
            assert message in data["message"], data
        status, data, _ = await viewer.request("POST", "/console/api/campaigns", definition(today, g1, name="v"))
        assert (status, data["error"]) == (403, "read_only")
        # A group admin makes campaigns of their own groups only, with reminders into their own groups.
        for body, field in [(definition(today, g1, name="ga", group_ids=[g2]), "group_ids"),
                            (definition(today, g1, name="ga", target_kind="all"), "target_kind"),
                            (definition(today, g1, name="ga", reminder_target="simulator:g2"), "reminder_target")]:
            status, data, _ = await mine.request("POST", "/console/api/campaigns", body)
            assert (status, data.get("field")) == (400, field), data
        status, theirs, _ = await mine.request("POST", "/console/api/campaigns",
                                               definition(today, g1, name="ga", reminder_target="simulator:g1"))
        assert status == 200 and theirs["can_write"] is True

        # A post joins the burst: it fires only from the burst's first day.
        path = f"/console/api/campaigns/{cid}/posts/1"
        status, data, _ = await ops.request("PUT", path, {"phase": "长尾"})
        assert (status, data["field"]) == (400, "phase") and "没有「长尾」阶段" in data["message"]
        status, detail, _ = await ops.request("PUT", path, {"phase": "爆发"})
        detail = checked("PUT", path, status, detail)
        [post] = detail["posts"]
        assert (post["id"], post["phase_label"], post["next_run_local"], post["can_write"]) == (1, "爆发", f"{day(5)} 20:00", True)
        status, data, _ = await other.request("PUT", path, {"phase": "预热"})
        assert (status, data["error"]) == (403, "other_group")

        # One reminder already went out (say, the burst's milestone, as if sent on an earlier plan).
        async with bot.runtime.db.session() as session:
            session.add(campaign_store.CampaignReminder(
                campaign_id=cid, milestone="before:3", due_at=utcnow() - timedelta(hours=1), channel="simulator",
                target="ops", status=campaign_store.SENT, attempts=1, next_attempt_at=utcnow(), sent_at=utcnow()))

        # The live preview of an edit: the burst three days earlier (and the warm-up shorter).
        edited = definition(today, g1, phases=[{"phase": "预热", "first": day(1), "last": day(1)},
                                               {"phase": "爆发", "first": day(2), "last": day(10)}])
        status, preview, _ = await viewer.request("POST", "/console/api/campaigns/preview",
                                                  {**edited, "campaign_id": cid, "sample": "{campaign}·{phase}：还剩 {days_left} 天"})
        preview = checked("POST", "/console/api/campaigns/preview", status, preview)
        assert preview["ok"] is True and preview["campaign"]["countdown"].startswith("距开售（")
        assert preview["campaign"]["countdown"].endswith("）还有 10 天")
        [p] = preview["posts"]
        assert [r["local"] for r in p["next_runs"]] == [f"{day(n)} 20:00" for n in (2, 3, 4)]
        assert p["content"] == "晚上好" and p["group"]["external_id"] == "g1"
        samples = {r["day"]: r["text"] for r in preview["samples"]}
        assert samples[day(0)] == "双十一大促·未开始：还剩 10 天"
        assert samples[day(2)] == "双十一大促·爆发：还剩 8 天" and samples[day(10)] == "双十一大促·爆发：还剩 0 天"
        statuses = {m["key"]: m["status"] for m in preview["milestones"]}
        assert statuses == {"phase:warmup": "planned", "phase:burst": "planned", "before:3": "sent", "before:1": "planned"}
        # A problem is shown under its field, and the rest still previews.
        status, bad, _ = await ops.request("POST", "/console/api/campaigns/preview",
                                           {**edited, "campaign_id": cid, "phases": [{"phase": "预热", "first": day(1)}]})
        assert status == 200 and bad["ok"] is False
        assert bad["problems"] == [{"field": "phases", "message": "「爆发」阶段还有定时推送 1，请先把它们移到别的阶段或移出活动。"}]
        status, bad, _ = await ops.request("POST", "/console/api/campaigns/preview", {**edited, "sample": "{nope}"})
        assert bad["problems"][0]["field"] == "sample" and "{nope}" in bad["problems"][0]["message"]

        # Saving it: the post's next run moves, the sent reminder stays sent.
        status, saved, _ = await ops.request("PUT", f"/console/api/campaigns/{cid}", edited)
        saved = checked("PUT", f"/console/api/campaigns/{cid}", status, saved)
        assert saved["changed"] == ["phases"] and saved["posts_followed"] == []
        assert saved["campaign"]["posts"][0]["next_run_local"] == f"{day(2)} 20:00"
        assert [(r["milestone"], r["status"]) for r in saved["campaign"]["reminders"]] == [("before:3", "sent")]
        status, data, _ = await other.request("PUT", f"/console/api/campaigns/{cid}", edited)
        assert (status, data["error"]) == (403, "other_group")
        status, data, _ = await ops.request("PUT", f"/console/api/campaigns/{cid}",
                                            {**edited, "phases": [{"phase": "预热", "first": day(1)}]})
        assert (status, data["field"]) == (400, "phases")

        # A post using the countdown stays until its content no longer does; then it leaves.
        status, data, _ = await mine.request("PUT", "/console/api/push/posts/1", {
            "schedule": "每天 20:00", "target_kind": "groups", "group_ids": [g1], "kind": "text",
            "content": "还有 {days_left} 天"})
        assert status == 200, data
        status, data, _ = await ops.request("DELETE", path)
        assert (status, data["field"]) == (400, "post") and "用到了活动变量" in data["message"]
        await mine.request("PUT", "/console/api/push/posts/1", {"schedule": "每天 20:00", "target_kind": "groups",
                                                               "group_ids": [g1], "kind": "text", "content": "晚上好"})
        status, detail, _ = await mine.request("DELETE", path)
        assert checked("DELETE", path, status, detail)["posts"] == []

        # A campaign from the config file is edited there (removing, or putting posts in, is fine here).
        async with bot.runtime.db.session() as session:
            fields = campaign_store.CampaignFields(name="cfg", title="配置活动", timezone="Asia/Shanghai",
                                                   key_date=today + timedelta(days=3), target_kind=campaign_store.ALL,
                                                   phases={campaign_store.BURST: (today, today + timedelta(days=3))})
            edit, _ = await campaign_store.upsert_config_campaign(session, fields, now=utcnow(),
                                                                  settings=settings_of(bot.runtime.config))
        status, data, _ = await ops.request("PUT", f"/console/api/campaigns/{edit.campaign.id}",
                                            definition(today, g1, name="cfg"))
        assert (status, data["error"]) == (400, "config_campaign")

        status, gone, _ = await ops.request("DELETE", f"/console/api/campaigns/{cid}")
        assert checked("DELETE", f"/console/api/campaigns/{cid}", status, gone)["state"] == "removed"
        assert gone["can_write"] is False
        async with bot.runtime.db.read_session() as session:
            audit = [(a.source, a.actor, a.command, a.group) for a in
                     (await session.execute(select(AuditEntry).where(AuditEntry.command.like("campaign %"))  # type: ignore[attr-defined]
                                            .order_by(AuditEntry.id))).scalars()]
        assert audit == [("console", "ops", "campaign add", "g1"), ("console", "mine", "campaign add", "g1"),
                         ("console", "ops", "campaign attach", "g1"), ("console", "ops", "campaign edit", "g1"),
                         ("console", "mine", "campaign detach", "g1"), ("console", "ops", "campaign remove", "g1")]
    finally:
        for client in (ops, viewer, mine, other):
            await client.close()
