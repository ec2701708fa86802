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
