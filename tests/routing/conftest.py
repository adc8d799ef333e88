"""Helpers of the routing tests: a scriptable in-memory sink, an HTTP receiver, event builders.

The receiver is an aiohttp server on 127.0.0.1 at a free port. It records every request
it accepts with 200, per route (the URL path ``/<route>``), and can fail or stall on
purpose, driven by a seeded random generator so a failing run can be repeated.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
import yaml
from aiohttp import web
from aiokafka import AIOKafkaProducer, TopicPartition

from gateway.producer import ensure_topics
from gateway.routing.config import Route, RoutingConfig, SinkSpec, load_routing_config
from gateway.routing.consumer import Router, RouterOptions
from gateway.routing.inbound import Inbound
from gateway.routing.ordering import Ledger
from gateway.sinks.base import RoutedEvent, SinkContext, SinkSettings

BASE_TIME = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
FAST_ROUTER = RouterOptions(
    commit_interval_s=0.2, poll_timeout_ms=100, shutdown_timeout_s=5.0, revoke_timeout_s=5.0, reload_drain_timeout_s=3.0
)


# ---------------------------------------------------------------- in-memory sink


class FakeSettings(SinkSettings):
    pass


class FakeSink:
    """Records what it is given; ``behaviour`` may raise DeliveryFailed or sleep first."""

    Settings: ClassVar[type[SinkSettings]] = FakeSettings
    supports_batches: ClassVar[bool] = False

    def __init__(self, settings: SinkSettings | None = None, context: SinkContext | None = None) -> None:
        self.calls: list[list[RoutedEvent]] = []
        self.delivered: list[RoutedEvent] = []
        self.behaviour: Callable[[list[RoutedEvent]], Awaitable[None]] | None = None
        self.started = False
        self.closed = 0

    async def start(self) -> None:
        self.started = True

    async def deliver(self, event: RoutedEvent) -> None:
        await self._take([event])

    async def deliver_batch(self, events: Sequence[RoutedEvent]) -> None:
        await self._take(list(events))

    async def close(self) -> None:
        self.closed += 1

    async def _take(self, events: list[RoutedEvent]) -> None:
        self.calls.append(events)
        if self.behaviour is not None:
            await self.behaviour(events)
        self.delivered.extend(events)


class FakeBatchSink(FakeSink):
    supports_batches: ClassVar[bool] = True


def make_route(name: str = "fake", *, sink_class: type = FakeSink, **fields: Any) -> Route:
    spec = SinkSpec.model_construct(type="fake", settings=FakeSettings(), sink_class=sink_class)
    return Route.model_validate({"name": name, "sink": spec, **fields})


def event_time(seconds: float) -> str:
    return (BASE_TIME + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def event_body(
    loop_id: str,
    seq: int,
    *,
    event_type: str = "request.updated",
    request_id: str | None = None,
    occurred_at: str | None = None,
) -> dict[str, Any]:
    return {
        "event": event_type,
        "timestamp": occurred_at or event_time(seq),
        "data": {"request": {"id": request_id or f"req-{loop_id}-{seq}", "loop_id": loop_id}, "seq": seq},
    }


def event_headers(event_id: str, event_type: str, occurred_at: str | None) -> list[tuple[str, bytes]]:
    headers = [("ce_specversion", b"1.0"), ("ce_id", event_id.encode()), ("ce_type", event_type.encode())]
    headers.append(("ce_source", b"urn:hitl-gateway:test"))
    if occurred_at:
        headers.append(("ce_time", occurred_at.encode()))
    headers.append(("content-type", b"application/json"))
    return headers


def make_inbound(loop_id: str, seq: int, *, offset: int | None = None, partition: int = 0, **body_fields: Any) -> Inbound:
    body = event_body(loop_id, seq, **body_fields)
    value = orjson.dumps(body)
    return Inbound(
        event_id=f"evt-{loop_id}-{seq}",
        event_type=body["event"],
        loop_id=loop_id,
        occurred_at=body["timestamp"],
        event=body,
        value=value,
        key=loop_id.encode(),
        headers=tuple(event_headers(f"evt-{loop_id}-{seq}", body["event"], body["timestamp"])),
        topic="hitl.request",
        partition=partition,
        offset=seq if offset is None else offset,
        timestamp_ms=0,
    )


def seq_of(event: RoutedEvent) -> int:
    return event.event["data"]["seq"]


async def wait_until(condition: Callable[[], bool], *, timeout_s: float, what: str, interval_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(interval_s)


@pytest.fixture
def ledger() -> Ledger:
    return Ledger(max_in_flight=10_000)


# ---------------------------------------------------------------- HTTP receiver


@dataclass
class Arrival:
    loop_id: str
    seq: int
    event_id: str
    headers: dict[str, str]


@dataclass
class Receiver:
    """An HTTP endpoint for POST /<route> that records 200s. Failure and delay come from a seeded generator."""

    seed: int = 1
    fail_rate: float = 0.0
    slow_rate: float = 0.0
    max_delay_s: float = 0.0
    # Loops that get ``failing_status`` whatever the rates are.
    failing_loops: set[str] = field(default_factory=set)
    failing_status: int = 500
    # Routes that get ``failing_status`` in response to every event.
    failing_routes: set[str] = field(default_factory=set)
    arrivals: dict[str, list[Arrival]] = field(default_factory=lambda: defaultdict(list))
    failures: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    url: str = ""

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def url_for(self, route: str) -> str:
        return f"{self.url}/{route}"

    async def handle(self, request: web.Request) -> web.Response:
        route = request.match_info["route"]
        body = orjson.loads(await request.read())
        loop_id = body["data"]["request"]["loop_id"]
        slow, fail = self._rng.random() < self.slow_rate, self._rng.random() < self.fail_rate
        delay_s = self._rng.uniform(0, self.max_delay_s)
        if slow:
            await asyncio.sleep(delay_s)
        if fail or loop_id in self.failing_loops or route in self.failing_routes:
            self.failures[route] += 1
            return web.Response(status=self.failing_status)
        self.arrivals[route].append(
            Arrival(loop_id, body["data"]["seq"], request.headers.get("X-Event-Id", ""), dict(request.headers))
        )
        return web.Response(status=200)

    def first_arrival_order(self, route: str) -> dict[str, list[int]]:
        """Per loop, the sequence numbers in the order they first arrived (retries of seen ones left out)."""
        seen: set[tuple[str, int]] = set()
        order: dict[str, list[int]] = defaultdict(list)
        for arrival in self.arrivals[route]:
            if (arrival.loop_id, arrival.seq) not in seen:
                seen.add((arrival.loop_id, arrival.seq))
                order[arrival.loop_id].append(arrival.seq)
        return order

    def distinct(self, route: str) -> set[tuple[str, int]]:
        return {(arrival.loop_id, arrival.seq) for arrival in self.arrivals[route]}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/{route}", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    receiver.url = f"http://127.0.0.1:{port}"
    yield receiver
    await runner.cleanup()


# ---------------------------------------------------------------- Kafka


@dataclass
class Topics:
    """The family topics of one test, named after its unique prefix."""

    prefix: str
    families: tuple[str, ...] = ("request", "loop")

    @property
    def names(self) -> list[str]:
        return [self.prefix + family for family in self.families]

    def of(self, family: str) -> str:
        return self.prefix + family


@pytest.fixture
async def topics(kafka_bootstrap: str, topic_prefix: str) -> Topics:
    created = Topics(topic_prefix)
    await ensure_topics(kafka_bootstrap, created.names, 3, 1)
    return created


@dataclass
class Produced:
    loop_id: str
    seq: int
    topic: str
    partition: int
    offset: int
    timestamp_ms: int


async def produce_events(
    bootstrap: str, topic: str, events: Sequence[dict[str, Any]], *, event_ids: Sequence[str] | None = None
) -> list[Produced]:
    """Produce global-webhook bodies keyed by their loop id, with CloudEvents headers, in order."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        pending = []
        for index, body in enumerate(events):
            loop_id = body["data"]["request"]["loop_id"]
            event_id = event_ids[index] if event_ids else f"evt-{loop_id}-{body['data']['seq']}"
            headers = event_headers(event_id, body["event"], body["timestamp"])
            pending.append(
                (body, await producer.send(topic, value=orjson.dumps(body), key=loop_id.encode(), headers=headers))
            )
        produced = []
        for body, future in pending:
            metadata = await future
            produced.append(
                Produced(
                    body["data"]["request"]["loop_id"], body["data"]["seq"], topic, metadata.partition, metadata.offset, metadata.timestamp
                )
            )
        return produced
    finally:
        await producer.stop()


def write_routes(
    path: Path, *, bootstrap: str, topics: Topics, group_id: str, routes: list[dict[str, Any]], max_in_flight: int = 1000
) -> Path:
    document = {
        "kafka": {"bootstrap_servers": bootstrap, "group_id": group_id, "topics": topics.names, "dlq_suffix": ".dlq"},
        "max_in_flight": max_in_flight,
        "routes": routes,
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def http_route(name: str, receiver: Receiver, **fields: Any) -> dict[str, Any]:
    return {"name": name, "sink": {"type": "http", "url": receiver.url_for(name), "timeout_s": 5}, **fields}


@asynccontextmanager
async def running_router(config: RoutingConfig | Path, options: RouterOptions = FAST_ROUTER) -> AsyncIterator[Router]:
    if isinstance(config, Path):
        config = load_routing_config(config)
    router = Router(config, options=options)
    await router.start()
    try:
        yield router
    finally:
        await router.stop()


async def committed_offsets(bootstrap: str, group_id: str, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False)
    await consumer.start()
    try:
        return {tp: await consumer.committed(tp) for tp in partitions}
    finally:
        await consumer.stop()
