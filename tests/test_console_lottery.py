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
