"""The keyword FAQ end to end: chat commands, answers, suggestions, cooldowns, unanswered questions, the CLI,
two processes on one database, and a 1:1 question to the WeCom app answered through message/send.

Every test runs on SQLite and on PostgreSQL (the `db_url` fixture) through real sockets.
"""

from __future__ import annotations

import asyncio
import getpass
from datetime import timedelta

import pytest
import pytest_asyncio
from sqlalchemy import select

import bot.channels.simulator as simulator
from bot.cli import main as cli_main
from storage.audit import AuditEntry
from storage.db import utcnow
from storage.faq import FaqEntry, FaqUnanswered
from tests.conftest import make_config
from tests.fakes.wecom_server import FakeWeCom
from tests.test_pipeline import accept_and_process, text_event
from tests.wecom_helpers import CORP_ID, callback, text_xml, wecom_env

SIM = "/api/simulator/messages"
RETURNS = "在「我的-订单」里点「申请售后」，按页面地址寄回即可。"
ADD_RETURNS = f"问答 添加 怎么申请退货？ | {RETURNS} | 退货流程|想退货"


async def say(bot, text: str, *, user: str = "u1", group: str = "g1", role: str | None = None,
              message_id: str | None = None) -> list[dict]:
    body = {"group": group, "user": user, "name": user, "text": text}
    if role:
        body["role"] = role
    if message_id:
        body["message_id"] = message_id
    status, data = await bot.post_json(SIM, body)
    assert status == 200, data
    return data["replies"]


async def texts(bot, text: str, **kw) -> list[str]:
    return [r["text"] for r in await say(bot, text, **kw)]


async def audit(bot) -> list[tuple[str, str, str, str]]:
    async with bot.runtime.db.session() as session:
        rows = await session.execute(select(AuditEntry.source, AuditEntry.command, AuditEntry.result, AuditEntry.actor)
                                     .order_by(AuditEntry.id))
    return [tuple(r) for r in rows.all()]


async def test_admin_adds_an_entry_and_members_get_answers_but_ordinary_chat_gets_none(bot):
    [added] = await texts(bot, ADD_RETURNS, user="boss", role="admin")
    assert added.startswith("已添加问答 #") and "退货流程、想退货" in added

    replies = await say(bot, "请问那个 怎么退货呀？😂", user="u2")
    assert replies == [{"text": RETURNS, "mentions": ["u2"]}]
    for chat in ("今天天气真好", "哈哈哈哈", "收到啦谢谢", "我昨天去逛街了"):
        assert await texts(bot, chat) == [], chat
    # A member may list the questions but not add one (refused politely, and audited).
    [listing] = await texts(bot, "问答", user="u3")
    assert "怎么申请退货？" in listing
    [refused] = await texts(bot, "问答 添加 几点发货 | 下午四点前当天发", user="u3")
    assert "群管理员" in refused
    assert await audit(bot) == [("chat", "问答 添加", "ok", "boss"), ("chat", "问答 添加", "refused", "u3")]
    # A malformed add gets the usage hint, and is audited as such.
    [usage] = await texts(bot, "问答 添加 只有问题没有答案", user="boss", role="admin")
    assert "请用“|”分开问题和答案" in usage and "用法：问答" in usage


async def test_the_same_answer_is_not_repeated_within_the_cooldown(db_url, bot_factory, monkeypatch):
    bot = await bot_factory(make_config(db_url, faq={"cooldown_seconds": 60}))
    now = utcnow()
    monkeypatch.setattr(simulator, "utcnow", lambda: now)
    await say(bot, ADD_RETURNS, user="boss", role="admin")
    assert await texts(bot, "怎么退货") == [RETURNS]
    assert await texts(bot, "如何退货啊", user="u2") == []  # still on screen
    assert await texts(bot, "怎么退货", group="g2") == []  # g2 has no entries of its own, and none are global
    monkeypatch.setattr(simulator, "utcnow", lambda: now + timedelta(seconds=61))
    assert await texts(bot, "想退货怎么弄", user="u2") == [RETURNS]


async def test_a_retried_event_answers_again_but_another_message_stays_in_cooldown(bot):
    await say(bot, ADD_RETURNS, user="boss", role="admin")
    event = text_event("怎么退货")
    [first] = await accept_and_process(bot, event)
    # The platform retries after a failed delivery: the same event is processed again and still answers.
    [again] = await bot.runtime.inbox.process(event)
    assert first.text == again.text == RETURNS
    assert await accept_and_process(bot, text_event("怎么退货", user="u2")) == []


