"""The WeCom smart bot (智能机器人) door, API mode with an HTTP callback.

WeCom posts encrypted JSON (receiveid is the empty string) for @-mentions in groups, 1:1 messages, the
daily enter_chat event of a 1:1 chat, and stream refreshes. The bot answers in the callback's own
response, so the reply has to be known within WeCom's 5 s:

- a message is accepted into the inbox (WeCom's retries and copies reaching other processes stop there)
  and processed at once; if its replies are ready within `reply_budget_seconds` they go back as a
  finished stream;
- otherwise the answer is an unfinished stream, the work goes on, and WeCom's stream refresh callbacks
  (which may reach any process) are answered from the reply's row in the database: still thinking, or
  the content with finish=true;
- a reply that no refresh fetched within `stream_grace_seconds` of being ready is posted once through
  the message's response_url (usable once, within an hour) by whichever process sweeps first.

Replies are markdown. Whether a smart bot's markdown reply can @-mention someone is not confirmed in the
docs, so the door declares no mentions and features write names as text. The door cannot post on its
own (proactive sends need the WebSocket mode) and sees no joins, only enter_chat, which the welcome
feature answers with a greeting.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from bot.channels import callback_reply
from bot.channels.base import Capabilities, Channel
from bot.channels.callback_http import query_params, read_body, reject
from bot.channels.wecom_crypto import CallbackCrypto, Rejected
from bot.events import ChatEntered, Event, Person, Reply, TextMessage
from storage import smartbot as store
from storage.db import utcnow
from storage.inbox import DONE as INBOX_DONE
from storage.inbox import FAILED as INBOX_FAILED
from storage.kv import DbFailureRecorder
from storage.replies import DELIVERED, FAILED, NOTHING, PENDING, READY, event_status

log = logging.getLogger("qunbot.smartbot")

# stream.content and markdown.content carry at most 20480 bytes (UTF-8).
CONTENT_LIMIT_BYTES = 20480
MAX_MSGID = 128
MAX_STREAM_ID = 64
# response_url works for an hour after the message; stop a little earlier than WeCom does.
RESPONSE_URL_LIFETIME = timedelta(minutes=55)
# A response_url post that could not connect is tried again this many times in all.
RESPONSE_URL_ATTEMPTS = 3

# What a decrypted callback is, for the door.
MESSAGE, REFRESH, GREETING, UNSUPPORTED, EMPTY, IGNORED = (
    "message", "refresh", "greeting", "unsupported", "empty", "ignored")
TEXT_TYPES = ("text", "mixed", "voice")
# Known message types the bot cannot read (images and files arrive in 1:1 chats only).
UNREADABLE_TYPES = ("image", "file")


@dataclass
class Incoming:
    """A decrypted, checked callback: what it is and what the door needs to answer it."""

    kind: str
    msgid: str = ""
    event: Event | None = None
    stream_id: str = ""
    response_url: str | None = None
    # Why a callback is ignored, for the log line.
    note: str = ""


class SmartbotChannel(Channel):
    """Smart bot HTTP callbacks: @-mentions in groups, 1:1 messages, enter_chat, stream refreshes."""

    name = "smartbot"
    title = "WeCom smart bot, HTTP callback"
    reaches = "@-mentions in groups, 1:1 chats"
    capabilities = Capabilities(
        can_reply=True,  # in the callback response, a stream, or response_url
        can_post_proactively=False,  # only the WebSocket mode can send unprompted (aibot_send_msg)
        sees_joins=False,  # WeCom reports no group joins to a smart bot; enter_chat is a 1:1 event
        posts_welcome=False,
        welcome_template=False,
        greets=True,  # enter_chat, answered with a text greeting
        mentions=False,  # unconfirmed for smart bot markdown: names are written as text
        markdown=True,
        images=False,
    )

    def __init__(self, runtime: Any) -> None:
        super().__init__(runtime)
        self.cfg = runtime.config.smartbot
        self.crypto = CallbackCrypto(self.cfg.token, self.cfg.encoding_aes_key, "", self.cfg.replay_window_seconds)
        self.failures = DbFailureRecorder(runtime.db)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(self.cfg.path, self.verify_url)
        app.router.add_post(self.cfg.path, self.callback)

    async def start(self) -> None:
        self.spawn(callback_reply.sweep_forever(self.cfg.sweep_interval_seconds, self.sweep, log, "smartbot"),
                   name="smartbot-sweep")

    # -- HTTP ------------------------------------------------------------------------------------

    async def verify_url(self, request: web.Request) -> web.Response:
        return await callback_reply.verify_url(request, self.crypto, log, "smartbot")

    async def callback(self, request: web.Request) -> web.Response:
        deadline = asyncio.get_running_loop().time() + self.cfg.reply_budget_seconds
        try:
            q = query_params(request, "msg_signature", "timestamp", "nonce")
            self.crypto.check_timestamp(q["timestamp"])
            body = await read_body(request, self.cfg.max_body_bytes, self.cfg.body_timeout_seconds)
            encrypted = json_object(body, "body").get("encrypt")
            if not isinstance(encrypted, str) or not encrypted:
                raise Rejected(400, "no encrypt field")
            self.crypto.check_signature(q["msg_signature"], q["timestamp"], q["nonce"], encrypted)
            message = json_object(self.crypto.decrypt(encrypted), "decrypted message")
            if self.cfg.bot_id and message.get("aibotid") != self.cfg.bot_id:
                raise Rejected(403, "aibotid is not this bot's")
            incoming = parse_callback(message, self.cfg.bot_name)
        except Rejected as exc:
            return reject(request, exc, log, "smartbot callback rejected")
        if incoming.kind == IGNORED:
            log.info("smartbot callback ignored", extra={"msgid": incoming.msgid, "what": incoming.note})
            return web.Response(status=200)
        if incoming.kind in (UNSUPPORTED, EMPTY):
            hint = "smartbot.unsupported" if incoming.kind == UNSUPPORTED else "smartbot.empty"
            return self._encrypted(stream_body(stream_id_for(incoming.msgid), self.runtime.templates.raw(hint), True))
        if incoming.kind == REFRESH:
            return await self._answer(stream_id=incoming.stream_id)
        return await self._accept(incoming, deadline)

    async def _accept(self, incoming: Incoming, deadline: float) -> web.Response:
        """Store the message (or enter_chat) and its reply row, process it, answer within the budget."""
        event, msgid = incoming.event, incoming.msgid
        assert event is not None
        return await callback_reply.answer_in_time(
            self, event, deadline, key=msgid, what="smartbot", log=log, fields={"msgid": msgid},
            prepare=lambda session: store.create(session, msgid=msgid, stream_id=stream_id_for(msgid),
                                                 event_key=event.key, response_url=incoming.response_url),
            nothing=lambda: self._settle(msgid, PENDING, DELIVERED, via=NOTHING, content=""),
            answer=lambda: self._answer(msgid=msgid, greeting=incoming.kind == GREETING))

    async def _settle(self, msgid: str, from_status: str, to_status: str, **values: str) -> bool:
        async with self.runtime.db.session() as session:
            return await store.replies.settle(session, msgid, from_status=from_status, to_status=to_status, **values)

    async def _answer(self, *, msgid: str = "", stream_id: str = "", greeting: bool = False) -> web.Response:
        """The answer to a message (or its retry), an enter_chat, or a stream refresh, from the reply's row.

        Whoever moves a ready reply to delivered hands it over; a retry asking again gets the same content.
        """
        refresh = bool(stream_id)
        try:
            async with self.runtime.db.session() as session:
                row = await (store.by_stream_id(session, stream_id) if refresh else store.replies.get(session, msgid))
                if row is None:
                    if not refresh:
                        raise RuntimeError(f"no reply row for msgid {msgid}")
                    log.warning("stream refresh for an unknown stream; closing it", extra={"stream_id": stream_id})
                    return self._encrypted(stream_body(stream_id, "", True))
                if row.status == PENDING:
                    # Finished without a reply, or failed for good: the inbox knows.
                    status = await event_status(session, self.name, row.event_key)
                    if status in (INBOX_DONE, INBOX_FAILED):
                        await self._close(session, row.msgid, status)
                elif row.status == READY:
                    await store.replies.settle(session, row.msgid, from_status=READY, to_status=DELIVERED,
                                               via=store.STREAM if refresh else store.INLINE)
                row = await store.replies.get(session, row.msgid)
        except Exception as exc:
            log.warning("smartbot reply state unavailable", extra={"msgid": msgid, "stream_id": stream_id,
                                                                   "error": str(exc)})
            return web.Response(status=503, text="busy")
        assert row is not None
        log.info("smartbot answer", extra={"msgid": row.msgid, "status": row.status, "via": row.via,
                                           "refresh": refresh})
        templates = self.runtime.templates
        shown = row.status == DELIVERED and row.via in (store.INLINE, store.STREAM)
        if greeting:  # enter_chat takes a text reply only, and only in its own callback response
            if shown and row.content:
                return self._encrypted({"msgtype": "text", "text": {"content": fit(row.content)}})
            return web.Response(status=200)
        if shown:
            return self._encrypted(stream_body(row.stream_id, row.content or "", True))
        if row.status == PENDING:
            return self._encrypted(stream_body(row.stream_id, templates.raw("smartbot.thinking"), False))
        if row.status == FAILED:
            return self._encrypted(stream_body(row.stream_id, templates.raw("smartbot.failed"), True))
        if not refresh:  # nothing to say, or said through response_url: the message needs no answer
            return web.Response(status=200)
        if row.via == NOTHING:
            return self._encrypted(stream_body(row.stream_id, templates.raw("smartbot.no_reply"), True))
        return self._encrypted(stream_body(row.stream_id, "", True))  # posted separately: close the stream

    @staticmethod
    async def _close(session: AsyncSession, msgid: str, inbox_status: str | None) -> None:
        """Settle a pending reply whose message will get none: finished without a reply (inbox done), or
        failed (for good, or lost)."""
        if inbox_status == INBOX_DONE:
            await store.replies.settle_nothing(session, msgid)
        else:
            await store.replies.settle(session, msgid, from_status=PENDING, to_status=FAILED,
                                       error=f"processing {inbox_status or 'lost'}")

    def _encrypted(self, payload: dict[str, Any]) -> web.Response:
        """A passive reply: the JSON payload encrypted and signed as {"encrypt","msgsignature","timestamp","nonce"}."""
        nonce = secrets.token_hex(8)
        encrypted, signature, timestamp = self.crypto.encrypt(
            json.dumps(payload, ensure_ascii=False, separators=(",", ":")), nonce)
        body = {"encrypt": encrypted, "msgsignature": signature, "timestamp": int(timestamp), "nonce": nonce}
        return web.json_response(body)

    # -- pipeline --------------------------------------------------------------------------------

    async def deliver(self, event: Event, replies: list[Reply]) -> None:
        """Keep the reply as its row's content; the callback, a refresh or response_url hands it over."""
        msgid = event.key.split(":", 1)[1]
        content = fit("\n\n".join(r.text for r in replies if r.text))
        async with self.runtime.db.session() as session:
            saved = await store.replies.settle(session, msgid, from_status=PENDING, to_status=READY, content=content)
        if not saved:
            log.info("reply already settled; this one is dropped", extra={"msgid": msgid, "event_id": event.id})

    # -- response_url ----------------------------------------------------------------------------

    async def sweep(self) -> None:
        """Post ready replies that no stream refresh fetched in time; settle replies left pending.

        Every process sweeps; conditional updates let one of them take each reply.
        """
        now = utcnow()
        grace = now - timedelta(seconds=self.cfg.stream_grace_seconds)
        async with self.runtime.db.read_session() as session:
            due = await store.replies.ready_unclaimed(session, ready_before=grace)
            stale = await store.replies.pending_since(session, created_before=grace)
        for row in due:
            await self._post_response_url(row)
        for row in stale:
            async with self.runtime.db.read_session() as session:
                status = await event_status(session, self.name, row.event_key)
            if status not in (INBOX_DONE, INBOX_FAILED) and row.created_at >= now - RESPONSE_URL_LIFETIME:
                continue  # still being worked on
            async with self.runtime.db.session() as session:
                await self._close(session, row.msgid, status)

    async def _post_response_url(self, row: store.SmartbotReply) -> None:
        """Send a ready reply through the message's response_url, at most once."""
        url = row.response_url or ""
        problem = ""
        if not url.startswith(self.cfg.response_url_prefix):
            problem = "no usable response_url"
        elif row.created_at < utcnow() - RESPONSE_URL_LIFETIME:
            problem = "response_url expired"
        if problem:
            if await self._settle(row.msgid, READY, FAILED, error=problem):
                log.warning("smartbot reply undeliverable", extra={"msgid": row.msgid, "reason": problem})
            return
        if not await self._settle(row.msgid, READY, store.POSTING):
            return  # fetched by a refresh meanwhile, or another process is posting it
        outcome, detail = await self._send(url, row.content or "")
        if outcome == "sent":
            await self._settle(row.msgid, store.POSTING, DELIVERED, via=store.RESPONSE_URL)
        elif outcome == "retry" and row.attempts + 1 < RESPONSE_URL_ATTEMPTS:
            await self._settle(row.msgid, store.POSTING, READY, error=detail)
        else:
            await self._settle(row.msgid, store.POSTING, FAILED, error=detail)
        extra = {"msgid": row.msgid, "outcome": outcome, "attempt": row.attempts + 1, "detail": detail}
        if outcome == "sent":
            log.info("smartbot reply posted to response_url", extra=extra)
            return
        log.warning("smartbot response_url post failed", extra=extra)
        if outcome != "retry" or row.attempts + 1 >= RESPONSE_URL_ATTEMPTS:
            await self.failures.record_api_failure(api="aibot/response", errcode=None, errmsg=detail,
                                                   attempts=row.attempts + 1, detail=f"msgid={row.msgid}")

    async def _send(self, url: str, content: str) -> tuple[str, str]:
        """("sent" | "retry" | "failed", detail). Only a connection never made is safe to retry: the
        URL is single-use, so a request WeCom may have taken is never sent again."""
        http = self.runtime.http
        if http is None:
            return "retry", "http client not started"
        payload = {"msgtype": "markdown", "markdown": {"content": content}}
        try:
            async with http.post(url, json=payload, timeout=aiohttp.ClientTimeout(total=10)) as resp:
                text = await resp.text()
                status = resp.status
        except aiohttp.ClientConnectorError as exc:
            return "retry", f"connect: {exc.os_error or exc}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return "failed", f"{type(exc).__name__}: {exc}"
        try:
            answer = json.loads(text)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            return "failed", f"HTTP {status}, not a JSON answer"
        if status == 200 and answer.get("errcode") == 0:
            return "sent", ""
        return "failed", f"HTTP {status} errcode={answer.get('errcode')} {str(answer.get('errmsg', ''))[:200]}"


