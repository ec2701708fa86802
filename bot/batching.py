"""Group commit: concurrent callers' items go out in batches, one batch in flight per lane.

The inbox writes accepted events and done marks this way; the dispatcher reads the speakers of
concurrent messages this way (one statement for all of them instead of one round trip each).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

log = logging.getLogger("qunbot.batching")
T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Collects items from concurrent callers and writes them in batches, one write in flight at a time.

    While a batch is being written the next one accumulates, so batches grow with load and cost nothing
    extra when it is quiet. Each caller gets its own item's result.
    """

    def __init__(self, writers: list[Callable[[list[T]], Awaitable[list[R]]]], batch_max: int,
                 failure: type[Exception] = RuntimeError) -> None:
        # One lane per writer: with several, a batch can go out while the previous one awaits its commit.
        self._writers = writers
        self._batch_max = batch_max
        # What each caller of a failed batch gets (the cause is logged once, here).
        self._failure = failure
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._writing = 0

    def submit_nowait(self, item: T) -> None:
        """Queue an item whose result nobody waits for (it is written with the next batch)."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_consume_exception)
        self._pending.append((item, future))
        self._wakeup.set()

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._wakeup.set()
        return await future

    async def idle(self) -> None:
        """Wait until everything submitted so far is written."""
        while self._pending or self._writing:  # noqa: ASYNC110 - shutdown and tests only
            await asyncio.sleep(0.005)

    @property
    def started(self) -> bool:
        return bool(self._tasks)

    def start(self, name: str) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run(write), name=f"{name}-{n}") for n, write in enumerate(self._writers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self, write: Callable[[list[T]], Awaitable[list[R]]]) -> None:
        while True:
            await self._wakeup.wait()
            # Let the requests already being read in this loop iteration join the batch: one commit fewer each.
            await asyncio.sleep(0)
            if not self._pending:
                self._wakeup.clear()
                continue
            batch, self._pending = self._pending[: self._batch_max], self._pending[self._batch_max :]
            if not self._pending:
                self._wakeup.clear()
            self._writing += 1
            try:
                results = await write([item for item, _ in batch])
            except Exception as exc:
                log.exception("batch write failed", extra={"batch": len(batch)})
                for _, future in batch:
                    if not future.done():
                        future.set_exception(self._failure(str(exc)))
                continue
            finally:
                self._writing -= 1
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

def _consume_exception(future: asyncio.Future[object]) -> None:
    if not future.cancelled():
        future.exception()  # logged by the writer already; the lease makes the event come back
