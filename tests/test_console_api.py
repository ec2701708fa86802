"""The console's JSON API end to end (real sockets, SQLite and PostgreSQL): the OpenAPI document matches
the routes and every answer matches its declared schema; dashboard figures; group settings applied,
audited and used by the bot; members and profiles; the audit log with filters."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.console.api import api
from bot.console.schema import validate
from storage import console as console_store
from storage import groups as group_store
from storage.activity import record_activity
from storage.audit import AuditEntry
from storage.dashboard import local_today
from storage.db import utcnow
from storage.faq import FaqDailyCount
from storage.groups import Group
from tests.console_helpers import ConsoleClient, make_user, seed_features, seed_simulator

FAQ_ADD = "问答 添加 怎么开发票？ | 在订单页点「申请开票」即可 | 开发票|要发票"


@pytest.fixture
async def ops(bot):
    await make_user(bot.runtime.db, "ops", console_store.OPS_ADMIN)
    client = ConsoleClient(bot.url("/"))
    assert (await client.login("ops"))[0] == 200
    yield client
    await client.close()


async def say(bot, text: str, user: str, name: str = "", role: str | None = None, group: str = "g1") -> list[str]:
    body = {"group": group, "user": user, "name": name or user, "text": text}
    if role:
        body["role"] = role
    status, reply = await bot.post_json("/api/simulator/messages", body)
    assert status == 200, reply
    return [r["text"] for r in reply["replies"]]


async def group_id(bot, external_id: str = "g1") -> int:
    async with bot.runtime.db.read_session() as session:
        return (await session.execute(select(Group.id).where(Group.external_id == external_id))).scalar_one()


async def test_the_openapi_document_describes_every_api_route_of_the_app(bot, ops):
    status, doc = await ops.get("/console/api/openapi.json")
    assert status == 200 and doc["openapi"] == "3.1.0"
    served = set()
    for route in bot.server.app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if path.startswith("/console/api/") and route.method != "HEAD":
            served.add((route.method.lower(), path))
    documented = {(method, path) for path, ops_ in doc["paths"].items() for method in ops_}
    assert served == documented
    login = doc["paths"]["/console/api/login"]["post"]
    assert login["security"] == [] and "429" in login["responses"]
    patch = doc["paths"]["/console/api/groups/{group_id}/settings"]["patch"]
    assert any(p["in"] == "header" and p["name"] == "X-CSRF-Token" for p in patch["parameters"])
    assert patch["requestBody"]["content"]["application/json"]["schema"]["properties"]["faq_scope"]["enum"]
    assert {"401", "403", "404", "400"} <= set(patch["responses"])
    for ref in re.findall(r'"\$ref": "#/components/schemas/(\w+)"', __import__("json").dumps(doc)):
        assert ref in doc["components"]["schemas"]


async def test_every_answer_matches_the_schema_its_route_declares(bot, ops):
    await seed_simulator(bot)
    await seed_features(bot)  # an FAQ entry, an unanswered question, a scheduled post, an open lottery
    await say(bot, "怎么开发票？", "u2", "小红")
    gid = await group_id(bot)
    _, members = await ops.get("/console/api/members?q=小刚")
    mid = members["members"][0]["member"]["id"]
    values = {"group_id": gid, "member_id": mid, "post_id": 1, "lottery_id": 1, "campaign_id": 1}
    checked = 0
    for route in api.routes:
        if route.method != "GET":
            continue
        path = re.sub(r"{(\w+)}", lambda m: str(values[m.group(1)]), route.path)
        status, body = await ops.get(path)
        assert status == 200, (path, body)
        assert validate(body, route.response or {}, path) == [], path
        checked += 1
    status, body = await ops.patch(f"/console/api/groups/{gid}/settings", {"welcome_rules": "不发广告"})
    route = next(r for r in api.routes if r.method == "PATCH")
    assert status == 200 and validate(body, route.response, "patch") == []
    assert checked >= 7
    # The answers of the routes that change something, each once.
    _, drawn, _ = await ops.request("POST", "/console/api/lotteries/1/draw")
    changes = [("POST", "/console/api/push/preview", {"schedule": "每天 9:00", "content": "早 {date}", "group_ids": [gid],
                                                      "target_kind": "groups", "kind": "text"}),
               ("POST", "/console/api/faq/import", {"group_id": gid, "csv": "question,answer\n几点发货,四点\n",
                                                    "dry_run": True}),
               ("PUT", "/console/api/push/posts/1", {"schedule": "每天 10:00", "content": "早", "group_ids": [gid],
                                                     "target_kind": "groups", "kind": "text"}),
               ("PATCH", f"/console/api/groups/{gid}/push-settings", {"daily_cap": 2})]
    for method, path, body in changes:
        status, answer, _ = await ops.request(method, path, body)
        route = next(r for r in api.routes if r.method == method and re.fullmatch(
            re.sub(r"{\w+}", r"\\d+", r.path), path))
        assert status == 200 and validate(answer, route.response, path) == [], (path, answer)
    assert validate(drawn, next(r for r in api.routes if r.path.endswith("/draw")).response, "draw") == []


async def test_the_dashboard_counts_each_day_overall_and_per_group(bot, ops):
    status, board = await ops.get("/console/api/dashboard")
    assert status == 200 and board["empty"] is True and len(board["days"]) == 30
    await seed_simulator(bot)  # u1 u2 u3 join (u3 invited), u1 u2 check in, u3 chats and asks
    await say(bot, FAQ_ADD, "boss", "老板", role="owner")  # speaks without a join: not counted as a join
    assert (await say(bot, "怎么开发票？", "u2", "小红"))  # answered
    await bot.post_json("/api/simulator/leaves", {"group": "g1", "users": ["u2"]})
    await seed_simulator(bot, "g2")  # the same three people in another group
    gid = await group_id(bot)
    # Activity three days ago in g1 (a past day, written as the inbox would).
    async with bot.runtime.db.session() as session:
        group = await session.get(Group, gid)
        member = await group_store.ensure_member(session, "simulator", "u1")
        today = local_today(bot.runtime.config.timezone, utcnow())
        await record_activity(session, group_id=gid, member_id=member.id, day=today - timedelta(days=3),
                              at=utcnow() - timedelta(days=3), command=False)
        assert group is not None

    status, board = await ops.get("/console/api/dashboard")
    s = board["series"]
    assert board["empty"] is False and board["days"][-1] == today.isoformat()
    assert s["active"][-1] == 4  # u1 u2 u3 and boss, counted once across both groups
    assert s["active"][-4] == 1
    assert (s["joins"][-1], s["leaves"][-1], s["checkins"][-1]) == (6, 1, 4)
    assert (s["faq_answered"][-1], s["faq_unanswered"][-1]) == (1, 2)  # 发票怎么开呢 unanswered in g1 and g2
    assert board["totals"] == {"groups": 2, "members": 4}
    assert [t["group"]["external_id"] for t in board["top_groups"]] == ["g1", "g2"]

    status, one = await ops.get(f"/console/api/dashboard?group={gid}&days=7")
    s = one["series"]
    assert status == 200 and one["group"]["external_id"] == "g1" and len(one["days"]) == 7
    assert (s["active"][-1], s["joins"][-1], s["leaves"][-1], s["checkins"][-1]) == (4, 3, 1, 2)
    assert (s["faq_answered"][-1], s["faq_unanswered"][-1]) == (1, 1)
    assert one["totals"] == {"groups": 1, "members": 3} and one["top_groups"] == []
    async with bot.runtime.db.read_session() as session:
        rows = (await session.execute(select(FaqDailyCount).where(FaqDailyCount.group_id == gid))).scalars().all()
    assert [(r.day, r.answered, r.unanswered) for r in rows] == [(today, 1, 1)]

    for bad in ("days=3", "days=abc", "group=0", "group=99999"):
        status, body = await ops.get(f"/console/api/dashboard?{bad}")
        assert status in (400, 404) and body["error"] in ("bad_request", "not_found"), bad


async def test_group_list_and_settings_change_what_the_bot_does_and_are_audited(bot, ops):
    await seed_simulator(bot)
    gid = await group_id(bot)
    status, groups = await ops.get("/console/api/groups?q=演示")
    [row] = groups["groups"]
    assert status == 200 and row["members"] == 3 and row["active_today"] == 3 and row["checkins_today"] == 2
    assert row["checkin_rate"] == pytest.approx(2 / 3, abs=1e-3)
    assert (await ops.get("/console/api/groups?q=nothing-like-this"))[1]["total"] == 0

    status, detail = await ops.patch(f"/console/api/groups/{gid}/settings", {
        "welcome_text": "欢迎 {names} 来到 {group_name}！", "timezone": "asia/tokyo", "faq_scope": "off"})
    assert status == 200, detail
    st = detail["settings"]
    assert st["welcome_text"] == "欢迎 {names} 来到 {group_name}！" and st["timezone"] == "Asia/Tokyo"
    assert st["faq_scope"] == "off" and st["welcome_preview"] == "欢迎 @小新 来到 演示群！"
    _, body = await bot.post_json("/api/simulator/joins", {"group": "g1", "users": [{"user": "u9", "name": "阿九"}]})
    assert body["replies"][0]["text"] == "欢迎 @阿九 来到 演示群！"
    # FAQ off: a question that has an entry gets no answer here.
    await say(bot, FAQ_ADD, "boss", "老板", role="owner")
    assert await say(bot, "怎么开发票？", "u2", "小红") == []
    assert (await ops.patch(f"/console/api/groups/{gid}/settings", {"faq_scope": "global"}))[0] == 200
    assert await say(bot, "怎么开发票？", "u1", "小明") == []  # the entry is this group's own, not global
    assert (await ops.patch(f"/console/api/groups/{gid}/settings", {"faq_scope": "group"}))[0] == 200
    assert "申请开票" in (await say(bot, "怎么开发票？", "u1", "小明"))[0]
    # Back to defaults; unchanged values write no audit entry.
    status, detail = await ops.patch(f"/console/api/groups/{gid}/settings", {
        "welcome_text": "", "timezone": None, "welcome_enabled": False, "faq_scope": "group"})
    assert status == 200 and detail["settings"]["welcome_text"] is None and detail["settings"]["timezone"] is None
    assert detail["settings"]["welcome_enabled_effective"] is False
    async with bot.runtime.db.read_session() as session:
        entries = (await session.execute(select(AuditEntry).where(AuditEntry.source == "console")
                                         .order_by(AuditEntry.id))).scalars().all()
    commands = [(e.command, e.detail, e.actor, e.group) for e in entries if e.command != "console login"]
    assert commands == [
        ("welcome set text", "welcome text changed", "ops", "g1"),
        ("timezone", "timezone default -> Asia/Tokyo", "ops", "g1"),
        ("faq scope", "faq scope all -> off", "ops", "g1"),
        ("faq scope", "faq scope off -> global", "ops", "g1"),
        ("faq scope", "faq scope global -> group", "ops", "g1"),
        ("welcome off", "welcome default -> off", "ops", "g1"),
        ("welcome set text", "welcome text reset to default", "ops", "g1"),
        ("timezone", "timezone Asia/Tokyo -> default", "ops", "g1"),
    ]


async def test_bad_settings_are_refused_with_the_field_named_and_change_nothing(bot, ops):
    await seed_simulator(bot)
    gid = await group_id(bot)
    cases = [
        ({"timezone": "Mars/Olympus"}, "bad_timezone"),
        ({"welcome_text": "欢迎 {nmes}", "timezone": "Asia/Tokyo"}, "bad_welcome"),
        ({"faq_scope": "sometimes"}, "bad_request"),
        ({"welcome_enabled": "yes"}, "bad_request"),
        ({"colour": "red"}, "bad_request"),
        ({"welcome_text": "长" * 2001}, "bad_request"),
    ]
    for body, code in cases:
        status, data = await ops.patch(f"/console/api/groups/{gid}/settings", body)
        assert (status, data["error"]) == (400, code), body
        assert data["message"].startswith(("请求参数有误", "未知的时区", "欢迎语有误"))
    status, data, _ = await ops.request("PATCH", f"/console/api/groups/{gid}/settings", None,
                                        headers={"Content-Type": "application/json"})
    assert status == 400
    async with ops.http.patch(ops.base + f"/console/api/groups/{gid}/settings", data=b"{not json",
                              headers={"X-CSRF-Token": ops.csrf}) as resp:
        assert resp.status == 400 and (await resp.json())["message"].endswith("body: not JSON")
    assert (await ops.get("/console/api/groups/abc"))[0] == 404
    assert (await ops.get("/console/api/groups/424242"))[0] == 404
    _, detail = await ops.get(f"/console/api/groups/{gid}")
    assert detail["settings"]["timezone"] is None and detail["settings"]["welcome_text"] is None


async def test_members_search_and_profile(bot, ops):
    await seed_simulator(bot)
    await say(bot, "加分 @小刚 15 活动奖励", "boss", "老板", role="owner")
    await bot.post_json("/api/simulator/leaves", {"group": "g1", "users": ["u3"]})
    status, found = await ops.get("/console/api/members?q=小")
    assert status == 200 and found["total"] == 3
    assert {m["member"]["name"] for m in found["members"]} == {"小明", "小红", "小刚"}
    _, by_id = await ops.get("/console/api/members?q=u3")
    [xiaogang] = by_id["members"]
    assert xiaogang["groups"] == 0 and xiaogang["last_active"]  # left the group, was active
    status, profile = await ops.get(f"/console/api/members/{xiaogang['member']['id']}")
    assert status == 200
    [stay] = profile["stays"]
    assert stay["join_scene"] == "invited" and stay["inviter"]["name"] == "小明" and stay["left_at"]
    [standing] = profile["standings"]
    assert (standing["balance"], standing["earned"], standing["streak"], standing["active_days_30"]) == (15, 15, 0, 1)
    assert [(e["delta"], e["kind"], e["reason"]) for e in profile["ledger"]] == [(15, "grant", "活动奖励")]
    _, xiaoming = await ops.get("/console/api/members?q=小明")
    _, profile = await ops.get(f"/console/api/members/{xiaoming['members'][0]['member']['id']}")
    assert [i["member"]["name"] for i in profile["invites"]] == ["小刚"]
    [standing] = profile["standings"]
    assert standing["streak"] == 1 and standing["balance"] > 0 and standing["level"]
    assert (await ops.get("/console/api/members/987654"))[0] == 404
    _, paged = await ops.get("/console/api/members?q=小&per_page=2&page=2")
    assert paged["total"] == 3 and len(paged["members"]) == 1


async def test_the_audit_log_shows_chat_cli_and_console_actions_with_filters_and_paging(bot, ops):
    await seed_simulator(bot)
    gid = await group_id(bot)
    await say(bot, FAQ_ADD, "boss", "老板", role="owner")
    await say(bot, "问答 添加 几点发货 | 下午四点前当天发", "u3", "小刚")  # refused
    async with bot.runtime.db.session() as session:
        from storage import audit

        await audit.record(session, source="cli", command="points grant", result="ok", actor="root",
                           channel="simulator", group="g1", args="u1 10")
    await ops.patch(f"/console/api/groups/{gid}/settings", {"faq_scope": "group"})
    _, log = await ops.get("/console/api/audit")
    assert {e["source"] for e in log["entries"]} == {"chat", "cli", "console"}
    assert log["entries"][0]["command"] == "faq scope"  # newest first
    _, chat = await ops.get("/console/api/audit?source=chat")
    assert [(e["actor"], e["result"]) for e in chat["entries"]] == [("u3", "refused"), ("boss", "ok")]
    _, mine = await ops.get("/console/api/audit?actor=ops&q=scope")
    assert [e["command"] for e in mine["entries"]] == ["faq scope"]
    _, in_group = await ops.get(f"/console/api/audit?group={gid}")
    assert {e["group"] for e in in_group["entries"]} == {"g1"} and len(in_group["entries"]) == 4
    _, first = await ops.get("/console/api/audit?limit=2")
    assert len(first["entries"]) == 2 and first["next_before"] == first["entries"][-1]["id"]
    _, rest = await ops.get(f"/console/api/audit?limit=50&before={first['next_before']}")
    assert rest["next_before"] is None
    assert [e["id"] for e in first["entries"] + rest["entries"]] == [e["id"] for e in log["entries"]]
    assert (await ops.get("/console/api/audit?source=email"))[0] == 400
    async with bot.runtime.db.session() as session:  # campaigns declared in the config file are audited too
        await audit.record(session, source="config", command="campaign create", result="ok", actor="config file")
    status, from_config = await ops.get("/console/api/audit?source=config")
    assert status == 200 and [e["command"] for e in from_config["entries"]] == ["campaign create"]
