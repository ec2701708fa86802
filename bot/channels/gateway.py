"""The gateway door: a signed JSON webhook in both directions, for platforms reached through third-party
gateways (personal WeChat groups through a wechaty bot, and anything else that can sign an HTTP request).

Protocol (docs/gateway.md is the reference):

- A gateway POSTs an event to `gateway.path` with `X-Qunbot-Gateway: <name>`, `X-Qunbot-Timestamp: <unix
  seconds>` and `X-Qunbot-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + raw body)>`. The
  name picks the secret; the signature is compared in constant time; a timestamp outside
  `replay_window_seconds` is refused, and within it the event's id makes a replay a duplicate.
- The event is written to the inbox (unique per gateway and event id, across processes), then processed.
  Replies ready within `reply_budget_seconds` come back in the response: {"id","replies","pending",
  "duplicate"}. Later replies and the bot's own posts (lottery results, scheduled posts) are rows of the
  outbox (storage/gateway.py), POSTed signed the same way to the gateway's outbound URL, retried with
  backoff, and recorded when they fail for good.
- Ids are the gateway's own. The bot stores groups and members as "<gateway>:<id>", so several gateways
  can share one bot without their ids meeting, and a post knows which gateway takes it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from aiohttp import web

from bot.channels.base import Capabilities, Channel, PostFailed
from bot.channels.callback_http import read_body
from bot.channels.wecom_crypto import Rejected
from bot.dispatcher import DIRECT_SCOPE
from bot.events import Event, MemberJoined, MemberLeft, Person, Reply, TextMessage
from bot.http import json_response
from bot.inbox import InboxUnavailable
from storage import gateway as store
from storage.db import utcnow
from storage.inbox import DONE as INBOX_DONE
from storage.inbox import FAILED as INBOX_FAILED
from storage.kv import DbFailureRecorder
from storage.replies import event_status

log = logging.getLogger("qunbot.gateway")

HEADER_GATEWAY = "X-Qunbot-Gateway"
HEADER_TIMESTAMP = "X-Qunbot-Timestamp"
HEADER_SIGNATURE = "X-Qunbot-Signature"
EVENT_TYPES = ("message", "join", "leave")
ROLES = ("owner", "admin", "member")
JOIN_SCENES = ("invited", "link", "qrcode")
LEAVE_SCENES = ("left", "removed")
MAX_EVENT_ID = 128
# Group and user ids are stored as "<gateway>:<id>" in 128 characters; gateway names have at most 32.
MAX_ID = 95
MAX_NAME = 128
MAX_TEXT = 4000
MAX_USERS = 200
# An event's "time" may lag (a gateway's backlog after downtime), but not by more than this.
MAX_EVENT_AGE = timedelta(days=7)
MAX_EVENT_AHEAD = timedelta(minutes=5)
# Outbound answers worth another attempt; any other non-2xx answer is final.
RETRY_STATUSES = frozenset({408, 425, 429})
SIGNATURE_FORMAT = re.compile(r"sha256=[0-9a-f]{64}")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Qunbot-Signature value of a request: "sha256=" + hex HMAC-SHA256(secret, timestamp + "." + body)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def secrets_of(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


@dataclass
class Parsed:
    """An event that passed the checks: what goes to the inbox, or else (a message of nothing but
    @-mentions) a hint to answer without storing anything, or nothing at all."""

    gateway: str
    event_id: str
    event: Event | None = None
    hint: str | None = None


@dataclass
class InlineSlot:
    """A response waiting for its event's replies. `deliver` takes it (synchronously, so the request and
    deliver agree on who has it) and resolves `handed` once the replies are recorded as inline."""

    handed: asyncio.Future[list[dict[str, Any]] | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())


class GatewayChannel(Channel):
    """Signed JSON events in from gateways; replies in the response or signed POSTs to their outbound URL."""

    name = "gateway"
    title = "Gateway (personal WeChat and others)"
    reaches = "a bridge's signed JSON events: group messages, 1:1 chats, joins and leaves"
    # What the protocol supports; posting on its own needs an outbound URL (see __init__).
    capabilities = Capabilities(
        can_reply=True,
        can_post_proactively=True,
        sees_joins=True,  # the gateway reports joins and leaves as events
        posts_welcome=True,  # the welcome is a reply to the join event (inline or outbound)
        welcome_template=False,
        greets=False,  # no "opened a 1:1 chat" event in the protocol
        mentions=True,  # replies carry "mentions" (the gateway's user ids); the bridge renders them
        markdown=False,  # personal WeChat shows plain text; the "markdown" flag is passed on as is
        images=False,
    )

    def __init__(self, runtime: Any) -> None:
        super().__init__(runtime)
        self.cfg = runtime.config.gateway
        if not self.cfg.outbound_urls:
            # No gateway takes anything outside a response: this process cannot post on its own.
            self.capabilities = dataclasses.replace(type(self).capabilities, can_post_proactively=False)
        self.failures = DbFailureRecorder(runtime.db)
        self._slots: dict[str, InlineSlot] = {}
        self._wake = asyncio.Event()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(self.cfg.path, self.receive)

    async def start(self) -> None:
        self.spawn(self._send_forever(), name="gateway-outbox")

    # -- inbound ---------------------------------------------------------------------------------

    async def receive(self, request: web.Request) -> web.Response:
        deadline = asyncio.get_running_loop().time() + self.cfg.reply_budget_seconds
        try:
            gateway, secrets, timestamp, signature = self._headers(request)
            body = await read_body(request, self.cfg.max_body_bytes, self.cfg.body_timeout_seconds)
            if not any(hmac.compare_digest(sign(s, timestamp, body), signature) for s in secrets):
                raise Rejected(401, "signature mismatch")
            parsed = parse_event(gateway, json_object(body), now=utcnow())
        except Rejected as exc:
            claimed = request.headers.get(HEADER_GATEWAY, "")[:32] or None  # as named, known or not
            log.warning("gateway event rejected", extra={"gateway": claimed, "status": exc.status,
                                                         "reason": exc.reason, "peer": request.remote})
            response = json_response({"error": exc.reason}, status=exc.status)
            if exc.status in (408, 413):
                response.force_close()  # the rest of the body is not worth reading
            return response
        if parsed.event is None:
            log.info("gateway message without words; not stored", extra={"gateway": gateway,
                                                                          "gateway_event": parsed.event_id})
            hints = [reply_json(Reply(self.runtime.templates.raw(parsed.hint)), gateway)] if parsed.hint else []
            return self._answer(parsed.event_id, hints, pending=False)
        event = parsed.event
        try:
            inbox_id = await self.runtime.inbox.accept(event)
        except InboxUnavailable as exc:
            log.warning("gateway event not stored", extra={"gateway": gateway, "gateway_event": parsed.event_id,
                                                           "error": str(exc)})
            return json_response({"error": "database unavailable, send the event again later"}, status=503)
        fields = {"gateway": gateway, "gateway_event": parsed.event_id, "event_id": inbox_id,
                  "event_type": event.type_name, "group": event.group}
        if inbox_id is None:
            log.info("gateway event is a duplicate", extra=fields)
            return await self._answer_duplicate(event, parsed.event_id)
        log.info("gateway event accepted", extra=fields)
        return await self._process(event, parsed.event_id, deadline)

    def _headers(self, request: web.Request) -> tuple[str, list[str], str, str]:
        """The gateway's name, its secrets, the timestamp and the signature, checked before the body is read."""
        gateway = request.headers.get(HEADER_GATEWAY, "").strip()
        timestamp = request.headers.get(HEADER_TIMESTAMP, "").strip()
        signature = request.headers.get(HEADER_SIGNATURE, "").strip().lower()
        for header, value in ((HEADER_GATEWAY, gateway), (HEADER_TIMESTAMP, timestamp),
                              (HEADER_SIGNATURE, signature)):
            if not value:
                raise Rejected(401, f"missing header {header}")
        secret = self.cfg.secrets.get(gateway)
        if secret is None:
            raise Rejected(401, f"unknown gateway in {HEADER_GATEWAY}")
        if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
            raise Rejected(401, f"{HEADER_TIMESTAMP} must be unix seconds")
        if abs(time.time() - int(timestamp)) > self.cfg.replay_window_seconds:
            raise Rejected(401, f"{HEADER_TIMESTAMP} is outside the replay window of "
                                f"{self.cfg.replay_window_seconds} s (check the gateway's clock)")
        if not SIGNATURE_FORMAT.fullmatch(signature):
            raise Rejected(401, f"{HEADER_SIGNATURE} must be sha256=<64 hex digits>")
        return gateway, secrets_of(secret), timestamp, signature

    async def _process(self, event: Event, event_id: str, deadline: float) -> web.Response:
        """Process the accepted event; answer with its replies if they are recorded within the budget."""
        slot = InlineSlot() if self.cfg.reply_budget_seconds > 0 else None
        if slot is not None:
            self._slots[event.key] = slot
        task = self.work_on(event.key, self.runtime.inbox.process(event), name=f"gateway-{event.id}")
        if slot is None:
            return self._answer(event_id, [], pending=True)
        try:
            done, _ = await asyncio.wait({task}, timeout=max(0.0, deadline - asyncio.get_running_loop().time()))
        except asyncio.CancelledError:
            # The request went away (if the server cancels handlers): replies still on their way go out.
            if self._slots.get(event.key) is slot:
                del self._slots[event.key]
            raise
        if self._slots.pop(event.key, None) is slot:
            # deliver never took the slot: nothing to say in time (or at all), and anything later goes out.
            pending = not done or task.cancelled() or task.result() is None
            return self._answer(event_id, [], pending=pending)
        replies = await slot.handed  # deliver took it; it resolves as soon as the replies are recorded
        return self._answer(event_id, replies or [], pending=replies is None)

    async def _answer_duplicate(self, event: Event, event_id: str) -> web.Response:
        """A retried event gets the replies the original response carried, so a lost response costs nothing."""
        try:
            async with self.runtime.db.read_session() as session:
                rows = await store.inline_replies(session, event.key)
                status = await event_status(session, self.name, event.key)
        except Exception as exc:
            log.warning("gateway reply state unavailable", extra={"gateway_event": event_id, "error": str(exc)})
            return json_response({"error": "database unavailable, send the event again later"}, status=503)
        return self._answer(event_id, [json.loads(r.payload) for r in rows],
                            pending=status not in (INBOX_DONE, INBOX_FAILED), duplicate=True)

    @staticmethod
    def _answer(event_id: str, replies: list[dict[str, Any]], *, pending: bool, duplicate: bool = False) -> web.Response:
        return json_response({"id": event_id, "replies": replies, "pending": pending, "duplicate": duplicate})

    # -- replies and posts -------------------------------------------------------------------------

    async def deliver(self, event: Event, replies: list[Reply]) -> None:
        """Record the event's replies: inline if its response still waits for them, else for the outbound URL."""
        gateway, event_id = event.key.split(":", 1)
        if event.group is not None:
            kind, target = store.GROUP, local_id(event.group, gateway)
        else:
            kind, target = store.USER, local_id(event.sender.user, gateway)  # type: ignore[attr-defined]
        slot = self._slots.pop(event.key, None)  # taken before any await: the request now waits for it
        rendered = [reply_json(r, gateway) for r in replies]
        status, error = (store.INLINE, None) if slot is not None else self._outbound_status(gateway)
        rows = [self._row(gateway, kind, target, payload, status, error, event_key=event.key, position=n,
                          in_reply_to=event_id) for n, payload in enumerate(rendered)]
        try:
            async with self.runtime.db.session() as session:
                await store.add(session, rows)
        except BaseException:
            if slot is not None:
                slot.handed.set_result(None)
            raise
        if slot is not None:
            slot.handed.set_result(rendered)
            log.info("gateway replies inline", extra={"gateway": gateway, "gateway_event": event_id,
                                                      "event_id": event.id, "replies": len(rows)})
            return
        await self._queued(rows, status, error, event_id=event.id)

    async def post(self, group: str, replies: list[Reply]) -> None:
        """Post on the bot's own initiative: into "<gateway>:<group id>", or (the 1:1 scope) to each
        mentioned "<gateway>:<user id>" directly.

        Returns once the messages are queued in the outbox (the sender delivers them, retrying, and records
        a failure); raises PostFailed(permanent) for a group whose gateway takes no posts (no outbound URL,
        or not configured). In the 1:1 scope such recipients are recorded as failed and the others queued.
        """
        rows: list[dict[str, object]] = []
        if group == DIRECT_SCOPE:
            for reply in replies:
                for user in reply.mentions:
                    gateway, _, target = user.partition(":")
                    status, error = self._outbound_status(gateway)
                    payload = reply_json(Reply(reply.text, markdown=reply.markdown), gateway)
                    rows.append(self._row(gateway, store.USER, target, payload, status, error))
            if not rows:
                log.info("gateway post to the 1:1 scope names nobody; nothing sent")
                return
        else:
            gateway, _, target = group.partition(":")
            status, error = self._outbound_status(gateway) if target else (store.FAILED, "not a gateway group id")
            if status == store.FAILED:
                log.warning("gateway post refused", extra={"gateway": gateway, "group": group, "reason": error})
                raise PostFailed(error or "cannot post", permanent=True)
            rows = [self._row(gateway, store.GROUP, target, reply_json(r, gateway), status, error) for r in replies]
        async with self.runtime.db.session() as session:
            await store.add(session, rows)
        by_gateway: dict[str, list[dict[str, object]]] = {}
        for row in rows:
            by_gateway.setdefault(str(row["gateway"]), []).append(row)
        for same in by_gateway.values():  # one gateway's rows share a status
            await self._queued(same, str(same[0]["status"]), same[0]["last_error"], event_id=None)  # type: ignore[arg-type]

    def _outbound_status(self, gateway: str) -> tuple[str, str | None]:
        """Pending if the gateway has an outbound URL; otherwise failed at once, with the reason."""
        if gateway not in self.cfg.secrets:
            return store.FAILED, f"gateway {gateway!r} is not configured"
        if not self.cfg.outbound_urls.get(gateway):
            return store.FAILED, f"gateway {gateway!r} has no outbound URL (gateway.outbound_urls)"
        return store.PENDING, None

    @staticmethod
    def _row(gateway: str, kind: str, target: str, payload: dict[str, Any], status: str, error: str | None,
             **extra: object) -> dict[str, object]:
        return {"message_id": uuid.uuid4().hex, "gateway": gateway, "target_kind": kind, "target": target,
                "payload": json.dumps(payload, ensure_ascii=False), "status": status, "last_error": error,
                "finished_at": utcnow() if status in (store.INLINE, store.FAILED) else None, **extra}

    async def _queued(self, rows: list[dict[str, object]], status: str, error: str | None, *,
                      event_id: int | None) -> None:
        if not rows:
            return
        gateway = str(rows[0]["gateway"])
        if status == store.PENDING:
            log.info("gateway messages queued", extra={"gateway": gateway, "event_id": event_id,
                                                       "messages": len(rows)})
            self._wake.set()
            return
        log.warning("gateway messages cannot be sent", extra={"gateway": gateway, "event_id": event_id,
                                                              "messages": len(rows), "reason": error})
        for row in rows:
            await self.failures.record_api_failure(api=f"gateway/{gateway}", errcode=None, errmsg=error or "",
                                                   attempts=0, detail=f"message_id={row['message_id']}")

    # -- outbound ----------------------------------------------------------------------------------

    async def _send_forever(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.cfg.sweep_interval_seconds)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.send_due()
            except Exception:
                log.exception("gateway outbox run failed")

    async def send_due(self) -> int:
        """Send every outbox row that is due (claimed one per chat at a time, so each chat keeps its order).
        Every process runs this; a claim decides who sends a row. How many rows this call handled."""
        handled = 0
        lease = timedelta(seconds=self.cfg.outbound_timeout_seconds + 30)
        while rows := await store.claim_due(self.runtime.db, now=utcnow(), lease=lease):
            await asyncio.gather(*(self._send(row) for row in rows))
            handled += len(rows)
        return handled

    async def _send(self, row: store.GatewayOutbox) -> None:
        extra: dict[str, object] = {"gateway": row.gateway, "message_id": row.message_id, "outbox_id": row.id,
                                    "attempt": row.attempts}
        try:
            outcome, status, detail = await self._post_signed(row)
        except Exception as exc:  # a bug must not leave the row claimed until its lease runs out
            log.exception("gateway outbound send crashed", extra=extra)
            outcome, status, detail = "retry", None, f"{type(exc).__name__}: {exc}"
        extra.update(outcome=outcome, http_status=status, detail=detail)
        if outcome == "sent":
            if await store.settle(self.runtime.db, row, status=store.DELIVERED):
                log.info("gateway message delivered", extra=extra)
            return
        if outcome == "retry" and row.attempts < self.cfg.outbound_max_attempts:
            delay = min(self.cfg.outbound_backoff_seconds * 2 ** (row.attempts - 1),
                        self.cfg.outbound_backoff_max_seconds)
            if await store.settle(self.runtime.db, row, status=store.PENDING, error=detail,
                                  retry_at=utcnow() + timedelta(seconds=delay)):
                log.warning("gateway outbound send failed; retrying", extra={**extra, "retry_in": delay})
            return
        if await store.settle(self.runtime.db, row, status=store.FAILED, error=detail):
            log.warning("gateway outbound send failed for good", extra=extra)
            await self.failures.record_api_failure(api=f"gateway/{row.gateway}", errcode=status, errmsg=detail,
                                                   attempts=row.attempts,
                                                   detail=f"message_id={row.message_id} outbox_id={row.id}")

    async def _post_signed(self, row: store.GatewayOutbox) -> tuple[str, int | None, str]:
        """POST one row to its gateway: ("sent" | "retry" | "failed", HTTP status, detail)."""
        url = self.cfg.outbound_urls.get(row.gateway)
        secret = self.cfg.secrets.get(row.gateway)
        if not url or not secret:
            return "failed", None, f"gateway {row.gateway!r} has no outbound URL or secret any more"
        http = self.runtime.http
        if http is None:
            return "retry", None, "http client not started"
        body = json.dumps(outbound_json(row), ensure_ascii=False, separators=(",", ":")).encode()
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json; charset=utf-8", HEADER_GATEWAY: row.gateway,
                   HEADER_TIMESTAMP: timestamp, HEADER_SIGNATURE: sign(secrets_of(secret)[0], timestamp, body)}
        try:
            async with http.post(url, data=body, headers=headers, allow_redirects=False,
                                 timeout=aiohttp.ClientTimeout(total=self.cfg.outbound_timeout_seconds)) as resp:
                status = resp.status
                answer = (await resp.content.read(300)).decode(errors="replace")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return "retry", None, f"{type(exc).__name__}: {exc}"[:500]
        if 200 <= status < 300:
            return "sent", status, ""
        detail = f"HTTP {status}: {answer.strip()[:200]}"
        if status >= 500 or status in RETRY_STATUSES:
            return "retry", status, detail
        return "failed", status, detail


