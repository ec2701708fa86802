"""The WeCom group robot (群机器人 / 消息推送) door: webhook posts out, and @-mentions in (callback mode).

Out: `post(group, replies)` sends through the group's robot webhook (bot.channels.robot_api), rate
limited per robot across processes. Which robot serves a group: the one whose callbacks came from that
chat (its WebhookUrl and ChatId are stored, and sends name the chat with `chatid`), else the key
configured for the group in robot.keys (sent without `chatid`: a plain webhook posts into its own group).

In (callback mode, when robot.token and robot.encoding_aes_key are set): WeCom posts encrypted XML
(`<xml><Encrypt/></xml>`, receiveid the empty string) for @-mentions in groups and messages in 1:1 chats.
A text (or the text of a mixed message) becomes a TextMessage, deduplicated by MsgId in the inbox. Its
reply goes back as the encrypted passive reply (markdown) when it is ready within reply_budget_seconds;
otherwise the callback is answered empty and the reply is sent through the webhook into the chat. A reply
row per message (storage.robot) makes it leave exactly once, whichever process WeCom's retries reach.

The robot sees no joins (WeCom sends it add_to_chat / delete_from_chat about itself only), so it posts no
welcomes; enter_chat (a member opening the 1:1 chat) is answered with the greeting.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.etree.ElementTree import Element

import aiohttp
from aiohttp import web

from bot.channels import callback_reply
from bot.channels.base import Capabilities, Channel, PostFailed
from bot.channels.callback_http import query_params, read_body, reject
from bot.channels.robot_api import (
    BUSY,
    IMAGE_LIMIT_BYTES,
    MARKDOWN_LIMIT_BYTES,
    RATE_LIMITED,
    TEXT_LIMIT_BYTES,
    RobotBusyError,
    RobotClient,
    RobotSendError,
    SendSlots,
    key_hash,
    split_text,
    utf8_len,
)
from bot.channels.smartbot import strip_mention
from bot.channels.wecom_crypto import CallbackCrypto, Rejected, parse_xml, parse_xml_root
from bot.events import ChatEntered, Event, Person, Reply, TextMessage
from storage import robot as store
from storage.db import utcnow
from storage.kv import DbFailureRecorder
from storage.replies import DELIVERED, FAILED, PENDING, READY

log = logging.getLogger("qunbot.robot")

MAX_ID = 128
MAX_NAME = 64
CHAT_TYPES = ("group", "single")
# What a decrypted callback is, for the door.
MESSAGE, HINT, IGNORED = "message", "hint", "ignored"


class UnknownGroup(LookupError):
    """No robot is known for the group: neither learned from callbacks nor configured in robot.keys."""


@dataclass
class Incoming:
    """A decrypted, checked callback: what it is and what the door needs to answer it."""

    kind: str
    msgid: str
    chat_id: str
    chat_type: str
    webhook_key: str | None = None
    event: Event | None = None
    # HINT: the template to answer with; IGNORED: why, for the log line.
    note: str = ""


class RobotChannel(Channel):
    """Group robot webhooks out; @-mentions in through callbacks when configured."""

    name = "robot"
    title = "WeCom group robot (群机器人)"
    reaches = "@-mentions in groups, 1:1 chats (callback mode); posts through its webhook"
    capabilities = Capabilities(
        can_reply=True,  # in the callback's encrypted response, or through the webhook
        can_post_proactively=True,  # the webhook posts into the robot's group at any time
        sees_joins=False,  # WeCom tells a robot only that it was added to or removed from a chat
        posts_welcome=False,
        welcome_template=False,
        greets=True,  # enter_chat (callback mode), answered with the greeting
        mentions=True,  # mentioned_list in text, <@userid> in markdown
        markdown=True,
        images=True,  # base64 + md5 (also files, through post_file)
        news=True,
    )

    def __init__(self, runtime: Any) -> None:
        super().__init__(runtime)
        self.cfg = runtime.config.robot
        self.crypto = (CallbackCrypto(self.cfg.token, self.cfg.encoding_aes_key, "", self.cfg.replay_window_seconds)
                       if self.cfg.callback else None)
        self.failures = DbFailureRecorder(runtime.db)
        self.client: RobotClient | None = None
        # chat id → key hash last stored by this process: saves a write per message (the table decides).
        self._learned: dict[str, str] = {}

    def add_routes(self, app: web.Application) -> None:
        if self.crypto is not None:
            app.router.add_get(self.cfg.path, self.verify_url)
            app.router.add_post(self.cfg.path, self.callback)

    async def start(self) -> None:
        assert self.runtime.http is not None
        cfg = self.cfg
        slots = SendSlots(self.runtime.db, limit=cfg.rate_limit, window_seconds=cfg.rate_window_seconds,
                          lease_seconds=cfg.timeout_seconds + 5)
        self.client = RobotClient(self.runtime.http, base_url=cfg.api_base_url, slots=slots, failures=self.failures,
                                  max_attempts=cfg.max_attempts, backoff_seconds=cfg.backoff_seconds,
                                  backoff_max_seconds=cfg.rate_window_seconds, max_wait_seconds=cfg.max_wait_seconds,
                                  timeout_seconds=cfg.timeout_seconds)
        if self.crypto is not None:
            self.spawn(callback_reply.sweep_forever(cfg.sweep_interval_seconds, self.sweep, log, "robot"),
                       name="robot-sweep")

    # -- posting -----------------------------------------------------------------------------------

    async def target(self, group: str) -> tuple[str, str | None]:
        """(webhook key, chatid to name in the send) of the robot serving `group`; UnknownGroup if none."""
        learned = await store.chat_webhook_key(self.runtime.db, group)
        if learned is not None:
            return learned, group
        key = self.cfg.keys.get(group)
        if key:
            return key, None
        raise UnknownGroup(f"no group robot for {group!r}: none has called back from it and robot.keys names none")

    def _client(self) -> RobotClient:
        if self.client is None:
            raise RuntimeError("the robot door is not started")
        return self.client

    async def post(self, group: str, replies: list[Reply]) -> None:
        """Post replies into a group: text with mentioned_list, or markdown with <@userid> mentions, and an
        image or news attachment after its caption. Raises PostFailed when WeCom (or a check before
        sending) refuses; a robot busy past robot.max_wait_seconds is PostFailed with retry_after."""
        from bot.dispatcher import DIRECT_SCOPE

        if group == DIRECT_SCOPE:
            # A robot may not message members 1:1 on its own (only within a callback's 1:1 chat).
            raise NotImplementedError("the robot door cannot message members 1:1 on its own")
        try:
            key, chatid = await self.target(group)
            for reply in replies:
                await self._send_reply(key, chatid, reply)
        except UnknownGroup as exc:
            raise PostFailed(str(exc), permanent=True) from exc
        except ValueError as exc:  # refused before sending: size, format, count
            raise PostFailed(f"not sent: {exc}", permanent=True) from exc
        except RobotBusyError as exc:
            raise PostFailed(f"robot {exc.robot} is at its rate limit", retry_after=exc.retry_after) from exc
        except RobotSendError as exc:
            if exc.errcode == RATE_LIMITED:
                raise PostFailed(str(exc), retry_after=self.cfg.rate_window_seconds) from exc
            # No errcode: HTTP, network or timeout trouble, worth another try later; -1 likewise.
            raise PostFailed(str(exc), permanent=exc.errcode not in (None, BUSY)) from exc

    async def _send_reply(self, key: str, chatid: str | None, reply: Reply) -> None:
        client = self._client()
        attachment = reply.attachment
        if attachment is not None:
            kind = attachment.get("kind")
            if kind not in ("image", "news"):
                raise ValueError(f"attachment kind {str(kind)[:32]!r} is not one the robot can post")
            if reply.text or reply.mentions:  # the caption first
                await self._send_reply(key, chatid, Reply(reply.text, reply.mentions, reply.markdown))
            if kind == "image":
                await client.send_image(key, await self._image_bytes(attachment), chatid=chatid)
            else:
                articles = attachment.get("articles")
                if not isinstance(articles, list) or not all(isinstance(a, dict) for a in articles):
                    raise ValueError("news attachment without a list of articles")
                await client.send_news(key, articles, chatid=chatid)
            return
        if reply.markdown:
            for part in split_text(with_mentions(reply), MARKDOWN_LIMIT_BYTES, self.cfg.max_parts):
                await client.send_markdown(key, part, chatid=chatid)
            return
        parts = split_text(reply.text, TEXT_LIMIT_BYTES, self.cfg.max_parts)
        for n, part in enumerate(parts, 1):
            # WeCom shows the @-mentions after the text: they go with the last part.
            mentions = reply.mentions if n == len(parts) else []
            await client.send_text(key, part, mentioned_list=mentions, chatid=chatid)

    async def _image_bytes(self, attachment: dict[str, Any]) -> bytes:
        """An image attachment's bytes: given as base64 (+ md5), or fetched from its url (≤ 2 MB)."""
        if attachment.get("base64"):
            try:
                data = base64.b64decode(str(attachment["base64"]), validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("image attachment's base64 is not valid") from None
            md5 = attachment.get("md5")
            if md5 and hashlib.md5(data).hexdigest() != str(md5).lower():  # noqa: S324 - WeCom's checksum
                raise ValueError("image attachment's md5 does not match its data")
            return data
        url = str(attachment.get("url") or "")
        if not url.startswith(("https://", "http://")):
            raise ValueError("image attachment needs base64 data or an http(s) url")
        assert self.runtime.http is not None
        try:
            async with self.runtime.http.get(url, timeout=aiohttp.ClientTimeout(total=self.cfg.timeout_seconds)) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"image url answered HTTP {resp.status}")
                data = await resp.content.read(IMAGE_LIMIT_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RuntimeError(f"image url could not be fetched: {type(exc).__name__}") from exc
        if len(data) > IMAGE_LIMIT_BYTES:
            raise ValueError(f"image at its url is over {IMAGE_LIMIT_BYTES} bytes")
        return data

    async def post_image(self, group: str, data: bytes) -> None:
        """Post a JPG or PNG image (≤ 2 MB) into a group."""
        key, chatid = await self.target(group)
        await self._client().send_image(key, data, chatid=chatid)

    async def post_news(self, group: str, articles: list[dict[str, str]]) -> None:
        """Post 1..8 news articles ({"title", "url", "description"?, "picurl"?}) into a group."""
        key, chatid = await self.target(group)
        await self._client().send_news(key, articles, chatid=chatid)

    async def post_file(self, group: str, data: bytes, filename: str) -> None:
        """Upload a file (6 bytes .. 20 MB) and post it into a group."""
        key, chatid = await self.target(group)
        await self._client().send_file(key, data, filename, chatid=chatid)

    # -- callbacks ---------------------------------------------------------------------------------

    async def verify_url(self, request: web.Request) -> web.Response:
        assert self.crypto is not None
        return await callback_reply.verify_url(request, self.crypto, log, "robot")

    async def callback(self, request: web.Request) -> web.Response:
        assert self.crypto is not None
        deadline = asyncio.get_running_loop().time() + self.cfg.reply_budget_seconds
        try:
            q = query_params(request, "msg_signature", "timestamp", "nonce")
            self.crypto.check_timestamp(q["timestamp"])
            body = await read_body(request, self.cfg.max_body_bytes, self.cfg.body_timeout_seconds)
            encrypted = parse_xml(body).get("Encrypt")
            if not isinstance(encrypted, str) or not encrypted:
                raise Rejected(400, "no Encrypt element")
            self.crypto.check_signature(q["msg_signature"], q["timestamp"], q["nonce"], encrypted)
            incoming = parse_callback(parse_xml_root(self.crypto.decrypt(encrypted)), self.cfg.bot_name)
        except Rejected as exc:
            return reject(request, exc, log, "robot callback rejected")
        if incoming.webhook_key:
            await self._learn(incoming)
        if incoming.kind == IGNORED:
            log.info("robot callback ignored", extra={"msgid": incoming.msgid, "chat_id": incoming.chat_id,
                                                      "what": incoming.note})
            return web.Response(status=200)
        if incoming.kind == HINT:
            return self._encrypted(self.runtime.templates.raw(incoming.note))
        return await self._accept(incoming, deadline)

    async def _learn(self, incoming: Incoming) -> None:
        """Remember the chat's robot (its webhook key) for later posts; a failure only costs that."""
        assert incoming.webhook_key is not None
        digest = key_hash(incoming.webhook_key)
        if self._learned.get(incoming.chat_id) == digest:
            return
        try:
            async with self.runtime.db.session() as session:
                await store.learn_chat(session, chat_id=incoming.chat_id, chat_type=incoming.chat_type,
                                       webhook_key=incoming.webhook_key, key_hash=digest)
        except Exception as exc:
            log.warning("robot chat not stored", extra={"chat_id": incoming.chat_id, "error": str(exc)})
            return
        self._learned[incoming.chat_id] = digest
        log.info("robot chat learned", extra={"chat_id": incoming.chat_id, "chat_type": incoming.chat_type,
                                              "robot": digest[:8]})

    async def _accept(self, incoming: Incoming, deadline: float) -> web.Response:
        """Store the message and its reply row, process it, answer within the budget."""
        event, msgid = incoming.event, incoming.msgid
        assert event is not None
        return await callback_reply.answer_in_time(
            self, event, deadline, key=msgid, what="robot", log=log, fields={"msgid": msgid},
            prepare=lambda session: store.replies.create(session, msgid=msgid, event_key=event.key,
                                                         chat_id=incoming.chat_id),
            nothing=lambda: self._settle_nothing(msgid),
            settled=lambda: self._settled(msgid),
            answer=lambda: self._answer(msgid))

    async def _settled(self, msgid: str) -> bool:
        """Has the reply left pending (a copy of the message another process works on)?"""
        async with self.runtime.db.read_session() as session:
            row = await store.replies.get(session, msgid)
        return row is None or row.status != PENDING

    async def _settle_nothing(self, msgid: str) -> None:
        """The handlers had nothing to say: settle the reply, whether the callback still waits or gave up."""
        async with self.runtime.db.session() as session:
            await store.replies.settle_nothing(session, msgid, PENDING, store.LATE)

    async def _answer(self, msgid: str) -> web.Response:
        """The callback's answer from the reply's row: the reply if it is ready (once, and again to a retry
        of the same message), else empty, leaving the reply to the webhook."""
        replies = store.replies
        async with self.runtime.db.session() as session:
            row = await replies.get(session, msgid)
            if row is None:
                raise RuntimeError(f"no reply row for msgid {msgid}")
            if row.status == PENDING and await replies.settle(session, msgid, from_status=PENDING,
                                                              to_status=store.LATE):
                log.info("robot reply not ready in time; the webhook will take it", extra={"msgid": msgid})
                return web.Response(status=200)
            row = await replies.get(session, msgid)
            assert row is not None
            content = row.content or ""
            if row.status == READY and utf8_len(content) <= MARKDOWN_LIMIT_BYTES:
                if await replies.settle(session, msgid, from_status=READY, to_status=DELIVERED, via=store.PASSIVE):
                    log.info("robot reply in the callback response", extra={"msgid": msgid})
                    return self._encrypted(content)
            elif row.status == READY:
                if await replies.settle(session, msgid, from_status=READY, to_status=store.SENDING):
                    # Too long for one passive reply: split over webhook messages.
                    self.spawn(self._webhook_reply(msgid, row.chat_id, content), name=f"robot-send-{msgid}")
                return web.Response(status=200)
            row = await replies.get(session, msgid)
            assert row is not None
        if row.status == DELIVERED and row.via == store.PASSIVE:
            # WeCom's retry of a message answered before (or a copy that lost the race): the same answer.
            return self._encrypted(row.content or "")
        return web.Response(status=200)

    def _encrypted(self, markdown: str) -> web.Response:
        """The passive reply: a markdown message, encrypted and signed as <xml><Encrypt/><MsgSignature/>…."""
        assert self.crypto is not None
        plain = f"<xml><MsgType>markdown</MsgType><Markdown><Content>{cdata(markdown)}</Content></Markdown></xml>"
        nonce = secrets.token_hex(8)
        encrypted, signature, timestamp = self.crypto.encrypt(plain, nonce)
        body = (f"<xml><Encrypt>{cdata(encrypted)}</Encrypt><MsgSignature>{cdata(signature)}</MsgSignature>"
                f"<TimeStamp>{timestamp}</TimeStamp><Nonce>{cdata(nonce)}</Nonce></xml>")
        return web.Response(text=body, content_type="application/xml")

    # -- pipeline ----------------------------------------------------------------------------------

    async def deliver(self, event: Event, replies: list[Reply]) -> None:
        """Keep the reply for the callback to hand over, or, if the callback has given up, send it now."""
        msgid = event.key.split(":", 1)[1]
        content = "\n\n".join(with_mentions(r) for r in replies if r.text or r.mentions)
        if not content:  # nothing to show: settle it like a message without replies
            await self._settle_nothing(msgid)
            return
        async with self.runtime.db.session() as session:
            row = await store.replies.get(session, msgid)
            if row is None:
                if event.group is None:
                    log.warning("robot reply dropped: no reply row and no group", extra={"msgid": msgid})
                    return
                late = None
            elif await store.replies.settle(session, msgid, from_status=PENDING, to_status=READY, content=content):
                return
            elif await store.replies.settle(session, msgid, from_status=store.LATE, to_status=store.SENDING,
                                            content=content):
                late = row.chat_id
            else:
                log.info("robot reply already settled; this one is dropped", extra={"msgid": msgid,
                                                                                    "event_id": event.id})
                return
        if late is None:  # a row gone missing (never the case for callbacks): post into the group instead
            assert event.group is not None
            await self.post(event.group, replies)
            return
        await self._webhook_reply(msgid, late, content)

    async def _webhook_reply(self, msgid: str, chat_id: str, content: str) -> None:
        """Send a reply (in status sending) through the webhook into its chat, and settle it."""
        try:
            key, chatid = await self.target(chat_id)
            if content:
                for part in split_text(content, MARKDOWN_LIMIT_BYTES, self.cfg.max_parts):
                    await self._client().send_markdown(key, part, chatid=chatid)
        except Exception as exc:  # recorded by the client (API failures) and here on the row
            log.warning("robot reply not delivered", extra={"msgid": msgid, "chat_id": chat_id, "error": str(exc)})
            async with self.runtime.db.session() as session:
                await store.replies.settle(session, msgid, from_status=store.SENDING, to_status=FAILED,
                                           error=f"{type(exc).__name__}: {exc}")
            return
        async with self.runtime.db.session() as session:
            await store.replies.settle(session, msgid, from_status=store.SENDING, to_status=DELIVERED,
                                       via=store.WEBHOOK)
        log.info("robot reply sent through the webhook", extra={"msgid": msgid, "chat_id": chat_id})

    async def sweep(self) -> None:
        """Send ready replies that no callback handed over in time (the process answering it died).

        Every process sweeps; the conditional update lets one of them take each reply.
        """
        grace = utcnow() - timedelta(seconds=self.cfg.reply_grace_seconds)
        async with self.runtime.db.read_session() as session:
            due = await store.replies.ready_unclaimed(session, ready_before=grace)
        for row in due:
            async with self.runtime.db.session() as session:
                taken = await store.replies.settle(session, row.msgid, from_status=READY, to_status=store.SENDING)
            if taken:
                await self._webhook_reply(row.msgid, row.chat_id, row.content or "")


# -- parsing -------------------------------------------------------------------------------------------


def _text(element: Element, path: str) -> str:
    node = element.find(path)
    return (node.text or "").strip() if node is not None else ""


def _short(element: Element, path: str, what: str, *, required: bool = True) -> str:
    value = _text(element, path)
    if (required and not value) or len(value) > MAX_ID:
        raise Rejected(400, f"{what} missing or too long")
    return value


def webhook_key(url: str) -> str | None:
    """The key inside a callback's WebhookUrl (…/cgi-bin/webhook/send?key=KEY); None if there is none."""
    try:
        key = parse_qs(urlsplit(url).query).get("key", [""])[0]
    except ValueError:
        return None
    if not key or len(key) > MAX_ID or not all(c.isalnum() or c in "-_" for c in key):
        return None
    return key


def parse_callback(root: Element, bot_name: str = "") -> Incoming:
    """What a decrypted robot callback is; Rejected for a malformed one. Unknown kinds are IGNORED."""
    msgtype = _short(root, "MsgType", "MsgType")
    msgid = _short(root, "MsgId", "MsgId")
    chat_id = _short(root, "ChatId", "ChatId")
    chat_type = _text(root, "ChatType")[:32]
    user = _short(root, "From/UserId", "From.UserId")
    name = _text(root, "From/Name")[:MAX_NAME]
    key = webhook_key(_text(root, "WebhookUrl"))
    base = {"msgid": msgid, "chat_id": chat_id, "chat_type": chat_type, "webhook_key": key}
    if chat_type not in CHAT_TYPES:  # blackboard posts and replies: not chats the bot serves
        return Incoming(IGNORED, **base, note=f"chattype {chat_type}")
    group = chat_id if chat_type == "group" else None
    sender = Person(user, name)
    if msgtype == "event":
        event_type = _text(root, "Event/EventType")[:32]
        if event_type == "enter_chat" and group is None:
            return Incoming(MESSAGE, **base, event=ChatEntered("robot", f"evt:{msgid}", None, utcnow(), sender=sender))
        return Incoming(IGNORED, **base, note=f"event {event_type}")
    if msgtype == "image":
        return Incoming(HINT, **base, note="robot.unsupported")
    if msgtype == "text":
        text = _text(root, "Text/Content")
    elif msgtype == "mixed":
        items = [_text(item, "Text/Content") for item in root.findall("MixedMessage/MsgItem")
                 if _text(item, "MsgType") == "text"]
        text = "\n".join(t for t in items if t)
    else:  # attachment (a button in a markdown message the bot never sends), or a type we do not know
        return Incoming(IGNORED, **base, note=f"msgtype {msgtype[:32]}")
    if group is not None:
        text = strip_mention(text, bot_name)
    if not text:
        return Incoming(HINT, **base, note="robot.empty")
    return Incoming(MESSAGE, **base, event=TextMessage("robot", f"msg:{msgid}", group, utcnow(), sender=sender,
                                                       text=text, mentioned=True))


def with_mentions(reply: Reply) -> str:
    """A reply as robot markdown: its text, then <@userid> for each member it mentions."""
    mentions = " ".join(f"<@{user}>" for user in reply.mentions)
    return f"{reply.text}\n{mentions}" if reply.text and mentions else reply.text or mentions


def cdata(text: str) -> str:
    """`text` as CDATA (a "]]>" inside is split across two sections)."""
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"
