"""The WeCom smart bot (智能机器人) door in long-connection mode: one WebSocket to WeCom, no public URL.

The bot dials `wss://openws.work.weixin.qq.com`, subscribes with its BotID and Secret, and pings every
heartbeat_seconds. WeCom pushes the same JSON the HTTP callback carries, unencrypted, as frames
`{"cmd","headers":{"req_id"},"body"}`; answers to the bot's own frames are acks `{"headers":{"req_id"},
"errcode","errmsg"}` (docs/platform.md §5; ack shape as in WeCom's own SDK, aibot-node-sdk).

- **One connection per bot.** WeCom keeps one live connection per bot and kicks the older one with a
  `disconnected_event`. Among the processes on one database, the holder of a lease row (renewed with
  every heartbeat) connects; the others stand by and take the lease only once it expired (or was
  released on shutdown), so they never fight over the connection. A holder that dies is replaced within
  lease_seconds + standby_poll_seconds.
- **Inbound.** Messages (text, mixed, voice; quotes are context only) and enter_chat events are read by
  the HTTP door's parser, accepted into the inbox under this door's name (a redelivered frame with the
  same msgid stops there), and processed in the background.
- **Outbound, through the outbox.** Each inbound frame gets its reply row before it is accepted; the
  handlers' answer fills it, and the holder sends it: `aibot_respond_msg` (a finished stream) or
  `aibot_respond_welcome_msg` (text, within 5 s of enter_chat) with the frame's req_id while the frame's
  connection lives; after a reconnect (or if WeCom refuses the req_id) the same text goes to the chat
  with `aibot_send_msg` instead. Proactive posts (`post`) are rows too, so any process can post and the
  holder sends. A frame that did not reach WeCom because the connection dropped stays in the outbox and
  leaves after the reconnect; a frame sent but never acknowledged is sent again (at least once).

Unconfirmed: whether a req_id stays answerable on a new connection (the door does not try); the exact
errcodes of a refused subscribe; whether `aibot_send_msg` reaches a user who never wrote to the bot.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
import time
from datetime import timedelta
from typing import Any

import aiohttp

from bot.channels.base import Capabilities, Channel
from bot.channels.smartbot import (
    EMPTY,
    GREETING,
    IGNORED,
    REFRESH,
    UNSUPPORTED,
    fit,
    parse_callback,
    stream_body,
    stream_id_for,
)
from bot.channels.wecom_crypto import Rejected
from bot.dispatcher import DIRECT_SCOPE
from bot.events import Event, Reply
from storage import smartbot_ws as store
from storage.db import utcnow
from storage.inbox import DONE as INBOX_DONE
from storage.inbox import FAILED as INBOX_FAILED
from storage.kv import DbFailureRecorder
from storage.replies import event_status

log = logging.getLogger("qunbot.smartbot_ws")

SUBSCRIBE, PING = "aibot_subscribe", "ping"
MSG_CALLBACK, EVENT_CALLBACK = "aibot_msg_callback", "aibot_event_callback"
RESPOND, RESPOND_WELCOME, SEND = "aibot_respond_msg", "aibot_respond_welcome_msg", "aibot_send_msg"
# Unanswered pings after which the connection counts as dead.
MISSED_ACKS_LIMIT = 2
# WeCom takes a welcome within 5 s of enter_chat; later, the greeting goes out as a post.
WELCOME_WINDOW = timedelta(seconds=4.5)
# Sends WeCom never acknowledged are tried this many times in all (each may have arrived: at least once).
SEND_ATTEMPTS = 3
SEND_CONCURRENCY = 8
OUTBOX_BATCH = 100
# A reply row whose message never reached the inbox is given up after this long.
NEVER_ACCEPTED = timedelta(seconds=60)
MAX_REQ_ID = 128
# Why a connection ended.
LOST, KICKED, REFUSED, LEASE_LOST = "lost", "kicked", "refused", "lease_lost"


class LinkLost(Exception):
    """The WebSocket closed before the frame was written or acknowledged."""


class AckTimeout(Exception):
    """WeCom did not acknowledge a frame in time."""


def new_req_id(cmd: str) -> str:
    """A fresh req_id for a frame of the bot's own: the command, milliseconds, and randomness."""
    return f"{cmd}_{int(time.time() * 1000)}_{secrets.token_hex(4)}"


