"""The router against the real broker: per-loop order at every route, nothing missing, offsets committed."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from .conftest import (
    Receiver,
    Topics,
    committed_offsets,
    event_body,
    http_route,
    produce_events,
    running_router,
    wait_until,
    write_routes,
)

pytestmark = pytest.mark.kafka

LOOPS = 20
EVENTS_PER_LOOP = 50
REBALANCE_EVENTS = 150
FAST_RETRY = {"attempts": 5, "initial_backoff_s": 0.01, "max_backoff_s": 0.1, "jitter": 0.2}


@pytest.mark.timeout(180)
async def test_router_keeps_loop_order(
    kafka_bootstrap: str, topics: Topics, receiver: Receiver, tmp_path: Path
) -> None:
    receiver.fail_rate, receiver.slow_rate, receiver.max_delay_s = 0.1, 0.1, 0.05
    group_id = f"order-{uuid.uuid4().hex[:8]}"
    path = write_routes(
        tmp_path / "routes.yaml",
        bootstrap=kafka_bootstrap,
        topics=topics,
        group_id=group_id,
        max_in_flight=50,
        routes=[
            http_route("first", receiver, retry=FAST_RETRY, on_failure="block"),
            http_route("second", receiver, retry=FAST_RETRY, on_failure="block"),
        ],
    )
    # Interleave the loops at random, as webhooks would arrive.
    events = [(f"loop{loop:02d}", seq) for loop in range(LOOPS) for seq in range(EVENTS_PER_LOOP)]
    schedule = sorted(events, key=lambda item: (item[1] + random.Random(item[0]).random() * 5, item[0]))
    produced = await produce_events(kafka_bootstrap, topics.of("request"), [event_body(loop, seq) for loop, seq in schedule])
    expected = {(loop, seq) for loop, seq in events}

    async with running_router(path):
        await wait_until(
            lambda: all(receiver.distinct(route) == expected for route in ("first", "second")),
            timeout_s=120,
            what="every event at both routes",
        )

    for route in ("first", "second"):
        order = receiver.first_arrival_order(route)
        assert sorted(order) == sorted({loop for loop, _ in events})
        for loop, seqs in order.items():
            assert seqs == list(range(EVENTS_PER_LOOP)), f"route {route}, {loop} arrived as {seqs}"
    assert receiver.failures["first"] > 0
    assert receiver.failures["second"] > 0

    # Everything finished, so the shutdown committed up to the end of each partition.
    ends: dict[TopicPartition, int] = {}
    for record in produced:
        tp = TopicPartition(record.topic, record.partition)
        ends[tp] = max(ends.get(tp, 0), record.offset + 1)
    assert await committed_offsets(kafka_bootstrap, group_id, list(ends)) == ends


@pytest.mark.timeout(120)
async def test_router_rebalance_keeps_order(
    kafka_bootstrap: str, topics: Topics, receiver: Receiver, tmp_path: Path
) -> None:
    # Two loops per partition, with responses of up to 80 ms each, keep every partition busy for
    # seconds, so the group rebalances while events of each partition are in flight.
    receiver.slow_rate, receiver.max_delay_s = 1.0, 0.08
    group_id = f"rebalance-{uuid.uuid4().hex[:8]}"
    path = write_routes(
        tmp_path / "routes.yaml",
        bootstrap=kafka_bootstrap,
        topics=topics,
        group_id=group_id,
        max_in_flight=60,
        routes=[http_route("crm", receiver, retry=FAST_RETRY, on_failure="block")],
    )
    loops = loops_per_partition(partitions=3, per_partition=2)
    expected = {(loop, seq) for loop in loops for seq in range(REBALANCE_EVENTS)}
    await produce_events(
        kafka_bootstrap, topics.of("request"), [event_body(loop, seq) for seq in range(REBALANCE_EVENTS) for loop in loops]
    )

    async with running_router(path) as first:
        await wait_until(lambda: len(receiver.arrivals["crm"]) >= 30, timeout_s=30, what="the first deliveries")
        async with running_router(path) as second:
            await wait_until(
                lambda: second.metrics.registry.get_sample_value("hitl_router_events_delivered_total", {"route": "crm"}),
                timeout_s=30,
                what="the second router's first delivery",
            )
            await wait_until(lambda: receiver.distinct("crm") == expected, timeout_s=60, what="every event")
            assert first.healthy and second.healthy
    assert len(receiver.arrivals["crm"]) < 2 * len(expected)

    for loop, seqs in receiver.first_arrival_order("crm").items():
        assert seqs == list(range(REBALANCE_EVENTS)), f"{loop} first arrived as {seqs}"


def loops_per_partition(*, partitions: int, per_partition: int) -> list[str]:
    """Loop ids that the producer's default partitioner spreads evenly over the partitions."""
    chosen: dict[int, list[str]] = {partition: [] for partition in range(partitions)}
    for number in range(1000):
        loop = f"loop{number}"
        partition = DefaultPartitioner()(loop.encode(), list(range(partitions)), list(range(partitions)))
        if len(chosen[partition]) < per_partition:
            chosen[partition].append(loop)
    return [loop for loops in chosen.values() for loop in loops]
