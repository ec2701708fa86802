"""Accepting events durably (group commit) and processing each exactly once.

`accept` returns only after the event's row is committed, so a door may acknowledge the platform right
after it. Concurrent accepts are written in one statement per batch, and so are the "done" marks:
throughput grows with load instead of every request paying for its own commit. The unique key
(channel, message key) decides duplicates, also across processes.

A row is inserted already claimed by the accepting process (status 'processing' with a lease). If that
process dies before finishing, the lease expires and the recovery scan of any process takes the event
over; a failed attempt goes back to 'pending' and is retried up to inbox.max_attempts.

Acknowledgements come first. Events accepted by callback doors wait in a queue for a background worker.
While callbacks pour in (at least `inbox.busy_accepts` waiting for their commit at once), processing is
paced to `inbox.busy_share` events per event accepted, so the platform keeps getting fast answers and
stops retrying (WeCom retries an answer slower than 5 s, which multiplies a burst). The backlog is durable
(every queued event is a leased row) and is worked off at full speed as soon as the burst is over; an event
left queued for most of its lease is handed to the recovery scan instead, so a long overload delays work
but never runs it twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from bot.batching import GroupCommit
from bot.events import Event, Reply, event_from_json, event_to_json
from storage import fastsql, retention
from storage import inbox as store
from storage.activity import Tally, tally_statements
from storage.db import utcnow
from storage.kv import try_lease

if TYPE_CHECKING:

    from bot.runtime import Runtime

log = logging.getLogger("qunbot.inbox")

# Busy lasts this long after the last time inbox.busy_accepts accepts were waiting at once (seconds).
BUSY_HOLD_SECONDS = 0.1
MAX_CREDIT = 64.0
# During a burst, queued events start in batches of this many (credit permitting): a batch reads its speakers
# in one statement and is marked done in one write, where events started one by one would pay for each.
BUSY_BATCH = 32
# Beyond inbox.backlog_max queued events, up to this many more are kept as ids alone (tuples of numbers, which
# the garbage collector stops tracking; whole events are a dozen tracked objects each).
OVERFLOW_IDS = 400_000
# Finished bookkeeping older than inbox.keep_days is deleted this often, by whichever process takes the turn.
PRUNE_EVERY_SECONDS = 3600.0


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
        self._prune_task: asyncio.Task[None] | None = None
        self._holder = runtime.new_holder()
        self._inflight: set[int] = set()
        # Background processing: accepted events waiting for a worker, (event, attempt, queued at).
        self._queue: deque[tuple[Event, int, float]] = deque()
        # Beyond inbox.backlog_max queued events only (id, attempt, queued at) is kept; see _refill.
        self._overflow: deque[tuple[int, int, float]] = deque()
        self._more = asyncio.Event()  # something queued, or credit earned
        self._pump_task: asyncio.Task[None] | None = None
        self._refill_task: asyncio.Task[None] | None = None
        self._accepting = 0  # accepts waiting for their commit right now
        self._busy_until = 0.0
        self._credit = 0.0
        self._left_to_recovery = 0

    # -- accepting -------------------------------------------------------------------------------

    async def accept(self, event: Event) -> int | None:
        """Store the event durably, claimed by this process; its inbox id if new, None if seen before.

        Raises InboxUnavailable when it could not be stored.
        """
        item = store.NewMessage(event.channel, event.key, event.type_name, event_to_json(event))
        self._accepting += 1
        if self._accepting >= self.cfg.busy_accepts:
            self._busy_until = time.monotonic() + BUSY_HOLD_SECONDS
        if self._queue and self.busy:
            # Each acknowledgement earns background processing a share of a turn.
            self._credit = min(self._credit + self.cfg.busy_share, MAX_CREDIT)
            if self._earned():
                self._more.set()
        try:
            event.id = await self._journal.submit(item)
        finally:
            self._accepting -= 1
        return event.id

    @property
    def busy(self) -> bool:
        """Whether callbacks are arriving faster than one commit takes (acknowledgements come first)."""
        return time.monotonic() < self._busy_until

    @property
    def backlog(self) -> int:
        """Accepted events waiting for a background worker in this process."""
        return len(self._queue) + len(self._overflow)

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

    def process_soon(self, event: Event, attempt: int = 1) -> None:
        """Process an accepted (claimed) event in the background, at most inbox.workers at a time.

        Beyond inbox.backlog_max queued events only its id is kept, and the event is read back from its row
        when the queue has room; beyond OVERFLOW_IDS more, or once it has waited most of its lease, it is left to
        the recovery scan (its row is leased, so any process takes it over when the lease runs out). Memory
        stays bounded; nothing is lost or run twice.
        """
        assert event.id is not None, "accept the event first"
        self._inflight.add(event.id)
        if len(self._queue) >= self.cfg.backlog_max:
            # Keep only the id; the event is read back from its row when the queue has room.
            if len(self._overflow) >= OVERFLOW_IDS:
                self._leave_to_recovery(event, "backlog full")
            else:
                self._overflow.append((event.id, attempt, time.monotonic()))
            return
        self._queue.append((event, attempt, time.monotonic()))
        # Wake the pump only when it can start something: during a burst it waits for credit (and looks at the
        # clock every BUSY_HOLD_SECONDS); waking it for every accepted event cost more than the event's work.
        if len(self._queue) == 1 or not self.busy or self._earned():
            self._more.set()

    def _next_batch(self) -> int:
        """How many queued events the pump starts next."""
        return min(BUSY_BATCH, self.cfg.workers, len(self._queue))

    def _earned(self) -> bool:
        """Whether acknowledgements have earned the next batch (during a burst the pump waits for that)."""
        return self._credit >= self._next_batch()

    async def _refill(self, too_old: float) -> None:
        """Move events kept as ids back into the queue, read from their rows (still leased to us)."""
        room = min(self.cfg.backlog_max - len(self._queue), 500)
        wanted: dict[int, tuple[int, float]] = {}
        now = time.monotonic()
        while self._overflow and len(wanted) < room:
            event_id, attempt, queued_at = self._overflow.popleft()
            if now - queued_at > too_old:
                self._inflight.discard(event_id)
                self._note_left(event_id, "kept as an id for most of its lease")
            else:
                wanted[event_id] = (attempt, queued_at)
        if not wanted:
            return
        try:
            rows = await fastsql.fetch(
                self.runtime.db,
                "SELECT id, event_type, payload FROM inbox "  # noqa: S608 - placeholders only
                f"WHERE id IN ({fastsql.placeholders(len(wanted))}) AND status = 'processing'",
                list(wanted),
            )
        except Exception:
            log.exception("could not read queued events back; their leases will bring them back",
                          extra={"events": len(wanted)})
            self._inflight.difference_update(wanted)
            return
        for event_id, event_type, payload in sorted(rows):
            attempt, queued_at = wanted.pop(event_id)
            self._queue.append((event_from_json(event_type, payload, event_id=event_id), attempt, queued_at))
        self._inflight.difference_update(wanted)  # no longer ours to process (finished or taken over)

    async def _refill_soon(self, too_old: float) -> None:
        try:
            await self._refill(too_old)
        finally:
            self._refill_task = None
            self._more.set()

    def _leave_to_recovery(self, event: Event, why: str) -> None:
        assert event.id is not None
        self._inflight.discard(event.id)
        self._note_left(event.id, why)

    def _note_left(self, event_id: int, why: str) -> None:
        self._left_to_recovery += 1
        if self._left_to_recovery == 1 or self._left_to_recovery % 1000 == 0:
            log.warning("event left to the recovery scan", extra={"event_id": event_id, "why": why,
                                                                   "left_so_far": self._left_to_recovery,
                                                                   "backlog": self.backlog})

    async def _pump(self) -> None:
        """Start queued events as workers free up; while busy, only as acknowledgements earn credit."""
        too_old = self.lease.total_seconds() * 0.8
        while True:
            # Read the next events kept as ids back while half the queue is still there, alongside: the pump
            # keeps starting events meanwhile (waiting for each read idled the workers, a fifth of the drain).
            if self._overflow and self._refill_task is None and len(self._queue) <= self.cfg.backlog_max // 2:
                self._refill_task = asyncio.get_running_loop().create_task(self._refill_soon(too_old),
                                                                           name="inbox-refill")
            if not self._queue:
                self._more.clear()
                await self._more.wait()  # set when an event is queued or a read-back is over
                continue
            # Batches of at most BUSY_BATCH, so a burst that begins meanwhile is noticed between them. During a
            # burst, a batch starts only once acknowledgements have earned it.
            while self.busy and not self._earned():
                self._more.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(BUSY_HOLD_SECONDS):  # no task per wait, unlike wait_for
                        await self._more.wait()
            batch = self._next_batch()
            if self.busy:
                self._credit -= batch
            for _ in range(batch):  # only the pump takes from the queue, so these are there
                await self._slots.acquire()
                event, attempt, queued_at = self._queue.popleft()
                if time.monotonic() - queued_at > too_old:
                    # Its lease is nearly over: another process may take it any moment. Let recovery decide.
                    self._slots.release()
                    self._leave_to_recovery(event, "queued for most of its lease")
                    continue
                task = asyncio.get_running_loop().create_task(self._run_queued(event, attempt),
                                                              name=f"event-{event.id}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _run_queued(self, event: Event, attempt: int) -> None:
        try:
            await self.process(event, attempt, wait_for_done=False)
        finally:
            self._slots.release()

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

    async def _recovery(self) -> None:
        """Take over events accepted but never finished: failed attempts and expired leases."""
        interval = self.cfg.recovery_interval_seconds
        page = 100
        while True:
            await asyncio.sleep(interval)
            try:
                # Page after page while there is more and room in the queue (after an overload there can be
                # thousands), claiming no more than the queue can take.
                while (room := min(page, self.cfg.backlog_max - self.backlog)) > 0:
                    async with self.runtime.db.session() as session:
                        due = await store.due_for_recovery(session, older_than=utcnow() - timedelta(seconds=interval),
                                                           limit=page + len(self._inflight))
                    ids = [i for i in due if i not in self._inflight][:room]
                    for row in await store.claim(self.runtime.db, ids, self.lease):
                        event = event_from_json(row.event_type, row.payload, event_id=row.id)
                        log.info("recovering event", extra={"event_id": row.id, "attempt": row.attempts})
                        self.process_soon(event, row.attempts)
                    if len(due) < page + len(self._inflight) or not ids:
                        break
            except Exception:
                log.exception("inbox recovery scan failed")

    async def prune(self) -> dict[str, int] | None:
        """Delete finished bookkeeping older than inbox.keep_days (storage.retention), if it is this process's
        turn (one process an hour); {table: rows deleted}, or None when off or another process has the turn."""
        if not self.cfg.keep_days:
            return None
        if not await try_lease(self.runtime.db, "inbox:prune", self._holder, PRUNE_EVERY_SECONDS * 0.9):
            return None
        deleted = await retention.prune(self.runtime.db, utcnow() - timedelta(days=self.cfg.keep_days))
        if any(deleted.values()):
            log.info("finished bookkeeping pruned", extra={"keep_days": self.cfg.keep_days, **deleted})
        return deleted

    async def _prune_loop(self) -> None:
        await asyncio.sleep(60)  # not in the way of starting up
        while True:
            try:
                await self.prune()
            except Exception:
                log.exception("pruning finished bookkeeping failed; trying again in an hour")
            await asyncio.sleep(PRUNE_EVERY_SECONDS)

    async def drain(self) -> None:
        """Wait until every event being processed here is finished (tests, shutdown)."""
        while self._tasks or self._queue or self._overflow:
            if self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
            else:
                await asyncio.sleep(0.005)  # the pump is starting the next ones
        await self._journal.idle()

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self._journal.start("inbox-writer")
        self._pump_task = asyncio.get_running_loop().create_task(self._pump(), name="inbox-pump")
        self._recovery_task = asyncio.get_running_loop().create_task(self._recovery(), name="inbox-recovery")
        self._prune_task = asyncio.get_running_loop().create_task(self._prune_loop(), name="inbox-prune")

    async def stop(self, grace_seconds: float = 10.0) -> None:
        try:
            await asyncio.wait_for(self.drain(), grace_seconds)
        except TimeoutError:
            log.warning("inbox stop: events still running; their leases will expire and they are recovered",
                        extra={"running": len(self._tasks)})
        for task in (self._prune_task, self._recovery_task, self._pump_task):
            await _cancel(task)
        await _cancel(self._refill_task)  # read only now: the pump may have started one meanwhile
        if self.backlog:
            log.warning("inbox stop: events still queued; their leases will expire and they are recovered",
                        extra={"queued": self.backlog})
        await self._journal.stop()
        for conn in self._conns:
            await conn.close()


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
