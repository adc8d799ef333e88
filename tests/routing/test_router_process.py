"""``hitl-gateway route`` as a process: SIGKILL mid-stream loses nothing, SIGTERM commits everything."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections import Counter
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiokafka import TopicPartition

from .conftest import Receiver, Topics, committed_offsets, event_body, http_route, produce_events, wait_until, write_routes

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
LOOPS = 10
EVENTS_PER_LOOP = 100


class RouterProcess:
    """One ``hitl-gateway route`` child process whose JSON log lines are kept."""

    def __init__(self, config: Path) -> None:
        self._config = config
        self.process: asyncio.subprocess.Process | None = None
        self.lines: list[dict] = []
        self._reader: asyncio.Task | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "route", "--config", str(self._config),
            "--metrics-port", "0", "--log-format", "json", "--shutdown-timeout-s", "10",
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read_log())

    async def _read_log(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        async for line in self.process.stderr:
            try:
                self.lines.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                self.lines.append({"event": "unparsed", "text": line.decode(errors="replace")})

    def logged(self, event: str) -> list[dict]:
        return [line for line in self.lines if line.get("event") == event]

    async def wait(self, timeout_s: float) -> int:
        assert self.process is not None and self._reader is not None
        code = await asyncio.wait_for(self.process.wait(), timeout=timeout_s)
        await self._reader
        return code

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.wait(10)


@pytest.mark.timeout(180)
async def test_router_sigkill_then_restart(
    kafka_bootstrap: str, topics: Topics, receiver: Receiver, tmp_path: Path
) -> None:
    # Every response takes up to 50 ms, so the stream lasts a few seconds and can be cut.
    receiver.slow_rate, receiver.max_delay_s = 1.0, 0.05
    group_id = f"crash-{uuid.uuid4().hex[:8]}"
    path = write_routes(
        tmp_path / "routes.yaml",
        bootstrap=kafka_bootstrap,
        topics=topics,
        group_id=group_id,
        max_in_flight=100,
        routes=[http_route("crm", receiver, on_failure="block", retry={"initial_backoff_s": 0.05, "max_backoff_s": 0.2})],
    )
    bodies = [event_body(f"loop{loop}", seq) for seq in range(EVENTS_PER_LOOP) for loop in range(LOOPS)]
    produced = await produce_events(kafka_bootstrap, topics.of("request"), bodies)
    where = {(record.loop_id, record.seq): (TopicPartition(record.topic, record.partition), record.offset) for record in produced}

    first = RouterProcess(path)
    await first.start()
    try:
        await wait_until(lambda: len(receiver.arrivals["crm"]) >= 100, timeout_s=60, what="the first 100 deliveries")
        partitions = sorted({tp for tp, _ in where.values()})
        for _ in range(50):
            if any((await committed_offsets(kafka_bootstrap, group_id, partitions)).values()):
                break
            await asyncio.sleep(0.1)
    finally:
        await first.kill()
    assert first.process.returncode == -signal.SIGKILL
    committed = await committed_offsets(kafka_bootstrap, group_id, sorted({tp for tp, _ in where.values()}))
    arrived_before_restart = len(receiver.arrivals["crm"])
    assert 0 < arrived_before_restart < len(bodies)
    assert any(offset for offset in committed.values())

    second = RouterProcess(path)
    await second.start()
    try:
        await wait_until(lambda: receiver.distinct("crm") == set(where), timeout_s=90, what="every event after the restart")
        await _check_endpoints(second)
        # SIGHUP reloads the unchanged file.
        second.process.send_signal(signal.SIGHUP)
        await wait_until(lambda: second.logged("config_reloaded"), timeout_s=10, what="the reload after SIGHUP")
        second.process.send_signal(signal.SIGTERM)
        assert await second.wait(30) == 0
    finally:
        await second.kill()

    counts = Counter((arrival.loop_id, arrival.seq) for arrival in receiver.arrivals["crm"])
    for event, count in counts.items():
        tp, offset = where[event]
        if offset < (committed[tp] or 0):
            assert count == 1, f"{event} at {tp.topic}[{tp.partition}]@{offset}, below the commit {committed[tp]}, arrived {count} times"
    for loop, seqs in receiver.first_arrival_order("crm").items():
        assert seqs == list(range(EVENTS_PER_LOOP)), f"{loop} first arrived as {seqs}"

    # SIGTERM let everything finish, so the group's offsets reached the end.
    ends: dict[TopicPartition, int] = {}
    for tp, offset in where.values():
        ends[tp] = max(ends.get(tp, 0), offset + 1)
    assert await committed_offsets(kafka_bootstrap, group_id, list(ends)) == ends
    assert second.logged("router_stopped")


async def _check_endpoints(router: RouterProcess) -> None:
    (listening,) = router.logged("metrics_listening")
    base = listening["url"].removesuffix("/metrics")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        async with session.get(base + "/healthz") as response:
            assert response.status == 200
        async with session.get(base + "/metrics") as response:
            text = await response.text()
    assert 'hitl_router_events_delivered_total{route="crm"}' in text
    assert "hitl_router_consumer_lag" in text
    assert 'hitl_router_config_reloads_total{result="failure"} 0.0' in text