class Link:
    """One WebSocket to WeCom: the acks awaited on it and its heartbeat state."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, conn_id: str) -> None:
        self.ws = ws
        self.conn_id = conn_id
        self.acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.pings: set[str] = set()
        self.missed = 0
        # A ping was answered: the connection worked (the reconnect backoff starts over after it).
        self.stable = False
        # WeCom said a newer connection took the bot over.
        self.kicked = False
        self.lost = False

    @property
    def closed(self) -> bool:
        return self.lost or self.ws.closed

    async def send(self, frame: dict[str, Any]) -> None:
        if self.closed:
            raise LinkLost("connection closed")
        try:
            await self.ws.send_str(json.dumps(frame, ensure_ascii=False, separators=(",", ":")))
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            raise LinkLost(f"{type(exc).__name__}: {exc}") from exc

    async def request(self, frame: dict[str, Any], ack_within: float) -> dict[str, Any]:
        """Send a frame and wait for WeCom's ack (the frame with the same req_id)."""
        req_id = frame["headers"]["req_id"]
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.acks[req_id] = future
        try:
            await self.send(frame)
            try:
                return await asyncio.wait_for(future, ack_within)
            except TimeoutError:
                raise AckTimeout(f"no ack within {ack_within:g} s") from None
        finally:
            if self.acks.get(req_id) is future:
                del self.acks[req_id]

    def acknowledge(self, req_id: str, frame: dict[str, Any]) -> bool:
        future = self.acks.get(req_id)
        if future is None or future.done():
            return False
        future.set_result(frame)
        return True

    def fail_pending(self) -> None:
        self.lost = True
        for future in self.acks.values():
            if not future.done():
                future.set_exception(LinkLost("connection closed before the ack"))
                future.exception()  # nobody may be waiting any more; don't warn about it

    async def close(self) -> None:
        self.fail_pending()
        if not self.ws.closed:
            try:
                await asyncio.wait_for(self.ws.close(), 2)
            except (TimeoutError, ConnectionError, aiohttp.ClientError):
                pass


