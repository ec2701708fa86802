"""The WeChat Official Account (公众号) door: XML callbacks in plain, compatible or safe mode, passive replies out.

WeChat posts each message a follower sends (and follow/unfollow events) to the account's URL and takes a
reply only as the answer to that request, within 5 s; with no answer it drops the connection and retries,
three retries in all. So:

- a text message (or a voice message WeChat transcribed) is accepted into the inbox, where its MsgId
  (FromUserName + CreateTime for events) makes WeChat's retries and copies reaching other processes stop,
  and processed at once in the door's 1:1 scope; if the handlers finish within `reply_budget_seconds` their
  reply goes back as the passive reply;
- otherwise the answer is "success" (WeChat then neither retries nor shows an error) and the reply is kept
  but never sent: sending it later needs the customer-service API (客服消息接口), which qunbot does not use;
- a retry of a message answered before gets the same reply again, read from `official_account_replies`;
  one reaching another process while the first still works waits for the reply there, within its budget.

Modes (消息加解密方式): plain requests carry `signature` = sha1(sorted token, timestamp, nonce); encrypted ones add
`encrypt_type=aes&msg_signature` and an <Encrypt> element (the WeCom scheme with the AppID as receiveid) and
are answered encrypted. Compatible mode accepts both; the other modes refuse a request of the other kind.
URL verification (GET) is the plain signature in every mode and answers `echostr` as it came.

A follow (subscribe) is a ChatEntered event, answered with the welcome feature's greeting; an unfollow closes
the follower's stay in the 1:1 scope. There are no groups: nothing can be posted on the bot's own initiative.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from wechatpy.utils import WeChatSigner

from bot.channels import callback_reply
from bot.channels.base import Capabilities, Channel
from bot.channels.callback_http import query_params, read_body, reject
from bot.channels.wecom_crypto import CallbackCrypto, Rejected, parse_xml
from bot.dispatcher import DIRECT_SCOPE
from bot.events import ChatEntered, Event, MemberLeft, Person, Reply, TextMessage
from bot.inbox import InboxUnavailable
from storage import official_account as store
from storage.inbox import DONE as INBOX_DONE
from storage.inbox import FAILED as INBOX_FAILED

log = logging.getLogger("qunbot.official_account")

# A passive text reply carries at most 2048 bytes (UTF-8) of content (older official docs; unconfirmed today).
CONTENT_LIMIT_BYTES = 2048
MAX_ID = 128
# How often a retry waiting for another process's work looks at the database.
POLL_SECONDS = 0.1

MESSAGE, GREETING, LEFT, HINT, IGNORED = "message", "greeting", "left", "hint", "ignored"
# Message types a follower can send that the bot cannot read (a voice message without a transcript too).
UNREADABLE_TYPES = ("image", "voice", "video", "shortvideo", "location", "link", "file")
SENTENCE_END = "。！？!?.，,；;～~ "


@dataclass
class Incoming:
    """A checked callback: what it is, who sent it to which account, and what the door does with it."""

    kind: str
    openid: str = ""
    account: str = ""
    event: Event | None = None
    # The template of a hint answered at once (HINT), or why a callback is ignored (IGNORED), for the log.
    note: str = ""


class OfficialAccountChannel(Channel):
    """Official Account callbacks: followers' 1:1 messages and follow/unfollow events, passive replies."""

    name = "official_account"
    title = "WeChat Official Account (公众号)"
    reaches = "1:1 chats with followers; follow events"
    capabilities = Capabilities(
        can_reply=True,  # passive replies only, within WeChat's 5 s
        can_post_proactively=False,  # would need the customer-service or template message APIs (not used)
        sees_joins=False,  # an account has followers, not groups; a follow is no group join
        posts_welcome=False,
        welcome_template=False,
        greets=True,  # a follow (subscribe) is answered with the greeting
        mentions=False,
        markdown=False,
        images=False,
    )

    def __init__(self, runtime: Any) -> None:
        super().__init__(runtime)
        self.cfg = runtime.config.official_account
        # Current key first; the previous one (set while a changed EncodingAESKey settles) is tried second.
        self.cryptos = [CallbackCrypto(self.cfg.token, key, self.cfg.app_id, self.cfg.replay_window_seconds)
                        for key in (self.cfg.encoding_aes_key, self.cfg.previous_encoding_aes_key) if key]

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(self.cfg.path, self.verify_url)
        app.router.add_post(self.cfg.path, self.callback)

    # -- HTTP ------------------------------------------------------------------------------------

    async def verify_url(self, request: web.Request) -> web.Response:
        """URL verification, in every mode: check the plain signature, answer echostr as it came."""
        try:
            q = query_params(request, "signature", "timestamp", "nonce", "echostr")
            check_timestamp(q["timestamp"], self.cfg.replay_window_seconds)
            self._check_plain_signature(q)
        except Rejected as exc:
            return reject(request, exc, log, "official account callback rejected")
        log.info("official account url verified", extra={"path": request.path})
        return web.Response(text=q["echostr"], content_type="text/plain")

    async def callback(self, request: web.Request) -> web.Response:
        deadline = asyncio.get_running_loop().time() + self.cfg.reply_budget_seconds
        crypto: CallbackCrypto | None = None
        try:
            encrypted = self._request_kind(request)
            q = query_params(request, "msg_signature" if encrypted else "signature", "timestamp", "nonce")
            check_timestamp(q["timestamp"], self.cfg.replay_window_seconds)
            if not encrypted:
                self._check_plain_signature(q)  # before reading the body: a forged request costs nothing
            body = await read_body(request, self.cfg.max_body_bytes, self.cfg.body_timeout_seconds)
            outer = parse_xml(body)
            if encrypted:
                ciphertext = outer.get("Encrypt")
                if not isinstance(ciphertext, str) or not ciphertext:
                    raise Rejected(400, "no Encrypt element")
                self.cryptos[0].check_signature(q["msg_signature"], q["timestamp"], q["nonce"], ciphertext)
                plain, crypto = self._decrypt(ciphertext)
                message = parse_xml(plain)
            else:
                message = outer
            incoming = parse_message(message)
        except Rejected as exc:
            return reject(request, exc, log, "official account callback rejected")
        if incoming.kind == IGNORED:
            log.info("official account callback ignored", extra={"openid": incoming.openid, "what": incoming.note})
            return success()
        if incoming.kind == HINT:
            return self._reply(incoming, self.runtime.templates.raw(incoming.note), crypto)
        if incoming.kind == LEFT:
            return await self._accept_in_background(incoming)
        return await self._accept(incoming, deadline, crypto)

    def _request_kind(self, request: web.Request) -> bool:
        """True for an encrypted request; Rejected when it does not fit the configured mode."""
        encrypt_type = request.query.get("encrypt_type", "raw") or "raw"
        if encrypt_type not in ("raw", "aes"):
            raise Rejected(400, f"unknown encrypt_type {encrypt_type[:16]!r}")
        encrypted = encrypt_type == "aes"
        if encrypted and self.cfg.mode == "plain":
            raise Rejected(400, "encrypted request, but official_account.mode is plain")
        if not encrypted and self.cfg.mode == "safe":
            raise Rejected(400, "plain request, but official_account.mode is safe")
        return encrypted

    def _check_plain_signature(self, q: dict[str, str]) -> None:
        expected = plain_signature(self.cfg.token, q["timestamp"], q["nonce"])
        if not hmac.compare_digest(expected.encode(), q["signature"].lower().encode()):
            raise Rejected(403, "signature mismatch")

    def _decrypt(self, ciphertext: str) -> tuple[bytes, CallbackCrypto]:
        """The message and the key that opened it (the reply is encrypted with the same key)."""
        first: Rejected | None = None
        for crypto in self.cryptos:
            try:
                return crypto.decrypt(ciphertext), crypto
            except Rejected as exc:
                first = first or exc
        assert first is not None
        raise first

    async def _accept(self, incoming: Incoming, deadline: float, crypto: CallbackCrypto | None) -> web.Response:
        """Store the message, process it, answer with its reply if it is ready within the budget."""
        event = incoming.event
        assert event is not None
        return await callback_reply.answer_in_time(
            self, event, deadline, key=event.key, what="official account", log=log,
            fields={"event_key": event.key, "openid": incoming.openid},
            settled=lambda: self._finished(event.key), poll_seconds=POLL_SECONDS,
            answer=lambda: self._answer(incoming, crypto))

    async def _reply_state(self, event_key: str) -> tuple[str | None, str | None]:
        async with self.runtime.db.read_session() as session:
            return await store.reply_state(session, self.name, event_key)

    async def _finished(self, event_key: str) -> bool:
        """Is the message (processed by another process) finished, its reply kept?"""
        status, _ = await self._reply_state(event_key)
        return status in (INBOX_DONE, INBOX_FAILED)

    async def _answer(self, incoming: Incoming, crypto: CallbackCrypto | None) -> web.Response:
        """The passive reply once the message is finished ("success" for nothing to say); when it is not
        finished within the budget, the slow hint: the reply is kept, but it cannot be sent later."""
        assert incoming.event is not None
        event_key = incoming.event.key
        status, content = await self._reply_state(event_key)
        if status == INBOX_FAILED:
            log.warning("official account message failed for good; answering success", extra={"event_key": event_key})
            content = ""
        elif status != INBOX_DONE:
            slow = self.runtime.templates.raw("official_account.slow")
            log.info("official account reply not ready within the budget; it cannot be sent later",
                     extra={"event_key": event_key, "openid": incoming.openid,
                            "budget": self.cfg.reply_budget_seconds})
            return self._reply(incoming, slow, crypto) if slow else success()
        log.info("official account answer", extra={"event_key": event_key, "openid": incoming.openid,
                                                   "replied": bool(content)})
        return self._reply(incoming, content, crypto) if content else success()

    async def _accept_in_background(self, incoming: Incoming) -> web.Response:
        """An event nobody sees an answer to (unfollow): stored, acknowledged, processed in the background."""
        event = incoming.event
        assert event is not None
        try:
            inbox_id = await self.runtime.inbox.accept(event)
        except InboxUnavailable:
            return web.Response(status=503, text="busy")
        if inbox_id is None:
            log.info("duplicate official account callback", extra={"event_key": event.key, "openid": incoming.openid})
        else:
            log.info("official account unfollow", extra={"openid": incoming.openid, "event_key": event.key})
            self.runtime.inbox.process_soon(event)
        return success()

    def _reply(self, incoming: Incoming, content: str, crypto: CallbackCrypto | None) -> web.Response:
        """The passive text reply to the follower, encrypted when the request was."""
        xml = text_reply_xml(to_user=incoming.openid, from_user=incoming.account, content=fit(content))
        if crypto is not None:
            nonce = secrets.token_hex(8)
            ciphertext, signature, timestamp = crypto.encrypt(xml, nonce)
            xml = encrypted_reply_xml(ciphertext, signature, timestamp, nonce)
        return web.Response(text=xml, content_type="application/xml")

    # -- pipeline --------------------------------------------------------------------------------

    async def deliver(self, event: Event, replies: list[Reply]) -> None:
        """Keep the reply for the callback (or WeChat's retry of it) to answer with."""
        content = fit("\n\n".join(r.text for r in replies if r.text))
        async with self.runtime.db.session() as session:
            saved = await store.save_reply(session, event.key, content)
        if not saved:
            log.info("reply already kept for this message; this one is dropped",
                     extra={"event_key": event.key, "event_id": event.id})


