"""A minimal qunbot gateway bridge: chat with the bot from a console over the signed JSON gateway protocol.

It is the smallest complete bridge: it signs events to qunbot, shows the replies that come back in the
response, and runs the outbound endpoint that takes what the bot says later (slow replies, lottery
results, scheduled posts), checking each request's signature and dropping repeats. Replace the console
with a chat platform (read its messages instead of stdin, send with its API instead of print) and it is a
real one. Needs Python >= 3.11 and aiohttp; nothing from qunbot.

    export QUNBOT_GATEWAY_SECRET=...   # the same secret as in qunbot's QUNBOT_GATEWAY_SECRETS for --gateway
    python docs/examples/gateway_bridge.py --qunbot http://127.0.0.1:8080/gateway/events \\
        --gateway wechat --listen 127.0.0.1:8788 --group demo-room --user me --name 我

and set qunbot's gateway.outbound_urls = {wechat = "http://127.0.0.1:8788/outbound"}. Each line you type is
a message from --user in --group (1:1 with --direct); "/join ID NAME" reports someone joining the group.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import hmac
import json
import os
import sys
import time
import uuid
from typing import Any

import aiohttp
from aiohttp import web

REPLAY_WINDOW = 300  # seconds; refuse outbound requests signed longer ago than this


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """X-Qunbot-Signature: "sha256=" + hex HMAC-SHA256(secret, timestamp + "." + body)."""
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def signed_headers(gateway: str, secret: str, body: bytes) -> dict[str, str]:
    timestamp = str(int(time.time()))
    return {"Content-Type": "application/json", "X-Qunbot-Gateway": gateway, "X-Qunbot-Timestamp": timestamp,
            "X-Qunbot-Signature": sign(secret, timestamp, body)}


def verify(secret: str, headers: Any, body: bytes) -> bool:
    """Is this request from qunbot: a fresh timestamp and a matching signature (compared in constant time)?"""
    timestamp = headers.get("X-Qunbot-Timestamp", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > REPLAY_WINDOW:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), headers.get("X-Qunbot-Signature", ""))


class QunbotClient:
    """Sends events to qunbot. An event that got no answer is sent again with the same id: qunbot processes
    it once and answers the repeat with the replies of the first response."""

    def __init__(self, http: aiohttp.ClientSession, url: str, gateway: str, secret: str) -> None:
        self.http, self.url, self.gateway, self.secret = http, url, gateway, secret

    async def send(self, event: dict[str, Any], attempts: int = 5) -> dict[str, Any]:
        body = json.dumps(event, ensure_ascii=False).encode()
        for attempt in range(1, attempts + 1):
            try:
                # Sign each attempt anew: the timestamp must be fresh.
                async with self.http.post(self.url, data=body, headers=signed_headers(self.gateway, self.secret, body),
                                          timeout=aiohttp.ClientTimeout(total=30)) as resp:
                    answer = await resp.json(content_type=None)
                    if resp.status < 300:
                        return answer
                    if resp.status < 500:  # our mistake: sending it again will not help
                        raise ValueError(f"qunbot refused the event: {resp.status} {answer.get('error')}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                if attempt == attempts:
                    raise
                print(f"(qunbot not reachable: {exc}; trying again)", file=sys.stderr)
            await asyncio.sleep(min(2 ** attempt, 30))
        raise RuntimeError("qunbot kept failing")


def outbound_app(secret: str, deliver: Any) -> web.Application:
    """The endpoint qunbot POSTs to (gateway.outbound_urls). Answer 2xx only once the message is handed to
    the platform: anything else makes qunbot send it again later, with the same id."""
    seen: collections.OrderedDict[str, None] = collections.OrderedDict()  # a real bridge keeps this on disk

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        if not verify(secret, request.headers, body):
            return web.json_response({"error": "bad signature"}, status=401)
        try:
            message = json.loads(body)
        except ValueError:
            return web.json_response({"error": "not JSON"}, status=400)
        if message["id"] not in seen:  # a repeat of a message already posted: acknowledge, do not post again
            await deliver(message)
            seen[message["id"]] = None
            while len(seen) > 10_000:
                seen.popitem(last=False)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/outbound", receive)
    return app


def show(reply: dict[str, Any], via: str = "") -> None:
    """Stand-in for the platform's send: @-mentions first (a platform renders them from the user ids)."""
    mentions = " ".join(f"@{user}" for user in reply.get("mentions", []))
    print(f"bot{via}> {mentions + ' ' if mentions else ''}{reply['text']}", flush=True)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--qunbot", required=True, help="qunbot's gateway URL, e.g. http://127.0.0.1:8080/gateway/events")
    parser.add_argument("--gateway", required=True, help="this gateway's name in qunbot's QUNBOT_GATEWAY_SECRETS")
    parser.add_argument("--listen", default="127.0.0.1:8788", help="host:port of the outbound endpoint /outbound")
    parser.add_argument("--group", default="demo-room", help="the group the console speaks in")
    parser.add_argument("--group-name", default="演示群")
    parser.add_argument("--direct", action="store_true", help="speak 1:1 with the bot instead of in the group")
    parser.add_argument("--user", default="console-user")
    parser.add_argument("--name", default="控制台用户")
    args = parser.parse_args()
    secret = os.environ.get("QUNBOT_GATEWAY_SECRET", "")
    if not secret:
        parser.error("set QUNBOT_GATEWAY_SECRET")
    for stream in (sys.stdin, sys.stdout):
        stream.reconfigure(encoding="utf-8")  # type: ignore[attr-defined]

    async def from_qunbot(message: dict[str, Any]) -> None:
        where = f"group {message['group']['id']}" if message["group"] else f"user {message['user']}"
        show(message, via=f" (outbound, {where})")

    host, port = args.listen.rsplit(":", 1)
    runner = web.AppRunner(outbound_app(secret, from_qunbot))
    await runner.setup()
    await web.TCPSite(runner, host, int(port)).start()
    print(f"listening on http://{args.listen}/outbound", flush=True)
    group = None if args.direct else {"id": args.group, "name": args.group_name}
    loop = asyncio.get_running_loop()
    try:
        async with aiohttp.ClientSession() as http:
            client = QunbotClient(http, args.qunbot, args.gateway, secret)
            while line := await loop.run_in_executor(None, sys.stdin.readline):
                text = line.strip()
                if not text:
                    continue
                event: dict[str, Any] = {"id": uuid.uuid4().hex, "time": int(time.time()), "group": group}
                if text.startswith("/join ") and group is not None:
                    _, user, *name = text.split()
                    event.update(type="join", users=[{"id": user, "name": " ".join(name) or user}],
                                 inviter=args.user)
                else:
                    event.update(type="message", user=args.user, name=args.name, text=text, mentions_bot=True)
                try:
                    answer = await client.send(event)
                except (ValueError, RuntimeError, aiohttp.ClientError, TimeoutError) as exc:
                    print(f"(not sent: {exc})", flush=True)
                    continue
                for reply in answer["replies"]:
                    show(reply)
                if answer["pending"]:
                    print("(the bot is still working; anything more arrives through /outbound)", flush=True)
            await asyncio.sleep(0.5)  # let replies already on their way arrive
    finally:
        await runner.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
