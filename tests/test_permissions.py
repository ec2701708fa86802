"""Who may use which command: members, group admins (platform-reported or added), bot admins; the audit log."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.config import ConfigError, load_config
from bot.dispatcher import UsageError
from bot.events import Command, Reply
from bot.permissions import Role
from storage.audit import AuditEntry
from tests.conftest import make_config

ROOT = Path(__file__).resolve().parent.parent


async def say(bot, user: str, text: str, *, name: str | None = None, role: str | None = None,
              group: str = "g1") -> list[str]:
    body = {"group": group, "user": user, "name": name or user, "text": text}
    if role:
        body["role"] = role
    status, answer = await bot.post_json("/api/simulator/messages", body)
    assert status == 200, answer
    return [r["text"] for r in answer["replies"]]


def add_test_commands(bot) -> list[str]:
    """A group-admin command that records its calls, and one that raises UsageError on bad input."""
    calls: list[str] = []
    registry = bot.runtime.registry.feature("test")

    @registry.command("清屏", "/purge", description="测试用管理命令", usage="清屏 <条数>", role=Role.GROUP_ADMIN)
    async def purge(event: Command, ctx) -> Reply:
        if not event.args.isdigit():
            raise UsageError("条数要写数字")
        calls.append(event.sender.user)
        return Reply(f"已清理 {event.args} 条")

    @registry.command("重启", "/restart", description="测试用机器人管理员命令", role=Role.BOT_ADMIN)
    async def restart(event: Command, ctx) -> str:
        calls.append(f"restart:{event.sender.user}")
        return "好的"

    return calls


async def audit_rows(bot) -> list[tuple[str, str, str, str, str, str]]:
    async with bot.runtime.db.session() as session:
        rows = await session.execute(select(AuditEntry).order_by(AuditEntry.id))
        return [(e.source, e.group, e.actor, e.command, e.args, e.result) for e in rows.scalars()]


async def test_a_member_is_refused_politely_and_the_attempt_is_audited(bot):
    calls = add_test_commands(bot)
    [answer] = await say(bot, "u1", "清屏 10", name="小明")
    assert answer == "抱歉，「清屏」只有群管理员可以使用哦。"
    [answer] = await say(bot, "u1", "/restart")
    assert answer == "抱歉，「重启」只有机器人管理员可以使用哦。"
    assert calls == []
    assert await audit_rows(bot) == [("chat", "g1", "u1", "清屏", "10", "refused"),
                                     ("chat", "g1", "u1", "重启", "", "refused")]


async def test_platform_owner_and_admin_may_use_group_admin_commands_and_are_audited(bot):
    calls = add_test_commands(bot)
    assert await say(bot, "boss", "清屏 5", role="owner") == ["已清理 5 条"]
    assert await say(bot, "helper", "＠群助手　清屏　3", role="admin") == ["已清理 3 条"]  # full-width, @-mention
    assert calls == ["boss", "helper"]
    # Group admin is not bot admin.
    assert (await say(bot, "boss", "重启"))[0].startswith("抱歉")
    # The platform says helper is no longer an admin: refused from then on.
    assert (await say(bot, "helper", "清屏 3", role="member"))[0].startswith("抱歉")
    # Admin rights are per group.
    assert (await say(bot, "boss", "清屏 1", group="g2"))[0].startswith("抱歉")
    audit = await audit_rows(bot)
    assert [(a[2], a[3], a[5]) for a in audit] == [
        ("boss", "清屏", "ok"), ("helper", "清屏", "ok"), ("boss", "重启", "refused"),
        ("helper", "清屏", "refused"), ("boss", "清屏", "refused")]
    async with bot.runtime.db.session() as session:
        first = (await session.execute(select(AuditEntry).order_by(AuditEntry.id))).scalars().first()
    assert first.detail == "已清理 5 条"


async def test_malformed_arguments_get_the_usage_hint(bot):
    add_test_commands(bot)
    [answer] = await say(bot, "boss", "清屏 很多", role="owner")
    assert answer == "⚠️ 条数要写数字\n用法：清屏 <条数>"
    assert (await audit_rows(bot))[-1][-1] == "usage"


async def test_admins_added_in_chat_count_in_that_group_only(bot):
    calls = add_test_commands(bot)
    await say(bot, "u2", "大家好", name="小红")  # the bot has seen 小红 in g1
    await say(bot, "u2", "我也在", name="小红", group="g2")
    # A member cannot make anyone admin.
    assert (await say(bot, "u3", "管理员 添加 @小红"))[0].startswith("抱歉")
    assert await say(bot, "boss", "管理员 添加 @小红", role="owner") == ["已将 小红 设为本群管理员。"]
    assert await say(bot, "boss", "管理员 添加 u2") == ["小红 已经是本群管理员了。"]
    assert await say(bot, "boss", "管理员 添加 @没这个人") == [
        "没有在本群找到「没这个人」。请 @ 对方的名字，或写对方的用户 ID。"]
    assert await say(bot, "u2", "清屏 2", name="小红") == ["已清理 2 条"]
    assert (await say(bot, "u2", "清屏 2", name="小红", group="g2"))[0].startswith("抱歉")
    [listing] = await say(bot, "u9", "管理员")
    assert listing.splitlines() == ["本群管理员：", "• boss（群主）", "• 小红（机器人登记）"]
    assert await say(bot, "boss", "管理员 移除 @小红") == ["已取消 小红 的本群管理员身份。"]
    assert (await say(bot, "u2", "清屏 2", name="小红"))[0].startswith("抱歉")
    assert (await say(bot, "boss", "管理员 开除 @小红"))[0].startswith("用法：")
    assert calls == ["u2"]
    commands = [(a[2], a[3], a[4], a[5]) for a in await audit_rows(bot) if a[3].startswith("管理员")]
    assert commands == [("u3", "管理员 添加", "@小红", "refused"), ("boss", "管理员 添加", "@小红", "ok"),
                        ("boss", "管理员 添加", "u2", "ok"), ("boss", "管理员 添加", "@没这个人", "ok"),
                        ("boss", "管理员 移除", "@小红", "ok")]


@pytest.mark.parametrize("entry", ["root", "simulator:root"])
async def test_bot_admins_from_config_may_do_everything_everywhere(db_url, bot_factory, entry):
    bot = await bot_factory(make_config(db_url, admins={"bot_admins": f"someone,{entry}"}))
    calls = add_test_commands(bot)
    assert await say(bot, "root", "重启") == ["好的"]
    assert await say(bot, "root", "清屏 1", group="g7") == ["已清理 1 条"]
    assert calls == ["restart:root", "root"]


async def test_a_bot_admin_entry_for_another_channel_does_not_match(db_url, bot_factory):
    bot = await bot_factory(make_config(db_url, admins={"bot_admins": "wecom:root"}))
    add_test_commands(bot)
    assert (await say(bot, "root", "重启"))[0].startswith("抱歉")


async def test_help_lists_only_what_the_caller_may_use(db_url, bot_factory):
    bot = await bot_factory(make_config(db_url, admins={"bot_admins": "root"}))
    add_test_commands(bot)
    member = (await say(bot, "u1", "帮助"))[0]
    owner = (await say(bot, "boss", "帮助", role="owner"))[0]
    root = (await say(bot, "root", "/help"))[0]
    assert "清屏" not in member and "重启" not in member and "帮助" in member
    assert "清屏" in owner and "重启" not in owner
    assert "清屏" in root and "重启" in root
    assert await say(bot, "u1", "帮助 清屏") == ["没有「清屏」这个命令。发送「帮助」查看全部命令。"]
    assert await say(bot, "boss", "帮助 /purge") == ["「清屏」（/purge）：测试用管理命令\n用法：清屏 <条数>"]


def test_bot_admins_from_the_environment_as_a_list_or_json():
    assert load_config(None, environ={"QUNBOT_ADMINS_BOT_ADMINS": "a, wecom:b ,"}).admins.bot_admins == ["a", "wecom:b"]
    assert load_config(None, environ={"QUNBOT_ADMINS_BOT_ADMINS": '["x", "y"]'}).admins.bot_admins == ["x", "y"]
    with pytest.raises(ConfigError, match=r"admins.bot_admins \(QUNBOT_ADMINS_BOT_ADMINS\): expected JSON"):
        load_config(None, environ={"QUNBOT_ADMINS_BOT_ADMINS": '["x", '})


def test_cli_admin_add_list_remove_and_the_audit_log(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUNBOT_")}
    env.update(PYTHONPATH=str(ROOT), QUNBOT_DATABASE_URL=f"sqlite:///{tmp_path / 'q.db'}")

    def qunbot(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bot", *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=60)

    assert qunbot("admin", "list", "--group", "g1").returncode == 2  # unknown group: a clear error
    done = qunbot("admin", "add", "--group", "g1", "u5", "u6")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["u5: done", "u6: done"]
    listing = qunbot("admin", "list", "--group", "g1").stdout.splitlines()
    assert [line.split("\t")[0] for line in listing] == ["u5", "u6"]
    assert qunbot("admin", "remove", "--group", "g1", "u6").stdout.strip() == "u6: done"
    audit = qunbot("audit", "--group", "g1").stdout.splitlines()
    assert [line.split("\t")[1] for line in audit] == ["cli", "cli"]
    assert "admin remove u6" in audit[0] and "admin add u5 u6" in audit[1]
