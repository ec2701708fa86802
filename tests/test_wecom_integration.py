"""The WeCom door end to end: encrypted callbacks in, FakeWeCom's API out, over real sockets.

Each test runs on SQLite and on PostgreSQL (the `db_url` fixture) and checks what a member or an operator
would notice: who joined and how, replies that arrive, failures that are recorded instead of lost, one
welcome template per corp, one access token for every process, and no token in the logs.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import select
from sqlalchemy.orm import aliased

from storage.groups import Group, Member, Membership
from storage.inbox import InboxMessage
from storage.kv import ApiFailure
from storage.welcome import PlatformWelcomeTemplate
from tests.conftest import make_config
from tests.door_helpers import eventually, logged, rows
from tests.fakes.wecom_server import FakeWeCom
from tests.wecom_helpers import CORP_ID, callback, chat_change_xml, text_xml, wecom_env

PATH = "/wecom/callback"
SECRET = "s3cret"
AGENT_ID = 1000002
GROUPCHAT_GET = "/cgi-bin/externalcontact/groupchat/get"
MESSAGE_SEND = "/cgi-bin/message/send"
TEMPLATE_ADD = "/cgi-bin/externalcontact/group_welcome_template/add"
TEMPLATE_EDIT = "/cgi-bin/externalcontact/group_welcome_template/edit"
# The default platform welcome (bot/templates/zh/*.toml welcome.platform_default, no rules configured).
DEFAULT_WELCOME = "欢迎 %NICKNAME% 加入本群🎉 有问题随时@我。"
HELP_HEADER = "我可以帮你做这些事："


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeWeCom]:
    # Request it before bot_factory so the bots stop before the fake does.
    async with FakeWeCom(corp_id=CORP_ID, corp_secret=SECRET) as server:
        yield server


def config(db_url: str, fake: FakeWeCom, *, sync: bool = False, welcome: dict[str, Any] | None = None,
           **wecom: Any) -> Any:
    """The bot's config for the fake; the startup template sync only where a test is about it."""
    sections: dict[str, dict[str, Any]] = {
        "wecom": wecom_env(api_base_url=fake.base_url, corp_secret=SECRET, agent_id=AGENT_ID,
                           sync_welcome_template=sync, **wecom)}
    if welcome:
        sections["welcome"] = welcome
    return make_config(db_url, **sections)


async def post(bot: Any, xml: str) -> tuple[int, str]:
    params, body = callback(xml)
    async with bot.http.post(bot.url(PATH), params=params, data=body) as resp:
        return resp.status, await resp.text()


async def api_failures(bot: Any) -> list[tuple[str, int | None, int]]:
    return [tuple(r) for r in await rows(bot, select(ApiFailure.api, ApiFailure.errcode, ApiFailure.attempts)
                                         .order_by(ApiFailure.id))]


async def inbox(bot: Any) -> list[InboxMessage]:
    return [r[0] for r in await rows(bot, select(InboxMessage).order_by(InboxMessage.id))]


async def stays(bot: Any) -> dict[str, tuple[str, str | None, str | None, str | None]]:
    """{member id: (name, kind, join scene, inviter id)} for every open membership."""
    inviter = aliased(Member)
    found = await rows(bot, select(Member.external_id, Member.name, Member.kind, Membership.join_scene,
                                   inviter.external_id)
                       .join(Membership, Membership.member_id == Member.id)
                       .outerjoin(inviter, inviter.id == Membership.inviter_id)
                       .where(Membership.left_at.is_(None)))  # type: ignore[union-attr]
    return {r[0]: tuple(r[1:]) for r in found}


async def template_syncs_finished(within: float = 10.0) -> None:
    """Wait for every bot's background welcome-template sync (spawned at startup) to end."""
    tasks = [t for t in asyncio.all_tasks() if t.get_name() == "wecom-welcome-sync"]
    if tasks:
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), within)


# ---- 1, 2: members joining a customer group ------------------------------------------------------