class SmartbotWsChannel(Channel):
    """Smart bot long connection: @-mentions in groups, 1:1 messages, enter_chat, and proactive posts."""

    name = "smartbot_ws"
    title = "WeCom smart bot, long connection"
    reaches = "@-mentions in groups, 1:1 chats"
    capabilities = Capabilities(
        can_reply=True,  # aibot_respond_msg with the frame's req_id, or aibot_send_msg after a reconnect
        can_post_proactively=True,  # aibot_send_msg to a group chatid, or a userid for a 1:1 chat
        sees_joins=False,  # no group join events reach a smart bot; enter_chat is a 1:1 event
        posts_welcome=False,
        welcome_template=False,
        greets=True,  # enter_chat, answered with aibot_respond_welcome_msg
        mentions=False,  # unconfirmed for smart bot markdown: names are written as text
        markdown=True,
        images=False,
    )

    def __init__(self, runtime: Any) -> None:
        super().__init__(runtime)
        self.cfg = runtime.config.smartbot_ws
        self.bot_id: str = self.cfg.bot_id
        # Unique per channel, not per process: two runtimes in one process are two instances too.
        self.instance = f"{runtime.instance[:110]}:{secrets.token_hex(4)}"
        self.failures = DbFailureRecorder(runtime.db)
        # The subscribed connection, while this process holds it.
        self.link: Link | None = None
        # starting, standby, connecting, connected, backoff, stopped: for logs, tests and operators.
        self.state = "starting"
        self.holds_lease = False
        self._http: aiohttp.ClientSession | None = None
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(SEND_CONCURRENCY)
        self._stopping = False
        self._last_sweep = 0.0
        # Loop time until which the lease surely stays ours (its last renewal + lease_seconds).
        self._lease_until = 0.0

    @property
    def connected(self) -> bool:
        """This process holds a subscribed connection."""
        return self.link is not None and not self.link.closed

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        # Its own session: the runtime's has a total timeout, which would cut a long-lived WebSocket.
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=self.cfg.connect_timeout_seconds))
        self.spawn(self._run(), name="smartbot-ws-connection")
        self.spawn(self._drain_forever(), name="smartbot-ws-outbox")

    async def stop(self) -> None:
        self._stopping = True
        link = self.link
        if link is not None and not link.closed:
            try:
                # What the handlers answered before shutdown still goes out on this connection.
                await asyncio.wait_for(self._flush(link), min(self.runtime.config.server.shutdown_timeout_seconds, 5))
            except TimeoutError:
                log.warning("smartbot_ws stop: outbox not empty; the next holder sends the rest")
            except Exception:
                log.exception("smartbot_ws stop: outbox flush failed; the next holder sends the rest")
        await self.cancel_tasks()
        if link is not None:
            await link.close()
        if self.holds_lease:
            try:
                # Released, so a standby takes over at its next poll instead of after the lease expires.
                await store.release_lease(self.runtime.db, self.bot_id, self.instance)
            except Exception as exc:
                log.warning("smartbot_ws lease not released; it expires", extra={"error": str(exc)})
            self.holds_lease = False
        if self._http is not None:
            await self._http.close()
        self.state = "stopped"

    # -- the connection ----------------------------------------------------------------------------

    async def _run(self) -> None:
        """Hold the lease and the connection, or stand by; reconnect with backoff."""
        attempt = 0
        while not self._stopping:
            try:
                held = await store.take_lease(self.runtime.db, self.bot_id, self.instance, self.cfg.lease_seconds)
            except Exception as exc:
                log.warning("smartbot_ws lease unavailable", extra={"error": str(exc)})
                held = False
            if not held:
                if self.state != "standby":
                    log.info("smartbot_ws standing by: another instance holds the connection",
                             extra={"instance": self.instance})
                self.holds_lease = False
                self.state = "standby"
                await asyncio.sleep(self.cfg.standby_poll_seconds)
                continue
            self.holds_lease = True
            self._lease_until = asyncio.get_running_loop().time() + self.cfg.lease_seconds
            self.state = "connecting"
            outcome, stable = await self._connect_and_serve()
            if self._stopping:
                break
            if stable:
                attempt = 0
            if outcome == LEASE_LOST:
                continue  # another instance has it now: stand by
            if outcome == KICKED:
                if await self._another_holder():
                    log.info("smartbot_ws connection taken over by another instance; standing by",
                             extra={"instance": self.instance})
                    continue
                delay = self.cfg.backoff_max_seconds
                log.warning("smartbot_ws kicked by a connection outside this database's instances (another "
                            "deployment of the same bot?); waiting before reconnecting",
                            extra={"delay": round(delay, 3)})
            else:
                if outcome == REFUSED:
                    # Let an instance with corrected settings try; the backoff keeps this one from hammering.
                    await self._release_quietly()
                delay = self.backoff(attempt)
                attempt += 1
                log.info("smartbot_ws reconnecting", extra={"delay": round(delay, 3), "attempt": attempt,
                                                            "after": outcome})
            self.state = "backoff"
            await asyncio.sleep(delay)

    def backoff(self, attempt: int) -> float:
        """The pause before reconnect `attempt` (0-based): doubling from min to max, minus up to jitter."""
        base = min(self.cfg.backoff_max_seconds, self.cfg.backoff_min_seconds * 2 ** min(attempt, 30))
        return base * (1 - self.cfg.backoff_jitter * random.random())

    async def _another_holder(self) -> bool:
        try:
            lease = await store.lease_of(self.runtime.db, self.bot_id)
        except Exception:
            return False
        return lease is not None and lease.instance_id != self.instance and lease.expires_at > utcnow()

    async def _release_quietly(self) -> None:
        try:
            await store.release_lease(self.runtime.db, self.bot_id, self.instance)
            self.holds_lease = False
        except Exception as exc:
            log.warning("smartbot_ws lease not released", extra={"error": str(exc)})

    async def _connect_and_serve(self) -> tuple[str, bool]:
        """One connection: open, subscribe, serve until it ends; (why it ended, whether it was stable)."""
        assert self._http is not None
        try:
            ws = await asyncio.wait_for(
                self._http.ws_connect(self.cfg.url, autoping=True, max_msg_size=self.cfg.max_frame_bytes),
                self.cfg.connect_timeout_seconds)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("smartbot_ws connect failed", extra={"url": self.cfg.url, "error": f"{type(exc).__name__}: {exc}"})
            return LOST, False
        link = Link(ws, secrets.token_hex(8))
        reader = asyncio.get_running_loop().create_task(self._read(link), name="smartbot-ws-reader")
        try:
            frame = {"cmd": SUBSCRIBE, "headers": {"req_id": new_req_id(SUBSCRIBE)},
                     "body": {"bot_id": self.bot_id, "secret": self.cfg.secret}}
            try:
                ack = await link.request(frame, self.cfg.ack_timeout_seconds)
            except (LinkLost, AckTimeout) as exc:
                log.warning("smartbot_ws subscribe got no answer", extra={"error": str(exc)})
                return (KICKED if link.kicked else LOST), False
            if ack.get("errcode") != 0:
                errcode = ack.get("errcode")
                errmsg = str(ack.get("errmsg", ""))[:200]
                log.error("smartbot_ws subscribe refused: check smartbot_ws.bot_id and QUNBOT_SMARTBOT_WS_SECRET",
                          extra={"bot_id": self.bot_id, "errcode": errcode, "errmsg": errmsg})
                try:
                    await self.failures.record_api_failure(
                        api=SUBSCRIBE, errcode=errcode if isinstance(errcode, int) else None, errmsg=errmsg,
                        attempts=1, detail=f"bot_id={self.bot_id}")
                except Exception:
                    log.exception("smartbot_ws could not record the refused subscribe")
                return REFUSED, False
            self.link = link
            self.state = "connected"
            log.info("smartbot_ws subscribed", extra={"conn_id": link.conn_id, "instance": self.instance})
            try:
                async with self.runtime.db.session() as session:
                    reclaimed = await store.reclaim_abandoned(session, self.bot_id, self.instance)
                if reclaimed:
                    log.info("smartbot_ws took over unsettled sends", extra={"rows": reclaimed})
            except Exception as exc:
                log.warning("smartbot_ws could not reclaim unsettled sends", extra={"error": str(exc)})
            self._wake.set()  # what waited for a connection goes out now
            return await self._serve(link, reader), link.stable
        finally:
            if self.link is link:
                self.link = None
            reader.cancel()
            await link.close()
            await asyncio.gather(reader, return_exceptions=True)

    async def _serve(self, link: Link, reader: asyncio.Task[None]) -> str:
        """Ping every heartbeat and renew the lease, until the connection ends or must be given up."""
        loop = asyncio.get_running_loop()
        while True:
            done, _ = await asyncio.wait({reader}, timeout=self.cfg.heartbeat_seconds)
            if done or link.closed:
                if link.kicked:
                    return KICKED
                log.warning("smartbot_ws connection closed", extra={"conn_id": link.conn_id,
                                                                    "close_code": link.ws.close_code})
                return LOST
            if link.missed >= MISSED_ACKS_LIMIT:
                log.warning("smartbot_ws heartbeat unanswered; reconnecting",
                            extra={"conn_id": link.conn_id, "missed": link.missed})
                return LOST
            try:
                if not await store.take_lease(self.runtime.db, self.bot_id, self.instance, self.cfg.lease_seconds):
                    log.warning("smartbot_ws lease taken by another instance; closing this connection",
                                extra={"conn_id": link.conn_id})
                    self.holds_lease = False
                    return LEASE_LOST
                self._lease_until = loop.time() + self.cfg.lease_seconds
            except Exception as exc:
                if loop.time() + self.cfg.heartbeat_seconds >= self._lease_until:
                    # Another instance may take the lease before the next try: leave it the connection.
                    log.warning("smartbot_ws lease could not be renewed in time; closing this connection",
                                extra={"error": str(exc)})
                    return LEASE_LOST
                log.warning("smartbot_ws lease renewal failed; trying again at the next heartbeat",
                            extra={"error": str(exc)})
            req_id = new_req_id(PING)
            link.pings.add(req_id)
            link.missed += 1
            try:
                await link.send({"cmd": PING, "headers": {"req_id": req_id}})
            except LinkLost:
                continue  # the reader sees the close

    async def _read(self, link: Link) -> None:
        try:
            async for message in link.ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    self._on_frame(link, message.data)
                elif message.type == aiohttp.WSMsgType.BINARY:
                    self._ignored(link, "binary frame")
                elif message.type == aiohttp.WSMsgType.ERROR:
                    log.warning("smartbot_ws connection error", extra={"conn_id": link.conn_id,
                                                                       "error": str(link.ws.exception())})
                    break
        finally:
            link.fail_pending()

    def _on_frame(self, link: Link, data: str) -> None:
        try:
            frame = json.loads(data)
        except (ValueError, RecursionError):
            self._ignored(link, "not valid JSON")
            return
        if not isinstance(frame, dict):
            self._ignored(link, "not a JSON object")
            return
        cmd = frame.get("cmd")
        headers = frame.get("headers")
        req_id = headers.get("req_id") if isinstance(headers, dict) else None
        if cmd in (MSG_CALLBACK, EVENT_CALLBACK):
            self.spawn(self._inbound(link, cmd, req_id, frame.get("body")), name="smartbot-ws-frame")
            return
        if isinstance(req_id, str):
            if req_id in link.pings:
                link.pings.discard(req_id)
                if frame.get("errcode") == 0:
                    link.missed = 0
                    link.stable = True
                else:
                    log.warning("smartbot_ws ping refused", extra={"errcode": frame.get("errcode"),
                                                                   "errmsg": str(frame.get("errmsg", ""))[:200]})
                return
            if link.acknowledge(req_id, frame):
                return
        if cmd:
            self._ignored(link, f"unknown cmd {str(cmd)[:40]}")
        else:
            log.info("smartbot_ws ack for nothing awaited", extra={"req_id": str(req_id)[:MAX_REQ_ID]})

    def _ignored(self, link: Link, reason: str, level: int = logging.WARNING, **extra: Any) -> None:
        log.log(level, "smartbot_ws frame ignored", extra={"reason": reason, "conn_id": link.conn_id, **extra})

    async def _inbound(self, link: Link, cmd: str, req_id: Any, body: Any) -> None:
        """A message or event frame: its reply row, then the inbox (which drops redelivered copies)."""
        if not isinstance(body, dict):
            self._ignored(link, "frame without a body")
            return
        if not isinstance(req_id, str) or not req_id or len(req_id) > MAX_REQ_ID:
            self._ignored(link, "frame without a usable req_id")
            return
        aibotid = body.get("aibotid")
        # Frames without aibotid are taken: the connection is this bot's own (unconfirmed that all carry it).
        if aibotid is not None and aibotid != self.bot_id:
            self._ignored(link, "aibotid is not this bot's")
            return
        if cmd == EVENT_CALLBACK:
            event = body.get("event")
            eventtype = event.get("eventtype") if isinstance(event, dict) else None
            if eventtype == "disconnected_event":
                link.kicked = True
                log.warning("smartbot_ws disconnected_event: a newer connection took this bot over",
                            extra={"conn_id": link.conn_id})
                await link.close()
                return
            body = {**body, "msgtype": "event"}
        try:
            incoming = parse_callback(body, self.cfg.bot_name, channel=self.name)
        except Rejected as exc:
            self._ignored(link, exc.reason)
            return
        if incoming.kind in (IGNORED, REFRESH):
            # Unknown message or event types (template_card_event, feedback_event, ...); stream refreshes
            # belong to the HTTP mode.
            self._ignored(link, incoming.note or "stream refresh", logging.INFO, msgid=incoming.msgid)
            return
        sender = body.get("from")
        userid = sender.get("userid") if isinstance(sender, dict) else None
        chatid = body.get("chatid") if body.get("chattype") == "group" else None
        chatid = chatid if isinstance(chatid, str) and 0 < len(chatid) <= 128 else None
        event = incoming.event
        hint = None
        if incoming.kind in (UNSUPPORTED, EMPTY):
            hint = self.runtime.templates.raw("smartbot_ws.unsupported" if incoming.kind == UNSUPPORTED
                                              else "smartbot_ws.empty")
        try:
            async with self.runtime.db.session() as session:
                await store.open_reply(
                    session, bot_id=self.bot_id, kind=store.WELCOME if incoming.kind == GREETING else store.RESPOND,
                    msgid=incoming.msgid, event_key=event.key if event else None, req_id=req_id,
                    conn_id=link.conn_id, chatid=chatid, userid=userid, content=hint)
            inbox_id = await self.runtime.inbox.accept(event) if event is not None else None
        except Exception as exc:
            log.error("smartbot_ws message not stored", extra={"msgid": incoming.msgid, "error": str(exc)})
            return
        self._wake.set()  # a hint, or a redelivered copy's fresh req_id for a reply still unsent
        if event is None:
            return
        if inbox_id is None:
            log.info("duplicate smartbot_ws frame", extra={"msgid": incoming.msgid, "event_key": event.key})
            return
        self.runtime.inbox.process_soon(event)

    # -- replies and posts -------------------------------------------------------------------------

    async def deliver(self, event: Event, replies: list[Reply]) -> None:
        """Keep the reply in the message's outbox row; the holder sends it."""
        msgid = event.key.split(":", 1)[1]
        content = fit("\n\n".join(r.text for r in replies if r.text))
        async with self.runtime.db.session() as session:
            ready = await store.reply_ready(session, self.bot_id, msgid, content)
            orphan = not ready and content and await store.by_msgid(session, self.bot_id, msgid) is None
            if orphan:
                # The frame's row was never written: the answer goes to its chat as a post.
                sender = getattr(event, "sender", None)
                await store.enqueue_send(session, bot_id=self.bot_id, content=content, chatid=event.group,
                                         userid=sender.user if sender else None)
        if not ready and not orphan:
            log.info("reply already settled; this one is dropped", extra={"msgid": msgid, "event_id": event.id})
        self._wake.set()

    async def post(self, group: str, replies: list[Reply]) -> None:
        """Queue a post (aibot_send_msg, markdown) for the connection's holder, whichever process that is.

        A group gets one message; DIRECT_SCOPE sends each reply to the users it mentions, in their 1:1 chats
        (a 1:1 chat is addressed by the userid, per WeCom's SDK).
        """
        targets: list[tuple[str | None, str | None, str]] = []
        if group == DIRECT_SCOPE:
            for reply in replies:
                targets += [(None, user, reply.text) for user in reply.mentions if reply.text]
        else:
            content = "\n\n".join(r.text for r in replies if r.text)
            if content:
                targets.append((group, None, content))
        if not targets:
            log.info("smartbot_ws post with nothing to send", extra={"group": group})
            return
        async with self.runtime.db.session() as session:
            for chatid, userid, content in targets:
                await store.enqueue_send(session, bot_id=self.bot_id, content=fit(content), chatid=chatid,
                                         userid=userid)
        log.info("smartbot_ws post queued", extra={"group": group, "messages": len(targets)})
        self._wake.set()

    # -- the outbox --------------------------------------------------------------------------------

    async def _drain_forever(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.cfg.outbox_poll_seconds)
            except TimeoutError:
                pass
            self._wake.clear()
            link = self.link
            if link is None or link.closed:
                continue
            try:
                await self._drain(link)
            except Exception:
                log.exception("smartbot_ws outbox pass failed")

    async def _flush(self, link: Link) -> None:
        for _ in range(3):
            async with self.runtime.db.read_session() as session:
                if not await store.due(session, self.bot_id, limit=1):
                    return
            await self._drain(link)

    async def _drain(self, link: Link) -> None:
        """Send what is due on this connection; now and then, settle rows left behind."""
        now = asyncio.get_running_loop().time()
        if now - self._last_sweep >= self.cfg.outbox_poll_seconds:
            self._last_sweep = now
            await self._sweep()
        async with self.runtime.db.read_session() as session:
            rows = await store.due(session, self.bot_id, limit=OUTBOX_BATCH)
        if rows:
            await asyncio.gather(*(self._send_row(link, row) for row in rows))
        if len(rows) == OUTBOX_BATCH:
            self._wake.set()

    async def _send_row(self, link: Link, row: store.SmartbotWsOutbox) -> None:
        async with self._slots:
            if link.closed:
                return
            async with self.runtime.db.session() as session:
                if not await store.claim(session, row.id, self.instance):  # type: ignore[arg-type]
                    return  # another sender took it
            attempt = row.attempts + 1
            cmd, frame = self._frame_for(link, row)
            fields = {"outbox": row.id, "kind": row.kind, "msgid": row.msgid, "via": cmd, "attempt": attempt}
            if frame is None:
                await self._fail(row, cmd, None, "no chat to send it to", attempt)
                return
            try:
                ack = await link.request(frame, self.cfg.ack_timeout_seconds)
            except LinkLost as exc:
                # Kept: the next connection sends it (as a post, since the req_id belonged to this one).
                await self._settle(row, store.PENDING, error=f"{cmd}: {exc}")
                log.info("smartbot_ws send interrupted by the connection; kept for the reconnect", extra=fields)
                return
            except AckTimeout as exc:
                if attempt < SEND_ATTEMPTS:
                    await self._settle(row, store.PENDING, error=f"{cmd}: {exc}")
                    log.warning("smartbot_ws send not acknowledged; will try again", extra=fields)
                else:
                    await self._fail(row, cmd, None, str(exc), attempt)
                return
            errcode = ack.get("errcode")
            if errcode == 0:
                await self._settle(row, store.SENT, via=cmd)
                log.info("smartbot_ws sent", extra=fields)
                return
            errmsg = str(ack.get("errmsg", ""))[:300]
            if cmd != SEND and (row.chatid or row.userid):
                # WeCom refused the req_id (expired, or another connection's): the chat gets it as a post.
                await self._settle(row, store.PENDING, error=f"{cmd} errcode={errcode} {errmsg}", drop_req_id=True)
                log.warning("smartbot_ws reply refused; sending it as a post", extra={**fields, "errcode": errcode})
                self._wake.set()
                return
            await self._fail(row, cmd, errcode, errmsg, attempt)

    def _frame_for(self, link: Link, row: store.SmartbotWsOutbox) -> tuple[str, dict[str, Any] | None]:
        """How the row leaves on this connection: as the answer to its frame while that frame's connection
        lives (and, for a welcome, within WeCom's 5 s), else as a post to its chat."""
        content = row.content or ""
        answerable = row.req_id and row.conn_id == link.conn_id and row.msgid
        if row.kind == store.RESPOND and answerable:
            return RESPOND, {"cmd": RESPOND, "headers": {"req_id": row.req_id},
                             "body": stream_body(stream_id_for(row.msgid or ""), content, True)}
        if row.kind == store.WELCOME and answerable and utcnow() - row.created_at < WELCOME_WINDOW:
            return RESPOND_WELCOME, {"cmd": RESPOND_WELCOME, "headers": {"req_id": row.req_id},
                                     "body": {"msgtype": "text", "text": {"content": fit(content)}}}
        target = row.chatid or row.userid
        if not target:
            return SEND, None
        # A 1:1 chat is addressed by the user's userid, a group by its chatid (WeCom's SDK: sendMessage).
        return SEND, {"cmd": SEND, "headers": {"req_id": new_req_id(SEND)},
                      "body": {"chatid": target, "msgtype": "markdown", "markdown": {"content": fit(content)}}}

    async def _settle(self, row: store.SmartbotWsOutbox, to_status: str, **values: Any) -> None:
        async with self.runtime.db.session() as session:
            await store.settle(session, row.id, from_status=store.SENDING, to_status=to_status,  # type: ignore[arg-type]
                               **values)

    async def _fail(self, row: store.SmartbotWsOutbox, cmd: str, errcode: Any, detail: str, attempts: int) -> None:
        await self._settle(row, store.FAILED, error=f"{cmd} errcode={errcode} {detail}")
        log.warning("smartbot_ws send failed", extra={"outbox": row.id, "kind": row.kind, "msgid": row.msgid,
                                                      "via": cmd, "errcode": errcode, "detail": detail})
        await self.failures.record_api_failure(api=cmd, errcode=errcode if isinstance(errcode, int) else None,
                                               errmsg=detail, attempts=attempts,
                                               detail=f"outbox={row.id} kind={row.kind} msgid={row.msgid or ''}")

    async def _sweep(self) -> None:
        """Settle replies the handlers finished without a word or failed on, and give up rows too old to send."""
        now = utcnow()
        templates = self.runtime.templates
        async with self.runtime.db.read_session() as session:
            waiting = await store.unsettled_since(session, self.bot_id, statuses=(store.WAITING,),
                                                  created_before=now - timedelta(seconds=1))
            expired = await store.unsettled_since(session, self.bot_id, statuses=store.UNSENT,
                                                  created_before=now - timedelta(seconds=self.cfg.outbox_max_age_seconds))
        for row in expired:
            async with self.runtime.db.session() as session:
                settled = await store.settle(session, row.id, from_status=row.status,  # type: ignore[arg-type]
                                             to_status=store.FAILED, error="expired before it could be sent")
            if settled:
                log.warning("smartbot_ws reply expired unsent", extra={"outbox": row.id, "msgid": row.msgid})
                await self.failures.record_api_failure(api="smartbot_ws/outbox", errcode=None, errmsg="expired",
                                                       attempts=row.attempts, detail=f"outbox={row.id} kind={row.kind}")
        expired_ids = {row.id for row in expired}
        for row in waiting:
            if row.id in expired_ids or not row.event_key:
                continue
            async with self.runtime.db.session() as session:
                status = await event_status(session, self.name, row.event_key)
                if status == INBOX_DONE:
                    await store.settle(session, row.id, from_status=store.WAITING,  # type: ignore[arg-type]
                                       to_status=store.NOTHING)
                elif status == INBOX_FAILED:
                    await store.settle(session, row.id, from_status=store.WAITING,  # type: ignore[arg-type]
                                       to_status=store.PENDING, error="processing failed",
                                       content=templates.raw("smartbot_ws.failed"))
                    self._wake.set()
                elif status is None and row.created_at < now - NEVER_ACCEPTED:
                    await store.settle(session, row.id, from_status=store.WAITING,  # type: ignore[arg-type]
                                       to_status=store.FAILED, error="message never reached the inbox")