# -- the protocol, in and out ------------------------------------------------------------------------------


def local_id(stored: str, gateway: str) -> str:
    """A stored "<gateway>:<id>" as the gateway knows it."""
    prefix = gateway + ":"
    return stored[len(prefix):] if stored.startswith(prefix) else stored


def reply_json(reply: Reply, gateway: str) -> dict[str, Any]:
    """A reply as the gateway gets it: mentions in its own user ids (other gateways' users are left out)."""
    prefix = gateway + ":"
    mentions = [m[len(prefix):] for m in reply.mentions if m.startswith(prefix)]
    return {"text": reply.text, "mentions": mentions, "markdown": reply.markdown}


def outbound_json(row: store.GatewayOutbox) -> dict[str, Any]:
    """The body of an outbound POST."""
    payload = json.loads(row.payload)
    return {
        "id": row.message_id,
        "type": "message",
        "gateway": row.gateway,
        "group": {"id": row.target} if row.target_kind == store.GROUP else None,
        "user": row.target if row.target_kind == store.USER else None,
        "in_reply_to": row.in_reply_to,
        "text": payload["text"],
        "mentions": payload["mentions"],
        "markdown": payload["markdown"],
        "time": int(row.created_at.timestamp()),
    }


def json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        raise Rejected(400, "body is not valid JSON") from None
    if not isinstance(value, dict):
        raise Rejected(400, "body is not a JSON object")
    return value