# -- parsing -------------------------------------------------------------------------------------------


def parse_callback(message: dict[str, Any], bot_name: str = "", channel: str = "smartbot") -> Incoming:
    """What a decrypted callback is; Rejected for a malformed one. Unknown kinds are IGNORED, not errors.

    `channel` names the door the events belong to: the long-connection door (bot.channels.smartbot_ws)
    reads the same JSON, and its events are deduplicated under its own name.
    """
    msgtype = message.get("msgtype")
    if not isinstance(msgtype, str) or not msgtype:
        raise Rejected(400, "no msgtype")
    msgid = message.get("msgid")
    if msgid is not None and (not isinstance(msgid, str) or len(msgid) > MAX_MSGID):
        raise Rejected(400, "msgid is not a short string")
    msgid = msgid or ""
    if msgtype == "stream":
        stream = message.get("stream")
        stream_id = stream.get("id") if isinstance(stream, dict) else None
        if not isinstance(stream_id, str) or not stream_id or len(stream_id) > MAX_STREAM_ID:
            raise Rejected(400, "stream refresh without a stream id")
        return Incoming(REFRESH, msgid, stream_id=stream_id)
    if msgtype != "event" and msgtype not in TEXT_TYPES and msgtype not in UNREADABLE_TYPES:
        return Incoming(IGNORED, msgid, note=f"msgtype {msgtype[:32]}")
    if not msgid:
        raise Rejected(400, f"{msgtype} callback without msgid")
    sender = message.get("from")
    user = sender.get("userid") if isinstance(sender, dict) else None
    if not isinstance(user, str) or not user or len(user) > 128:
        raise Rejected(400, "no from.userid")
    created = message.get("create_time")
    at = datetime.fromtimestamp(created, UTC) if isinstance(created, int) and 0 < created < 2**32 else utcnow()
    if msgtype == "event":
        event = message.get("event")
        eventtype = event.get("eventtype") if isinstance(event, dict) else None
        if eventtype == "enter_chat":
            return Incoming(GREETING, msgid, event=ChatEntered(channel, f"evt:{msgid}", None, at, sender=Person(user)))
        return Incoming(IGNORED, msgid, note=f"event {str(eventtype)[:32]}")
    if msgtype in UNREADABLE_TYPES:
        return Incoming(UNSUPPORTED, msgid)
    group = None
    if message.get("chattype") == "group":
        group = message.get("chatid")
        if not isinstance(group, str) or not group or len(group) > 128:
            raise Rejected(400, "group message without chatid")
    text = message_text(message, msgtype)
    if group is not None:
        text = strip_mention(text, bot_name)
    if not text:
        return Incoming(EMPTY, msgid)
    response_url = message.get("response_url")
    return Incoming(MESSAGE, msgid, response_url=response_url if isinstance(response_url, str) else None,
                    event=TextMessage(channel, f"msg:{msgid}", group, at, sender=Person(user), text=text,
                                      mentioned=True))


