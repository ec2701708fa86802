"""The console's lottery API end to end (real sockets, SQLite and PostgreSQL): a lottery created in the console
is joined with its keyword in the simulator (eligibility applied), drawn from the console and announced in
the group; the published proof verifies, recomputed by the server with the same code as `qunbot lottery
verify` (and a tampered result does not); validation naming the field; roles."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select, update

from storage import console as console_store
from storage.audit import AuditEntry
from storage.lottery import LotteryWinner
from tests.console_helpers import ConsoleClient, group_id, logged_in, say, seed_simulator


@pytest.fixture
async def ops(bot):
    client = await logged_in(bot, "ops", console_store.OPS_ADMIN)
    yield client
    await client.close()


async def send(client: ConsoleClient, method: str, path: str, body=None) -> tuple[int, dict]:
    status, data, _ = await client.request(method, path, body)
    return status, data


def lottery_body(gid: int, **extra) -> dict:
    return {"group_id": gid, "title": "周末福利", "prizes": [{"name": "一等奖", "stock": 1}, {"name": "二等奖", "stock": 2}],
            "deadline": "明天 20:00", "keyword": "我要抽奖", **extra}


async def cli_verify(db_url: str, lottery_id: int, monkeypatch, capsys) -> tuple[int, str]:
    from bot.cli import main

    monkeypatch.setenv("QUNBOT_DATABASE_URL", db_url)
    monkeypatch.setenv("QUNBOT_DATABASE_AUTO_MIGRATE", "false")
    code = await asyncio.to_thread(main, ["lottery", "verify", str(lottery_id)])
    return code, capsys.readouterr().out


async def test_create_in_the_console_join_in_chat_draw_and_verify_the_published_proof(bot, ops, db_url, monkeypatch,
                                                                                       capsys):
    await seed_simulator(bot)  # 小明 小红 小刚 in 演示群
    gid = await group_id(bot)
    status, made = await send(ops, "POST", "/console/api/lotteries", lottery_body(gid, exclude_admins=True))
    assert status == 200, made
    assert (made["status"], made["keyword"], made["entrant_count"], made["group"]["external_id"]) == ("open", "我要抽奖", 0, "g1")
    assert made["proof"]["seed"] is None and len(made["proof"]["commitment"]) == 64 and made["verification"] is None
    assert [(p["name"], p["stock"]) for p in made["prizes"]] == [("一等奖", 1), ("二等奖", 2)]
    assert made["deadline_local"].endswith(" 20:00") and made["created_by"] == "console:ops"
    # Members join with the keyword; an admin is not eligible.
    for user, name in (("u1", "小明"), ("u2", "小红"), ("u3", "小刚")):
        assert "已参加「周末福利」" in (await say(bot, "我要抽奖", user, name))[0]
    assert "不含管理员" in (await say(bot, "我要抽奖", "boss", "老板", role="owner"))[0]
    status, people = await ops.get(f"/console/api/lotteries/{made['id']}/entrants")
    assert status == 200 and people["total"] == 3
    assert [(e["user"], e["name"]) for e in people["entrants"]] == [("u1", "小明"), ("u2", "小红"), ("u3", "小刚")]
    _, listing = await ops.get("/console/api/lotteries")
    assert [(x["id"], x["entrant_count"]) for x in listing["lotteries"]] == [(made["id"], 3)]

    status, drawn = await send(ops, "POST", f"/console/api/lotteries/{made['id']}/draw")
    assert status == 200, drawn
    assert drawn["status"] == "drawn" and drawn["announced_at"]
    assert len(drawn["proof"]["seed"]) == 64 and len(drawn["proof"]["entrants_hash"]) == 64
    assert sorted(w["user"] for w in drawn["winners"]) == ["u1", "u2", "u3"]
    assert [(w["prize"], w["slot"], w["pick"]) for w in drawn["winners"]] == [("一等奖", 0, 0), ("二等奖", 0, 1), ("二等奖", 1, 2)]
    assert drawn["verification"] == {"ok": True, "problems": [], "picks": 3}
    assert [r["actor"] for r in drawn["rounds"]] == ["console:ops"]
    # The announcement was posted into the group, with the seed anyone can check.
    _, transcript = await bot.get_json("/api/simulator/messages", group="g1", after=0)
    [announced] = [m["text"] for m in transcript["messages"] if m["from_bot"] and "开奖啦" in m["text"]]
    assert drawn["proof"]["seed"] in announced
    assert await say(bot, "我要抽奖", "u9", "阿九") == []  # drawn: the keyword enters nothing any more
    code, out = await cli_verify(db_url, made["id"], monkeypatch, capsys)
    assert code == 0 and "OK" in out
    assert (await send(ops, "POST", f"/console/api/lotteries/{made['id']}/draw"))[1]["error"] == "lottery_not_open"
    assert (await send(ops, "POST", f"/console/api/lotteries/{made['id']}/cancel"))[1]["error"] == "lottery_not_open"

    # A result changed behind the proof's back no longer verifies, here or on the command line.
    async with bot.runtime.db.session() as session:
        first = (await session.execute(select(LotteryWinner).where(LotteryWinner.pick == 0))).scalar_one()
        second = (await session.execute(select(LotteryWinner).where(LotteryWinner.pick == 1))).scalar_one()
        await session.execute(update(LotteryWinner).where(LotteryWinner.id == first.id).values(pick=99))
        await session.execute(update(LotteryWinner).where(LotteryWinner.id == second.id).values(pick=0))
        await session.execute(update(LotteryWinner).where(LotteryWinner.id == first.id).values(pick=1))
    _, tampered = await ops.get(f"/console/api/lotteries/{made['id']}")
    assert tampered["verification"]["ok"] is False and tampered["verification"]["problems"]
    assert any(p.startswith("pick 0") for p in tampered["verification"]["problems"])
    code, out = await cli_verify(db_url, made["id"], monkeypatch, capsys)
    assert code == 1 and "MISMATCH" in out

    async with bot.runtime.db.read_session() as session:
        audit = [(e.command, e.group) for e in (await session.execute(
            select(AuditEntry).where(AuditEntry.source == "console").order_by(AuditEntry.id))).scalars()]
    assert audit[1:] == [("lottery create", "g1"), ("lottery draw", "g1"), ("lottery draw", "g1"),
                         ("lottery cancel", "g1")]


async def test_bad_lotteries_are_refused_with_the_field_named_and_cancel_closes_entry(bot, ops):
    await seed_simulator(bot)
    gid = await group_id(bot)
    cases = [
        (lottery_body(gid, title=""), "bad_request", "title", ""),
        (lottery_body(gid, prizes=[]), "bad_lottery", "prizes", "至少要有一个奖品"),
        (lottery_body(gid, prizes=[{"name": "一等奖", "stock": 1}, {"name": "一等奖", "stock": 2}]), "bad_lottery",
         "prizes", "写了两次"),
        (lottery_body(gid, prizes=[{"name": "大奖", "stock": 501}]), "bad_lottery", "prizes", "超过了上限 500"),
        (lottery_body(gid, prizes=[{"name": "大奖", "stock": 0}]), "bad_request", "prizes", ""),
        (lottery_body(gid, deadline="下辈子"), "bad_lottery", "deadline", "看不懂截止时间"),
        (lottery_body(gid, deadline="2020-01-01 10:00"), "bad_lottery", "deadline", "已经过去了"),
        (lottery_body(gid, keyword="抽奖 一下"), "bad_lottery", "keyword", "不能用"),
        (lottery_body(gid, min_days=-1), "bad_request", "min_days", ""),
        ({"title": "x", "prizes": [], "deadline": "明天 20:00"}, "bad_request", "group_id", ""),
    ]
    for body, code, field, text in cases:
        status, data = await send(ops, "POST", "/console/api/lotteries", body)
        assert (status, data["error"], data.get("field")) == (400, code, field), (body, data)
        assert text in data["message"]
    assert (await send(ops, "POST", "/console/api/lotteries", lottery_body(4242)))[0] == 404
    status, made = await send(ops, "POST", "/console/api/lotteries", lottery_body(gid, keyword=None, min_days=3))
    assert status == 200 and made["keyword"] == "参加抽奖" and made["min_days"] == 3
    status, data = await send(ops, "POST", "/console/api/lotteries", lottery_body(gid, keyword="参加抽奖"))
    assert (status, data["field"]) == (400, "keyword") and "已有进行中的抽奖" in data["message"]
    assert "入群满 3 天" in (await say(bot, "参加抽奖", "u1", "小明"))[0]  # joined today: not eligible
    status, cancelled = await send(ops, "POST", f"/console/api/lotteries/{made['id']}/cancel")
    assert status == 200 and cancelled["status"] == "cancelled"
    assert await say(bot, "参加抽奖", "u1", "小明") == []  # no open lottery has that keyword any more
    assert (await send(ops, "POST", f"/console/api/lotteries/{made['id']}/draw"))[1]["error"] == "lottery_not_open"
    _, only_open = await ops.get("/console/api/lotteries?status=open")
    assert only_open["lotteries"] == []
    assert (await ops.get("/console/api/lotteries/4242"))[0] == 404


async def test_a_viewer_reads_only_and_a_group_admin_runs_only_their_groups_lotteries(bot, ops):
    await seed_simulator(bot, "mine")
    await seed_simulator(bot, "theirs")
    mine, theirs = await group_id(bot, "mine"), await group_id(bot, "theirs")
    _, other = await send(ops, "POST", "/console/api/lotteries", lottery_body(theirs))
    viewer = await logged_in(bot, "viewer", console_store.OPS_VIEWER)
    ga = await logged_in(bot, "ga", console_store.GROUP_ADMIN, groups=[("simulator", "mine")])
    try:
        _, listing = await viewer.get("/console/api/lotteries")
        assert [x["can_write"] for x in listing["lotteries"]] == [False]
        assert (await viewer.get(f"/console/api/lotteries/{other['id']}/entrants"))[0] == 200
        for path, body in (("/console/api/lotteries", lottery_body(mine)),
                           (f"/console/api/lotteries/{other['id']}/draw", None),
                           (f"/console/api/lotteries/{other['id']}/cancel", None)):
            status, data = await send(viewer, "POST", path, body)
            assert (status, data["error"]) == (403, "read_only"), path
        _, listing = await ga.get("/console/api/lotteries")
        assert listing["lotteries"] == []
        for method, path, body in (("POST", "/console/api/lotteries", lottery_body(theirs)),
                                   ("GET", f"/console/api/lotteries/{other['id']}", None),
                                   ("GET", f"/console/api/lotteries/{other['id']}/entrants", None),
                                   ("GET", f"/console/api/lotteries?group={theirs}", None),
                                   ("POST", f"/console/api/lotteries/{other['id']}/draw", None),
                                   ("POST", f"/console/api/lotteries/{other['id']}/cancel", None)):
            status, data = await send(ga, method, path, body)
            assert (status, data["error"]) == (403, "other_group"), path
        status, own = await send(ga, "POST", "/console/api/lotteries", lottery_body(mine))
        assert status == 200 and own["can_write"]
        await say(bot, "我要抽奖", "u1", "小明", group="mine")
        status, drawn = await send(ga, "POST", f"/console/api/lotteries/{own['id']}/draw")
        assert status == 200 and drawn["verification"]["ok"] and [w["user"] for w in drawn["winners"]] == ["u1"]
        _, listing = await ga.get("/console/api/lotteries")
        assert [x["id"] for x in listing["lotteries"]] == [own["id"]]
        _, theirs_now = await ops.get(f"/console/api/lotteries/{other['id']}")
        assert theirs_now["status"] == "open"
    finally:
        await viewer.close()
        await ga.close()


async def test_redraw_from_the_console_gives_the_prize_to_the_next_pick_and_the_proof_still_verifies(
        bot, ops, db_url, monkeypatch, capsys):
    await seed_simulator(bot)
    gid = await group_id(bot)
    body = lottery_body(gid, prizes=[{"name": "一等奖", "stock": 1}, {"name": "二等奖", "stock": 1}])
    _, made = await send(ops, "POST", "/console/api/lotteries", body)
    path = f"/console/api/lotteries/{made['id']}"
    for user, name in (("u1", "小明"), ("u2", "小红"), ("u3", "小刚")):
        await say(bot, "我要抽奖", user, name)
    status, data = await send(ops, "POST", path + "/redraw", {"prize": "一等奖", "winner": "u1", "reason": "未领奖"})
    assert (status, data["error"]) == (400, "bad_redraw") and "还没有开奖" in data["message"]
    _, drawn = await send(ops, "POST", path + "/draw")
    first = next(w for w in drawn["winners"] if w["prize"] == "一等奖")
    left = ({"u1", "u2", "u3"} - {w["user"] for w in drawn["winners"]}).pop()

    status, redrawn = await send(ops, "POST", path + "/redraw",
                                 {"prize": "一等奖", "winner": first["user"], "reason": "三天未领奖"})
    assert status == 200, redrawn
    old = next(w for w in redrawn["winners"] if w["pick"] == first["pick"])
    new = next(w for w in redrawn["winners"] if w["replaces_pick"] == first["pick"])
    assert (old["forfeited"], old["forfeit_reason"]) == (True, "三天未领奖")
    assert (new["prize"], new["slot"], new["pick"], new["user"]) == ("一等奖", 0, 2, left)
    assert redrawn["verification"] == {"ok": True, "problems": [], "picks": 3}
    assert redrawn["proof"]["seed"] == drawn["proof"]["seed"]
    assert [(r["kind"], r["actor"], r["reason"], r["first_pick"]) for r in redrawn["rounds"]] == [
        ("draw", "console:ops", "", 0), ("redraw", "console:ops", "三天未领奖", 2)]
    # The group is told, the new winner @-mentioned; 抽奖 结果 and `qunbot lottery verify` agree.
    _, transcript = await bot.get_json("/api/simulator/messages", group="g1", after=0)
    [told] = [m for m in transcript["messages"] if m["from_bot"] and "重抽" in m["text"]]
    assert f"@{new['name']}" in told["text"] and "三天未领奖" in told["text"]
    assert "三天未领奖" in (await say(bot, f"抽奖 结果 {made['id']}", "u2", "小红"))[0]
    code, out = await cli_verify(db_url, made["id"], monkeypatch, capsys)
    assert code == 0 and "all 3 picks" in out

    # Mistakes are named in Chinese, change nothing, and are audited; so is a second click on the same winner.
    for change, text, field in (({"winner": first["user"]}, "不是「一等奖」的有效中奖者", "winner"),
                                ({"prize": "特等奖"}, "没有「特等奖」这个奖品", "prize"),
                                ({"winner": new["user"], "prize": "二等奖"}, "不是「二等奖」的有效中奖者", "winner")):
        status, data = await send(ops, "POST", path + "/redraw", {"prize": "一等奖", "winner": new["user"],
                                                                  "reason": "x", **change})
        assert (status, data["error"], data["field"]) == (400, "bad_redraw", field), data
        assert text in data["message"]
    status, data = await send(ops, "POST", path + "/redraw", {"prize": "一等奖", "winner": new["user"], "reason": " "})
    assert (status, data["error"]) == (400, "bad_redraw") and "无法重抽" in data["message"]  # nobody left to pick
    status, data = await send(ops, "POST", path + "/redraw", {"prize": "一等奖", "winner": new["user"]})
    assert (status, data["field"]) == (400, "reason")
    _, after = await ops.get(path)
    assert after["winners"] == redrawn["winners"] and after["verification"]["ok"]

    async with bot.runtime.db.read_session() as session:
        audit = [(e.command, e.result, e.detail) for e in (await session.execute(
            select(AuditEntry).where(AuditEntry.command == "lottery redraw").order_by(AuditEntry.id))).scalars()]
    assert [r for _, r, _ in audit] == ["usage", "ok", "usage", "usage", "usage", "usage"]
    assert audit[1][2] == f"lottery {made['id']} 一等奖: {first['user']} forfeited (三天未领奖), pick 2 -> {left}"


async def test_only_writers_of_the_group_may_redraw(bot, ops):
    await seed_simulator(bot, "mine")
    await seed_simulator(bot, "theirs")
    _, made = await send(ops, "POST", "/console/api/lotteries", lottery_body(await group_id(bot, "theirs")))
    await say(bot, "我要抽奖", "u1", "小明", group="theirs")
    await send(ops, "POST", f"/console/api/lotteries/{made['id']}/draw")
    viewer = await logged_in(bot, "viewer", console_store.OPS_VIEWER)
    ga = await logged_in(bot, "ga", console_store.GROUP_ADMIN, groups=[("simulator", "mine")])
    try:
        body = {"prize": "一等奖", "winner": "u1", "reason": "未领奖"}
        for client, error in ((viewer, "read_only"), (ga, "other_group")):
            status, data = await send(client, "POST", f"/console/api/lotteries/{made['id']}/redraw", body)
            assert (status, data["error"]) == (403, error)
        _, still = await ops.get(f"/console/api/lotteries/{made['id']}")
        assert [w["forfeited"] for w in still["winners"]] == [False]
    finally:
        await viewer.close()
        await ga.close()
