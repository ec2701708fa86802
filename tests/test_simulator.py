"""The simulator's JSON API, end to end through a real socket, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import shutil

from tests.conftest import make_config


async def test_join_gets_a_welcome_naming_the_member(bot):
    status, body = await bot.post_json("/api/simulator/joins",
                                       {"group": "g1", "users": [{"user": "u2", "name": "小红"}], "inviter": "u1"})
    assert status == 200
    [reply] = body["replies"]
    assert "@小红" in reply["text"] and "演示群" in reply["text"]
    assert reply["mentions"] == ["u2"]


async def test_burst_of_twenty_joins_is_one_welcome_naming_everyone(db_url, bot_factory):
    # A 1 s merge window (production's is 2 s): the tests' 0.2 s is shorter than the gaps twenty concurrent
    # joins can have on a loaded 2-core machine, which split the burst.
    bot = await bot_factory(make_config(db_url, welcome={"merge_window_seconds": 1}))
    joins = [bot.post_json("/api/simulator/joins", {"group": "g1", "users": [{"user": f"m{i}", "name": f"成员{i}"}]})
             for i in range(20)]
    results = await asyncio.gather(*joins)
    assert all(status == 200 for status, _ in results)
    replies = [r for _, body in results for r in body["replies"]]
    assert len(replies) == 1
    assert all(f"@成员{i}" in replies[0]["text"] for i in range(20))
    assert "20 位成员" in replies[0]["text"]
    _, transcript = await bot.get_json("/api/simulator/messages", group="g1", after=0)
    bot_messages = [m for m in transcript["messages"] if m["from_bot"]]
    assert len(bot_messages) == 1


async def test_welcome_can_be_switched_off_per_group(db_url, bot_factory):
    from storage import groups, welcome

    bot = await bot_factory(make_config(db_url))
    async with bot.runtime.db.session() as session:
        group = await groups.ensure_group(session, "simulator", "quiet")
        await welcome.save_settings(session, group.id, enabled=False)
    _, body = await bot.post_json("/api/simulator/joins", {"group": "quiet", "users": [{"user": "u9", "name": "阿九"}]})
    assert body["replies"] == []
    _, body = await bot.post_json("/api/simulator/joins", {"group": "g1", "users": [{"user": "u9", "name": "阿九"}]})
    assert len(body["replies"]) == 1


async def test_group_template_and_rules_fill_placeholders(bot):
    from storage import groups, welcome

    async with bot.runtime.db.session() as session:
        group = await groups.ensure_group(session, "simulator", "g7", "读书会")
        await welcome.save_settings(session, group.id, template="{group_name} 欢迎 {names}！共 {member_count} 人{rules}",
                                    rules="禁止广告")
    _, body = await bot.post_json("/api/simulator/joins", {"group": "g7", "users": [{"user": "a", "name": "阿甲"}]})
    assert body["replies"][0]["text"] == "读书会 欢迎 @阿甲！共 1 人\n📌 群规：禁止广告"


async def test_messages_and_transcript(bot):
    status, body = await bot.post_json("/api/simulator/messages", {"group": "g1", "user": "u1", "name": "小明", "text": "帮助"})
    assert status == 200
    assert "帮助" in body["replies"][0]["text"]
    status, transcript = await bot.get_json("/api/simulator/messages", group="g1", after=0)
    assert status == 200
    kinds = [(m["from_bot"], m["text"][:2]) for m in transcript["messages"]]
    assert kinds[0] == (False, "帮助") and kinds[1][0] is True
    first_id = transcript["messages"][0]["id"]
    _, later = await bot.get_json("/api/simulator/messages", group="g1", after=first_id)
    assert [m["id"] for m in later["messages"]] == [m["id"] for m in transcript["messages"][1:]]
    assert later["last_id"] == transcript["last_id"]
    _, other = await bot.get_json("/api/simulator/messages", group="g2", after=0)
    assert other["messages"] == []


async def test_ordinary_chat_gets_no_reply(bot):
    _, body = await bot.post_json("/api/simulator/messages", {"group": "g1", "user": "u1", "text": "今天天气不错"})
    assert body["replies"] == []


async def test_leave_closes_membership(bot):
    from sqlalchemy import select

    from storage.groups import Membership

    await bot.post_json("/api/simulator/joins", {"group": "g1", "users": [{"user": "u2", "name": "小红"}]})
    status, body = await bot.post_json("/api/simulator/leaves", {"group": "g1", "users": ["u2"]})
    assert status == 200 and body["replies"] == []
    async with bot.runtime.db.session() as session:
        stay = (await session.execute(select(Membership))).scalar_one()
    assert stay.left_at is not None and stay.leave_scene == "left"


async def test_same_client_message_id_is_processed_once(bot):
    msg = {"group": "g1", "user": "u1", "text": "帮助", "message_id": "m-1"}
    results = await asyncio.gather(*[bot.post_json("/api/simulator/messages", msg) for _ in range(4)])
    assert sum(len(body["replies"]) for _, body in results) == 1


async def test_bad_requests_name_the_field(bot):
    async with bot.http.post(bot.url("/api/simulator/messages"), data=b"{not json") as resp:
        assert resp.status == 400
        assert "JSON" in (await resp.json())["error"]
    cases = [
        ("/api/simulator/messages", {"user": "u1", "text": "hi"}, "group"),
        ("/api/simulator/messages", {"group": "g1", "text": "hi"}, "user"),
        ("/api/simulator/messages", {"group": "g1", "user": "u1"}, "text"),
        ("/api/simulator/messages", {"group": "g1", "user": 5, "text": "x"}, "user"),
        ("/api/simulator/joins", {"group": "g1"}, "users"),
        ("/api/simulator/joins", {"group": "g1", "users": [{"name": "无名"}]}, "users[0].user"),
        ("/api/simulator/leaves", {"group": "g1", "users": []}, "users"),
        ("/api/simulator/leaves", {"users": ["u1"]}, "group"),
    ]
    for path, data, field in cases:
        status, body = await bot.post_json(path, data)
        assert status == 400, (path, data)
        assert f"'{field}'" in body["error"], (field, body)
    status, body = await bot.get_json("/api/simulator/messages", group="g1", after="x")
    assert status == 400 and "'after'" in body["error"]


async def test_page_and_health(bot):
    async with bot.http.get(bot.url("/simulator")) as resp:
        assert resp.status == 200
        assert "群聊模拟器" in await resp.text()
    status, body = await bot.get_json("/healthz")
    assert status == 200 and body["status"] == "ok"


async def test_health_is_503_when_the_database_is_gone(tmp_path, bot_factory):
    from storage.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'gone' / 'db.sqlite'}"
    await upgrade(url)
    # A short shutdown grace: a background job caught waiting for the connection the disposal below takes away
    # would otherwise hold the bot's shutdown for the whole default 10 s.
    bot = await bot_factory(make_config(url, server={"shutdown_timeout_seconds": 1}))
    # Background jobs (inbox recovery, scheduled draws) may reopen, and so recreate, the file meanwhile:
    # remove the whole directory until it stays gone, so nothing can be created there any more.
    while (tmp_path / "gone").exists():
        shutil.rmtree(tmp_path / "gone", ignore_errors=True)
    await bot.runtime.db.engine.dispose()
    status, body = await bot.get_json("/healthz")
    assert status == 503 and body["status"] == "unavailable"
