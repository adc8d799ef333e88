"""One route's delivery: per-key queues, transform, sink, retries and what happens on failure.

Every ordering key (the loop id) has its own queue and at most one task working on it,
so a key's events reach the sink one after another in offset order, while different keys
are delivered concurrently. A key whose delivery is blocked or retrying holds only that
key's later events, and only for this route.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from gateway.routing.backoff import Backoff
from gateway.routing.batching import Batcher
from gateway.routing.inbound import Inbound
from gateway.routing.metrics import RouterMetrics
from gateway.routing.ordering import Ticket
from gateway.routing.ratelimit import TokenBucket
from gateway.envelope import parse_iso_time
from gateway.routing.stale import STALE_HEADER, StaleTracker, request_id_of
from gateway.sinks.base import DeliveryFailed, RoutedEvent, Sink

if TYPE_CHECKING:
    from gateway.routing.config import Route
    from gateway.routing.dlq import DeadLetterQueue

log = structlog.get_logger("gateway.routing.delivery")

# How many event ids a log line about a batch lists.
LOGGED_IDS = 10


@dataclass(slots=True)
class Job:
    """One event for this route, with the ticket that tracks its record's offset."""

    inbound: Inbound
    ticket: Ticket
    extra_headers: tuple[tuple[str, bytes], ...] = field(default=())


@dataclass(frozen=True, slots=True)
class GaveUp:
    error: DeliveryFailed
    attempts: int


class _Abandoned:
    """The jobs' records were abandoned while they were being delivered."""


ABANDONED = _Abandoned()


