"""on_failure against the real broker: block holds one loop, dead_letter parks, redrive delivers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest
from aiokafka import TopicPartition

from tests.kafka_records import read_topic

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

FAST_RETRY = {"attempts": 3, "initial_backoff_s": 0.01, "max_backoff_s": 0.05, "jitter": 0.0}
REPO = Path(__file__).resolve().parents[2]


def routes_file(tmp_path: Path, bootstrap: str, topics: Topics, routes: list[dict]) -> Path:
    return write_routes(
        tmp_path / "routes.yaml", bootstrap=bootstrap, topics=topics, group_id=f"policy-{uuid.uuid4().hex[:8]}", routes=routes
    )


async def test_block_holds_one_loop(
    kafka_bootstrap: str, topics: Topics, receiver: Receiver, tmp_path: Path
) -> None:
    receiver.failing_loops = {"stuck"}
    path = routes_file(tmp_path, kafka_bootstrap, topics, [http_route("crm", receiver, retry=FAST_RETRY, on_failure="block")])
    loops = ["stuck", "free1", "free2", "free3"]
    await produce_events(kafka_bootstrap, topics.of("request"), [event_body(loop, seq) for seq in range(5) for loop in loops])

    async with running_router(path):
        free = {(loop, seq) for loop in loops[1:] for seq in range(5)}
        await wait_until(lambda: receiver.distinct("crm") == free, timeout_s=30, what="the free loops")
        # Still held after many retries, far more than retry.attempts.
        await wait_until(lambda: receiver.failures["crm"] >= 10, timeout_s=30, what="repeated attempts on the stuck loop")
        assert not any(arrival.loop_id == "stuck" for arrival in receiver.arrivals["crm"])

        receiver.failing_loops.clear()
        await wait_until(
            lambda: receiver.distinct("crm") == free | {("stuck", seq) for seq in range(5)},
            timeout_s=30,
            what="the stuck loop after the receiver healed",
        )
    assert receiver.first_arrival_order("crm")["stuck"] == [0, 1, 2, 3, 4]


@pytest.mark.timeout(180)
async def test_dead_letter_then_redrive(
    kafka_bootstrap: str, topics: Topics, receiver: Receiver, tmp_path: Path
) -> None:
    receiver.failing_loops = {"bad"}
    path = routes_file(
        tmp_path,
        kafka_bootstrap,
        topics,
        [http_route(name, receiver, retry=FAST_RETRY, on_failure="dead_letter") for name in ("crm", "audit")],
    )
    bodies = [event_body(loop, seq) for seq in range(3) for loop in ("bad", "good")]
    produced = await produce_events(kafka_bootstrap, topics.of("request"), bodies)
    bad_records = {(record.seq): record for record in produced if record.loop_id == "bad"}

    async with running_router(path) as router:
        for route in ("crm", "audit"):
            await wait_until(
                lambda: router.metrics.registry.get_sample_value("hitl_router_events_dead_lettered_total", {"route": route}) == 3,
                timeout_s=30,
                what=f"three parked events of {route}",
            )
        await wait_until(lambda: len(receiver.distinct("crm")) == 3, timeout_s=30, what="the good loop at crm")

    # Both routes parked the bad loop's events in the same topic; each record names its route.
    parked = [record for record in await read_topic(kafka_bootstrap, topics.of("request") + ".dlq") if _header(record, "x-dlq-route") == "crm"]
    assert len(parked) == 3
    for record in parked:
        body = orjson.loads(record.value)
        original = bad_records[body["data"]["seq"]]
        assert record.key == b"bad"
        assert _header(record, "ce_id") == f"evt-bad-{original.seq}"
        assert _header(record, "x-dlq-attempts") == "3"
        assert "HTTP 500" in _header(record, "x-dlq-error")
        assert _header(record, "x-dlq-topic") == topics.of("request")
        assert (_header(record, "x-dlq-partition"), _header(record, "x-dlq-offset")) == (
            str(original.partition),
            str(original.offset),
        )
        assert _header(record, "x-dlq-time").endswith("Z")

    # Parking finished the events, so the committed offsets reached the end.
    ends: dict[TopicPartition, int] = {}
    for record in produced:
        tp = TopicPartition(record.topic, record.partition)
        ends[tp] = max(ends.get(tp, 0), record.offset + 1)
    group_id = path.read_text().split("group_id: ")[1].split()[0]
    assert await committed_offsets(kafka_bootstrap, group_id, list(ends)) == ends

    receiver.failing_loops.clear()
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateway.cli", "dlq", "redrive", "--route", "crm", "--config", str(path), "--log-format", "json"],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr
    assert "3 selected" in result.stdout, result.stdout
    assert "delivered 3" in result.stdout, result.stdout
    assert receiver.first_arrival_order("crm")["bad"] == [0, 1, 2]
    # The audit route's parked copies were left alone.
    assert "bad" not in receiver.first_arrival_order("audit")


def _header(record, name: str) -> str:
    for header_name, value in record.headers:
        if header_name == name:
            return value.decode()
    raise AssertionError(f"record at offset {record.offset} has no {name} header")
