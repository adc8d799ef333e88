"""The interface between the router and a sink.

A sink class is registered under a name in the entry-point group ``hitl_gateway.sinks``.
The router validates the route's ``sink`` settings with the class's ``Settings`` model,
then builds one sink per route and calls ``start``, ``deliver`` (or ``deliver_batch``
when the class sets ``supports_batches``) and ``close``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from gateway.errors import GatewayError


@dataclass(frozen=True, slots=True)
class RoutedEvent:
    """One event on its way to one route's sink, after the route's transform."""

    event_id: str
    event_type: str
    loop_id: str | None
    occurred_at: str | None
    # The event after the route's transform, and its JSON encoding.
    event: dict[str, Any]
    value: bytes
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    # The event's source record.
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    route: str = ""
    extra_headers: tuple[tuple[str, bytes], ...] = field(default=())


class DeliveryFailed(GatewayError):
    """Raised by a sink when an event was not delivered.

    ``retriable`` is whether trying again can help (a timeout, a 5xx) or not (a 4xx
    other than 429); ``retry_after_s`` carries a delay the remote system asked for.
    """

    def __init__(self, message: str, *, retriable: bool = True, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retriable = retriable
        self.retry_after_s = retry_after_s


class SinkSettings(BaseModel):
    """Base of every sink's settings model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class SinkContext:
    """Facts about the route and the router, passed to every sink the router builds."""

    route: str
    kafka_bootstrap_servers: str
    client_id: str = "hitl-gateway-router"


class Sink(Protocol):
    Settings: ClassVar[type[SinkSettings]]
    supports_batches: ClassVar[bool]

    def __init__(self, settings: SinkSettings, context: SinkContext) -> None: ...

    async def start(self) -> None: ...

    async def deliver(self, event: RoutedEvent) -> None:
        """Deliver one event or raise DeliveryFailed."""

    async def deliver_batch(self, events: Sequence[RoutedEvent]) -> None:
        """Deliver all events or raise DeliveryFailed; only called when supports_batches."""

    async def close(self) -> None:
        """Release connections; safe to call twice."""