def seed_chat(fake: FakeWeCom) -> None:
    fake.add_group_chat("wrChat1", name="产品交流群", owner="zhangsan", admins=["lisi"], members=[
        "zhangsan",
        {"userid": "wmAAA", "type": 2, "join_scene": 3, "invitor": {"userid": "lisi"},
         "group_nickname": "小A", "name": "阿A"},
        {"userid": "wangwu", "type": 1, "join_scene": 2, "invitor": {"userid": "zhangsan"},
         "group_nickname": "", "name": "王五"},
        {"userid": "wmCCC", "type": 2, "join_scene": 1, "invitor": {"userid": "lisi"},
         "group_nickname": "", "name": "客户C"},
    ])


async def test_join_is_recorded_with_names_kinds_scenes_and_inviters(db_url, fake, bot_factory):
    seed_chat(fake)
    bot = await bot_factory(config(db_url, fake))
    xml = chat_change_xml("wrChat1", "update", "add_member", ["wmAAA", "wangwu", "wmCCC"], join_scene=0,
                          mem_ver="v2")
    assert await post(bot, xml) == (200, "success")
    await bot.runtime.inbox.drain()

    assert [body for method, path, body in fake.requests if path == GROUPCHAT_GET] == [
        {"chat_id": "wrChat1", "need_name": 1}]
    assert await stays(bot) == {
        "wmAAA": ("小A", "external", "qrcode", "lisi"),  # group nickname wins over the WeChat name
        "wangwu": ("王五", "staff", "link", "zhangsan"),
        "wmCCC": ("客户C", "external", "invited", "lisi"),
    }
    # Inviters are members too (known by id until they speak or join themselves).
    members = {r[0] for r in await rows(bot, select(Member.external_id))}
    assert {"lisi", "zhangsan"} <= members
    assert await rows(bot, select(Group.external_id, Group.name)) == [("wrChat1", "产品交流群")]
    assert [r.status for r in await inbox(bot)] == ["done"]
    assert await api_failures(bot) == []


async def test_owner_and_admin_list_from_groupchat_get_make_group_admins(db_url, fake, bot_factory):
    from storage.admins import GroupAdmin

    seed_chat(fake)
    bot = await bot_factory(config(db_url, fake))
    assert (await post(bot, chat_change_xml("wrChat1", "update", "add_member", ["wmAAA"], mem_ver="v2")))[0] == 200
    await bot.runtime.inbox.drain()
    admins = await rows(bot, select(Member.external_id, GroupAdmin.source, GroupAdmin.detail)
                        .join(GroupAdmin, GroupAdmin.member_id == Member.id).order_by(Member.external_id))
    assert admins == [("lisi", "platform", "admin"), ("zhangsan", "platform", "owner")]

    # The platform's list is the truth for platform admins: lisi demoted in WeCom is no longer one.
    fake.add_group_chat("wrChat1", name="产品交流群", owner="zhangsan", admins=[], members=["zhangsan", "wmAAA", "wmBBB"])
    assert (await post(bot, chat_change_xml("wrChat1", "update", "add_member", ["wmBBB"], mem_ver="v3")))[0] == 200
    await bot.runtime.inbox.drain()
    admins = await rows(bot, select(Member.external_id).join(GroupAdmin, GroupAdmin.member_id == Member.id))
    assert admins == [("zhangsan",)]


async def test_busy_groupchat_get_is_retried_and_details_still_recorded(db_url, fake, bot_factory):
    seed_chat(fake)
    fake.fail_next(GROUPCHAT_GET, -1)  # system busy, once
    bot = await bot_factory(config(db_url, fake))
    assert (await post(bot, chat_change_xml("wrChat1", "update", "add_member", ["wmAAA"], mem_ver="v2")))[0] == 200
    await bot.runtime.inbox.drain()
    assert fake.calls_to(GROUPCHAT_GET) == 2
    assert await stays(bot) == {"wmAAA": ("小A", "external", "qrcode", "lisi")}
    assert await api_failures(bot) == []


