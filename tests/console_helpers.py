"""Helpers for the console tests: accounts, a logged-in HTTP client with its own cookie jar, seeding."""

from __future__ import annotations

from typing import Any

import aiohttp

from bot.console.auth import hash_password
from storage import console as console_store
from storage import groups as group_store

PASSWORD = "correct horse battery staple"
_HASHES: dict[str, str] = {}


def password_hash(password: str = PASSWORD) -> str:
    """scrypt is slow on purpose: hash each test password once per session."""
    if password not in _HASHES:
        _HASHES[password] = hash_password(password)
    return _HASHES[password]


async def make_user(db: Any, name: str, role: str, *, groups: list[tuple[str, str]] = (),  # type: ignore[assignment]
                    password: str = PASSWORD) -> int:
    async with db.session() as session:
        ids = [(await group_store.ensure_group(session, channel, external)).id for channel, external in groups]
        user = await console_store.create_user(session, username=name, password_hash=password_hash(password),
                                               role=role, group_ids=ids)
        assert user is not None
        return user.id  # type: ignore[return-value]


class ConsoleClient:
    """A browser-like client of one bot: its own cookies, the CSRF token from login, JSON helpers."""

    def __init__(self, base_url: str) -> None:
        self.base = base_url.rstrip("/")
        # unsafe=True: keep cookies set by an IP address host (127.0.0.1).
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.csrf: str | None = None

    async def close(self) -> None:
        await self.http.close()

    async def login(self, username: str, password: str = PASSWORD) -> tuple[int, Any]:
        async with self.http.post(self.base + "/console/api/login",
                                  json={"username": username, "password": password}) as resp:
            body = await resp.json(content_type=None)
            if resp.status == 200:
                self.csrf = body["csrf_token"]
            return resp.status, body

    async def request(self, method: str, path: str, body: Any = None, *, csrf: bool | str = True,
                      headers: dict[str, str] | None = None, allow_redirects: bool = False) -> tuple[int, Any, Any]:
        """(status, parsed JSON or text, response headers)."""
        sent = dict(headers or {})
        if csrf is True and self.csrf and method not in ("GET", "HEAD"):
            sent["X-CSRF-Token"] = self.csrf
        elif isinstance(csrf, str):
            sent["X-CSRF-Token"] = csrf
        kwargs: dict[str, Any] = {"headers": sent, "allow_redirects": allow_redirects}
        if body is not None:
            kwargs["json"] = body
        async with self.http.request(method, self.base + path, **kwargs) as resp:
            text = await resp.text()
            try:
                import json

                data: Any = json.loads(text)
            except ValueError:
                data = text
            if resp.status == 200 and path.endswith("/console/api/login"):
                self.csrf = data["csrf_token"]
            return resp.status, data, resp.headers

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        status, data, _ = await self.request("GET", path, **kwargs)
        return status, data

    async def patch(self, path: str, body: Any, **kwargs: Any) -> tuple[int, Any]:
        status, data, _ = await self.request("PATCH", path, body, **kwargs)
        return status, data


async def seed_simulator(bot: Any, group: str = "g1") -> None:
    """Some activity through the simulator's API: three joins (one invited), check-ins, chat, a question."""
    people = [("u1", "小明"), ("u2", "小红"), ("u3", "小刚")]
    for user, name in people:
        body: dict[str, Any] = {"group": group, "users": [{"user": user, "name": name}]}
        if user == "u3":
            body["inviter"] = "u1"
        status, _ = await bot.post_json("/api/simulator/joins", body)
        assert status == 200
    for user, name in people[:2]:
        status, _ = await bot.post_json("/api/simulator/messages", {"group": group, "user": user, "name": name,
                                                                    "text": "签到"})
        assert status == 200
    await bot.post_json("/api/simulator/messages", {"group": group, "user": "u3", "name": "小刚", "text": "大家好"})
    await bot.post_json("/api/simulator/messages", {"group": group, "user": "u3", "name": "小刚",
                                                    "text": "发票怎么开呢？"})