def message_text(message: dict[str, Any], msgtype: str) -> str:
    """The message's own text: text.content, the text items of a mixed message, or a voice transcript.

    A quoted message (`quote`) is never read: quoting someone's "签到" must not check the quoter in.
    """
    if msgtype == "mixed":
        mixed = message.get("mixed")
        items = mixed.get("msg_item") if isinstance(mixed, dict) else None
        if not isinstance(items, list):
            raise Rejected(400, "mixed message without msg_item")
        parts = [_content(item, "text") for item in items if isinstance(item, dict) and item.get("msgtype") == "text"]
        return "\n".join(p for p in parts if p).strip()
    return _content(message, msgtype).strip()


def _content(holder: dict[str, Any], key: str) -> str:
    inner = holder.get(key)
    content = inner.get("content") if isinstance(inner, dict) else None
    if not isinstance(content, str):
        raise Rejected(400, f"{key}.content missing")
    return content


def strip_mention(text: str, bot_name: str = "") -> str:
    """Remove the @-mention of the bot: "@<bot_name>" wherever it is, or else a leading @-mention."""
    if bot_name:
        return re.sub(rf"@{re.escape(bot_name)}(?=\s|$)", "", text, count=1).strip()
    return re.sub(r"^\s*@\S+", "", text, count=1).strip()


def stream_id_for(msgid: str) -> str:
    """The stream id of a message's reply: the same on every process and every retry."""
    return "qb" + hashlib.sha256(msgid.encode()).hexdigest()[:30]


def stream_body(stream_id: str, content: str, finish: bool) -> dict[str, Any]:
    return {"msgtype": "stream", "stream": {"id": stream_id, "finish": finish, "content": fit(content)}}


def fit(text: str, limit: int = CONTENT_LIMIT_BYTES) -> str:
    """Text cut to `limit` UTF-8 bytes (with an ellipsis), never inside a character."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[: limit - 3].decode(errors="ignore") + "…"


def json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        raise Rejected(400, f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise Rejected(400, f"{what} is not a JSON object")
    return value
