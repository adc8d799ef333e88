"""The ``kafka`` sink: produce each event to another topic, same key, value and headers.

The producer is idempotent with acks=all, as the ingress's is. With ``create_topic``, the
sink creates its topic at start when it is missing. Otherwise the topic must exist, because
a missing topic surfaces only as a retriable timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import ClassVar, Literal

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from pydantic import Field, PositiveFloat, PositiveInt

from gateway.errors import BrokerUnavailable
from gateway.producer import ensure_topics, start_reliable_producer
from gateway.sinks.base import DeliveryFailed, RoutedEvent, SinkContext, SinkSettings

log = structlog.get_logger("gateway.sinks.kafka")

# Errors that depend on the record itself, so sending it again cannot succeed. Everything
# else (timeouts, leader changes, even authorisation, which an operator can fix) is retried.
PERMANENT_ERRORS = (MessageSizeTooLargeError,)


class KafkaSinkSettings(SinkSettings):
    topic: str = Field(min_length=1)
    # Default: the router's own cluster.
    bootstrap_servers: str | None = Field(None, min_length=1)
    client_id: str | None = None
    request_timeout_s: PositiveFloat = 30.0
    linger_ms: int = Field(5, ge=0)
    max_batch_bytes: PositiveInt = 256 * 1024
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "none"
    create_topic: bool = False
    partitions: PositiveInt = 6
    replication_factor: PositiveInt = 1


class KafkaSink:
    Settings: ClassVar[type[SinkSettings]] = KafkaSinkSettings
    supports_batches: ClassVar[bool] = True

    def __init__(self, settings: KafkaSinkSettings, context: SinkContext) -> None:
        self._settings = settings
        self._context = context
        self._bootstrap_servers = settings.bootstrap_servers or context.kafka_bootstrap_servers
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        if self._producer is not None:
            return
        settings = self._settings
        try:
            self._producer = await start_reliable_producer(
                self._bootstrap_servers,
                client_id=settings.client_id or f"{self._context.client_id}-{self._context.route}",
                request_timeout_s=settings.request_timeout_s,
                linger_ms=settings.linger_ms,
                max_batch_bytes=settings.max_batch_bytes,
                compression=settings.compression,
                hint=f"check sink.bootstrap_servers of route {self._context.route!r} and that the broker runs",
            )
        except BrokerUnavailable as error:
            raise DeliveryFailed(str(error), retriable=True) from error
        if settings.create_topic:
            await self._create_topic()
        log.info("kafka_sink_started", route=self._context.route, topic=settings.topic)

    async def _create_topic(self) -> None:
        settings = self._settings
        try:
            await ensure_topics(self._bootstrap_servers, [settings.topic], settings.partitions, settings.replication_factor)
        except BrokerUnavailable as error:
            raise DeliveryFailed(
                f"cannot create topic {settings.topic!r} for the kafka sink of route {self._context.route!r}: "
                f"{type(error).__name__}; create it by hand or check the broker's ACLs",
                retriable=True,
            ) from error

    async def deliver(self, event: RoutedEvent) -> None:
        await self.deliver_batch((event,))

    async def deliver_batch(self, events: Sequence[RoutedEvent]) -> None:
        """Hand every record to the producer first, then wait for all acknowledgements.

        The producer batches what it was given together, so a batch costs about one
        round trip. When any record fails the whole batch is reported failed; records
        sent again are written twice, and consumers deduplicate on ``ce_id``.
        """
        if self._producer is None:
            raise RuntimeError(f"the kafka sink of route {self._context.route!r} is used before start()")
        topic = self._settings.topic

        pending: list[asyncio.Future] = []
        try:
            for event in events:
                headers = [*event.headers, *event.extra_headers]
                pending.append(await self._producer.send(topic, value=event.value, key=event.key, headers=headers))
        except KafkaError as error:
            # Wait for the records already handed over, so none is left unobserved.
            await asyncio.gather(*pending, return_exceptions=True)
            raise _failure(topic, error, total=len(events)) from error

        results = await asyncio.gather(*pending, return_exceptions=True)

        errors = [result for result in results if isinstance(result, BaseException)]
        if errors:
            raise _failure(topic, errors[0], failed=len(errors), total=len(events)) from errors[0]

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def __aenter__(self) -> "KafkaSink":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _failure(topic: str, error: BaseException, *, failed: int = 1, total: int = 1) -> DeliveryFailed:
    count = f"{failed} of {total} records" if total > 1 else "the record"
    return DeliveryFailed(
        f"producing {count} to {topic} failed: {type(error).__name__}",
        retriable=not isinstance(error, PERMANENT_ERRORS),
    )
