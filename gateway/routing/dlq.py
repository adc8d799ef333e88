"""Dead-letter topics: where a route parks events it could not deliver, and redriving them.

A parked record keeps the original key, value and headers, so redriving it later is the
same delivery as the first one. Headers starting with ``x-dlq-`` record which route gave
up, why, after how many attempts, where the event was read from and when it was parked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from gateway.envelope import parse_iso_time
from gateway.errors import BrokerUnavailable
from gateway.producer import ensure_topics, start_reliable_producer
from gateway.routing.backoff import Backoff
from gateway.routing.inbound import Inbound

if TYPE_CHECKING:
    from gateway.routing.config import RoutingConfig
    from gateway.routing.replay import PassReport
    from gateway.routing.workers import SinkFactory

log = structlog.get_logger("gateway.routing.dlq")

DLQ_HEADER_PREFIX = "x-dlq-"
ROUTE_HEADER = "x-dlq-route"
ERROR_HEADER = "x-dlq-error"
ATTEMPTS_HEADER = "x-dlq-attempts"
TOPIC_HEADER = "x-dlq-topic"
PARTITION_HEADER = "x-dlq-partition"
OFFSET_HEADER = "x-dlq-offset"
TIME_HEADER = "x-dlq-time"
MAX_ERROR_BYTES = 512
PRODUCE_TIMEOUT_S = 30.0


def dead_letter_headers(
    inbound: Inbound, route: str, error: str, attempts: int, parked_at: datetime
) -> list[tuple[str, bytes]]:
    """Return the original headers (without earlier x-dlq- ones) followed by this parking's facts."""
    original_headers = [(name, value) for name, value in inbound.headers if not name.startswith(DLQ_HEADER_PREFIX)]
    return [
        *original_headers,
        (ROUTE_HEADER, route.encode()),
        (ERROR_HEADER, error.encode("utf-8", errors="replace")[:MAX_ERROR_BYTES]),
        (ATTEMPTS_HEADER, str(attempts).encode()),
        (TOPIC_HEADER, inbound.topic.encode()),
        (PARTITION_HEADER, str(inbound.partition).encode()),
        (OFFSET_HEADER, str(inbound.offset).encode()),
        (TIME_HEADER, parked_at.isoformat(timespec="milliseconds").replace("+00:00", "Z").encode()),
    ]


class DeadLetterQueue:
    """Produces parked events to ``<source topic><suffix>`` with acks=all."""

    def __init__(self, bootstrap_servers: str, suffix: str, *, client_id: str = "hitl-gateway-router-dlq") -> None:
        self.bootstrap_servers = bootstrap_servers
        self.suffix = suffix
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None
        self._backoff = Backoff(initial_backoff_s=0.5, max_backoff_s=30.0, jitter=0.2)

    def topic_for(self, source_topic: str) -> str:
        return source_topic + self.suffix

    async def start(self) -> None:
        if self._producer is not None:
            return
        self._producer = await start_reliable_producer(
            self.bootstrap_servers,
            client_id=self._client_id,
            request_timeout_s=PRODUCE_TIMEOUT_S,
            hint="the dead-letter producer needs it: check kafka.bootstrap_servers in the routing file and that the broker runs",
        )

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def park(
        self,
        inbound: Inbound,
        *,
        route: str,
        error: str,
        attempts: int,
        sleep_unless_abandoned: Callable[[float], Awaitable[bool]],
    ) -> bool:
        """Produce the event to its dead-letter topic, trying until the broker acknowledges.

        Returns False when the caller's work was abandoned before an acknowledgement.
        """
        if self._producer is None:
            raise BrokerUnavailable("the dead-letter producer is not running; call start() first")
        topic = self.topic_for(inbound.topic)
        headers = dead_letter_headers(inbound, route, error, attempts, datetime.now(UTC))
        failures = 0
        while True:
            try:
                await self._producer.send_and_wait(topic, value=inbound.value, key=inbound.key, headers=headers)
                return True
            except KafkaError as produce_error:
                failures += 1
                delay_s = self._backoff.delay_s(failures)
                log.warning(
                    "dead_letter_produce_failed",
                    event_id=inbound.event_id,
                    route=route,
                    topic=topic,
                    reason=type(produce_error).__name__,
                    retry_in_s=round(delay_s, 3),
                )
            if await sleep_unless_abandoned(delay_s):
                return False


