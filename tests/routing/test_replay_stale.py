"""Replay from a timestamp, and stale events skipped or marked, against the real broker."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.routing.config import load_routing_config
from gateway.routing.replay import replay

from .conftest import (
    Receiver,
    Topics,
    event_body,
    event_time,
    http_route,
    produce_events,
    running_router,
    wait_until,
    write_routes,
)

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]


async def produce_round(bootstrap: str, topics: Topics, name: str) -> None:
    """Three request events and one loop event of loop ``name``."""
    await produce_events(bootstrap, topics.of("request"), [event_body(name, seq) for seq in range(3)])
    await produce_events(bootstrap, topics.of("loop"), [event_body(name, 3, event_type="loop.updated")])


async def pause_for_a_new_millisecond() -> datetime:
    await asyncio.sleep(0.05)
    moment = datetime.now(UTC)
    await asyncio.sleep(0.05)
    return moment


@pytest.mark.timeout(120)
async def test_replay_between_since_and_until(
    kafka_bootstrap: str, topics: Topics, receiver: Receiver, tmp_path: Path
) -> None:
    path = write_routes(
        tmp_path / "routes.yaml",
        bootstrap=kafka_bootstrap,
        topics=topics,
        group_id=f"replay-{uuid.uuid4().hex[:8]}",
        routes=[http_route("crm", receiver, match={"event_types": ["request.*"]})],
    )
    await produce_round(kafka_bootstrap, topics, "before")
    since = await pause_for_a_new_millisecond()
    await produce_round(kafka_bootstrap, topics, "inside")
    until = await pause_for_a_new_millisecond()
    await produce_round(kafka_bootstrap, topics, "after")

    report = await replay(load_routing_config(path), "crm", since, until)

    assert receiver.first_arrival_order("crm") == {"inside": [0, 1, 2]}
    assert report.selected == 3
    assert report.outcomes == {"delivered": 3}
    # The loop event inside the window was read but the route does not match it.
    assert report.read == 4

    # The command: Unix seconds, no --until, so it reads to the end seen at start.
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateway.cli", "replay", "--route", "crm", "--since", f"{until.timestamp():.3f}", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr
    assert "3 selected" in result.stdout, result.stdout
    assert "delivered 3" in result.stdout, result.stdout
    assert receiver.first_arrival_order("crm") == {"inside": [0, 1, 2], "after": [0, 1, 2]}


async def test_replay_unknown_route(kafka_bootstrap: str, topics: Topics, receiver: Receiver, tmp_path: Path) -> None:
    path = write_routes(
        tmp_path / "routes.yaml", bootstrap=kafka_bootstrap, topics=topics, group_id="unused", routes=[http_route("crm", receiver)]
    )
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateway.cli", "replay", "--route", "nope", "--since", "2025-01-01T00:00:00Z", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 2
    assert "no route named 'nope'" in result.stderr
    assert "its routes are: crm" in result.stderr


async def test_stale_events_skip_or_mark(
    kafka_bootstrap: str, topics: Topics, receiver: Receiver, tmp_path: Path
) -> None:
    path = write_routes(
        tmp_path / "routes.yaml",
        bootstrap=kafka_bootstrap,
        topics=topics,
        group_id=f"stale-{uuid.uuid4().hex[:8]}",
        routes=[http_route("skipper", receiver, stale_events="skip"), http_route("marker", receiver, stale_events="mark")],
    )
    # seq 1 is a late copy: it happened before seq 0, which was already delivered.
    times = [10, 5, 20, 20]
    bodies = [event_body("l1", seq, request_id="r1", occurred_at=event_time(at)) for seq, at in enumerate(times)]
    await produce_events(kafka_bootstrap, topics.of("request"), bodies)

    async with running_router(path) as router:
        await wait_until(lambda: len(receiver.distinct("marker")) == 4, timeout_s=20, what="all events at marker")
        await wait_until(lambda: len(receiver.distinct("skipper")) == 3, timeout_s=20, what="the fresh events at skipper")
        stale = {
            action: router.metrics.registry.get_sample_value("hitl_router_stale_events_total", {"route": route, "action": action})
            for route, action in (("skipper", "skip"), ("marker", "mark"))
        }

    assert receiver.first_arrival_order("skipper") == {"l1": [0, 2, 3]}
    marked = {arrival.seq: arrival.headers.get("x-stale-event") for arrival in receiver.arrivals["marker"]}
    assert marked == {0: None, 1: "true", 2: None, 3: None}
    assert stale == {"skip": 1.0, "mark": 1.0}
