"""Offset bookkeeping: which consumed records are finished, and how many are in flight.

A record is finished when every route that matched it has delivered, dead-lettered,
dropped or skipped it. Kafka stores one committed offset per partition, so the router
commits the lowest offset that is not finished yet: everything below it is done, and a
restart or a new owner of the partition reads again from there (at-least-once).

A record can also be abandoned: its partition was revoked, or the router rewound the
partition to read it again. An abandoned record frees its place in flight but never
moves the committed offset past itself.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable

from aiokafka import TopicPartition


class OffsetTracker:
    """The unfinished offsets of one partition, in the order they were read."""

    def __init__(self) -> None:
        self._unfinished: deque[int] = deque()
        # Finished offsets that still sit behind a lower unfinished one.
        self._finished_ahead: set[int] = set()
        self._next_offset: int | None = None

    def add(self, offset: int) -> None:
        if self._next_offset is not None and offset < self._next_offset:
            raise ValueError(
                f"offset {offset} added after {self._next_offset - 1}; a partition's offsets must be added in "
                "ascending order (start a new tracker after seeking back)"
            )
        self._unfinished.append(offset)
        self._next_offset = offset + 1

    def finish(self, offset: int) -> None:
        self._finished_ahead.add(offset)
        while self._unfinished and self._unfinished[0] in self._finished_ahead:
            self._finished_ahead.discard(self._unfinished.popleft())

    @property
    def pending(self) -> int:
        return len(self._unfinished) - len(self._finished_ahead)

    @property
    def next_offset(self) -> int | None:
        return self._next_offset

    def committable(self) -> int | None:
        """Return the offset to commit: the lowest unfinished one, else one past the last read.

        None while nothing was read.
        """
        if self._unfinished:
            return self._unfinished[0]
        return self._next_offset


class Ticket:
    """One consumed record on its way through the routes that matched it."""

    __slots__ = ("partition", "offset", "read_at", "_remaining", "_settled", "_abandoned", "_on_settled")

    def __init__(self, partition: TopicPartition, offset: int, routes: int, on_settled: Callable[[Ticket], None]) -> None:
        self.partition = partition
        self.offset = offset
        self.read_at = time.monotonic()
        self._remaining = routes
        self._settled = False
        self._abandoned: asyncio.Event | None = None
        self._on_settled = on_settled

    @property
    def settled(self) -> bool:
        return self._settled

    @property
    def abandoned(self) -> bool:
        return self._abandoned is not None and self._abandoned.is_set()

    def route_done(self) -> None:
        """Record that one matching route finished with the record (delivered, parked, dropped or skipped)."""
        if self._settled:
            return
        self._remaining -= 1
        if self._remaining <= 0:
            self._settle()

    def abandon(self) -> None:
        if self._settled:
            return
        if self._abandoned is None:
            self._abandoned = asyncio.Event()
        self._abandoned.set()
        self._settle()

    async def sleep_unless_abandoned(self, delay_s: float) -> bool:
        """Sleep up to ``delay_s``; return True when the ticket was abandoned meanwhile."""
        if self._abandoned is None:
            self._abandoned = asyncio.Event()
        try:
            await asyncio.wait_for(self._abandoned.wait(), timeout=delay_s)
        except TimeoutError:
            return False
        return True

    def _settle(self) -> None:
        self._settled = True
        self._on_settled(self)


class Ledger:
    """Offset trackers of every partition being worked on, and the count of records in flight."""

    def __init__(self, max_in_flight: int) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight}")
        self.max_in_flight = max_in_flight
        self._trackers: dict[TopicPartition, OffsetTracker] = {}
        self._open: dict[TopicPartition, dict[int, Ticket]] = {}
        self._in_flight = 0
        self._changed: asyncio.Event | None = None

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def room(self) -> int:
        return max(0, self.max_in_flight - self._in_flight)

    @property
    def partitions(self) -> set[TopicPartition]:
        return set(self._trackers)

    def open(self, partition: TopicPartition, offset: int, routes: int) -> Ticket:
        """Register a record read from ``partition``; it is finished at once when no route matched.

        A record below one already registered means the consumer's position moved back
        (reset or seek). The partition's unfinished records are then abandoned, since
        they are read again, and its tracking starts over.
        """
        tracker = self._trackers.get(partition)
        if tracker is not None and tracker.next_offset is not None and offset < tracker.next_offset:
            self.abandon([partition])
            tracker = None
        if tracker is None:
            tracker = self._trackers[partition] = OffsetTracker()
            self._open[partition] = {}
        tracker.add(offset)
        ticket = Ticket(partition, offset, routes, self._settled)
        self._open[partition][offset] = ticket
        self._in_flight += 1
        if routes <= 0:
            ticket.route_done()
        return ticket

    def committable(self, partitions: Iterable[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        chosen = self._trackers if partitions is None else [tp for tp in partitions if tp in self._trackers]
        offsets = {}
        for partition in chosen:
            offset = self._trackers[partition].committable()
            if offset is not None:
                offsets[partition] = offset
        return offsets

    def pending(self, partitions: Iterable[TopicPartition] | None = None) -> int:
        chosen = self._trackers if partitions is None else [tp for tp in partitions if tp in self._trackers]
        return sum(self._trackers[tp].pending for tp in chosen)

    def abandon(self, partitions: Iterable[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """Forget the partitions' records and return the offsets that are safe to commit.

        Unfinished records are abandoned, so the routes skip them and their places in
        flight are freed; the returned offsets stop below them.
        """
        chosen = list(self._trackers) if partitions is None else [tp for tp in partitions if tp in self._trackers]
        offsets = self.committable(chosen)
        for partition in chosen:
            tickets = self._open.pop(partition)
            del self._trackers[partition]
            for ticket in list(tickets.values()):
                ticket.abandon()
        return offsets

    async def wait_settled(self, partitions: Iterable[TopicPartition] | None = None, *, timeout_s: float) -> bool:
        """Wait until the partitions have no unfinished record; False when ``timeout_s`` passed first."""
        chosen = None if partitions is None else list(partitions)
        return await self._wait_until(lambda: self.pending(chosen) == 0, timeout_s)

    async def wait_for_room(self, timeout_s: float) -> bool:
        return await self._wait_until(lambda: self.room > 0, timeout_s)

    async def _wait_until(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not condition():
            remaining_s = deadline - loop.time()
            if remaining_s <= 0:
                return False
            if self._changed is None:
                self._changed = asyncio.Event()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=remaining_s)
            except TimeoutError:
                return condition()
        return True

    def _settled(self, ticket: Ticket) -> None:
        self._in_flight -= 1
        tickets = self._open.get(ticket.partition)
        if tickets is not None and tickets.pop(ticket.offset, None) is not None and not ticket.abandoned:
            self._trackers[ticket.partition].finish(ticket.offset)
        if self._changed is not None:
            # Wake every waiter once; each checks its own condition and waits again.
            changed, self._changed = self._changed, None
            changed.set()
