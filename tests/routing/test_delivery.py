"""One route's worker without Kafka: per-key order, retries, failure policies, stale events, batches."""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict

import orjson
import pytest
from aiokafka import TopicPartition

from gateway.routing.delivery import RouteWorker
from gateway.routing.metrics import RouterMetrics
from gateway.routing.ordering import Ledger
from gateway.sinks.base import DeliveryFailed, RoutedEvent

from .conftest import FakeBatchSink, FakeSink, event_time, make_inbound, make_route, seq_of, wait_until

FAST_RETRY = {"attempts": 3, "initial_backoff_s": 0.001, "max_backoff_s": 0.01, "jitter": 0.0}
TP = TopicPartition("hitl.request", 0)


class RecordingDeadLetters:
    def __init__(self) -> None:
        self.parked: list[tuple[str, str, str, int]] = []

    def topic_for(self, topic: str) -> str:
        return topic + ".dlq"

    async def park(self, inbound, *, route, error, attempts, sleep_unless_abandoned) -> bool:
        self.parked.append((inbound.event_id, route, error, attempts))
        return True


async def started_worker(route, sink=None, dead_letters=None) -> tuple[RouteWorker, FakeSink, RouterMetrics]:
    sink = sink or route.sink.sink_class()
    metrics = RouterMetrics()
    worker = RouteWorker(route, sink, metrics=metrics, dead_letters=dead_letters or RecordingDeadLetters(), rng=random.Random(3))
    await worker.start()
    return worker, sink, metrics


def submit(worker: RouteWorker, ledger: Ledger, loop_id: str, seq: int, **fields):
    ticket = ledger.open(TP, ledger_offset(ledger), routes=1)
    worker.submit(make_inbound(loop_id, seq, offset=ticket.offset, **fields), ticket)
    return ticket


def ledger_offset(ledger: Ledger) -> int:
    offset = getattr(ledger, "_test_next_offset", 0)
    ledger._test_next_offset = offset + 1
    return offset


def counter(metrics: RouterMetrics, name: str, **labels) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def test_key_order_survives_random_failures(ledger: Ledger) -> None:
    route = make_route(retry={**FAST_RETRY, "attempts": 1000})
    worker, sink, _ = await started_worker(route)
    rng = random.Random(11)

    async def flaky(events: list[RoutedEvent]) -> None:
        await asyncio.sleep(rng.uniform(0, 0.003))
        if rng.random() < 0.3:
            raise DeliveryFailed("HTTP 500", retriable=True)

    sink.behaviour = flaky
    loops = [f"loop{number}" for number in range(6)]
    for seq in range(40):
        for loop_id in loops:
            submit(worker, ledger, loop_id, seq)

    assert await ledger.wait_settled(timeout_s=30)
    by_loop = defaultdict(list)
    for event in sink.delivered:
        by_loop[event.loop_id].append(seq_of(event))
    assert {loop_id: by_loop[loop_id] for loop_id in loops} == {loop_id: list(range(40)) for loop_id in loops}
    assert ledger.committable() == {TP: 240}
    await worker.close()


async def test_slow_key_leaves_others_flowing(ledger: Ledger) -> None:
    worker, sink, _ = await started_worker(make_route())
    release = asyncio.Event()

    async def slow_for_a(events: list[RoutedEvent]) -> None:
        if events[0].loop_id == "a":
            await release.wait()

    sink.behaviour = slow_for_a
    submit(worker, ledger, "a", 0)
    submit(worker, ledger, "a", 1)
    for seq in range(5):
        submit(worker, ledger, "b", seq)

    await wait_until(lambda: len(sink.delivered) == 5, timeout_s=5, what="loop b's events")
    assert {event.loop_id for event in sink.delivered} == {"b"}
    assert ledger.committable() == {TP: 0}

    release.set()
    assert await ledger.wait_settled(timeout_s=5)
    assert [seq_of(event) for event in sink.delivered if event.loop_id == "a"] == [0, 1]
    await worker.close()