def parse_event(gateway: str, data: dict[str, Any], *, now: datetime) -> Parsed:
    """Check an event's fields (Rejected(400) naming the first bad one) and build the bot's event."""
    raw_id = data.get("id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int) or not str(raw_id).strip():
        raise Rejected(400, "field 'id' is required: a unique string per event")
    event_id = str(raw_id).strip()
    if len(event_id) > MAX_EVENT_ID:
        raise Rejected(400, f"field 'id' is longer than {MAX_EVENT_ID} characters")
    kind = data.get("type")
    if kind not in EVENT_TYPES:
        got = f" (got {str(kind)[:32]!r})" if kind is not None else ""
        raise Rejected(400, f"field 'type' must be one of {', '.join(EVENT_TYPES)}{got}")
    at = _time(data.get("time"), now)
    group, group_name = _group(data.get("group"), gateway)
    key = f"{gateway}:{event_id}"

    def ns(local: str) -> str:
        return f"{gateway}:{local}"

    if kind == "message":
        user = _id(data, "user", "user")
        name = _text(data, "name", MAX_NAME) or user
        role = data.get("role")
        if role is not None and role not in ROLES:
            raise Rejected(400, f"field 'role' must be one of {', '.join(ROLES)}")
        text = data.get("text")
        if not isinstance(text, str):
            raise Rejected(400, "field 'text' is required: a string")
        if len(text) > MAX_TEXT:
            raise Rejected(400, f"field 'text' is longer than {MAX_TEXT} characters")
        mentions_bot = data.get("mentions_bot", group is None)
        if not isinstance(mentions_bot, bool):
            raise Rejected(400, "field 'mentions_bot' must be true or false")
        if not _without_mentions(text):
            # Nothing but @-mentions: a hint if the bot was addressed, otherwise nothing at all.
            return Parsed(gateway, event_id, hint="gateway.empty" if mentions_bot else None)
        return Parsed(gateway, event_id, TextMessage(
            "gateway", key, group, at, group_name=group_name, sender=Person(ns(user), name, role=role),
            text=text.strip(), mentioned=mentions_bot))
    if group is None:
        raise Rejected(400, f"field 'group' is required for {kind} events")
    people = _users(data.get("users"), gateway)
    if kind == "join":
        inviter = _id(data, "inviter", "inviter", required=False)
        scene = data.get("scene")
        if scene is not None and scene not in JOIN_SCENES:
            raise Rejected(400, f"field 'scene' must be one of {', '.join(JOIN_SCENES)} for join events")
        return Parsed(gateway, event_id, MemberJoined(
            "gateway", key, group, at, group_name=group_name, members=people,
            inviter=ns(inviter) if inviter else None, scene=scene or ("invited" if inviter else None)))
    scene = data.get("scene")
    if scene is not None and scene not in LEAVE_SCENES:
        raise Rejected(400, f"field 'scene' must be one of {', '.join(LEAVE_SCENES)} for leave events")
    return Parsed(gateway, event_id, MemberLeft("gateway", key, group, at, group_name=group_name, members=people,
                                                scene=scene))


def _without_mentions(text: str) -> str:
    words = text.split()
    while words and words[0].startswith("@"):
        words.pop(0)
    return " ".join(words)


def _time(value: Any, now: datetime) -> datetime:
    if value is None:
        return now
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Rejected(400, "field 'time' must be unix seconds (a number)")
    try:
        at = datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        raise Rejected(400, "field 'time' must be unix seconds (a number)") from None
    if not now - MAX_EVENT_AGE <= at <= now + MAX_EVENT_AHEAD:
        raise Rejected(400, "field 'time' is more than 7 days ago or in the future")
    return at


def _group(value: Any, gateway: str) -> tuple[str | None, str | None]:
    """("<gateway>:<group id>", name), or (None, None) for a 1:1 chat."""
    if value is None:
        return None, None
    if not isinstance(value, dict):
        raise Rejected(400, "field 'group' must be an object {\"id\", \"name\"} or null for a 1:1 chat")
    group = _id(value, "id", "group.id")
    return f"{gateway}:{group}", _text(value, "name", MAX_NAME, label="group.name") or None


def _users(value: Any, gateway: str) -> list[Person]:
    if not isinstance(value, list) or not value or len(value) > MAX_USERS:
        raise Rejected(400, f"field 'users' must be a list of 1 to {MAX_USERS} objects {{\"id\", \"name\"}}")
    people = []
    for n, item in enumerate(value):
        if not isinstance(item, dict):
            raise Rejected(400, f"field 'users[{n}]' must be an object {{\"id\", \"name\"}}")
        user = _id(item, "id", f"users[{n}].id")
        people.append(Person(f"{gateway}:{user}", _text(item, "name", MAX_NAME, label=f"users[{n}].name") or user))
    return people


def _id(holder: dict[str, Any], key: str, label: str, *, required: bool = True) -> str:
    value = holder.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip():
        raise Rejected(400, f"field '{label}' is required: a non-empty string")
    if len(value) > MAX_ID:
        raise Rejected(400, f"field '{label}' is longer than {MAX_ID} characters")
    if any(ord(c) < 32 for c in value):
        raise Rejected(400, f"field '{label}' contains control characters")
    return value.strip()


def _text(holder: dict[str, Any], key: str, limit: int, *, label: str | None = None) -> str:
    value = holder.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Rejected(400, f"field '{label or key}' must be a string")
    if len(value) > limit:
        raise Rejected(400, f"field '{label or key}' is longer than {limit} characters")
    return value.strip()