# -- parsing and rendering -----------------------------------------------------------------------------


def parse_message(message: dict[str, object]) -> Incoming:
    """What a (decrypted) callback is; Rejected for a malformed one. Unknown kinds are IGNORED, not errors."""

    def field(key: str, required: bool = True) -> str:
        value = message.get(key)
        if not isinstance(value, str) or len(value) > MAX_ID or (required and not value):
            raise Rejected(400, f"missing or malformed {key}")
        return value

    openid, account, msg_type = field("FromUserName"), field("ToUserName"), field("MsgType")
    created = field("CreateTime", required=False)
    at = datetime.fromtimestamp(int(created), UTC) if created.isdigit() and int(created) < 2**32 else None
    if msg_type == "event":
        if at is None:
            raise Rejected(400, "event without a CreateTime")
        what = field("Event")
        # Events have no id: FromUserName + CreateTime (+ the event) identify a delivery.
        key = f"evt:{openid}:{created}:{what.lower()}"
        if what == "subscribe":
            return Incoming(GREETING, openid, account, ChatEntered("official_account", key, None, at,
                                                                   sender=Person(openid)))
        if what == "unsubscribe":
            return Incoming(LEFT, openid, account, MemberLeft(
                "official_account", key, DIRECT_SCOPE, at, members=[Person(openid)], scene="left"))
        return Incoming(IGNORED, openid, account, note=f"event {what[:32]}")
    text: str | None = None
    if msg_type == "text":
        content = message.get("Content")
        if not isinstance(content, str):
            raise Rejected(400, "text message without Content")
        text = content
    elif msg_type == "voice":
        recognition = message.get("Recognition")
        if isinstance(recognition, str) and recognition.strip():
            # Speech recognition ends sentences with punctuation: "签到。" is meant as the command 签到.
            text = recognition.strip().rstrip(SENTENCE_END)
    if text is None:
        if msg_type in UNREADABLE_TYPES:
            return Incoming(HINT, openid, account, note="official_account.unsupported")
        return Incoming(IGNORED, openid, account, note=f"MsgType {msg_type[:32]}")
    msg_id = field("MsgId")
    if not text.strip():
        return Incoming(HINT, openid, account, note="official_account.empty")
    event = TextMessage("official_account", f"msg:{msg_id}", None, at or datetime.now(UTC), sender=Person(openid),
                        text=text.strip(), mentioned=True)
    return Incoming(MESSAGE, openid, account, event)