async def test_vague_messages_get_suggestions_and_sending_one_gets_its_answer(bot):
    await say(bot, "问答 添加 积分怎么获得？ | 消费1元得1积分。 | 怎么赚积分", user="boss", role="admin")
    await say(bot, "问答 添加 积分会过期吗？ | 积分12个月后清零。 | 积分有效期", user="boss", role="admin")
    # ("积分" alone is the check-in feature's command.)
    [suggestion] = await texts(bot, "积分？")
    lines = suggestion.splitlines()
    assert lines[0] == "你是不是想问：" and lines[-1] == "直接发送上面的问题就能看到答案哦～"
    suggested = [line.split(". ", 1)[1] for line in lines[1:-1]]
    assert suggested and set(suggested) <= {"积分会过期吗？", "积分怎么获得？"}
    answers = {"积分会过期吗？": "积分12个月后清零。", "积分怎么获得？": "消费1元得1积分。"}
    assert await texts(bot, suggested[0]) == [answers[suggested[0]]]


async def test_group_entries_override_global_ones_in_their_group_only(db_url, bot_factory, tmp_path, monkeypatch):
    bot = await bot_factory(make_config(db_url, admins={"bot_admins": "boss"}))
    [added] = await texts(bot, "问答 添加通用 门店几点营业？ | 每天10点到22点。 | 营业时间", user="boss")
    assert added.startswith("已添加问答")
    await say(bot, "问答 添加 门店几点营业？ | 本店周一休息，其余10点到21点。", user="lead", group="g2", role="admin")
    assert await texts(bot, "门店几点开门呀", group="g1") == ["每天10点到22点。"]
    assert await texts(bot, "门店几点开门呀", group="g2") == ["本店周一休息，其余10点到21点。"]
    # A group admin may not remove the global entry; a bot admin may.
    async with bot.runtime.db.session() as session:
        global_id = (await session.execute(select(FaqEntry.id).where(FaqEntry.group_id.is_(None)))).scalar_one()
    [refused] = await texts(bot, f"问答 删除 {global_id}", user="lead", group="g2", role="admin")
    assert "只有机器人管理员" in refused
    [removed] = await texts(bot, f"问答 删除 #{global_id}", user="boss")
    assert removed == f"已删除问答 #{global_id}：门店几点营业？"
    assert await texts(bot, "营业时间是几点", group="g3") == []
    assert ("chat", "问答 删除", "refused", "lead") in await audit(bot)


async def test_unanswered_questions_are_grouped_for_ops_and_chat_is_not_logged(bot, monkeypatch, capsys):
    await say(bot, ADD_RETURNS, user="boss", role="admin")
    for text in ("请问能开专票吗？", "专票怎么开呀", "可以开专票吗", "今天好热啊", "怎么退货"):
        await say(bot, text, user="u2")
    await say(bot, "门店几点关门？", group="g2")
    retried = text_event("你们支持分期吗？")
    await accept_and_process(bot, retried)
    await bot.runtime.inbox.process(retried)  # a retry is not counted again
    async with bot.runtime.db.session() as session:
        rows = (await session.execute(select(FaqUnanswered.sample, FaqUnanswered.count)
                                      .order_by(FaqUnanswered.count.desc(), FaqUnanswered.id))).all()
    assert [tuple(r) for r in rows] == [("可以开专票吗", 3), ("门店几点关门？", 1), ("你们支持分期吗？", 1)]

    assert await asyncio.to_thread(cli, monkeypatch, bot.runtime.config.database.url, "faq", "unanswered",
                                   "--group", "g1") == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in out] == ["3", "1"]
    assert out[0].split("\t")[3] == "可以开专票吗"


async def test_an_entry_added_in_one_process_is_answered_by_the_other_once(db_url, bot_factory):
    first = await bot_factory(make_config(db_url))
    second = await bot_factory(make_config(db_url))
    assert await texts(second, "怎么退货") == []  # its index is built, and empty
    await say(first, ADD_RETURNS, user="boss", role="admin")
    # The same question reaches both processes at the same moment: one answer between them.
    results = await asyncio.gather(say(first, "怎么退货", user="u2"), say(second, "退货流程", user="u3"))
    assert sorted(len(r) for r in results) == [0, 1]
    await say(first, "问答 删除 怎么申请退货", user="boss", role="admin")
    assert await texts(second, "退货流程是什么", group="g2") == []