def header_values(headers: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    """Return the x-dlq- headers of a parked record, decoded."""
    return {
        name: value.decode("utf-8", errors="replace")
        for name, value in headers
        if name.startswith(DLQ_HEADER_PREFIX)
    }


async def ensure_dead_letter_topics(
    bootstrap_servers: str, source_topics: Sequence[str], suffix: str, *, partitions: int, replication_factor: int
) -> list[str]:
    """Create the missing dead-letter topics of ``source_topics``; return the names created.

    Raises BrokerUnavailable when the cluster cannot be reached or refuses the creation.
    """
    return await ensure_topics(bootstrap_servers, [topic + suffix for topic in source_topics], partitions, replication_factor)


def parked_at_or_after(headers: Sequence[tuple[str, bytes]], timestamp_ms: int, since: datetime | None) -> bool:
    """Tell whether a parked record's x-dlq-time (else its Kafka timestamp) is at or after ``since``."""
    if since is None:
        return True
    parked_text = header_values(headers).get(TIME_HEADER)
    parked_at = parse_iso_time(parked_text) if parked_text else None
    if parked_at is None:
        parked_at = datetime.fromtimestamp(timestamp_ms / 1000, UTC)
    return parked_at >= since


def as_first_delivered(inbound: Inbound) -> Inbound | None:
    """Rebuild the parked event as it was read from its family topic: original place, no x-dlq- headers.

    Returns None when the record lacks the x-dlq-topic, x-dlq-partition or x-dlq-offset header.
    """
    facts = header_values(inbound.headers)
    try:
        topic = facts[TOPIC_HEADER]
        partition = int(facts[PARTITION_HEADER])
        offset = int(facts[OFFSET_HEADER])
    except (KeyError, ValueError):
        return None
    headers = tuple((name, value) for name, value in inbound.headers if not name.startswith(DLQ_HEADER_PREFIX))
    return replace(inbound, topic=topic, partition=partition, offset=offset, headers=headers)


async def redrive(
    config: RoutingConfig, route_name: str, since: datetime | None = None, *, sink_factory: SinkFactory | None = None
) -> PassReport:
    """Send the events that route ``route_name`` parked (at or after ``since``) through it again.

    Returns the PassReport. An event that fails again is handled by the route's
    on_failure, so with dead_letter it is parked anew.
    """
    # replay builds on this module's DeadLetterQueue, so it is imported here, not at the top.
    from gateway.routing.replay import BoundedReader, OneRoute, to_ms
    from gateway.sinks.registry import create_sink

    runner = OneRoute(config, route_name, sink_factory=sink_factory or create_sink)
    dlq_topics = [topic + config.kafka.dlq_suffix for topic in config.kafka.topics]
    reader = BoundedReader(config.kafka.bootstrap_servers, dlq_topics, client_id=f"hitl-gateway-redrive-{route_name}")

    def select(inbound: Inbound) -> Inbound | None:
        if header_values(inbound.headers).get(ROUTE_HEADER) != route_name:
            return None
        if not parked_at_or_after(inbound.headers, inbound.timestamp_ms, since):
            return None
        original = as_first_delivered(inbound)
        if original is None:
            log.warning("dead_letter_unreadable", event_id=inbound.event_id, reason="x-dlq-topic, -partition or -offset header missing")
        return original

    await runner.start()
    try:
        await reader.start(since_ms=to_ms(since) if since is not None else None)
        return await runner.run(reader.records(), select)
    finally:
        await reader.stop()
        await runner.stop()
