"""Accepting events durably (group commit) and processing each exactly once.

`accept` returns only after the event's row is committed, so a door may acknowledge the platform right
after it. Concurrent accepts are written in one statement per batch, and so are the "done" marks:
throughput grows with load instead of every request paying for its own commit. The unique key
(channel, message key) decides duplicates, also across processes.

A row is inserted already claimed by the accepting process (status 'processing' with a lease). If that
process dies before finishing, the lease expires and the recovery scan of any process takes the event
over; a failed attempt goes back to 'pending' and is retried up to inbox.max_attempts.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from bot.batching import GroupCommit
from bot.events import Event, Reply, event_from_json, event_to_json
from storage import fastsql
from storage import inbox as store
from storage.activity import Tally, tally_statements
from storage.db import utcnow

if TYPE_CHECKING:

    from bot.runtime import Runtime

log = logging.getLogger("qunbot.inbox")


def _log_fields(event: Event, attempt: int) -> dict[str, object]:
    return {"event_id": event.id, "channel": event.channel, "event_key": event.key, "event_type": event.type_name,
            "group": event.group, "attempt": attempt}


@dataclass(frozen=True)
class Done:
    """A processed event for the journal: marked done, its activity counted in the same transaction."""

    event_id: int
    tally: Tally | None = None


class InboxUnavailable(Exception):
    """The event could not be stored; the door must not acknowledge it."""


class Inbox:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.cfg = runtime.config.inbox
        self.lease = timedelta(seconds=self.cfg.lease_seconds)
        # One batch in flight. SQLite has one writer anyway; on PostgreSQL, since a batch is one statement
        # (inserts, done marks and activity together), more lanes only made batches smaller: measured with
        # bench/callback_path.py, 1 lane beat 3 at 16 connections (25 % vs 19 % of the bare handler).
        lanes = 1
        self._conns = [fastsql.FastConnection(runtime.db) for _ in range(lanes)]
        # One journal for both: a batch inserts new events and marks finished ones done in one round trip.
        self._journal: GroupCommit[store.NewMessage | Done, int | None] = GroupCommit(
            [functools.partial(self._write, conn) for conn in self._conns], self.cfg.batch_max,
            InboxUnavailable)
        self._slots = asyncio.Semaphore(self.cfg.workers)
        self._tasks: set[asyncio.Task[object]] = set()
        self._recovery_task: asyncio.Task[None] | None = None
        self._inflight: set[int] = set()

    # -- accepting -------------------------------------------------------------------------------

    async def accept(self, event: Event) -> int | None:
        """Store the event durably, claimed by this process; its inbox id if new, None if seen before.

        Raises InboxUnavailable when it could not be stored.
        """
        item = store.NewMessage(event.channel, event.key, event.type_name, event_to_json(event))
        event.id = await self._journal.submit(item)
        return event.id

    async def _write(self, conn: fastsql.FastConnection, items: list[store.NewMessage | Done]) -> list[int | None]:
        new = [i for i in items if isinstance(i, store.NewMessage)]
        done = [i for i in items if isinstance(i, Done)]
        tallies = {d.event_id: d.tally for d in done if d.tally is not None}
        inserted = await store.write_batch(conn, new, [d.event_id for d in done], lease=self.lease, tallies=tallies)
        seen: set[tuple[str, str]] = set()
        results: list[int | None] = []
        for item in items:
            if isinstance(item, Done):
                results.append(None)
                continue
            key = (item.channel, item.message_key)
            # Within one batch the first copy of a key is the new one; later copies are duplicates.
            results.append(inserted.get(key) if key not in seen else None)
            seen.add(key)
        return results

    # -- processing ------------------------------------------------------------------------------

    def process_soon(self, event: Event) -> None:
        """Process an accepted event in the background (at most inbox.workers at a time)."""
        task = asyncio.get_running_loop().create_task(self._bounded(event), name=f"event-{event.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _bounded(self, event: Event, attempt: int = 1) -> None:
        async with self._slots:
            await self.process(event, attempt, wait_for_done=False)

    async def process(self, event: Event, attempt: int = 1, *, wait_for_done: bool = True) -> list[Reply] | None:
        """Dispatch an accepted (claimed) event and deliver its replies; the replies, or None on failure.

        Background work need not wait for its done mark: it is written with the next batch, and if that
        never commits the lease brings the event back.
        """
        assert event.id is not None, "accept the event first"
        runtime = self.runtime
        self._inflight.add(event.id)
        try:
            channel = runtime.channels.get(event.channel)
            if channel is None:
                raise RuntimeError(f"no channel {event.channel!r} is enabled")
            event = await channel.enrich(event)
            ctx = await runtime.dispatcher.dispatch(event, channel)
            if ctx.replies:
                await channel.deliver(ctx.event, ctx.replies)
        except Exception as exc:
            final = attempt >= self.cfg.max_attempts
            fields = _log_fields(event, attempt)
            log.exception("event processing failed", extra={**fields, "final": final})
            try:
                await store.mark_failed(runtime.db, event.id, f"{type(exc).__name__}: {exc}", final=final)
            except Exception:
                log.exception("could not record the failure; the lease will expire and it is retried", extra=fields)
            return None
        finally:
            self._inflight.discard(event.id)
        if ctx.errors:
            await store.note_handler_errors(runtime.db, event.id, "; ".join(ctx.errors))
            if ctx.tally is not None:
                conn = self._conns[0]
                await conn.transaction(tally_statements(conn, {event.id: ctx.tally}, conn.stamp(utcnow())))
        elif wait_for_done:
            await self._journal.submit(Done(event.id, ctx.tally))
        else:
            self._journal.submit_nowait(Done(event.id, ctx.tally))
        if log.isEnabledFor(logging.INFO):
            log.info("event processed", extra={**_log_fields(event, attempt), "replies": len(ctx.replies),
                                               "handler_errors": len(ctx.errors)})
        return ctx.replies

    async def _recovery(self, interval: float = 5.0) -> None:
        """Take over events accepted but never finished: failed attempts and expired leases."""
        while True:
            await asyncio.sleep(interval)
            try:
                async with self.runtime.db.session() as session:
                    ids = await store.due_for_recovery(session, older_than=utcnow() - timedelta(seconds=interval))
                ids = [i for i in ids if i not in self._inflight]
                for row in await store.claim(self.runtime.db, ids, self.lease):
                    event = event_from_json(row.event_type, row.payload, event_id=row.id)
                    log.info("recovering event", extra={"event_id": row.id, "attempt": row.attempts})
                    task = asyncio.get_running_loop().create_task(self._bounded(event, row.attempts))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            except Exception:
                log.exception("inbox recovery scan failed")

    async def drain(self) -> None:
        """Wait until every event being processed here is finished (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self._journal.idle()

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self._journal.start("inbox-writer")
        self._recovery_task = asyncio.get_running_loop().create_task(self._recovery(), name="inbox-recovery")

    async def stop(self, grace_seconds: float = 10.0) -> None:
        try:
            await asyncio.wait_for(self.drain(), grace_seconds)
        except TimeoutError:
            log.warning("inbox stop: events still running; their leases will expire and they are recovered",
                        extra={"running": len(self._tasks)})
        if self._recovery_task is not None:
            self._recovery_task.cancel()
            await asyncio.gather(self._recovery_task, return_exceptions=True)
        await self._journal.stop()
        for conn in self._conns:
            await conn.close()
