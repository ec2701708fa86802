"""The simulator: a group chat in the browser (/simulator) and the JSON API it and the acceptance checks use.

Members' messages, joins and leaves go through the same inbox and dispatcher as every other door; the
bot's replies, and whatever it posts later on its own, land in a transcript stored in the database.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from bot.channels.base import Capabilities, Channel
from bot.events import Event, MemberJoined, MemberLeft, Person, Reply, TextMessage
from bot.http import json_response
from bot.inbox import InboxUnavailable
from storage import transcript
from storage.db import utcnow
from storage.transcript import TranscriptMessage

log = logging.getLogger("qunbot.simulator")
PAGE = Path(__file__).with_name("simulator.html")
MAX_TEXT = 4000
MAX_USERS = 200


class BadRequest(Exception):
    """A request the API refuses with 400 and this message."""


# What the simulated platform may say about a member's standing in the group (like WeCom's admin_list).
ROLES = ("owner", "admin", "member")


class SimulatorChannel(Channel):
    name = "simulator"
    title = "Simulator"
    reaches = "the /simulator page (a demo group in the browser)"
    capabilities = Capabilities(
        can_reply=True, can_post_proactively=True, sees_joins=True, posts_welcome=True, mentions=True,
        markdown=False, images=False,
    )

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/simulator", self.page)
        app.router.add_post("/api/simulator/messages", answers_bad_requests(self.post_message))
        app.router.add_post("/api/simulator/joins", answers_bad_requests(self.post_joins))
        app.router.add_post("/api/simulator/leaves", answers_bad_requests(self.post_leaves))
        app.router.add_get("/api/simulator/messages", answers_bad_requests(self.get_messages))

    # -- HTTP ------------------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(PAGE, headers={"Content-Type": "text/html; charset=utf-8"})

    async def post_message(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        group, user = _text_field(body, "group"), _text_field(body, "user")
        name = _text_field(body, "name", required=False) or user
        text = _text_field(body, "text", limit=MAX_TEXT)
        role = _text_field(body, "role", required=False) or None
        if role is not None and role not in ROLES:
            raise BadRequest(f"field 'role' must be one of {', '.join(ROLES)}")
        event = TextMessage(self.name, _message_key(body), group, utcnow(), group_name=self._group_name(group),
                            sender=Person(user, name, role=role), text=text, mentioned=True)
        await self._record(TranscriptMessage(channel=self.name, group_external_id=group, kind="text",
                                             user=user, name=name, text=text, at=event.at))
        return await self._handle(event)

    async def post_joins(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        group = _text_field(body, "group")
        users = body.get("users")
        if not isinstance(users, list) or not users or len(users) > MAX_USERS:
            raise BadRequest(f"field 'users' must be a list of 1 to {MAX_USERS} members like {{\"user\": \"u2\", \"name\": \"小红\"}}")
        people = []
        for n, item in enumerate(users):
            if not isinstance(item, dict):
                raise BadRequest(f"field 'users[{n}]' must be an object with 'user' and 'name'")
            user = _text_field(item, "user", label=f"users[{n}].user")
            people.append(Person(user, _text_field(item, "name", required=False, label=f"users[{n}].name") or user))
        inviter = _text_field(body, "inviter", required=False) or None
        event = MemberJoined(self.name, _message_key(body), group, utcnow(), group_name=self._group_name(group),
                             members=people, inviter=inviter, scene="invited" if inviter else "link")
        async with self.runtime.db.session() as session:
            for person in people:
                await transcript.append(session, TranscriptMessage(
                    channel=self.name, group_external_id=group, kind="join", user=person.user, name=person.name,
                    text=f"{person.name} 加入了群聊", at=event.at))
        return await self._handle(event)

    async def post_leaves(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        group = _text_field(body, "group")
        users = body.get("users")
        if not isinstance(users, list) or not users or len(users) > MAX_USERS:
            raise BadRequest(f"field 'users' must be a list of 1 to {MAX_USERS} user ids")
        if not all(isinstance(u, str) and u.strip() for u in users):
            raise BadRequest("field 'users' must contain user ids (non-empty strings)")
        event = MemberLeft(self.name, _message_key(body), group, utcnow(), group_name=self._group_name(group),
                           members=[Person(u.strip()) for u in users], scene="left")
        async with self.runtime.db.session() as session:
            for user in users:
                await transcript.append(session, TranscriptMessage(
                    channel=self.name, group_external_id=group, kind="leave", user=user.strip(), name=user.strip(),
                    text=f"{user.strip()} 退出了群聊", at=event.at))
        return await self._handle(event)

    async def get_messages(self, request: web.Request) -> web.Response:
        group = request.query.get("group", "").strip()
        if not group:
            raise BadRequest("query parameter 'group' is required")
        try:
            after = int(request.query.get("after", "0"))
        except ValueError:
            raise BadRequest("query parameter 'after' must be a message id (an integer)") from None
        async with self.runtime.db.session() as session:
            rows = await transcript.read_after(session, self.name, group, after)
        messages = [
            {"id": r.id, "group": r.group_external_id, "kind": r.kind, "from_bot": r.from_bot, "user": r.user,
             "name": r.name, "text": r.text, "at": r.at.isoformat()}
            for r in rows
        ]
        return json_response({"messages": messages, "last_id": rows[-1].id if rows else after})

    # -- pipeline --------------------------------------------------------------------------------

    async def _handle(self, event: Event) -> web.Response:
        """Accept the event into the inbox and process it now, answering with the replies it produced."""
        try:
            inbox_id = await self.runtime.inbox.accept(event)
        except InboxUnavailable:
            return json_response({"error": "数据库暂时不可用，请稍后重试"}, status=503)
        if inbox_id is None:
            return json_response({"replies": [], "duplicate": True})
        replies = await self.runtime.inbox.process(event) or []
        return json_response({"replies": [_reply_json(r) for r in replies]})

    async def deliver(self, event: Event, replies: list[Reply]) -> None:
        if event.group is None:
            return
        await self.post(event.group, replies)

    async def post(self, group: str, replies: list[Reply]) -> None:
        """Post into a simulated group: the bot's messages join the transcript."""
        bot_name = self.runtime.templates.raw("simulator.bot_name")
        async with self.runtime.db.session() as session:
            for reply in replies:
                await transcript.append(session, TranscriptMessage(
                    channel=self.name, group_external_id=group, kind="text", from_bot=True, name=bot_name,
                    text=reply.text))

    async def _record(self, message: TranscriptMessage) -> None:
        async with self.runtime.db.session() as session:
            await transcript.append(session, message)

    def _group_name(self, group: str) -> str | None:
        cfg = self.runtime.config.simulator
        return cfg.demo_group_name if group == cfg.demo_group else None


