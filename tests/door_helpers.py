"""What the door tests share: waiting for something to happen, reading rows, the log as qunbot writes it, and
handlers that record or hold back what members say."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.events import Reply, TextMessage

# What slow_handler answers "慢" with, by default.
SLOW_ANSWER = "慢慢想好的回复"


async def eventually(check: Callable[[], Awaitable[Any] | Any], within: float = 10.0, what: str = "") -> None:
    """Wait until `check()` (awaited if it is a coroutine) is true; fail the test after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.02)


async def rows(bot: Any, statement: Any) -> list[Any]:
    async with bot.runtime.db.session() as session:
        return list((await session.execute(statement)).all())


async def count(bot: Any, model: Any) -> int:
    return (await rows(bot, select(func.count()).select_from(model)))[0][0]


def logged(caplog: pytest.LogCaptureFixture) -> str:
    """The captured log as qunbot writes it (message plus key=value fields and tracebacks)."""
    from bot.logs import KeyValueFormatter

    fmt = KeyValueFormatter()
    return "\n".join(fmt.format(r) for r in caplog.records)


def seen_texts(*bots: Any) -> list[str]:
    """Record the text of every plain (non-command) message the handlers get, across the given bots."""
    seen: list[str] = []

    async def record(event: TextMessage, ctx: Any) -> None:
        if type(event) is TextMessage:
            seen.append(event.text)

    for bot in bots:
        bot.runtime.registry.on(TextMessage)(record)
    return seen


def slow_handler(*bots: Any, answer: Callable[[TextMessage], Reply | list[Reply]] | None = None) -> asyncio.Event:
    """A handler that answers "慢" (with SLOW_ANSWER, or what `answer` makes of the message) only once the
    returned event is set, so its reply can miss the door's budget."""
    release = asyncio.Event()

    async def slow(event: TextMessage, ctx: Any) -> Reply | list[Reply] | None:
        if type(event) is TextMessage and event.text == "慢":
            await release.wait()
            return answer(event) if answer is not None else Reply(SLOW_ANSWER)
        return None

    for bot in bots:
        bot.runtime.registry.on(TextMessage)(slow)
    return release