class RouteWorker:
    """Delivers the events submitted to one route; ``start`` and ``close`` bracket its life."""

    def __init__(
        self,
        route: Route,
        sink: Sink,
        *,
        metrics: RouterMetrics,
        dead_letters: DeadLetterQueue | None,
        rng: random.Random | None = None,
    ) -> None:
        if route.on_failure == "dead_letter" and dead_letters is None:
            raise ValueError(f"route {route.name!r} parks failed events (on_failure: dead_letter) but no dead-letter queue was given")
        self.route = route
        self.name = route.name
        self._sink = sink
        self._metrics = metrics
        self._dead_letters = dead_letters
        retry = route.retry
        self._backoff = Backoff(retry.initial_backoff_s, retry.max_backoff_s, retry.jitter, rng)
        self._bucket = TokenBucket(route.rate_limit.events_per_s) if route.rate_limit is not None else None
        self._stale = StaleTracker() if route.stale_events != "deliver" else None
        self._batcher: Batcher[Job] | None = None
        self._queues: dict[Hashable, deque[Job]] = {}
        self._tasks: dict[Hashable, asyncio.Task[None]] = {}
        self._started = False
        self._closed = False
        # Per outcome (delivered, dead_lettered, dropped, stale_skipped): what the replay
        # and redrive commands print.
        self.outcomes: Counter[str] = Counter()

    @property
    def busy_keys(self) -> int:
        return len(self._tasks)

    def matches(self, inbound: Inbound) -> bool:
        return self.route.match.matches(inbound.event_type, inbound.loop_id, inbound.event)

    async def start(self) -> None:
        if self._started:
            return
        await self._sink.start()
        self._started = True
        batch = self.route.batch
        if batch is not None and getattr(self._sink, "supports_batches", False):
            self._batcher = Batcher(batch.size, batch.wait_ms, self._deliver_jobs)
        elif batch is not None:
            log.warning("batch_ignored", route=self.name, reason=f"sink type {self.route.sink.type!r} does not take batches")

    async def close(self) -> None:
        """Stop working (unfinished jobs stay unfinished) and close the sink; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        await self.abandon_all()
        if self._started:
            await self._sink.close()

    def submit(self, inbound: Inbound, ticket: Ticket) -> None:
        if self._closed:
            raise RuntimeError(f"route {self.name!r} is closed and takes no more events")
        key = inbound.ordering_key
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
        queue.append(Job(inbound, ticket))
        if key not in self._tasks:
            task = asyncio.create_task(self._work_on_key(key, queue), name=f"route {self.name}")
            self._tasks[key] = task
            task.add_done_callback(_log_crash)

    async def abandon_all(self) -> None:
        """Cancel every delivery in progress and forget the queued jobs.

        The caller abandons their tickets, so their offsets are not committed and the
        records are read again.
        """
        tasks = list(self._tasks.values())
        self._tasks.clear()
        self._queues.clear()
        for task in tasks:
            task.cancel()
        if self._batcher is not None:
            await self._batcher.cancel_all()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _work_on_key(self, key: Hashable, queue: deque[Job]) -> None:
        try:
            while queue:
                if self._batcher is not None:
                    jobs = [queue.popleft() for _ in range(min(len(queue), self._batcher.size))]
                    await self._batcher.submit(jobs)
                else:
                    await self._deliver_jobs([queue.popleft()])
        finally:
            # abandon_all may have replaced this key's entries already.
            if self._tasks.get(key) is asyncio.current_task():
                del self._tasks[key]
            if not queue and self._queues.get(key) is queue:
                del self._queues[key]

    async def _deliver_jobs(self, jobs: list[Job]) -> None:
        """Deliver the jobs (one, or one batch) with retries, then settle each of them."""
        jobs = [job for job in jobs if not job.ticket.abandoned]
        jobs = self._leave_out_stale(jobs)
        if not jobs:
            return

        outcome = await self._attempt_until_done(jobs)

        if outcome is ABANDONED:
            return
        if isinstance(outcome, GaveUp):
            await self._give_up([job for job in jobs if not job.ticket.abandoned], outcome)
            return
        self._delivered(jobs)

    async def _attempt_until_done(self, jobs: list[Job]) -> GaveUp | _Abandoned | None:
        """Try until delivered (None), given up (GaveUp) or abandoned; ``block`` never gives up."""
        failures = 0
        while True:
            if self._bucket is not None:
                await self._bucket.acquire(len(jobs))
            error = await self._attempt(jobs)
            if error is None:
                if failures and self.route.on_failure == "block":
                    log.info("delivery_unblocked", route=self.name, **_ids(jobs), attempts=failures + 1)
                return None

            failures += 1
            self._metrics.failed_attempts.labels(route=self.name).inc(len(jobs))
            blocking = self.route.on_failure == "block"
            if not blocking and (not error.retriable or failures >= self.route.retry.attempts):
                return GaveUp(error, failures)

            delay_s = self._backoff.delay_s(failures, error.retry_after_s)
            self._metrics.retried.labels(route=self.name).inc(len(jobs))
            log.warning(
                "delivery_blocked" if blocking else "delivery_retry",
                route=self.name,
                **_ids(jobs),
                attempt=failures,
                retry_in_s=round(delay_s, 3),
                reason=str(error),
            )
            if await self._sleep(jobs, delay_s):
                return ABANDONED
            jobs[:] = [job for job in jobs if not job.ticket.abandoned]
            if not jobs:
                return ABANDONED

    async def _attempt(self, jobs: list[Job]) -> DeliveryFailed | None:
        try:
            events = [self._routed_event(job) for job in jobs]
        except Exception as error:
            # A transform gives the same result every time, so retrying cannot help.
            return DeliveryFailed(f"transform failed: {type(error).__name__}: {error}", retriable=False)

        try:
            if self._batcher is not None:
                await self._sink.deliver_batch(events)
            else:
                await self._sink.deliver(events[0])
        except DeliveryFailed as error:
            return error
        except Exception as error:
            log.exception("sink_error", route=self.name, **_ids(jobs))
            return DeliveryFailed(f"sink raised {type(error).__name__}: {error}", retriable=True)
        return None

    def _routed_event(self, job: Job) -> RoutedEvent:
        inbound = job.inbound
        transform = self.route.transform
        if transform is not None:
            event: dict[str, Any] = transform.apply(inbound.event)
            value = orjson.dumps(event)
        else:
            event, value = inbound.event, inbound.value
        return RoutedEvent(
            event_id=inbound.event_id,
            event_type=inbound.event_type,
            loop_id=inbound.loop_id,
            occurred_at=inbound.occurred_at,
            event=event,
            value=value,
            key=inbound.key,
            headers=inbound.headers,
            topic=inbound.topic,
            partition=inbound.partition,
            offset=inbound.offset,
            timestamp_ms=inbound.timestamp_ms,
            route=self.name,
            extra_headers=job.extra_headers,
        )

    async def _sleep(self, jobs: list[Job], delay_s: float) -> bool:
        """Wait out a backoff; True when every job was abandoned meanwhile."""
        if len(jobs) == 1:
            return await jobs[0].ticket.sleep_unless_abandoned(delay_s)
        await asyncio.sleep(delay_s)
        return all(job.ticket.abandoned for job in jobs)

    def _leave_out_stale(self, jobs: list[Job]) -> list[Job]:
        """Settle stale jobs at once (skip) or mark them; return the jobs to deliver."""
        if self._stale is None:
            return jobs
        action = self.route.stale_events
        to_deliver: list[Job] = []
        # Newest times of the jobs ahead in this same call, which are delivered first.
        ahead: dict[str, Any] = {}
        for job in jobs:
            request_id = request_id_of(job.inbound.event)
            occurred_at = parse_iso_time(job.inbound.occurred_at)
            if request_id is None or occurred_at is None:
                to_deliver.append(job)
                continue
            newest = max((t for t in (self._stale.newest(request_id), ahead.get(request_id)) if t is not None), default=None)
            if newest is None or occurred_at >= newest:
                ahead[request_id] = occurred_at
                to_deliver.append(job)
                continue

            self._metrics.stale.labels(route=self.name, action=action).inc()
            log.info(
                "stale_event",
                route=self.name,
                event_id=job.inbound.event_id,
                request_id=request_id,
                action=action,
                reason=f"occurred at {job.inbound.occurred_at}, before {newest.isoformat()} already delivered",
            )
            if action == "skip":
                self.outcomes["stale_skipped"] += 1
                job.ticket.route_done()
            else:
                job.extra_headers = (*job.extra_headers, STALE_HEADER)
                to_deliver.append(job)
        return to_deliver

    def _delivered(self, jobs: list[Job]) -> None:
        now = time.monotonic()
        delivered = self._metrics.delivered.labels(route=self.name)
        latency = self._metrics.delivery_latency.labels(route=self.name)
        for job in jobs:
            if self._stale is not None:
                self._remember_delivered(job)
            delivered.inc()
            latency.observe(now - job.ticket.read_at)
            self.outcomes["delivered"] += 1
            log.debug("event_delivered", route=self.name, event_id=job.inbound.event_id)
            job.ticket.route_done()

    def _remember_delivered(self, job: Job) -> None:
        assert self._stale is not None
        request_id = request_id_of(job.inbound.event)
        occurred_at = parse_iso_time(job.inbound.occurred_at)
        if request_id is not None and occurred_at is not None:
            self._stale.record(request_id, occurred_at)

    async def _give_up(self, jobs: list[Job], gave_up: GaveUp) -> None:
        reason = str(gave_up.error)
        if self.route.on_failure == "drop":
            for job in jobs:
                self._metrics.dropped.labels(route=self.name).inc()
                self.outcomes["dropped"] += 1
                log.warning("event_dropped", route=self.name, event_id=job.inbound.event_id, attempts=gave_up.attempts, reason=reason)
                job.ticket.route_done()
            return

        assert self._dead_letters is not None
        for job in jobs:
            parked = await self._dead_letters.park(
                job.inbound,
                route=self.name,
                error=reason,
                attempts=gave_up.attempts,
                sleep_unless_abandoned=job.ticket.sleep_unless_abandoned,
            )
            if not parked:
                continue
            self._metrics.dead_lettered.labels(route=self.name).inc()
            self.outcomes["dead_lettered"] += 1
            log.warning(
                "event_dead_lettered",
                route=self.name,
                event_id=job.inbound.event_id,
                topic=self._dead_letters.topic_for(job.inbound.topic),
                attempts=gave_up.attempts,
                reason=reason,
            )
            job.ticket.route_done()


def _ids(jobs: list[Job]) -> dict[str, Any]:
    if len(jobs) == 1:
        return {"event_id": jobs[0].inbound.event_id}
    return {"event_ids": [job.inbound.event_id for job in jobs[:LOGGED_IDS]], "events": len(jobs)}


def _log_crash(task: asyncio.Task[None]) -> None:
    if task.cancelled() or task.exception() is None:
        return
    log.error("route_worker_crashed", task=task.get_name(), error=repr(task.exception()))
