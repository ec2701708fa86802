"""The console's FAQ API end to end (real sockets, SQLite and PostgreSQL): entries added, edited and deleted
in the console change what the bot answers in the simulator; search; validation naming the field; CSV import
with a dry run naming the bad lines, and export; unanswered questions made into FAQ entries; roles (a viewer
reads only, a group admin only their groups and never the global entries); every change audited."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from storage import console as console_store
from storage.audit import AuditEntry
from storage.faq import FaqEntry, FaqUnanswered
from tests.conftest import make_config
from tests.console_helpers import ConsoleClient, group_id, logged_in, say, seed_simulator

QUESTION = "怎么开发票？"


@pytest.fixture
async def bot(db_url, bot_factory):
    """The bot answers an entry again at once (no per-group cooldown), so each change shows in the next answer."""
    return await bot_factory(make_config(db_url, faq={"cooldown_seconds": 0}))


@pytest.fixture
async def ops(bot):
    client = await logged_in(bot, "ops", console_store.OPS_ADMIN)
    yield client
    await client.close()


async def console_audit(bot) -> list[tuple[str, str, str]]:
    async with bot.runtime.db.read_session() as session:
        rows = (await session.execute(select(AuditEntry).where(AuditEntry.source == "console",
                                                               AuditEntry.command != "console login")
                                      .order_by(AuditEntry.id))).scalars().all()
    return [(e.command, e.group, e.detail) for e in rows]


async def post(client: ConsoleClient, path: str, body) -> tuple[int, dict]:
    status, data, _ = await client.request("POST", path, body)
    return status, data


async def test_entries_added_edited_and_deleted_in_the_console_change_what_the_bot_answers(bot, ops):
    await seed_simulator(bot)
    gid = await group_id(bot)
    assert await say(bot, QUESTION, "u1", "小明") == []  # no entry yet
    status, saved = await post(ops, "/console/api/faq", {"group_id": gid, "question": QUESTION,
                                                         "answer": "在订单页点「申请开票」即可",
                                                         "aliases": ["开发票", " 要发票 ", "开发票"]})
    assert status == 200 and saved["result"] == "added", saved
    entry = saved["entry"]
    assert entry["aliases"] == ["开发票", "要发票"] and entry["group"]["external_id"] == "g1"
    assert entry["updated_by"] == "console:ops" and entry["can_write"] is True
    [answer] = await say(bot, QUESTION, "u2", "小红")
    assert "申请开票" in answer
    # The same question again is an update of that entry (as 问答 添加 in chat).
    status, again = await post(ops, "/console/api/faq", {"group_id": gid, "question": "怎么 开发票", "answer": "找客服"})
    assert (status, again["result"], again["entry"]["id"]) == (200, "updated", entry["id"])
    # Edit: a new question and answer; the bot answers with them at once (its index is rebuilt).
    status, edited, _ = await ops.request("PUT", f"/console/api/faq/{entry['id']}",
                                          {"question": "发票怎么申请？", "answer": "订单详情页 → 申请发票", "aliases": []})
    assert status == 200 and edited["result"] == "updated" and edited["entry"]["aliases"] == []
    [answer] = await say(bot, "发票怎么申请？", "u3", "小刚")
    assert "订单详情页" in answer
    # A global entry (ops admins): answered in every group.
    status, glob = await post(ops, "/console/api/faq", {"group_id": None, "question": "客服电话是多少？",
                                                        "answer": "400-800-1234"})
    assert status == 200 and glob["entry"]["group"] is None
    await seed_simulator(bot, "g2")
    assert "400-800-1234" in (await say(bot, "客服电话是多少？", "u1", "小明", group="g2"))[0]
    # Search and scopes.
    _, found = await ops.get("/console/api/faq?q=发票")
    assert [e["question"] for e in found["entries"]] == ["发票怎么申请？"] and found["total"] == 1
    _, everything = await ops.get("/console/api/faq")
    assert [e["question"] for e in everything["entries"]] == ["客服电话是多少？", "发票怎么申请？"]  # global first
    _, only_global = await ops.get("/console/api/faq?scope=global")
    assert [e["question"] for e in only_global["entries"]] == ["客服电话是多少？"]
    _, own = await ops.get(f"/console/api/faq?scope=group&group={gid}")
    assert [e["question"] for e in own["entries"]] == ["发票怎么申请？"]
    assert (await ops.get("/console/api/faq?q=400-800"))[1]["total"] == 1  # answers are searched too
    # Delete: no answer any more.
    status, _, _ = await ops.request("DELETE", f"/console/api/faq/{entry['id']}")
    assert status == 200
    assert await say(bot, "发票怎么申请？", "u1", "小明") == []
    assert (await ops.request("DELETE", f"/console/api/faq/{entry['id']}"))[0] == 404
    audit = await console_audit(bot)
    assert [(c, g) for c, g, _ in audit] == [("faq add", "g1"), ("faq add", "g1"), ("faq update", "g1"),
                                             ("faq add", ""), ("faq remove", "g1")]
    assert audit[0][2].startswith("added #") and "was 怎么 开发票" in audit[2][2]


async def test_bad_entries_are_refused_with_the_field_named(bot, ops):
    await seed_simulator(bot)
    gid = await group_id(bot)
    cases = [
        ({"group_id": gid, "question": "？？", "answer": "x"}, "bad_faq", "question"),
        ({"group_id": gid, "question": "   ", "answer": "x"}, "bad_faq", "question"),
        ({"group_id": gid, "question": "怎么退货", "answer": "   "}, "bad_faq", "answer"),
        ({"group_id": gid, "question": "怎么退货", "answer": "x", "aliases": ["长" * 101]}, "bad_request", "aliases"),
        ({"group_id": gid, "question": "怎么退货"}, "bad_request", "answer"),
        ({"group_id": gid, "question": "长" * 256, "answer": "x"}, "bad_request", "question"),
        ({"group_id": "g1", "question": "怎么退货", "answer": "x"}, "bad_request", "group_id"),
        ({"group_id": gid, "question": "怎么退货", "answer": "x", "colour": 1}, "bad_request", "colour"),
        ({"group_id": gid, "question": "怎么退货", "answer": "x", "from_unanswered": 999}, "bad_request", "from_unanswered"),
    ]
    for body, code, field in cases:
        status, data = await post(ops, "/console/api/faq", body)
        assert (status, data["error"], data.get("field")) == (400, code, field), (body, data)
    status, data = await post(ops, "/console/api/faq", {"group_id": gid, "question": "？？", "answer": "x"})
    assert data["message"] == "问答内容有误：问题里要有文字或数字"
    assert (await post(ops, "/console/api/faq", {"group_id": 4242, "question": "怎么退货", "answer": "x"}))[0] == 404
    # Editing into a question the scope already has.
    _, a = await post(ops, "/console/api/faq", {"group_id": gid, "question": "怎么退货", "answer": "a"})
    _, b = await post(ops, "/console/api/faq", {"group_id": gid, "question": "几点发货", "answer": "b"})
    status, data, _ = await ops.request("PUT", f"/console/api/faq/{b['entry']['id']}",
                                        {"question": "怎么 退货？", "answer": "b"})
    assert (status, data["field"]) == (400, "question") and f"#{a['entry']['id']}" in data["message"]
    assert (await ops.request("PUT", "/console/api/faq/4242", {"question": "x", "answer": "y"}))[0] == 404
    async with bot.runtime.db.read_session() as session:
        questions = sorted((await session.execute(select(FaqEntry.question))).scalars())
    assert questions == ["几点发货", "怎么退货"]


CSV_GOOD = "question,answer,aliases\n怎么退货？,订单页申请售后,退货|想退货\n几点发货？,下午四点前当天发,\n"


async def test_csv_import_previews_what_would_change_names_bad_lines_and_export_reads_back(bot, ops):
    await seed_simulator(bot)
    gid = await group_id(bot)
    await post(ops, "/console/api/faq", {"group_id": gid, "question": "几点发货？", "answer": "明天发"})
    bad = ("question,answer\n怎么退货？,订单页申请售后\n,没有问题\n几点发货？,\n怎么 退货,重复\n"
           "多列的问题,答案,别名,多余\n")
    status, plan = await post(ops, "/console/api/faq/import", {"group_id": gid, "csv": bad, "dry_run": True})
    assert status == 200 and plan["imported"] is False
    assert [(p["line"], p["code"]) for p in plan["problems"]] == [(3, "empty_question"), (4, "empty_answer"),
                                                                  (5, "duplicate"), (6, "columns")]
    assert plan["problems"][2]["message"] == "第 5 行：和第 2 行是同一个问题"
    assert plan["problems"][3]["message"].startswith("第 6 行：有 4 列，表头只有 2 列")
    assert [(s["line"], s["action"]) for s in plan["steps"]] == [(2, "add")]
    # The same file for real: refused, nothing written, the lines named.
    status, data = await post(ops, "/console/api/faq/import", {"group_id": gid, "csv": bad})
    assert (status, data["error"], data["field"]) == (400, "bad_csv", "csv") and "第 3 行：问题为空" in data["message"]
    # A clean file: the preview says one add, one update (with the answer it replaces), then the import.
    status, plan = await post(ops, "/console/api/faq/import", {"group_id": gid, "csv": CSV_GOOD, "dry_run": True})
    assert plan["counts"] == {"add": 1, "update": 1, "unchanged": 0} and plan["problems"] == []
    assert [(s["question"], s["action"], s["before"]) for s in plan["steps"]] == [
        ("怎么退货？", "add", None), ("几点发货？", "update", "明天发")]
    async with bot.runtime.db.read_session() as session:
        assert len((await session.execute(select(FaqEntry))).all()) == 1  # the dry run wrote nothing
    status, done = await post(ops, "/console/api/faq/import", {"group_id": gid, "csv": "\ufeff" + CSV_GOOD})
    assert status == 200 and done["imported"] and done["counts"] == {"add": 1, "update": 1, "unchanged": 0}
    assert "下午四点" in (await say(bot, "几点发货？", "u1", "小明"))[0]
    # Export reads back to the same entries; importing it again changes nothing.
    status, out = await ops.get(f"/console/api/faq/export?group={gid}")
    assert status == 200 and out["count"] == 2 and out["filename"] == "faq-simulator-g1.csv"
    assert out["csv"].splitlines()[0] == "question,answer,aliases" and "退货|想退货" in out["csv"]
    _, again = await post(ops, "/console/api/faq/import", {"group_id": gid, "csv": out["csv"], "dry_run": True})
    assert again["counts"] == {"add": 0, "update": 0, "unchanged": 2}
    _, glob = await ops.get("/console/api/faq/export")
    assert glob["count"] == 0 and glob["filename"] == "faq-global.csv"
    # Files that cannot be read at all.
    for text, message in (("q,a\nx,y\n", "表头不对"), ("\n\n", "文件是空的")):
        status, data = await post(ops, "/console/api/faq/import", {"group_id": gid, "csv": text, "dry_run": True})
        assert (status, data["error"]) == (400, "bad_csv") and message in data["message"]
    status, data = await post(ops, "/console/api/faq/import", {"group_id": gid, "csv": "x" * 200_001})
    assert (status, data["field"]) == (400, "csv")
    audit = await console_audit(bot)
    assert audit[-1] == ("faq import", "g1", "1 added, 1 updated, 0 unchanged (group)")


async def test_unanswered_questions_become_faq_entries_or_are_dismissed(bot, ops):
    await seed_simulator(bot)  # 小刚 asks 发票怎么开呢？
    gid = await group_id(bot)
    await say(bot, "会员卡在哪里办理呢？", "u1", "小明")
    await say(bot, "会员卡哪里办理？", "u2", "小红")
    status, data = await ops.get("/console/api/faq/unanswered")
    assert status == 200
    clusters = {c["sample"]: c for c in data["clusters"]}
    card = clusters["会员卡哪里办理？"]  # the latest wording of the cluster
    assert card["count"] == 2 and card["group"]["external_id"] == "g1"
    assert data["clusters"][0]["id"] == card["id"]  # most asked first
    status, saved = await post(ops, "/console/api/faq", {"group_id": gid, "question": card["sample"],
                                                         "answer": "前台就能办理", "from_unanswered": card["id"]})
    assert status == 200 and saved["result"] == "added"
    _, data = await ops.get("/console/api/faq/unanswered")
    assert [c["sample"] for c in data["clusters"]] == ["发票怎么开呢？"]
    assert "前台" in (await say(bot, "会员卡在哪里办理？", "u3", "小刚"))[0]
    invoice = data["clusters"][0]["id"]
    status, _, _ = await ops.request("DELETE", f"/console/api/faq/unanswered/{invoice}")
    assert status == 200
    assert (await ops.get("/console/api/faq/unanswered"))[1]["clusters"] == []
    assert (await ops.request("DELETE", f"/console/api/faq/unanswered/{invoice}"))[0] == 404
    # Asked again without an answer, it comes back with a new count.
    await say(bot, "发票怎么开呢？", "u1", "小明")
    [back] = (await ops.get(f"/console/api/faq/unanswered?group={gid}"))[1]["clusters"]
    assert back["count"] == 1
    audit = await console_audit(bot)
    assert audit[0][2].endswith(f"answers unanswered #{card['id']}")
    assert audit[1][0] == "faq unanswered dismiss" and "发票怎么开呢" in audit[1][2]


async def test_a_viewer_reads_and_a_group_admin_changes_only_their_groups_entries(bot, ops):
    await seed_simulator(bot, "mine")
    await seed_simulator(bot, "theirs")
    mine, theirs = await group_id(bot, "mine"), await group_id(bot, "theirs")
    _, glob = await post(ops, "/console/api/faq", {"group_id": None, "question": "客服电话是多少？", "answer": "400"})
    _, other = await post(ops, "/console/api/faq", {"group_id": theirs, "question": "几点发货？", "answer": "四点"})
    viewer = await logged_in(bot, "viewer", console_store.OPS_VIEWER)
    ga = await logged_in(bot, "ga", console_store.GROUP_ADMIN, groups=[("simulator", "mine")])
    try:
        status, data = await viewer.get("/console/api/faq")
        assert status == 200 and data["total"] == 2 and not any(e["can_write"] for e in data["entries"])
        assert data["can_write_global"] is False
        for method, path, body in (("POST", "/console/api/faq", {"group_id": mine, "question": "a", "answer": "b"}),
                                   ("PUT", f"/console/api/faq/{other['entry']['id']}", {"question": "a", "answer": "b"}),
                                   ("DELETE", f"/console/api/faq/{glob['entry']['id']}", None),
                                   ("POST", "/console/api/faq/import", {"group_id": mine, "csv": CSV_GOOD})):
            status, data, _ = await viewer.request(method, path, body)
            assert (status, data["error"]) == (403, "read_only"), path
        # The group admin: their group's entries and the global ones (read only).
        _, data = await ga.get("/console/api/faq")
        assert [(e["question"], e["can_write"]) for e in data["entries"]] == [("客服电话是多少？", False)]
        status, saved = await post(ga, "/console/api/faq", {"group_id": mine, "question": "怎么退货？", "answer": "申请售后"})
        assert status == 200 and saved["entry"]["can_write"] is True
        refused = [
            ("POST", "/console/api/faq", {"group_id": None, "question": "a", "answer": "b"}, "global_faq"),
            ("POST", "/console/api/faq", {"group_id": theirs, "question": "a", "answer": "b"}, "other_group"),
            ("PUT", f"/console/api/faq/{other['entry']['id']}", {"question": "a", "answer": "b"}, "other_group"),
            ("DELETE", f"/console/api/faq/{other['entry']['id']}", None, "other_group"),
            ("PUT", f"/console/api/faq/{glob['entry']['id']}", {"question": "a", "answer": "b"}, "global_faq"),
            ("DELETE", f"/console/api/faq/{glob['entry']['id']}", None, "global_faq"),
            ("POST", "/console/api/faq/import", {"group_id": None, "csv": CSV_GOOD, "dry_run": True}, "global_faq"),
            ("POST", "/console/api/faq/import", {"group_id": theirs, "csv": CSV_GOOD, "dry_run": True}, "other_group"),
            ("GET", f"/console/api/faq?group={theirs}", None, "other_group"),
            ("GET", f"/console/api/faq/export?group={theirs}", None, "other_group"),
            ("GET", f"/console/api/faq/unanswered?group={theirs}", None, "other_group"),
        ]
        for method, path, body, code in refused:
            status, data, _ = await ga.request(method, path, body)
            assert (status, data["error"]) == (403, code), (method, path, data)
        # Unanswered questions of the other group are not listed, and cannot be dismissed.
        _, data = await ga.get("/console/api/faq/unanswered")
        assert {c["group"]["external_id"] for c in data["clusters"]} == {"mine"}
        async with bot.runtime.db.read_session() as session:
            theirs_cluster = (await session.execute(select(FaqUnanswered.id).where(FaqUnanswered.group_id == theirs))).scalar_one()
        status, data, _ = await ga.request("DELETE", f"/console/api/faq/unanswered/{theirs_cluster}")
        assert (status, data["error"]) == (403, "other_group")
        status, data = await post(ga, "/console/api/faq", {"group_id": mine, "question": "x 问题", "answer": "y",
                                                           "from_unanswered": theirs_cluster})
        assert (status, data["field"]) == (400, "from_unanswered")
        async with bot.runtime.db.read_session() as session:
            assert (await session.get(FaqUnanswered, theirs_cluster)) is not None
            entries = sorted((await session.execute(select(FaqEntry.question))).scalars())
        assert entries == ["几点发货？", "客服电话是多少？", "怎么退货？"]
    finally:
        await viewer.close()
        await ga.close()