def cli(monkeypatch, db_url: str, *args: str) -> int:
    monkeypatch.setenv("QUNBOT_DATABASE_URL", db_url)
    monkeypatch.setenv("QUNBOT_DATABASE_AUTO_MIGRATE", "false")
    return cli_main(list(args))


async def test_csv_import_is_an_upsert_export_round_trips_and_bad_files_change_nothing(
        db_url, bot_factory, tmp_path, monkeypatch, capsys):
    good = tmp_path / "faq.csv"
    good.write_bytes("\ufeffquestion,answer,aliases\n怎么申请退货？,旧答案,退货流程\n几点发货？,\"下午4点前，当天发\",\n".encode())
    assert await asyncio.to_thread(cli, monkeypatch, db_url, "faq", "import", str(good), "--dry-run") == 0
    assert "would be 2 added" in capsys.readouterr().out
    assert await asyncio.to_thread(cli, monkeypatch, db_url, "faq", "import", str(good)) == 0
    assert capsys.readouterr().out.strip() == "2 added, 0 updated, 0 unchanged (global entries)"
    good.write_text(f"question,answer,aliases\n怎么申请退货？,{RETURNS},退货流程|想退货\n几点发货？,\"下午4点前，当天发\",\n",
                    encoding="utf-8")
    assert await asyncio.to_thread(cli, monkeypatch, db_url, "faq", "import", str(good)) == 0
    assert capsys.readouterr().out.strip() == "0 added, 1 updated, 1 unchanged (global entries)"

    bad = tmp_path / "bad.csv"
    bad.write_text("question,answer\n能开发票吗？,可以\n,没有问题\n团购,\n", encoding="utf-8")
    assert await asyncio.to_thread(cli, monkeypatch, db_url, "faq", "import", str(bad)) == 2
    err = capsys.readouterr().err
    assert "line 3: the question is empty" in err and "line 4: the answer is empty" in err

    out = tmp_path / "out.csv"
    assert await asyncio.to_thread(cli, monkeypatch, db_url, "faq", "export", "-o", str(out)) == 0
    assert out.read_text(encoding="utf-8") == (
        f"question,answer,aliases\n怎么申请退货？,{RETURNS},退货流程|想退货\n几点发货？,下午4点前，当天发,\n")

    bot = await bot_factory(make_config(db_url))
    assert await texts(bot, "想退货怎么办呀") == [RETURNS]
    assert await texts(bot, "能开发票吗？") == []  # the bad file imported nothing
    assert await asyncio.to_thread(cli, monkeypatch, db_url, "faq", "remove", "几点发货") == 0
    assert await asyncio.to_thread(cli, monkeypatch, db_url, "faq", "remove", "几点发货") == 2
    assert [(source, command, result) for source, command, result, _ in await audit(bot)] == [
        ("cli", "faq import", "ok"), ("cli", "faq import", "ok"), ("cli", "faq remove", "ok")]