async def test_drop_after_last_attempt(ledger: Ledger) -> None:
    worker, sink, metrics = await started_worker(make_route(retry=FAST_RETRY, on_failure="drop"))

    async def always_500(events: list[RoutedEvent]) -> None:
        raise DeliveryFailed("HTTP 500", retriable=True)

    sink.behaviour = always_500
    submit(worker, ledger, "a", 0)

    assert await ledger.wait_settled(timeout_s=5)
    assert len(sink.calls) == 3
    assert counter(metrics, "hitl_router_events_dropped_total", route="fake") == 1
    assert counter(metrics, "hitl_router_events_retried_total", route="fake") == 2
    assert counter(metrics, "hitl_router_delivery_failures_total", route="fake") == 3
    await worker.close()


async def test_permanent_failure_parks_at_once(ledger: Ledger) -> None:
    dead_letters = RecordingDeadLetters()
    worker, sink, metrics = await started_worker(make_route(retry=FAST_RETRY), dead_letters=dead_letters)

    async def rejected(events: list[RoutedEvent]) -> None:
        raise DeliveryFailed("HTTP 422; the receiver rejected the event", retriable=False)

    sink.behaviour = rejected
    submit(worker, ledger, "a", 0)

    assert await ledger.wait_settled(timeout_s=5)
    assert len(sink.calls) == 1
    assert dead_letters.parked == [("evt-a-0", "fake", "HTTP 422; the receiver rejected the event", 1)]
    assert counter(metrics, "hitl_router_events_dead_lettered_total", route="fake") == 1
    await worker.close()


async def test_block_holds_only_its_key(ledger: Ledger) -> None:
    worker, sink, _ = await started_worker(make_route(retry=FAST_RETRY, on_failure="block"))
    failures_left = {"a": 8}

    async def fail_a_for_a_while(events: list[RoutedEvent]) -> None:
        if events[0].loop_id == "a" and failures_left["a"] > 0:
            failures_left["a"] -= 1
            raise DeliveryFailed("HTTP 400", retriable=False)

    sink.behaviour = fail_a_for_a_while
    for seq in range(3):
        submit(worker, ledger, "a", seq)
        submit(worker, ledger, "b", seq)

    assert await ledger.wait_settled(timeout_s=10)
    # Far more attempts than retry.attempts: block never gives up, even on a permanent error.
    assert len([call for call in sink.calls if call[0].loop_id == "a"]) == 8 + 3
    order = [(event.loop_id, seq_of(event)) for event in sink.delivered]
    assert [seq for loop_id, seq in order if loop_id == "a"] == [0, 1, 2]
    assert order.index(("b", 2)) < order.index(("a", 0))
    await worker.close()


async def test_retry_after_sets_delay(ledger: Ledger) -> None:
    worker, sink, _ = await started_worker(make_route(retry=FAST_RETRY))
    call_times: list[float] = []

    async def busy_once(events: list[RoutedEvent]) -> None:
        call_times.append(time.monotonic())
        if len(call_times) == 1:
            raise DeliveryFailed("HTTP 429", retriable=True, retry_after_s=0.3)

    sink.behaviour = busy_once
    submit(worker, ledger, "a", 0)

    assert await ledger.wait_settled(timeout_s=5)
    assert call_times[1] - call_times[0] >= 0.29
    await worker.close()


async def test_abandoned_events_stop_retrying(ledger: Ledger) -> None:
    worker, sink, _ = await started_worker(make_route(retry={**FAST_RETRY, "max_backoff_s": 5.0}, on_failure="block"))

    async def always_down(events: list[RoutedEvent]) -> None:
        raise DeliveryFailed("connection refused", retriable=True)

    sink.behaviour = always_down
    submit(worker, ledger, "a", 0)
    submit(worker, ledger, "a", 1)
    await wait_until(lambda: len(sink.calls) >= 3, timeout_s=5, what="a few retries")

    ledger.abandon()
    await wait_until(lambda: worker.busy_keys == 0, timeout_s=2, what="the key worker to stop")
    assert {seq_of(call[0]) for call in sink.calls} == {0}
    await worker.close()


async def test_stale_events_skipped(ledger: Ledger) -> None:
    worker, sink, metrics = await started_worker(make_route(stale_events="skip"))
    submit(worker, ledger, "a", 0, request_id="r1", occurred_at=event_time(10))
    submit(worker, ledger, "a", 1, request_id="r1", occurred_at=event_time(5))
    submit(worker, ledger, "a", 2, request_id="r2", occurred_at=event_time(1))
    submit(worker, ledger, "a", 3, request_id="r1", occurred_at=event_time(10))

    assert await ledger.wait_settled(timeout_s=5)
    assert [seq_of(event) for event in sink.delivered] == [0, 2, 3]
    assert counter(metrics, "hitl_router_stale_events_total", route="fake", action="skip") == 1
    await worker.close()