async def say(bot: Any, text: str, user: str, name: str = "", role: str | None = None, group: str = "g1") -> list[str]:
    """A member's message in the simulator; the bot's reply texts."""
    body = {"group": group, "user": user, "name": name or user, "text": text}
    if role:
        body["role"] = role
    status, reply = await bot.post_json("/api/simulator/messages", body)
    assert status == 200, reply
    return [r["text"] for r in reply["replies"]]


async def group_id(bot: Any, external_id: str = "g1", channel: str = "simulator") -> int:
    """The console id (groups.id) of a group the bot has seen."""
    from sqlalchemy import select

    from storage.groups import Group

    async with bot.runtime.db.read_session() as session:
        return (await session.execute(select(Group.id).where(Group.channel == channel,
                                                             Group.external_id == external_id))).scalar_one()


async def logged_in(bot: Any, name: str, role: str, *, groups: list[tuple[str, str]] = ()) -> ConsoleClient:  # type: ignore[assignment]
    """A new account and a client logged in with it (close it when done)."""
    await make_user(bot.runtime.db, name, role, groups=groups)
    client = ConsoleClient(bot.url("/"))
    status, body = await client.login(name)
    assert status == 200, body
    return client


async def seed_features(bot: Any, group: str = "g1") -> None:
    """What the feature pages show, made in chat by the group's owner: an FAQ entry, an unanswered question,
    a scheduled post and an open lottery with one entrant; and a campaign with a post of its own (each the
    first of its kind: id 1 in a fresh DB)."""
    assert "已添加" in (await say(bot, "问答 添加 怎么开发票？ | 在订单页点「申请开票」即可 | 开发票", "boss", "老板",
                                 role="owner", group=group))[0]
    await say(bot, "会员卡在哪里办理呢？", "u2", "小红", group=group)
    assert "定时推送已添加" in (await say(bot, "定时 添加 每天 9:00 早上好，今天是{date}", "boss", "老板",
                                      role="owner", group=group))[0]
    created = await say(bot, "抽奖 创建 周末福利 | 一等奖x1, 二等奖x2 | 明天 20:00 | 关键词 我要抽奖", "boss", "老板",
                        role="owner", group=group)
    assert "已创建" in created[0], created
    await say(bot, "我要抽奖", "u1", "小明", group=group)
    await seed_campaign(bot, group)


async def seed_campaign(bot: Any, group: str = "g1", *, tz: str = "Asia/Shanghai") -> int:
    """A campaign over the group made by ops (as `qunbot campaign add` does): warm-up the three days before
    today, burst today to the key date two days on; one burst post, and the group's first lottery counted in it."""
    from datetime import timedelta

    from bot.push_spec import parse_schedule
    from storage import campaign as campaign_store
    from storage import push as push_store
    from storage.dashboard import local_today
    from storage.db import utcnow

    gid = await group_id(bot, group)
    today = local_today(tz, utcnow())
    fields = campaign_store.CampaignFields(
        name="autumn", title="秋季大促", timezone=tz, key_date=today + timedelta(days=2), key_name="开售",
        phases={campaign_store.WARMUP: (today - timedelta(days=3), today - timedelta(days=1)),
                campaign_store.BURST: (today, today + timedelta(days=2))},
        target_kind=campaign_store.GROUPS, group_ids=(gid,), owner="张三")
    async with bot.runtime.db.session() as session:
        campaign = await campaign_store.create_campaign(session, fields, created_by="cli:ops", now=utcnow())
        targets = await campaign_store.post_targets(session, campaign)
        await push_store.create_post(session, push_store.PostFields(
            schedule=parse_schedule("每天 20:00", tz=tz, now=utcnow()), schedule_text="每天 20:00", timezone=tz,
            content="距{campaign}开售还有 {days_left} 天", campaign_id=campaign.id, phase=campaign_store.BURST,
            **targets), source=push_store.CLI, created_by="cli:ops", now=utcnow())
        from sqlalchemy import select

        from storage.lottery import Lottery

        lottery_id = (await session.execute(select(Lottery.id).where(Lottery.group_id == gid)
                                            .order_by(Lottery.id).limit(1))).scalar_one_or_none()
        if lottery_id is not None:
            await campaign_store.link_lottery(session, campaign.id, lottery_id)  # type: ignore[arg-type]
        return campaign.id  # type: ignore[return-value]
