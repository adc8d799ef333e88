"""Gather events of several keys into one call of a sink's ``deliver_batch``.

Each key's worker submits a run of its own events in order. It waits until the batch
with them is finished before it submits more. So a key's events stay in order within a
batch and across batches, while different keys share batches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")


class Batcher(Generic[Item]):
    """Cuts a batch when ``size`` items are waiting or ``wait_ms`` after the first one arrived."""

    def __init__(self, size: int, wait_ms: int, deliver: Callable[[list[Item]], Awaitable[None]]) -> None:
        if size < 1:
            raise ValueError(f"batch size must be at least 1, not {size}")
        self.size = size
        self.wait_s = max(0, wait_ms) / 1000
        self._deliver = deliver
        self._waiting: list[tuple[list[Item], asyncio.Future[None]]] = []
        self._waiting_count = 0
        self._timer: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, items: Sequence[Item]) -> None:
        """Queue ``items`` (at most ``size``) and return once their batch was handled."""
        if not items:
            return
        entry = (list(items), asyncio.get_running_loop().create_future())
        self._waiting.append(entry)
        self._waiting_count += len(items)
        if self._waiting_count >= self.size:
            self._cut()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.wait_s, self._cut)
        try:
            await entry[1]
        except asyncio.CancelledError:
            # A worker stopped before its items were cut leaves nothing behind.
            if entry in self._waiting:
                self._waiting.remove(entry)
                self._waiting_count -= len(entry[0])
            raise

    async def cancel_all(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for _, future in self._waiting:
            future.cancel()
        self._waiting.clear()
        self._waiting_count = 0
        running = list(self._running)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    def _cut(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiting:
            batch, futures = self._take_batch()
            task = asyncio.create_task(self._run(batch, futures))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            if self._waiting_count < self.size:
                break
        if self._waiting:
            self._timer = asyncio.get_running_loop().call_later(self.wait_s, self._cut)

    def _take_batch(self) -> tuple[list[Item], list[asyncio.Future[None]]]:
        batch: list[Item] = []
        futures: list[asyncio.Future[None]] = []
        while self._waiting and (not batch or len(batch) + len(self._waiting[0][0]) <= self.size):
            items, future = self._waiting.pop(0)
            batch.extend(items)
            futures.append(future)
        self._waiting_count -= len(batch)
        return batch, futures

    async def _run(self, batch: list[Item], futures: list[asyncio.Future[None]]) -> None:
        try:
            await self._deliver(batch)
        except asyncio.CancelledError:
            for future in futures:
                future.cancel()
            raise
        except Exception as error:
            for future in futures:
                if not future.done():
                    future.set_exception(error)
            return
        for future in futures:
            if not future.done():
                future.set_result(None)
