"""The ``log`` sink: one structlog line per event, for trying out routes and for audits.

The line names the event and where it was read from. It never contains the body, which
may carry personal data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import structlog

from gateway.sinks.base import RoutedEvent, SinkContext, SinkSettings


class LogSettings(SinkSettings):
    level: Literal["debug", "info", "warning"] = "info"
    message: str = "event_routed"


class LogSink:
    Settings: ClassVar[type[SinkSettings]] = LogSettings
    supports_batches: ClassVar[bool] = False

    def __init__(self, settings: LogSettings, context: SinkContext) -> None:
        self._settings = settings
        self._context = context
        # A logger per sink, bound lazily, so a logging set-up made after import applies.
        self._log = structlog.get_logger("gateway.sinks.log")

    async def start(self) -> None:
        return None

    async def deliver(self, event: RoutedEvent) -> None:
        write = getattr(self._log, self._settings.level)
        write(
            self._settings.message,
            event_id=event.event_id,
            event_type=event.event_type,
            loop_id=event.loop_id,
            route=event.route or self._context.route,
            topic=event.topic,
            partition=event.partition,
            offset=event.offset,
        )

    async def deliver_batch(self, events: Sequence[RoutedEvent]) -> None:
        for event in events:
            await self.deliver(event)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> "LogSink":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
