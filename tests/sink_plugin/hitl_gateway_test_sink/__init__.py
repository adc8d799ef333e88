"""A sink that keeps delivered events in memory; it exists to test plugin discovery."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field

from gateway.sinks.base import RoutedEvent, SinkContext, SinkSettings


class MemoryTestSettings(SinkSettings):
    capacity: int = Field(100, gt=0)


class MemoryTestSink:
    Settings: ClassVar[type[SinkSettings]] = MemoryTestSettings
    supports_batches: ClassVar[bool] = True

    def __init__(self, settings: MemoryTestSettings, context: SinkContext) -> None:
        self.settings = settings
        self.context = context
        self.events: list[RoutedEvent] = []

    async def start(self) -> None:
        return None

    async def deliver(self, event: RoutedEvent) -> None:
        await self.deliver_batch((event,))

    async def deliver_batch(self, events: Sequence[RoutedEvent]) -> None:
        self.events.extend(events)
        del self.events[: -self.settings.capacity]

    async def close(self) -> None:
        return None
