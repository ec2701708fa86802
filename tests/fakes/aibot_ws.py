"""A fake of WeCom's smart bot long-connection endpoint (wss://openws.work.weixin.qq.com) on 127.0.0.1.

It plays the protocol of docs/platform.md §5: frames `{"cmd","headers":{"req_id"},"body"}`, acks
`{"headers":{"req_id"},"errcode","errmsg"}` (no cmd, as WeCom's SDK reads them), a subscribe with
bot_id and secret, pings, one live subscription per bot (a newer one kicks the older with an
aibot_event_callback `disconnected_event`), inbound callbacks pushed by the test, and the bot's replies
and posts recorded. Knobs inject faults: unanswered pings, refused replies, dropped connections.

What WeCom answers to a wrong secret, or to a reply whose req_id it does not know, is unconfirmed: the
errcodes below are the fake's choice.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

BOT_ID = "aibWSTEST"
SECRET = "ws-test-secret-0123456789"
# Unconfirmed codes (see the module docstring).
ERR_BAD_SECRET = 40001
ERR_UNKNOWN_REQ_ID = 40058
ERR_NOT_SUBSCRIBED = 40058
REPLY_CMDS = ("aibot_respond_msg", "aibot_respond_welcome_msg", "aibot_send_msg")


@dataclass
class Conn:
    """One accepted WebSocket."""

    number: int
    ws: web.WebSocketResponse
    request: web.Request
    subscribed: bool = False
    # req_ids of the callbacks pushed on this connection: replies may only name these.
    pushed: set[str] = field(default_factory=set)


class FakeAibotWs:
    """A running fake endpoint. Tests push callbacks, inject faults and read what the bot sent."""

    def __init__(self, *, bot_id: str = BOT_ID, secret: str = SECRET) -> None:
        self.bot_id = bot_id
        self.secret = secret
        self.ack_pings = True
        # errcode for replies and posts (0: accepted); a req_id not pushed on the same connection is refused.
        self.reply_errcode = 0
        self.send_errcode = 0
        self.conns: list[Conn] = []
        self.current: Conn | None = None
        # Every frame received, parsed, with "_conn" (the connection's number) added.
        self.frames: list[dict[str, Any]] = []
        self.subscribes: list[dict[str, Any]] = []  # {"conn", "ok", "bot_id"}
        self.pings_acked = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> FakeAibotWs:
        app = web.Application()
        app.router.add_get("/", self._socket)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"ws://127.0.0.1:{port}/"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for conn in list(self.conns):
            if not conn.ws.closed:
                await conn.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- what tests read ---------------------------------------------------------------------------

    def sent(self, cmd: str) -> list[dict[str, Any]]:
        """Frames of one command the bot sent, in order."""
        return [f for f in self.frames if f.get("cmd") == cmd]

    @property
    def ok_subscribes(self) -> int:
        return sum(1 for s in self.subscribes if s["ok"])

    @property
    def open_conns(self) -> int:
        return sum(1 for c in self.conns if not c.ws.closed)

    def replies_to(self, req_id: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("cmd") in REPLY_CMDS[:2] and f["headers"]["req_id"] == req_id]

    # -- what tests do -----------------------------------------------------------------------------

    async def push(self, cmd: str, body: Any, *, req_id: str | None = None) -> str:
        """Push a callback frame on the subscribed connection; its req_id."""
        conn = self._live()
        req_id = req_id or f"{cmd}_{int(time.time() * 1000)}_{secrets.token_hex(4)}"
        conn.pushed.add(req_id)
        await conn.ws.send_str(json.dumps({"cmd": cmd, "headers": {"req_id": req_id}, "body": body},
                                          ensure_ascii=False))
        return req_id

    async def push_message(self, body: dict[str, Any], **kwargs: Any) -> str:
        return await self.push("aibot_msg_callback", body, **kwargs)

    async def push_event(self, body: dict[str, Any], **kwargs: Any) -> str:
        return await self.push("aibot_event_callback", body, **kwargs)

    async def push_raw(self, data: str | bytes) -> None:
        conn = self._live()
        if isinstance(data, bytes):
            await conn.ws.send_bytes(data)
        else:
            await conn.ws.send_str(data)

    async def drop(self) -> None:
        """Cut the subscribed connection without a close frame, as a network failure would."""
        conn = self._live()
        self.current = None
        transport = conn.request.transport
        if transport is not None:
            transport.abort()

    async def kick(self) -> None:
        """What WeCom does when another connection subscribes: disconnected_event, then close."""
        conn = self._live()
        self.current = None
        await self._kick(conn)

    def _live(self) -> Conn:
        if self.current is None or self.current.ws.closed:
            raise AssertionError("no subscribed connection")
        return self.current

    # -- the endpoint ------------------------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        conn = Conn(len(self.conns) + 1, ws, request)
        self.conns.append(conn)
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                frame = json.loads(message.data)
                self.frames.append({**frame, "_conn": conn.number})
                await self._answer(conn, frame)
        finally:
            if self.current is conn:
                self.current = None
        return ws

    async def _answer(self, conn: Conn, frame: dict[str, Any]) -> None:
        cmd = frame.get("cmd")
        req_id = frame.get("headers", {}).get("req_id", "")
        if cmd == "aibot_subscribe":
            body = frame.get("body") or {}
            ok = body.get("bot_id") == self.bot_id and body.get("secret") == self.secret
            self.subscribes.append({"conn": conn.number, "ok": ok, "bot_id": body.get("bot_id")})
            if not ok:
                await self._ack(conn, req_id, ERR_BAD_SECRET, "invalid bot_id or secret")
                await conn.ws.close()
                return
            previous, self.current = self.current, conn
            conn.subscribed = True
            await self._ack(conn, req_id, 0)
            if previous is not None and previous is not conn and not previous.ws.closed:
                task = asyncio.get_running_loop().create_task(self._kick(previous))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            return
        if not conn.subscribed:
            await self._ack(conn, req_id, ERR_NOT_SUBSCRIBED, "not subscribed")
            return
        if cmd == "ping":
            if self.ack_pings:
                self.pings_acked += 1
                await self._ack(conn, req_id, 0)
            return
        if cmd in REPLY_CMDS[:2]:
            errcode = self.reply_errcode if req_id in conn.pushed else ERR_UNKNOWN_REQ_ID
            await self._ack(conn, req_id, errcode, "" if errcode == 0 else "invalid req_id")
            return
        if cmd == "aibot_send_msg":
            await self._ack(conn, req_id, self.send_errcode)
            return
        await self._ack(conn, req_id, ERR_NOT_SUBSCRIBED, "unknown cmd")

    async def _ack(self, conn: Conn, req_id: str, errcode: int, errmsg: str = "ok") -> None:
        if not conn.ws.closed:
            await conn.ws.send_str(json.dumps({"headers": {"req_id": req_id}, "errcode": errcode,
                                               "errmsg": errmsg if errcode else "ok"}))

    async def _kick(self, conn: Conn) -> None:
        body = {"msgid": secrets.token_hex(8), "create_time": int(time.time()), "aibotid": self.bot_id,
                "msgtype": "event", "event": {"eventtype": "disconnected_event"}}
        try:
            await conn.ws.send_str(json.dumps({"cmd": "aibot_event_callback",
                                               "headers": {"req_id": f"kick_{secrets.token_hex(4)}"}, "body": body}))
            await asyncio.sleep(0.05)
        finally:
            await conn.ws.close()
