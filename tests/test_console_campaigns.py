"""The console's read-only campaign API (real sockets, SQLite and PostgreSQL): the campaigns with their phases
and countdown, one campaign's posts, lotteries and review summary (storage.campaign's, as `qunbot campaign
summary` prints them), and a group admin limited to the campaigns of their groups and their group's figures."""

from __future__ import annotations

from datetime import timedelta

from storage import console as console_store
from storage.dashboard import local_today
from storage.db import utcnow
from tests.console_helpers import logged_in, say, seed_campaign, seed_simulator


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
        assert status == 200
        [c] = data["campaigns"]
        assert (c["id"], c["title"], c["state"], c["phase"], c["phase_label"]) == (cid, "秋季大促", "during", "burst", "爆发")
        assert (c["days_left"], c["key_name"], c["key_date"]) == (2, "开售", (today + timedelta(days=2)).isoformat())
        assert [(p["label"], p["current"]) for p in c["phases"]] == [("预热", False), ("爆发", True)]
        assert [g["external_id"] for g in c["groups"]] == ["g1"] and c["owner"] == "张三"

        status, one = await ops.get(f"/console/api/campaigns/{cid}")
        assert status == 200
        [post] = one["posts"]
        assert post["phase_label"] == "爆发" and post["state"] == "on" and post["next_run"]
        s = one["summary"]
        assert s["group"] is None and s["posts"] == 1 and s["groups"] == 1
        assert [(lot["title"], lot["entrants"]) for lot in s["lotteries"]] == [("秋季福利", 2)]
        assert s["during"]["checkins"] == 2 and s["during"]["first"] == (today - timedelta(days=3)).isoformat()
        assert s["before"]["days"] == 7 and s["checkins_change"] == "n/a"  # no check-ins in the week before
        assert (await viewer.get(f"/console/api/campaigns/{cid}"))[0] == 200

        # A group admin: only campaigns of their groups, their group's figures, no ops reminders.
        assert (await other.get("/console/api/campaigns"))[1]["campaigns"] == []
        status, data = await other.get(f"/console/api/campaigns/{cid}")
        assert (status, data["error"]) == (403, "other_group")
        status, theirs = await mine.get(f"/console/api/campaigns/{cid}")
        assert status == 200 and theirs["summary"]["group"]["external_id"] == "g1" and theirs["reminders"] == []
        g2 = next(g for g in (await ops.get("/console/api/groups"))[1]["groups"] if g["group"]["external_id"] == "g2")
        status, data = await mine.get(f"/console/api/campaigns/{cid}?group={g2['group']['id']}")
        assert (status, data["error"]) == (403, "other_group")
        assert (await ops.get("/console/api/campaigns/4242"))[0] == 404
        assert (await ops.get("/console/api/campaigns?removed=true"))[1]["campaigns"][0]["id"] == cid
    finally:
        for client in (ops, viewer, mine, other):
            await client.close()