async def test_failed_groupchat_get_keeps_the_join_and_records_the_failure(db_url, fake, bot_factory, caplog):
    seed_chat(fake)
    fake.fail_next(GROUPCHAT_GET, 60011)  # no privilege (app not allowed under 客户联系): permanent
    bot = await bot_factory(config(db_url, fake))
    with caplog.at_level(logging.WARNING, "qunbot"):
        xml = chat_change_xml("wrChat1", "update", "add_member", ["wmAAA", "wangwu"], join_scene=3, mem_ver="v2")
        assert await post(bot, xml) == (200, "success")
        await bot.runtime.inbox.drain()

    assert fake.calls_to(GROUPCHAT_GET) == 1  # permanent: not retried
    # The join is kept with what the event said: ids and the event's join scene, no names or kinds.
    assert await stays(bot) == {"wmAAA": ("", None, "qrcode", None), "wangwu": ("", None, "qrcode", None)}
    assert await rows(bot, select(Group.external_id, Group.name)) == [("wrChat1", "")]
    assert [r.status for r in await inbox(bot)] == ["done"]
    assert await api_failures(bot) == [(GROUPCHAT_GET, 60011, 1)]
    assert "groupchat/get failed; join recorded without details" in logged(caplog)


# ---- 3: the customer-group welcome template ------------------------------------------------------

async def stored_templates(bot: Any) -> list[tuple[str, str]]:
    return [tuple(r) for r in await rows(bot, select(PlatformWelcomeTemplate.template_id,
                                                     PlatformWelcomeTemplate.content_hash))]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def test_welcome_template_created_once_then_edited_when_the_text_changes(db_url, fake, bot_factory):
    first = await bot_factory(config(db_url, fake, sync=True))
    await eventually(lambda: len(fake.welcome_templates) == 1, what="template created at startup")
    await template_syncs_finished()
    [(template_id, template)] = fake.welcome_templates.items()
    assert template == {"text": {"content": DEFAULT_WELCOME}}
    assert "%NICKNAME%" in template["text"]["content"]
    assert await stored_templates(first) == [(template_id, sha(DEFAULT_WELCOME))]
    await first.server.close()

    # A restart with the same text changes nothing on the platform.
    second = await bot_factory(config(db_url, fake, sync=True))
    await template_syncs_finished()
    assert (fake.calls_to(TEMPLATE_ADD), fake.calls_to(TEMPLATE_EDIT)) == (1, 0)
    assert await stored_templates(second) == [(template_id, sha(DEFAULT_WELCOME))]
    await second.server.close()

    # A restart with a new text edits the same template.
    text = "欢迎 %NICKNAME%！请先看群公告，有问题@群主。"
    third = await bot_factory(config(db_url, fake, sync=True, welcome={"platform_template": text}))
    await eventually(lambda: fake.calls_to(TEMPLATE_EDIT) == 1, what="template edited")
    await template_syncs_finished()
    assert fake.calls_to(TEMPLATE_ADD) == 1
    assert fake.welcome_templates == {template_id: {"text": {"content": text}}}
    assert await stored_templates(third) == [(template_id, sha(text))]
    assert fake.gettoken_calls == 1  # the token fetched by the first run served the later ones


async def test_two_instances_starting_together_create_one_template(db_url, fake, bot_factory):
    fake.latency = 0.1  # the platform is slow: both instances are starting while the first add is in flight
    cfg = config(db_url, fake, sync=True)
    first, second = await asyncio.gather(bot_factory(cfg), bot_factory(cfg))
    await eventually(lambda: len(fake.welcome_templates) >= 1, what="template created")
    await template_syncs_finished()
    assert fake.calls_to(TEMPLATE_ADD) == 1
    [template_id] = fake.welcome_templates
    assert await stored_templates(first) == [(template_id, sha(DEFAULT_WELCOME))]
    assert await stored_templates(second) == [(template_id, sha(DEFAULT_WELCOME))]
    assert fake.gettoken_calls == 1


async def test_failed_template_add_is_retried_and_recorded(db_url, fake, bot_factory):
    fake.fail_next(TEMPLATE_ADD, 60011)  # permanent for this call; the next sync attempt succeeds
    bot = await bot_factory(config(db_url, fake, sync=True))
    await eventually(lambda: len(fake.welcome_templates) == 1, within=8, what="template created on retry")
    await template_syncs_finished()
    assert fake.calls_to(TEMPLATE_ADD) == 2
    [template_id] = fake.welcome_templates
    assert await stored_templates(bot) == [(template_id, sha(DEFAULT_WELCOME))]
    assert await api_failures(bot) == [(TEMPLATE_ADD, 60011, 1)]


