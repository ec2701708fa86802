"""What the doors that answer a message in the response to the platform's own callback share: WeCom's smart
bot (HTTP callback), the group robot (callback mode) and the WeChat Official Account.

Each takes a message, stores it, processes it at once, and answers with its reply if that is known within
the door's budget (the platform waits about 5 s); otherwise the door answers in its own way (an unfinished
stream, an empty answer and a later webhook post, "success") and the reply takes another way or none.

- The message is stored first (with, before it, the door's reply row): when that fails the answer is a 503,
  so the platform retries instead of losing the message.
- A copy of the message (the platform's retry, or a copy that reached another process) is not processed
  again: it waits for the same work, this process's task or, elsewhere, the reply's state in the database,
  and is answered from the same stored reply, so a retry gets the answer the first request got.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from bot.channels.base import Channel
from bot.channels.callback_http import query_params, reject
from bot.channels.wecom_crypto import CallbackCrypto, Rejected
from bot.events import Event

# How often a copy of a message another process works on looks at the database for its reply.
POLL_SECONDS = 0.05


async def answer_in_time(door: Channel, event: Event, deadline: float, *, key: str, what: str,
                         log: logging.Logger, fields: dict[str, Any],
                         answer: Callable[[], Awaitable[web.Response]],
                         prepare: Callable[[AsyncSession], Awaitable[None]] | None = None,
                         nothing: Callable[[], Awaitable[object]] | None = None,
                         settled: Callable[[], Awaitable[bool]] | None = None,
                         poll_seconds: float = POLL_SECONDS) -> web.Response:
    """Accept a callback's message and answer it within the budget (until the loop time `deadline`).

    `prepare` writes the door's reply row (before the message is accepted); `key` finds this process's work
    on the message; `nothing` settles the reply when the handlers had nothing to say; `settled` tells, from
    the database, whether a message processed elsewhere has its reply (without it only this process's work
    is waited for); `answer` builds the response from the stored reply. `what` and `fields` name the door
    and the message in its log lines.
    """
    try:
        if prepare is not None:
            async with door.runtime.db.session() as session:
                await prepare(session)
        inbox_id = await door.runtime.inbox.accept(event)
    except Exception as exc:  # InboxUnavailable, or the reply row could not be written
        # Not stored: an error makes the platform retry rather than lose the message.
        log.warning(f"{what} message not stored", extra={**fields, "error": str(exc)})
        return web.Response(status=503, text="busy")
    if inbox_id is not None:
        door.work_on(key, _process(door, event, nothing, what, log, fields), name=f"{door.name}-{inbox_id}")
    else:
        log.info(f"duplicate {what} callback", extra={**fields, "event_key": event.key})
    try:
        await wait_for_reply(door, key, deadline, settled, poll_seconds)
        return await answer()
    except Exception as exc:
        log.warning(f"{what} reply state unavailable", extra={**fields, "error": str(exc)})
        return web.Response(status=503, text="busy")


async def wait_for_reply(door: Channel, key: str, deadline: float, settled: Callable[[], Awaitable[bool]] | None,
                         poll_seconds: float = POLL_SECONDS) -> None:
    """Wait until the loop time `deadline` for the reply to the message `key`: for this process's work on it,
    or else (a copy of a message another process, or an earlier request, works on) until `settled` says so."""
    if await door.wait_for_work(key, deadline) or settled is None:
        return
    loop = asyncio.get_running_loop()
    while loop.time() < deadline:
        if await settled():
            return
        await asyncio.sleep(min(poll_seconds, max(0.0, deadline - loop.time())))


async def _process(door: Channel, event: Event, nothing: Callable[[], Awaitable[object]] | None, what: str,
                   log: logging.Logger, fields: dict[str, Any]) -> None:
    """Run the event through the inbox (the door's deliver() keeps the reply); settle a reply with nothing to say."""
    try:
        replies = await door.runtime.inbox.process(event)
        if replies == [] and nothing is not None:
            await nothing()
    except Exception:
        log.exception(f"{what} processing failed", extra={**fields, "event_id": event.id})


async def verify_url(request: web.Request, crypto: CallbackCrypto, log: logging.Logger, what: str = "") -> web.Response:
    """A WeCom door's URL verification: answer the decrypted echostr as the raw body. `what` begins the log
    lines ("robot callback rejected", "robot url verified"); without it they are the app door's ("callback
    rejected", "callback url verified")."""
    rejected, verified = (f"{what} callback rejected", f"{what} url verified") if what else \
        ("callback rejected", "callback url verified")
    try:
        q = query_params(request, "msg_signature", "timestamp", "nonce", "echostr")
        plain = crypto.open(q["msg_signature"], q["timestamp"], q["nonce"], q["echostr"])
    except Rejected as exc:
        return reject(request, exc, log, rejected)
    log.info(verified, extra={"path": request.path})
    return web.Response(body=plain, content_type="text/plain")


async def sweep_forever(interval_seconds: float, sweep: Callable[[], Awaitable[None]], log: logging.Logger,
                        what: str) -> None:
    """Run a door's sweep (replies no callback handed over in time) every `interval_seconds`, surviving failures."""
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            await sweep()
        except Exception:
            log.exception(f"{what} sweep failed")
