"""A deduplication store inside one process, bounded in entries and time."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from gateway.dedup import Receipt
from gateway.errors import DedupUnavailable


@dataclass(slots=True)
class _Entry:
    expires_at: float
    receipt: Receipt | None = None
    # Made only when a duplicate waits: an asyncio.Event costs about 850 bytes, more
    # than twice the rest of an entry.
    settled: asyncio.Event | None = None

    def settle(self) -> None:
        if self.settled is not None:
            self.settled.set()


class MemoryDedupStore:
    """Remember event ids for ``window_s`` seconds, at most ``max_entries`` of them.

    When full, the oldest delivered id is forgotten first; ``on_evict`` is called for each
    so the caller can count them. Reservations still in flight are never evicted.
    """

    def __init__(
        self,
        *,
        window_s: float = 24 * 3600.0,
        max_entries: int = 1_000_000,
        wait_timeout_s: float = 15.0,
        reservation_ttl_s: float = 30.0,
        on_evict: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._window_s = window_s
        self._max_entries = max_entries
        self._wait_timeout_s = wait_timeout_s
        self._reservation_ttl_s = reservation_ttl_s
        self._on_evict = on_evict
        self._clock = clock

    def __len__(self) -> int:
        return len(self._entries)

    async def claim(self, event_id: str) -> Receipt | None:
        deadline = self._clock() + self._wait_timeout_s
        while True:
            entry = self._live_entry(event_id)
            if entry is None:
                self._reserve(event_id)
                return None
            if entry.receipt is not None:
                return entry.receipt

            remaining_s = deadline - self._clock()
            if entry.settled is None:
                entry.settled = asyncio.Event()
            try:
                await asyncio.wait_for(entry.settled.wait(), timeout=max(remaining_s, 0.0))
            except TimeoutError:
                raise DedupUnavailable(
                    f"an earlier delivery of event {event_id} is still in flight after {self._wait_timeout_s:.0f} s"
                ) from None

    async def complete(self, event_id: str, receipt: Receipt) -> None:
        entry = self._entries.get(event_id)
        if entry is None:
            entry = _Entry(expires_at=0.0)
            self._entries[event_id] = entry
        entry.receipt = receipt
        entry.expires_at = self._clock() + self._window_s
        self._entries.move_to_end(event_id)
        entry.settle()
        self._evict()

    async def release(self, event_id: str) -> None:
        entry = self._entries.pop(event_id, None)
        if entry is not None:
            entry.settle()

    async def close(self) -> None:
        for entry in self._entries.values():
            entry.settle()

    def _live_entry(self, event_id: str) -> _Entry | None:
        entry = self._entries.get(event_id)
        if entry is not None and entry.expires_at <= self._clock():
            del self._entries[event_id]
            entry.settle()
            return None
        return entry

    def _reserve(self, event_id: str) -> None:
        self._entries[event_id] = _Entry(expires_at=self._clock() + self._reservation_ttl_s)
        self._evict()

    def _evict(self) -> None:
        now = self._clock()
        # Delivered ids sit in completion order with one fixed window, so expired ones
        # gather at the front.
        while self._entries:
            oldest_id, oldest = next(iter(self._entries.items()))
            if oldest.expires_at > now and len(self._entries) <= self._max_entries:
                return
            if oldest.receipt is None and oldest.expires_at > now:
                # In flight: keep it, look past it.
                self._entries.move_to_end(oldest_id)
                if all(entry.receipt is None for entry in self._entries.values()):
                    return
                continue
            del self._entries[oldest_id]
            oldest.settle()
            if oldest.expires_at > now and self._on_evict is not None:
                self._on_evict()
