"""A fake WeCom server API (qyapi) on 127.0.0.1 for tests and benchmarks.

It follows the official docs (docs/platform.md §3, §6) for the calls qunbot makes: real tokens that
really expire, errcodes in HTTP-200 JSON answers, and knobs to inject failures, latency and rate limits.
Error codes the docs do not pin down for a given API are marked "unconfirmed" below.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import secrets
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable
from json import JSONDecodeError
from typing import Any

from aiohttp import BodyPartReader, web

ERRMSGS = {
    -1: "system busy",
    40001: "invalid credential",
    40013: "invalid corpid",
    40014: "invalid access_token",
    40050: "invalid chatid",
    40056: "invalid agentid",
    40058: "invalid parameter",
    41001: "access_token missing",
    42001: "access_token expired",
    45009: "api freq out of limit",
    45033: "api concurrent out of limit",
    47001: "data format error",
    81013: "user & party & tag all invalid",
}
# Unknown chat in groupchat/get: 40050 is the global table's "chatid不存在"; the exact code this API
# answers is unconfirmed. (701008, sometimes quoted, is a license error in the global table.)
ERR_UNKNOWN_CHAT = 40050
# Over-long text, too many templates, unknown template_id: unconfirmed, so the generic "invalid parameter".
ERR_INVALID_PARAM = 40058
TEXT_LIMIT_BYTES = 2048
WELCOME_TEXT_LIMIT_BYTES = 3000
MAX_WELCOME_TEMPLATES = 100
MAX_MSG_TEMPLATE_CHATS = 2000
MSG_TEMPLATE_TEXT_LIMIT_BYTES = 4000
# get_groupmsg_task / get_groupmsg_send_result: most rows a page returns (a larger `limit` is cut to it).
GROUPMSG_PAGE_LIMIT = 1000
# Smart bot response_url (docs/platform.md §5): usable once, within an hour. What WeCom answers to a second
# use or a late one is unconfirmed, so the generic "invalid parameter" with a telling errmsg.
RESPONSE_URL_PATH = "/cgi-bin/aibot/response"
RESPONSE_URL_TTL = 3600.0
RESPONSE_CONTENT_LIMIT_BYTES = 20480
# Group robot webhook (docs/platform.md §4): authenticated by the robot's `key`, not an access token.
WEBHOOK_SEND_PATH = "/cgi-bin/webhook/send"
WEBHOOK_UPLOAD_PATH = "/cgi-bin/webhook/upload_media"
# What WeCom answers for a key that names no robot is unconfirmed; 93000 ("invalid webhook url") is the
# code commonly reported for it.
ERR_INVALID_WEBHOOK = 93000
ROBOT_TEXT_LIMIT_BYTES = 2048
ROBOT_MARKDOWN_LIMIT_BYTES = 4096
ROBOT_IMAGE_LIMIT_BYTES = 2 * 1024 * 1024
ROBOT_FILE_LIMIT_BYTES = 20 * 1024 * 1024

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class FakeWeCom:
    """A running fake of qyapi.weixin.qq.com. Tests seed data, inject faults and read what was sent."""

    def __init__(self, *, corp_id: str = "ww-fake-corp", corp_secret: str = "fake-secret",
                 agent_id: int | None = 1000002, token_ttl: float = 7200) -> None:
        self.corp_id = corp_id
        self.corp_secret = corp_secret
        self.agent_id = agent_id  # None: accept any agentid
        self.token_ttl = token_ttl
        self.latency = 0.0
        self.rate_limit_per_minute: int | None = None
        self.gettoken_calls = 0
        self.tokens: dict[str, float] = {}  # token -> monotonic expiry
        self.group_chats: dict[str, dict[str, Any]] = {}
        self.welcome_templates: dict[str, dict[str, Any]] = {}
        self.invalid_users: set[str] = set()
        self.sent_messages: list[dict[str, Any]] = []  # message/send bodies
        self.appchat_messages: list[dict[str, Any]] = []  # appchat/send bodies
        self.msg_templates: list[dict[str, Any]] = []  # add_msg_template bodies, plus "msgid"
        # Customer-group mass-message tasks by msgid: {"sender", "chats", "text", "status": "unsent" | "sent" |
        # "cancelled", "send_time", "results": {chat_id: status}} (get_groupmsg_* answer from here).
        self.group_msg_tasks: dict[str, dict[str, Any]] = {}
        # Mass messages a customer group may receive per calendar month (None: no limit); beyond it a
        # confirmed task's send result says 3 for the group ("already received other mass messages").
        self.group_msg_month_limit: int | None = None
        self._group_msgs_received: dict[tuple[str, str], int] = defaultdict(int)
        # Chats the app created (appchat/send refuses others); None: any chatid is taken.
        self.appchats: set[str] | None = None
        self.requests: list[tuple[str, str, Any]] = []  # (method, path, json body or None)
        self.response_urls: dict[str, float] = {}  # smart bot response_code -> monotonic issue time
        self.used_response_codes: set[str] = set()
        self.responses: list[dict[str, Any]] = []  # bodies accepted at a response_url, plus "response_code"
        # Group robots: valid webhook keys, WeCom's per-robot limit (messages per window), what they sent.
        self.robot_keys: set[str] = set()
        self.robot_rate_limit = 20
        self.robot_rate_window = 60.0
        self.webhook_messages: list[dict[str, Any]] = []  # accepted bodies, plus "key" and "at" (monotonic)
        self.robot_media: dict[str, dict[str, Any]] = {}  # media_id -> {"key", "filename", "data"}
        self._robot_sends: dict[str, deque[float]] = defaultdict(deque)
        self._faults: dict[str, deque[int]] = defaultdict(deque)
        self._http_faults: dict[str, deque[tuple[int, dict[str, Any]]]] = defaultdict(deque)
        # path -> (errcode, share of calls, seeded generator): faults at random, reproducibly.
        self._random_faults: dict[str, tuple[int, float, random.Random]] = {}
        self.random_faults_answered = 0
        self._calls: dict[str, deque[float]] = defaultdict(deque)
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self._routes: dict[str, Handler] = {
            "/cgi-bin/externalcontact/groupchat/get": self._groupchat_get,
            "/cgi-bin/externalcontact/group_welcome_template/add": self._welcome_add,
            "/cgi-bin/externalcontact/group_welcome_template/edit": self._welcome_edit,
            "/cgi-bin/externalcontact/group_welcome_template/get": self._welcome_get,
            "/cgi-bin/externalcontact/group_welcome_template/del": self._welcome_del,
            "/cgi-bin/message/send": self._message_send,
            "/cgi-bin/appchat/send": self._appchat_send,
            "/cgi-bin/externalcontact/add_msg_template": self._add_msg_template,
            "/cgi-bin/externalcontact/get_groupmsg_task": self._get_groupmsg_task,
            "/cgi-bin/externalcontact/get_groupmsg_send_result": self._get_groupmsg_send_result,
            "/cgi-bin/externalcontact/cancel_groupmsg_send": self._cancel_groupmsg_send,
        }

    # ---- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> str:
        """Serve on 127.0.0.1 at a free port; return the base URL."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeWeCom:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- seeding and fault injection ----------------------------------------------------------

    def add_group_chat(self, chat_id: str, *, name: str = "", owner: str = "",
                       members: Iterable[str | dict[str, Any]] = (), admins: Iterable[str] = (),
                       notice: str = "", create_time: int | None = None) -> dict[str, Any]:
        """Seed a customer group. Members are userids ("wm…" = external) or full member dicts."""
        now = int(time.time())
        member_list = []
        for m in members:
            base = {"userid": m} if isinstance(m, str) else dict(m)
            uid = base["userid"]
            member_list.append({"type": 2 if uid.startswith("wm") else 1, "join_time": now, "join_scene": 1,
                                "invitor": {"userid": owner}, "group_nickname": "", "name": uid, **base})
        ids = "|".join(sorted(m["userid"] for m in member_list))
        chat = {"chat_id": chat_id, "name": name, "owner": owner, "create_time": create_time or now,
                "notice": notice, "member_list": member_list,
                "admin_list": [{"userid": a} for a in admins],
                "member_version": hashlib.md5(ids.encode()).hexdigest()}  # noqa: S324 - opaque version tag
        self.group_chats[chat_id] = chat
        return chat

    def fail_next(self, path: str, errcode: int, times: int = 1) -> None:
        """Answer the next `times` calls to `path` with `errcode` (checked before the token)."""
        self._faults[_norm(path)].extend([errcode] * times)

    def http_fail_next(self, path: str, status: int = 502, times: int = 1, *, only: dict[str, Any] | None = None) -> None:
        """Answer the next `times` calls to `path` with a bare HTTP `status` (with `only`: the next calls whose
        JSON body has those values, so a test need not guess the order of concurrent calls)."""
        self._http_faults[_norm(path)].extend([(status, only or {})] * times)

    def fail_randomly(self, path: str, errcode: int, rate: float, *, seed: int = 0) -> None:
        """Answer each call to `path` with `errcode` with probability `rate` (a seeded draw per call, so a run
        is reproducible); `rate` 0 turns it off. Such calls are refused: nothing is posted."""
        if rate <= 0:
            self._random_faults.pop(_norm(path), None)
        else:
            self._random_faults[_norm(path)] = (errcode, rate, random.Random(seed))  # noqa: S311 - a test fake

    def expire_all_tokens(self) -> None:
        """Make every issued token expired now (further use answers 42001)."""
        now = time.monotonic()
        for token in self.tokens:
            self.tokens[token] = now

    def calls_to(self, path: str) -> int:
        """How many requests reached `path` (faulted ones included)."""
        path = _norm(path)
        return sum(1 for _, p, _ in self.requests if p == path)

    # ---- request handling ---------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        body: Any = None
        bad_json = False
        if request.can_read_body and not request.content_type.startswith("multipart/"):
            try:
                body = await request.json()
            except (JSONDecodeError, UnicodeDecodeError):
                bad_json = True
        self.requests.append((request.method, path, body))
        if path == "/cgi-bin/gettoken":
            self.gettoken_calls += 1  # every request counts, refused ones too: WeCom throttles them all
        if self.latency:
            await asyncio.sleep(self.latency)
        faults = self._http_faults[path]
        for n, (status, only) in enumerate(faults):
            if all(isinstance(body, dict) and body.get(k) == v for k, v in only.items()):
                del faults[n]
                return web.Response(status=status, text="<html>bad gateway</html>")
        if self._faults[path]:
            return _error(self._faults[path].popleft())
        if path in self._random_faults:
            errcode, rate, draw = self._random_faults[path]
            if draw.random() < rate:
                self.random_faults_answered += 1
                return _error(errcode)
        if self._rate_limited(path):
            return _error(45009)
        if path == RESPONSE_URL_PATH:
            return self._aibot_response(request.query.get("response_code", ""), body, bad_json)
        if path in (WEBHOOK_SEND_PATH, WEBHOOK_UPLOAD_PATH):
            return await self._webhook(request, path, body, bad_json)
        if path == "/cgi-bin/gettoken":
            return self._gettoken(request)
        handler = self._routes.get(path)
        if handler is None:
            return web.Response(status=404, text="not found")
        if (refused := self._check_token(request.query.get("access_token"))) is not None:
            return _error(refused)
        if bad_json or not isinstance(body, dict):
            return _error(47001)
        try:
            answer = await handler(body)
        except _Refusal as refusal:
            return _error(refusal.errcode, refusal.errmsg)
        return web.json_response({"errcode": 0, "errmsg": "ok", **answer})

    def _rate_limited(self, path: str) -> bool:
        if self.rate_limit_per_minute is None:
            return False
        now, window = time.monotonic(), self._calls[path]
        while window and window[0] <= now - 60:
            window.popleft()
        if len(window) >= self.rate_limit_per_minute:
            return True
        window.append(now)
        return False

    # ---- group robot webhook ------------------------------------------------------------------------

    def add_robot(self, key: str) -> str:
        """A robot whose webhook takes `key`; returns its webhook URL on this fake."""
        self.robot_keys.add(key)
        return f"{self.base_url}{WEBHOOK_SEND_PATH}?key={key}"

    def robot_messages(self, key: str) -> list[dict[str, Any]]:
        """What the robot with `key` posted (bodies as sent, without the fake's bookkeeping)."""
        return [{k: v for k, v in m.items() if k not in ("key", "at")} for m in self.webhook_messages
                if m["key"] == key]

    def most_in_window(self, key: str, window: float | None = None) -> int:
        """The most messages the robot with `key` got through within any span shorter than `window`."""
        window = self.robot_rate_window if window is None else window
        times = sorted(m["at"] for m in self.webhook_messages if m["key"] == key)
        best, start = 0, 0
        for end, at in enumerate(times):
            while at - times[start] >= window:
                start += 1
            best = max(best, end - start + 1)
        return best

    async def _webhook(self, request: web.Request, path: str, body: Any, bad_json: bool) -> web.Response:
        key = request.query.get("key", "")
        if key not in self.robot_keys:
            return _error(ERR_INVALID_WEBHOOK)
        if path == WEBHOOK_UPLOAD_PATH:
            return await self._upload_media(request, key)
        if bad_json or not isinstance(body, dict):
            return _error(47001)
        # WeCom's limit per robot: a send beyond it in the window is refused (and not counted).
        now, sends = time.monotonic(), self._robot_sends[key]
        while sends and sends[0] <= now - self.robot_rate_window:
            sends.popleft()
        if len(sends) >= self.robot_rate_limit:
            return _error(45009)
        try:
            self._check_webhook_body(body, key)
        except _Refusal as refusal:
            return _error(refusal.errcode, refusal.errmsg)
        sends.append(now)
        self.webhook_messages.append({**body, "key": key, "at": now})
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    def _check_webhook_body(self, body: dict[str, Any], key: str) -> None:
        msgtype = body.get("msgtype")
        inner = body.get(msgtype) if isinstance(msgtype, str) else None
        if not isinstance(inner, dict):
            raise _Refusal(ERR_INVALID_PARAM, "msgtype and its object required")
        if msgtype in ("text", "markdown"):
            limit = ROBOT_TEXT_LIMIT_BYTES if msgtype == "text" else ROBOT_MARKDOWN_LIMIT_BYTES
            content = inner.get("content")
            if not isinstance(content, str) or not content or len(content.encode("utf-8")) > limit:
                raise _Refusal(ERR_INVALID_PARAM, f"{msgtype}.content missing or over {limit} bytes")
            mentioned = inner.get("mentioned_list", [])
            if not isinstance(mentioned, list) or not all(isinstance(u, str) for u in mentioned):
                raise _Refusal(ERR_INVALID_PARAM, "mentioned_list must be a list of userids")
        elif msgtype == "image":
            import base64
            import binascii

            try:
                raw = base64.b64decode(str(inner.get("base64", "")), validate=True)
            except (binascii.Error, ValueError):
                raise _Refusal(ERR_INVALID_PARAM, "image.base64 is not base64") from None
            if not raw or len(raw) > ROBOT_IMAGE_LIMIT_BYTES:
                raise _Refusal(ERR_INVALID_PARAM, "image missing or over 2 MB")
            if hashlib.md5(raw).hexdigest() != inner.get("md5"):  # noqa: S324 - WeCom's integrity check
                raise _Refusal(ERR_INVALID_PARAM, "image.md5 does not match")
        elif msgtype == "news":
            articles = inner.get("articles")
            if not isinstance(articles, list) or not 1 <= len(articles) <= 8:
                raise _Refusal(ERR_INVALID_PARAM, "news takes 1..8 articles")
            if not all(isinstance(a, dict) and a.get("title") and a.get("url") for a in articles):
                raise _Refusal(ERR_INVALID_PARAM, "every article needs a title and a url")
        elif msgtype == "file":
            media = self.robot_media.get(str(inner.get("media_id", "")))
            if media is None or media["key"] != key:  # media_id serves only the robot that uploaded it
                raise _Refusal(ERR_INVALID_PARAM, "invalid media_id")
        else:
            raise _Refusal(ERR_INVALID_PARAM, f"msgtype {msgtype} not supported by the fake")

    async def _upload_media(self, request: web.Request, key: str) -> web.Response:
        if request.query.get("type") != "file" or not request.content_type.startswith("multipart/"):
            return _error(ERR_INVALID_PARAM, "type=file and a multipart body required")
        reader = await request.multipart()
        async for part in reader:
            if getattr(part, "name", None) == "media" and isinstance(part, BodyPartReader):
                data = await part.read()
                if not 5 < len(data) <= ROBOT_FILE_LIMIT_BYTES:
                    return _error(ERR_INVALID_PARAM, "file must be 6 bytes .. 20 MB")
                media_id = secrets.token_urlsafe(24)
                self.robot_media[media_id] = {"key": key, "filename": part.filename, "data": bytes(data)}
                return web.json_response({"errcode": 0, "errmsg": "ok", "type": "file", "media_id": media_id,
                                          "created_at": str(int(time.time()))})
        return _error(ERR_INVALID_PARAM, "no media part")

    def new_response_url(self, *, age: float = 0.0) -> str:
        """A smart bot response_url as a message callback carries it (`age`: seconds since it was issued)."""
        code = secrets.token_urlsafe(24)
        self.response_urls[code] = time.monotonic() - age
        return f"{self.base_url}{RESPONSE_URL_PATH}?response_code={code}"

    def _aibot_response(self, code: str, body: Any, bad_json: bool) -> web.Response:
        issued = self.response_urls.get(code)
        if issued is None:
            return _error(ERR_INVALID_PARAM, "invalid response_code")
        if code in self.used_response_codes:
            return _error(ERR_INVALID_PARAM, "response_code already used")
        if time.monotonic() - issued > RESPONSE_URL_TTL:
            return _error(ERR_INVALID_PARAM, "response_code expired")
        if bad_json or not isinstance(body, dict):
            return _error(47001)
        msgtype = body.get("msgtype")
        content = (body.get("markdown") or {}).get("content") if msgtype == "markdown" else None
        if msgtype == "markdown" and (not isinstance(content, str) or
                                      len(content.encode("utf-8")) > RESPONSE_CONTENT_LIMIT_BYTES):
            return _error(ERR_INVALID_PARAM, "markdown.content missing or too long")
        if msgtype not in ("markdown", "template_card"):
            return _error(ERR_INVALID_PARAM, "msgtype must be markdown or template_card")
        self.used_response_codes.add(code)
        self.responses.append({**body, "response_code": code})
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    def _gettoken(self, request: web.Request) -> web.Response:
        if request.query.get("corpid") != self.corp_id:
            return _error(40013)
        if request.query.get("corpsecret") != self.corp_secret:
            return _error(40001)
        # A new token each time; older ones stay valid until they expire. (The docs also say repeated
        # calls within the validity return the same token; clients must cope with either.)
        token = secrets.token_urlsafe(48)
        self.tokens[token] = time.monotonic() + self.token_ttl
        return web.json_response({"errcode": 0, "errmsg": "ok", "access_token": token,
                                  "expires_in": self.token_ttl})

    def _check_token(self, token: str | None) -> int | None:
        if not token:
            return 41001
        expiry = self.tokens.get(token)
        if expiry is None:
            return 40014
        if time.monotonic() >= expiry:
            return 42001
        return None

    # ---- APIs ---------------------------------------------------------------------------------

    async def _groupchat_get(self, body: dict[str, Any]) -> dict[str, Any]:
        chat = self.group_chats.get(str(body.get("chat_id", "")))
        if chat is None:
            raise _Refusal(ERR_UNKNOWN_CHAT)
        chat = {**chat, "member_list": [dict(m) for m in chat["member_list"]]}
        if not body.get("need_name"):
            for m in chat["member_list"]:
                m.pop("name", None)
        return {"group_chat": chat}

    async def _welcome_add(self, body: dict[str, Any]) -> dict[str, Any]:
        _check_welcome(body)
        if len(self.welcome_templates) >= MAX_WELCOME_TEMPLATES:
            raise _Refusal(ERR_INVALID_PARAM, "welcome template count exceeds limit")
        template_id = "msg" + secrets.token_hex(12)
        self.welcome_templates[template_id] = {k: v for k, v in body.items() if k not in ("agentid", "notify")}
        return {"template_id": template_id}

    async def _welcome_edit(self, body: dict[str, Any]) -> dict[str, Any]:
        template = self._template(body)
        _check_welcome(body)
        template.update({k: v for k, v in body.items() if k not in ("template_id", "agentid")})
        return {}

    async def _welcome_get(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._template(body))

    async def _welcome_del(self, body: dict[str, Any]) -> dict[str, Any]:
        self._template(body)
        del self.welcome_templates[body["template_id"]]
        return {}

    def _template(self, body: dict[str, Any]) -> dict[str, Any]:
        template = self.welcome_templates.get(str(body.get("template_id", "")))
        if template is None:
            raise _Refusal(ERR_INVALID_PARAM, "invalid template_id")
        return template

    async def _message_send(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.agent_id is not None and body.get("agentid") != self.agent_id:
            raise _Refusal(40056)
        _check_text(body)
        users = [u for u in str(body.get("touser", "")).split("|") if u]
        invalid = [u for u in users if u in self.invalid_users]
        if not users or (len(invalid) == len(users) and users != ["@all"]):
            raise _Refusal(81013)
        self.sent_messages.append(body)
        return {"invaliduser": "|".join(invalid), "invalidparty": "", "invalidtag": "",
                "unlicenseduser": "", "msgid": secrets.token_hex(16)}

    async def _appchat_send(self, body: dict[str, Any]) -> dict[str, Any]:
        if not body.get("chatid"):
            raise _Refusal(ERR_INVALID_PARAM, "chatid missing")
        if self.appchats is not None and body["chatid"] not in self.appchats:
            raise _Refusal(ERR_UNKNOWN_CHAT)  # the code for an unknown appchat is unconfirmed
        _check_text(body)
        self.appchat_messages.append(body)
        return {}

    async def _add_msg_template(self, body: dict[str, Any]) -> dict[str, Any]:
        chats = body.get("chat_id_list") or []
        sender = body.get("sender")
        text = (body.get("text") or {}).get("content")
        if text is not None and len(str(text).encode("utf-8")) > MSG_TEMPLATE_TEXT_LIMIT_BYTES:
            raise _Refusal(ERR_INVALID_PARAM, "text.content exceeds 4000 bytes")
        if body.get("chat_type") == "group":
            if not sender or not chats or len(chats) > MAX_MSG_TEMPLATE_CHATS:
                raise _Refusal(ERR_INVALID_PARAM, "sender and 1..2000 chat_id_list required")
        msgid = "msg" + secrets.token_hex(12)
        self.msg_templates.append({**body, "msgid": msgid})
        # Documented as the targets that could not be sent to; here: chats the fake does not know, and (as
        # the sender must own the groups) chats it knows with another owner.
        failed = [c for c in chats if c not in self.group_chats or self.group_chats[c]["owner"] not in ("", sender)]
        if body.get("chat_type") == "group":
            self.group_msg_tasks[msgid] = {"sender": sender, "chats": [c for c in chats if c not in failed],
                                           "text": text, "status": "unsent", "send_time": None, "results": {}}
        return {"msgid": msgid, "fail_list": failed}

    # ---- customer-group mass messages: what the sender does in the client, and what WeCom tells about it --

    def confirm_group_msg(self, msgid: str, *, leave_out: Iterable[str] = ()) -> dict[str, int]:
        """The sender confirms the task in the WeCom client: it goes to its groups (but `leave_out`, which
        the sender deselected); a group beyond `group_msg_month_limit` this month is refused (status 3).
        Each group's send result."""
        task = self.group_msg_tasks[msgid]
        if task["status"] != "unsent":
            raise ValueError(f"task {msgid} is {task['status']}: it cannot be sent")
        now = int(time.time())
        month = time.strftime("%Y-%m", time.localtime(now))
        skipped = set(leave_out)
        for chat in task["chats"]:
            if chat in skipped:
                task["results"][chat] = 0
            elif self.group_msg_month_limit is not None and \
                    self._group_msgs_received[(chat, month)] >= self.group_msg_month_limit:
                task["results"][chat] = 3
            else:
                self._group_msgs_received[(chat, month)] += 1
                task["results"][chat] = 1
        task["status"], task["send_time"] = "sent", now
        return dict(task["results"])

    def _group_msg_task(self, body: dict[str, Any]) -> dict[str, Any]:
        task = self.group_msg_tasks.get(str(body.get("msgid", "")))
        if task is None:
            raise _Refusal(ERR_INVALID_PARAM, "invalid msgid")  # the exact code is unconfirmed
        return task

    @staticmethod
    def _page(rows: list[dict[str, Any]], body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        limit = min(int(body.get("limit") or GROUPMSG_PAGE_LIMIT), GROUPMSG_PAGE_LIMIT)
        start = int(body.get("cursor") or 0)
        end = start + limit
        return rows[start:end], (str(end) if end < len(rows) else "")

    async def _get_groupmsg_task(self, body: dict[str, Any]) -> dict[str, Any]:
        task = self._group_msg_task(body)
        row: dict[str, Any] = {"userid": task["sender"], "status": 2 if task["status"] == "sent" else 0}
        if task["status"] == "sent":  # send_time only once sent
            row["send_time"] = task["send_time"]
        rows, cursor = self._page([row], body)
        return {"task_list": rows, "next_cursor": cursor}

    async def _get_groupmsg_send_result(self, body: dict[str, Any]) -> dict[str, Any]:
        task = self._group_msg_task(body)
        if body.get("userid") != task["sender"]:
            return {"send_list": [], "next_cursor": ""}
        rows: list[dict[str, Any]] = []
        for chat in task["chats"]:
            status = task["results"].get(chat, 0)
            row: dict[str, Any] = {"chat_id": chat, "userid": task["sender"], "status": status}
            if status == 1:
                row["send_time"] = task["send_time"]
            rows.append(row)
        page, cursor = self._page(rows, body)
        return {"send_list": page, "next_cursor": cursor}

    async def _cancel_groupmsg_send(self, body: dict[str, Any]) -> dict[str, Any]:
        task = self._group_msg_task(body)
        if task["status"] == "unsent":
            task["status"] = "cancelled"
        return {}


class _Refusal(Exception):
    def __init__(self, errcode: int, errmsg: str | None = None) -> None:
        super().__init__(errcode)
        self.errcode, self.errmsg = errcode, errmsg


def _norm(path: str) -> str:
    path = path.strip().lstrip("/")
    return "/" + (path if path.startswith("cgi-bin/") else "cgi-bin/" + path)


def _error(errcode: int, errmsg: str | None = None) -> web.Response:
    text = errmsg or ERRMSGS.get(errcode, "error")
    # Real answers carry a hint and a link after the message; callers must not parse errmsg.
    hint = f"{text}, hint: [{int(time.time())}-{secrets.token_hex(4)}], from ip: 127.0.0.1, " \
           f"more info at https://open.work.weixin.qq.com/devtool/query?e={errcode}"
    return web.json_response({"errcode": errcode, "errmsg": hint})


def _check_text(body: dict[str, Any]) -> None:
    # Stricter than WeCom, which cuts long text silently: an oversized send is a client bug to catch.
    content = (body.get("text") or {}).get("content")
    if body.get("msgtype") != "text" or not isinstance(content, str):
        raise _Refusal(ERR_INVALID_PARAM, "text.content required")
    if len(content.encode("utf-8")) > TEXT_LIMIT_BYTES:
        raise _Refusal(ERR_INVALID_PARAM, "text.content exceeds 2048 bytes")


def _check_welcome(body: dict[str, Any]) -> None:
    content = (body.get("text") or {}).get("content")
    attachments = ("image", "link", "miniprogram", "file", "video")
    if content is None and not any(k in body for k in attachments):
        raise _Refusal(ERR_INVALID_PARAM, "text or an attachment required")
    if content is not None and len(str(content).encode("utf-8")) > WELCOME_TEXT_LIMIT_BYTES:
        raise _Refusal(ERR_INVALID_PARAM, "text.content exceeds 3000 bytes")