async def test_stale_events_marked(ledger: Ledger) -> None:
    worker, sink, metrics = await started_worker(make_route(stale_events="mark"))
    submit(worker, ledger, "a", 0, request_id="r1", occurred_at=event_time(10))
    submit(worker, ledger, "a", 1, request_id="r1", occurred_at=event_time(5))

    assert await ledger.wait_settled(timeout_s=5)
    assert [event.extra_headers for event in sink.delivered] == [(), (("x-stale-event", b"true"),)]
    assert counter(metrics, "hitl_router_stale_events_total", route="fake", action="mark") == 1
    await worker.close()


async def test_batches_keep_key_order(ledger: Ledger) -> None:
    route = make_route(sink_class=FakeBatchSink, batch={"size": 4, "wait_ms": 20}, retry={**FAST_RETRY, "attempts": 1000})
    worker, sink, _ = await started_worker(route)
    rng = random.Random(5)

    async def flaky(events: list[RoutedEvent]) -> None:
        await asyncio.sleep(rng.uniform(0, 0.005))
        if rng.random() < 0.2:
            raise DeliveryFailed("HTTP 503", retriable=True)

    sink.behaviour = flaky
    for seq in range(25):
        for loop_id in ("a", "b", "c"):
            submit(worker, ledger, loop_id, seq)

    assert await ledger.wait_settled(timeout_s=20)
    assert max(len(call) for call in sink.calls) == 4
    for loop_id in ("a", "b", "c"):
        assert [seq_of(event) for event in sink.delivered if event.loop_id == loop_id] == list(range(25))
    await worker.close()


async def test_batch_shared_by_keys(ledger: Ledger) -> None:
    route = make_route(sink_class=FakeBatchSink, batch={"size": 6, "wait_ms": 1000})
    worker, sink, _ = await started_worker(route)
    for seq in range(2):
        for loop_id in ("a", "b", "c"):
            submit(worker, ledger, loop_id, seq)

    assert await ledger.wait_settled(timeout_s=5)
    (batch,) = sink.calls
    assert [(event.loop_id, seq_of(event)) for event in batch] == [
        ("a", 0), ("a", 1), ("b", 0), ("b", 1), ("c", 0), ("c", 1)
    ]
    await worker.close()


async def test_partial_batch_leaves_after_wait_ms(ledger: Ledger) -> None:
    route = make_route(sink_class=FakeBatchSink, batch={"size": 100, "wait_ms": 150})
    worker, sink, _ = await started_worker(route)

    started = time.monotonic()
    submit(worker, ledger, "a", 0)
    submit(worker, ledger, "b", 0)
    assert await ledger.wait_settled(timeout_s=5)

    assert 0.14 <= time.monotonic() - started < 2.0
    assert [len(call) for call in sink.calls] == [2]
    await worker.close()


async def test_rate_limit_spaces_deliveries(ledger: Ledger) -> None:
    worker, sink, _ = await started_worker(make_route(rate_limit={"events_per_s": 20}))

    started = time.monotonic()
    for seq in range(30):
        submit(worker, ledger, f"loop{seq}", 0)
    assert await ledger.wait_settled(timeout_s=10)

    # A burst of 20, then 10 more at 20 per second.
    assert time.monotonic() - started >= 0.45
    assert len(sink.delivered) == 30
    await worker.close()


async def test_transform_shapes_sink_event(ledger: Ledger) -> None:
    route = make_route(transform={"keep": ["event", "data.seq"], "set": {"source": "hitl"}})
    worker, sink, _ = await started_worker(route)
    submit(worker, ledger, "a", 7)

    assert await ledger.wait_settled(timeout_s=5)
    (event,) = sink.delivered
    assert event.event == {"event": "request.updated", "data": {"seq": 7}, "source": "hitl"}
    assert orjson.loads(event.value) == event.event
    assert event.route == "fake"
    await worker.close()


async def test_close_twice_closes_sink_once() -> None:
    worker, sink, _ = await started_worker(make_route())
    await worker.close()
    await worker.close()
    assert sink.closed == 1
    with pytest.raises(RuntimeError, match="closed"):
        worker.submit(make_inbound("a", 0), Ledger(1).open(TP, 0, routes=1))