# ---- 4: 1:1 messages to the app --------------------------------------------------------------------

def check_help_reply(message: dict[str, Any], user: str) -> None:
    assert (message["touser"], message["agentid"], message["msgtype"]) == (user, AGENT_ID, "text")
    content = message["text"]["content"]
    assert content.startswith(HELP_HEADER)
    assert "帮助" in content and "/help" in content


async def test_help_in_a_direct_message_is_answered_with_message_send(db_url, fake, bot_factory):
    bot = await bot_factory(config(db_url, fake))
    assert await post(bot, text_xml(5001, "帮助", user="zhangsan")) == (200, "success")
    await bot.runtime.inbox.drain()
    [message] = fake.sent_messages
    check_help_reply(message, "zhangsan")
    assert [(r.status, r.error) for r in await inbox(bot)] == [("done", None)]
    assert await api_failures(bot) == []


async def test_busy_message_send_is_retried_then_delivered(db_url, fake, bot_factory):
    fake.fail_next(MESSAGE_SEND, -1, times=2)
    bot = await bot_factory(config(db_url, fake))
    assert (await post(bot, text_xml(5002, "帮助", user="lisi")))[0] == 200
    await bot.runtime.inbox.drain()
    assert fake.calls_to(MESSAGE_SEND) == 3
    [message] = fake.sent_messages
    check_help_reply(message, "lisi")
    assert [r.status for r in await inbox(bot)] == ["done"]
    assert await api_failures(bot) == []


@pytest.mark.parametrize("max_attempts,status", [(5, "pending"), (1, "failed")])
async def test_refused_message_send_is_recorded_not_dropped(db_url, fake, bot_factory, max_attempts, status):
    fake.invalid_users.add("ghost")  # message/send answers 81013: every recipient invalid
    bot = await bot_factory(make_config(
        db_url, inbox={"max_attempts": max_attempts},
        wecom=wecom_env(api_base_url=fake.base_url, corp_secret=SECRET, agent_id=AGENT_ID,
                        sync_welcome_template=False)))
    assert (await post(bot, text_xml(5003, "帮助", user="ghost")))[0] == 200
    await bot.runtime.inbox.drain()
    assert fake.sent_messages == []
    assert fake.calls_to(MESSAGE_SEND) == 1  # permanent: not retried by the client
    assert await api_failures(bot) == [(MESSAGE_SEND, 81013, 1)]
    # The reply is not silently dropped: the event stays retryable (or, after the last attempt, failed).
    [row] = await inbox(bot)
    assert row.status == status
    assert row.error and "81013" in row.error


# ---- 5: one access token for every process, and never in the logs ---------------------------------

async def test_two_instances_share_one_token_and_never_log_it(db_url, fake, bot_factory, caplog):
    fake.latency = 0.05  # gettoken takes a while: the instances ask for a token at the same time
    caplog.set_level(logging.DEBUG)
    first, second = await asyncio.gather(bot_factory(config(db_url, fake)), bot_factory(config(db_url, fake)))
    users = [f"user{n}" for n in range(6)]
    results = await asyncio.gather(*[post(first if n % 2 else second, text_xml(6000 + n, "帮助", user=u))
                                     for n, u in enumerate(users)])
    assert all(r == (200, "success") for r in results)
    await asyncio.gather(first.runtime.inbox.drain(), second.runtime.inbox.drain())

    assert sorted(m["touser"] for m in fake.sent_messages) == users
    for message in fake.sent_messages:
        check_help_reply(message, message["touser"])
    assert fake.gettoken_calls == 1
    # A token refused later (expired early) is refetched once, for both instances.
    fake.expire_all_tokens()
    await asyncio.gather(post(first, text_xml(6100, "帮助", user="late1")),
                         post(second, text_xml(6101, "帮助", user="late2")))
    await asyncio.gather(first.runtime.inbox.drain(), second.runtime.inbox.drain())
    assert sorted(m["touser"] for m in fake.sent_messages) == sorted([*users, "late1", "late2"])
    assert fake.gettoken_calls == 2

    text = logged(caplog)
    assert "access token fetched" in text
    assert fake.tokens, "the fake issued tokens"
    for secret in [*fake.tokens, SECRET]:
        assert secret not in text
