"""Send stored events through one route again: ``hitl-gateway replay``.

The reader assigns partitions by hand, without a consumer group, so it neither commits
offsets nor takes partitions from the running router. It stops at the end offsets the
topics had when it started, so a replay ends even while new events keep arriving.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from gateway.envelope import EnvelopeReader
from gateway.errors import BrokerUnavailable, ConfigError, InvalidEvent
from gateway.routing.config import Route, RoutingConfig
from gateway.routing.delivery import RouteWorker
from gateway.routing.dlq import DeadLetterQueue
from gateway.routing.inbound import Inbound, read_record
from gateway.routing.metrics import RouterMetrics
from gateway.routing.ordering import Ledger
from gateway.routing.workers import SinkFactory, start_workers
from gateway.sinks.registry import create_sink

log = structlog.get_logger("gateway.routing.replay")

# A reader that gets no record for this long while partitions are still short of their
# end offsets reports the broker as unavailable instead of waiting for ever.
STALL_TIMEOUT_S = 60.0


def parse_timestamp(text: str) -> datetime:
    """Read ISO 8601 (``2025-01-31T12:00:00Z``; no zone means UTC) or Unix seconds (``1738324800``)."""
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except (ValueError, OverflowError, OSError):
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"{text!r} is not a time; give ISO 8601 such as 2025-01-31T12:00:00Z or Unix seconds such as 1738324800"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class BoundedReader:
    """Reads topics from a start time (or the beginning) up to the end offsets seen at start."""

    def __init__(self, bootstrap_servers: str, topics: Sequence[str], *, client_id: str) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._topics = list(topics)
        self._client_id = client_id
        self._consumer: AIOKafkaConsumer | None = None
        self.end_offsets: dict[TopicPartition, int] = {}
        self._unfinished: set[TopicPartition] = set()

    async def start(self, since_ms: int | None = None) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap_servers,
            group_id=None,
            client_id=self._client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        try:
            await consumer.start()
        except KafkaError as error:
            await consumer.stop()
            raise BrokerUnavailable(
                f"cannot connect to Kafka at {self._bootstrap_servers}: {error}; check that the broker runs"
            ) from error
        self._consumer = consumer
        partitions = await self._partitions()
        consumer.assign(partitions)
        if not partitions:
            return
        self.end_offsets = await consumer.end_offsets(partitions)
        starts = await self._start_offsets(partitions, since_ms)
        for partition, offset in starts.items():
            consumer.seek(partition, offset)
        self._unfinished = {tp for tp in partitions if starts[tp] < self.end_offsets[tp]}

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def records(self, until_ms: int | None = None) -> AsyncIterator:
        """Yield records partition by partition in offset order, until every partition is done.

        A partition is done at its end offset, or at its first record stamped after ``until_ms``.
        """
        assert self._consumer is not None, "call start() first"
        consumer = self._consumer
        loop = asyncio.get_running_loop()
        last_progress = loop.time()
        while self._unfinished:
            batches = await consumer.getmany(*self._unfinished, timeout_ms=500)
            for partition, batch in batches.items():
                for record in batch:
                    if record.offset >= self.end_offsets[partition] or (until_ms is not None and record.timestamp > until_ms):
                        self._finish(partition)
                        break
                    yield record
            for partition in list(self._unfinished):
                if await consumer.position(partition) >= self.end_offsets[partition]:
                    self._finish(partition)
            if batches:
                last_progress = loop.time()
            elif loop.time() - last_progress > STALL_TIMEOUT_S:
                raise BrokerUnavailable(
                    f"no records for {STALL_TIMEOUT_S:.0f} s while {len(self._unfinished)} partitions are short of "
                    f"their end offsets; check that the broker at {self._bootstrap_servers} is reachable"
                )

    def _finish(self, partition: TopicPartition) -> None:
        if partition in self._unfinished:
            self._unfinished.discard(partition)
            assert self._consumer is not None
            self._consumer.pause(partition)

    async def _partitions(self) -> list[TopicPartition]:
        assert self._consumer is not None
        partitions = []
        for topic in self._topics:
            numbers = self._consumer.partitions_for_topic(topic)
            if numbers is None:
                await self._consumer._client.force_metadata_update()  # noqa: SLF001
                numbers = self._consumer.partitions_for_topic(topic)
            if not numbers:
                log.warning("topic_not_found", topic=topic, reason="the broker does not know it; nothing is read from it")
                continue
            partitions.extend(TopicPartition(topic, number) for number in sorted(numbers))
        return partitions

    async def _start_offsets(self, partitions: list[TopicPartition], since_ms: int | None) -> dict[TopicPartition, int]:
        assert self._consumer is not None
        if since_ms is None:
            return await self._consumer.beginning_offsets(partitions)
        found = await self._consumer.offsets_for_times({tp: since_ms for tp in partitions})
        # No record at or after since_ms: the partition has nothing to read.
        return {tp: (found[tp].offset if found.get(tp) is not None else self.end_offsets[tp]) for tp in partitions}


@dataclass
class PassReport:
    """Counts of one pass of records through a route."""

    read: int = 0
    selected: int = 0
    invalid: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    def summary(self, title: str) -> str:
        outcomes = ", ".join(f"{name.replace('_', ' ')} {count}" for name, count in sorted(self.outcomes.items())) or "nothing delivered"
        return f"{title}: read {self.read} records, {self.selected} selected ({self.invalid} unreadable): {outcomes}"


class OneRoute:
    """A route's worker with what a one-off pass needs around it: sink, DLQ producer, ledger."""

    def __init__(self, config: RoutingConfig, route_name: str, *, sink_factory: SinkFactory = create_sink) -> None:
        self.route = _find_route(config, route_name)
        self._config = config
        self._sink_factory = sink_factory
        self.metrics = RouterMetrics()
        self._ledger = Ledger(config.max_in_flight)
        self._dead_letters: DeadLetterQueue | None = None
        self.worker: RouteWorker | None = None

    async def start(self) -> None:
        kafka = self._config.kafka
        self._dead_letters = DeadLetterQueue(kafka.bootstrap_servers, kafka.dlq_suffix)
        await self._dead_letters.start()
        try:
            (self.worker,) = await start_workers(
                [self.route],
                bootstrap_servers=kafka.bootstrap_servers,
                metrics=self.metrics,
                dead_letters=self._dead_letters,
                sink_factory=self._sink_factory,
            )
        except BaseException:
            await self._dead_letters.stop()
            raise

    async def stop(self) -> None:
        worker, self.worker = self.worker, None
        if worker is not None:
            await worker.close()
        dead_letters, self._dead_letters = self._dead_letters, None
        if dead_letters is not None:
            await dead_letters.stop()

    async def run(self, records: AsyncIterator, select: Callable[[Inbound], Inbound | None]) -> PassReport:
        """Deliver every record that ``select`` keeps, keeping at most max_in_flight unfinished."""
        assert self.worker is not None, "call start() first"
        reader = EnvelopeReader()
        report = PassReport()
        async for record in records:
            report.read += 1
            try:
                inbound = select(read_record(record, reader))
            except InvalidEvent as error:
                report.invalid += 1
                log.warning("record_skipped", topic=record.topic, partition=record.partition, offset=record.offset, reason=str(error))
                continue
            if inbound is None:
                continue
            report.selected += 1
            while self._ledger.room == 0:
                await self._ledger.wait_for_room(timeout_s=1.0)
            ticket = self._ledger.open(TopicPartition(record.topic, record.partition), record.offset, routes=1)
            self.worker.submit(inbound, ticket)
        while not await self._ledger.wait_settled(timeout_s=10.0):
            log.info("waiting_for_deliveries", route=self.route.name, in_flight=self._ledger.in_flight)
        report.outcomes = dict(self.worker.outcomes)
        return report


async def replay(
    config: RoutingConfig,
    route_name: str,
    since: datetime,
    until: datetime | None = None,
    *,
    sink_factory: SinkFactory = create_sink,
) -> PassReport:
    """Deliver the events of the family topics stamped from ``since`` (to ``until``) that the route matches."""
    runner = OneRoute(config, route_name, sink_factory=sink_factory)
    reader = BoundedReader(config.kafka.bootstrap_servers, config.kafka.topics, client_id=f"hitl-gateway-replay-{route_name}")
    await runner.start()
    try:
        await reader.start(since_ms=to_ms(since))
        assert runner.worker is not None
        worker = runner.worker
        until_ms = to_ms(until) if until is not None else None
        return await runner.run(reader.records(until_ms), lambda inbound: inbound if worker.matches(inbound) else None)
    finally:
        await reader.stop()
        await runner.stop()


def _find_route(config: RoutingConfig, name: str) -> Route:
    try:
        return config.route(name)
    except KeyError:
        names = ", ".join(route.name for route in config.routes)
        raise ConfigError(f"no route named {name!r} in the routing file; its routes are: {names}") from None