async def test_the_faq_scope_is_set_in_chat_and_on_the_command_line_and_members_notice_at_once(
        db_url, bot_factory, monkeypatch, capsys):
    bot = await bot_factory(make_config(db_url, admins={"bot_admins": "boss"}, faq={"cooldown_seconds": 0}))
    await say(bot, "问答 添加通用 门店几点营业？ | 每天10点到22点。 | 营业时间", user="boss")
    await say(bot, ADD_RETURNS, user="lead", role="admin")
    assert await texts(bot, "门店几点开门呀") == ["每天10点到22点。"]
    [shown] = await texts(bot, "问答 范围", user="u2")  # anyone may ask which entries answer here
    assert shown.startswith("本群自动回答用的问答：本群问答 + 通用问答。") and "问答 范围 本群" in shown
    [refused] = await texts(bot, "问答 范围 本群", user="u2")
    assert "群管理员" in refused
    [usage] = await texts(bot, "问答 范围 有时候", user="lead", role="admin")
    assert "不认识范围「有时候」" in usage and "用法：问答" in usage
    # Only the group's own entries in g1: the global one stays silent there, and still answers in g2.
    [done] = await texts(bot, "问答　范围　本群", user="lead", role="admin")  # ideographic spaces
    assert done == "已修改：本群自动回答改用 仅本群问答（原来是 本群问答 + 通用问答）。"
    assert await texts(bot, "门店几点开门呀", user="u3") == []
    assert await texts(bot, "怎么退货", user="u3") == [RETURNS]
    assert await texts(bot, "门店几点开门呀", group="g2") == ["每天10点到22点。"]
    [same] = await texts(bot, "问答 范围 group", user="lead", role="admin")
    assert same == "本群自动回答用的已经是 仅本群问答，没有变化。"

    def qunbot(*args: str) -> int:
        return cli(monkeypatch, db_url, "faq", "scope", *args)

    assert await asyncio.to_thread(qunbot, "--group", "g1") == 0
    assert capsys.readouterr().out.strip() == "faq scope of group simulator/g1: group (the group's own entries only)"
    assert await asyncio.to_thread(qunbot, "--group", "g1", "BOTH") == 0
    assert capsys.readouterr().out.strip() == ("faq scope of group simulator/g1: group -> all "
                                               "(the group's own entries and the global ones)")
    assert await texts(bot, "营业时间是几点", user="u4") == ["每天10点到22点。"]
    assert await asyncio.to_thread(qunbot, "--group", "g1", "off") == 0
    assert await texts(bot, "怎么申请退货", user="u5") == []
    [shown] = await texts(bot, "问答 范围", user="u2")
    assert "不自动回答（已关闭）" in shown
    with pytest.raises(SystemExit) as stopped:  # argparse refuses the word, listing the choices
        await asyncio.to_thread(qunbot, "--group", "g1", "sometimes")
    assert stopped.value.code == 2
    assert "invalid choice: 'sometimes'" in capsys.readouterr().err
    assert await asyncio.to_thread(qunbot, "--group", "nope", "off") == 2
    assert "no group 'nope' on channel 'simulator'" in capsys.readouterr().err

    async with bot.runtime.db.session() as session:
        rows = (await session.execute(select(AuditEntry).where(AuditEntry.command.in_(
            ["问答 范围", "faq scope"])).order_by(AuditEntry.id))).scalars().all()
    assert [(r.source, r.command, r.result) for r in rows] == [
        ("chat", "问答 范围", "refused"), ("chat", "问答 范围", "usage"), ("chat", "问答 范围", "ok"),
        ("chat", "问答 范围", "ok"), ("cli", "faq scope", "ok"), ("cli", "faq scope", "ok"), ("cli", "faq scope", "usage")]
    # The same detail as the console's change of the setting (群管理).
    assert [r.detail for r in rows[2:6]] == ["faq scope all -> group", "faq scope group (unchanged)",
                                             "faq scope group -> all", "faq scope all -> off"]
    assert rows[1].detail.startswith("不认识范围「有时候」") and "no group 'nope'" in rows[6].detail
    assert (rows[4].channel, rows[4].group, rows[4].args, rows[4].actor) == ("simulator", "g1", "both", getpass.getuser())


@pytest_asyncio.fixture
async def fake():
    async with FakeWeCom(corp_id=CORP_ID, corp_secret="s3cret") as server:
        yield server


async def test_a_direct_message_to_the_wecom_app_is_answered_through_message_send(db_url, fake, bot_factory, monkeypatch):
    config = make_config(db_url, wecom=wecom_env(api_base_url=fake.base_url, corp_secret="s3cret", agent_id=1000002,
                                                 sync_welcome_template=False))
    bot = await bot_factory(config)
    assert await asyncio.to_thread(cli, monkeypatch, db_url, "faq", "add", "--question", "怎么申请退货？",
                                   "--answer", RETURNS, "--aliases", "退货流程|想退货") == 0
    for n, text in enumerate(("你好呀", "请问怎么退货？")):
        params, body = callback(text_xml(9100 + n, text, user="zhangsan"))
        async with bot.http.post(bot.url("/wecom/callback"), params=params, data=body) as resp:
            assert (resp.status, await resp.text()) == (200, "success")
    await bot.runtime.inbox.drain()
    assert [(m["touser"], m["text"]["content"]) for m in fake.sent_messages] == [("zhangsan", RETURNS)]
