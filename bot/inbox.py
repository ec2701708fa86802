"""Accepting events durably (group commit) and processing each exactly once (claim, dispatch, deliver).

`accept` returns only after the event's row is committed, so a door may acknowledge the platform right
after it. Concurrent accepts are written in one transaction per batch: throughput grows with load instead
of every request paying for its own commit. The unique key (channel, message key) decides duplicates,
also across processes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from datetime import timedelta
from typing import TYPE_CHECKING

from bot.events import Event, Reply, event_from_json, event_to_json
from storage import inbox as store
from storage.db import utcnow

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger("qunbot.inbox")


class InboxUnavailable(Exception):
    """The event could not be stored; the door must not acknowledge it."""


class Inbox:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.cfg = runtime.config.inbox
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self._pending: list[tuple[store.NewMessage, asyncio.Future[int | None]]] = []
        self._wakeup = asyncio.Event()
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._inflight: set[int] = set()

    # -- accepting -------------------------------------------------------------------------------

    async def accept(self, event: Event) -> int | None:
        """Store the event durably; its inbox id if it is new, None if it was seen before."""
        item = store.NewMessage(event.channel, event.key, event.type_name, event_to_json(event))
        future: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._wakeup.set()
        event.id = await future
        return event.id

    async def _writer(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch, self._pending = self._pending[: self.cfg.batch_max], self._pending[self.cfg.batch_max:]
                await self._write(batch)

    async def _write(self, batch: list[tuple[store.NewMessage, asyncio.Future[int | None]]]) -> None:
        try:
            async with self.runtime.db.session() as session:
                inserted = await store.insert_new(session, [item for item, _ in batch])
        except Exception as exc:
            log.exception("inbox write failed", extra={"batch": len(batch)})
            for _, future in batch:
                if not future.done():
                    future.set_exception(InboxUnavailable(str(exc)))
            return
        claimed: set[tuple[str, str]] = set()
        for item, future in batch:
            key = (item.channel, item.message_key)
            # Within one batch the first copy of a key is the new one; later copies are duplicates.
            new_id = inserted.get(key) if key not in claimed else None
            claimed.add(key)
            if not future.done():
                future.set_result(new_id)

    # -- processing ------------------------------------------------------------------------------

    def process_soon(self, inbox_id: int) -> None:
        """Queue an accepted event for the background workers."""
        self._queue.put_nowait(inbox_id)

    async def process(self, inbox_id: int) -> list[Reply] | None:
        """Claim, dispatch and deliver one event; None if another worker has it or it is already done."""
        runtime = self.runtime
        if inbox_id in self._inflight:
            return None
        self._inflight.add(inbox_id)
        try:
            async with runtime.db.session() as session:
                row = await store.claim(session, inbox_id, timedelta(seconds=self.cfg.lease_seconds))
            if row is None:
                return None
            fields = {"event_id": row.id, "channel": row.channel, "event_key": row.message_key,
                      "event_type": row.event_type, "attempt": row.attempts}
            channel = runtime.channels.get(row.channel)
            try:
                if channel is None:
                    raise RuntimeError(f"no channel {row.channel!r} is enabled")
                event = event_from_json(row.event_type, row.payload, event_id=row.id)
                event = await channel.enrich(event)
                ctx = await runtime.dispatcher.dispatch(event, channel)
                if ctx.replies:
                    await channel.deliver(ctx.event, ctx.replies)
            except Exception as exc:
                final = row.attempts >= self.cfg.max_attempts
                log.exception("event processing failed", extra={**fields, "final": final})
                async with runtime.db.session() as session:
                    await store.mark_failed(session, inbox_id, f"{type(exc).__name__}: {exc}", final=final)
                return None
            async with runtime.db.session() as session:
                await store.mark_done(session, inbox_id, "; ".join(ctx.errors) or None)
            log.info("event processed", extra={**fields, "group": event.group, "replies": len(ctx.replies),
                                               "handler_errors": len(ctx.errors)})
            return ctx.replies
        finally:
            self._inflight.discard(inbox_id)

    async def _worker(self) -> None:
        while True:
            inbox_id = await self._queue.get()
            try:
                await self.process(inbox_id)
            except Exception:
                log.exception("inbox worker error", extra={"event_id": inbox_id})
            finally:
                self._queue.task_done()

    async def _recovery(self, interval: float = 5.0) -> None:
        """Pick up events accepted but never finished (a crash, a lost task, a failed attempt)."""
        while True:
            await asyncio.sleep(interval)
            try:
                async with self.runtime.db.session() as session:
                    ids = await store.due_for_recovery(session, older_than=utcnow() - timedelta(seconds=interval))
                for inbox_id in ids:
                    if inbox_id not in self._inflight:
                        self._queue.put_nowait(inbox_id)
            except Exception:
                log.exception("inbox recovery scan failed")

    async def drain(self) -> None:
        """Wait until every queued event has been processed (tests, shutdown)."""
        await self._queue.join()

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._writer(), name="inbox-writer"))
        for n in range(self.cfg.workers):
            self._tasks.append(loop.create_task(self._worker(), name=f"inbox-worker-{n}"))
        self._tasks.append(loop.create_task(self._recovery(), name="inbox-recovery"))

    async def stop(self, grace_seconds: float = 10.0) -> None:
        try:
            await asyncio.wait_for(self.drain(), grace_seconds)
        except TimeoutError:
            log.warning("inbox stop: events still queued; they will be recovered on next start",
                        extra={"queued": self._queue.qsize()})
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