def _reply_json(reply: Reply) -> dict[str, Any]:
    data: dict[str, Any] = {"text": reply.text}
    if reply.mentions:
        data["mentions"] = reply.mentions
    return data


def _message_key(body: dict[str, Any]) -> str:
    """The client may name its message (to test deduplication); otherwise every request is new."""
    given = body.get("message_id")
    if given is not None:
        if not isinstance(given, str | int) or not str(given).strip() or len(str(given)) > 128:
            raise BadRequest("field 'message_id' must be a short string")
        return f"client:{given}"
    return uuid.uuid4().hex


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest("request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


def _text_field(body: dict[str, Any], key: str, *, required: bool = True, limit: int = 255, label: str | None = None) -> str:
    label = label or key
    value = body.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise BadRequest(f"field '{label}' is required")
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"field '{label}' must be a string")
    if len(value) > limit:
        raise BadRequest(f"field '{label}' is longer than {limit} characters")
    return value.strip()


def answers_bad_requests(handler: Callable[[web.Request], Awaitable[web.Response]]) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Turn a BadRequest raised by the handler into 400 {"error": ...} (per route, not app-wide middleware)."""

    async def wrapped(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except BadRequest as exc:
            log.info("bad request", extra={"path": request.path, "reason": str(exc)})
            return json_response({"error": str(exc)}, status=400)

    return wrapped