def check_timestamp(timestamp: str, window_seconds: int, now: float | None = None) -> None:
    """Refuse a timestamp that is not a number, or further than the replay window from now (0: no window)."""
    if not timestamp.isdigit() or len(timestamp) > 12:
        raise Rejected(400, "timestamp is not a number")
    if window_seconds and abs((now or time.time()) - int(timestamp)) > window_seconds:
        raise Rejected(403, "timestamp outside the replay window")


def plain_signature(token: str, timestamp: str, nonce: str) -> str:
    """signature = sha1 of the sorted, concatenated token, timestamp and nonce (URL verification, plain mode)."""
    signer = WeChatSigner()
    signer.add_data(token, timestamp, nonce)
    return signer.signature


# Characters XML 1.0 cannot carry at all (a reply with one would be refused whole).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def cdata(text: str) -> str:
    """`text` as CDATA section(s): "]]>" inside is split across two sections."""
    return "<![CDATA[" + _NOT_XML.sub("", text).replace("]]>", "]]]]><![CDATA[>") + "]]>"


def text_reply_xml(*, to_user: str, from_user: str, content: str, created: int | None = None) -> str:
    """A passive text reply: to the follower's OpenID, from the account that received the message."""
    return (f"<xml><ToUserName>{cdata(to_user)}</ToUserName><FromUserName>{cdata(from_user)}</FromUserName>"
            f"<CreateTime>{created or int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
            f"<Content>{cdata(content)}</Content></xml>")


def encrypted_reply_xml(ciphertext: str, signature: str, timestamp: str, nonce: str) -> str:
    return (f"<xml><Encrypt>{cdata(ciphertext)}</Encrypt><MsgSignature>{cdata(signature)}</MsgSignature>"
            f"<TimeStamp>{timestamp}</TimeStamp><Nonce>{cdata(nonce)}</Nonce></xml>")


def success() -> web.Response:
    """The answer that tells WeChat the message arrived and no reply follows (it stops retrying)."""
    return web.Response(text="success", content_type="text/plain")


def fit(text: str, limit: int = CONTENT_LIMIT_BYTES) -> str:
    """Text cut to `limit` UTF-8 bytes (with an ellipsis), never inside a character."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[: limit - 3].decode(errors="ignore") + "…"
