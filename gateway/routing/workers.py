"""Build the route workers of a configuration, and tell which routes a reload changes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from gateway.errors import ConfigError
from gateway.routing.config import Route, SinkSpec
from gateway.routing.delivery import RouteWorker
from gateway.routing.dlq import DeadLetterQueue
from gateway.routing.inbound import Inbound
from gateway.routing.metrics import RouterMetrics
from gateway.sinks.base import Sink, SinkContext
from gateway.sinks.registry import create_sink

SinkFactory = Callable[[SinkSpec, SinkContext], Sink]


class RouteSet:
    """The active routes, in the order of the routing file."""

    def __init__(self, workers: Sequence[RouteWorker] = ()) -> None:
        self._workers = {worker.name: worker for worker in workers}

    def __iter__(self):
        return iter(self._workers.values())

    def __len__(self) -> int:
        return len(self._workers)

    def get(self, name: str) -> RouteWorker | None:
        return self._workers.get(name)

    @property
    def names(self) -> list[str]:
        return list(self._workers)

    def matching(self, inbound: Inbound) -> list[RouteWorker]:
        return [worker for worker in self._workers.values() if worker.matches(inbound)]


@dataclass
class RoutePlan:
    """A reload's plan: keep the unchanged workers, start new ones, retire the rest."""

    unchanged: dict[str, RouteWorker]
    to_start: list[Route]
    retired: list[RouteWorker]

    @property
    def changed(self) -> bool:
        return bool(self.to_start or self.retired)


def plan_reload(current: RouteSet, routes: Iterable[Route]) -> RoutePlan:
    unchanged: dict[str, RouteWorker] = {}
    to_start: list[Route] = []
    for route in routes:
        worker = current.get(route.name)
        if worker is not None and worker.route == route:
            unchanged[route.name] = worker
        else:
            to_start.append(route)
    retired = [worker for worker in current if worker.name not in unchanged]
    return RoutePlan(unchanged, to_start, retired)


async def start_workers(
    routes: Iterable[Route],
    *,
    bootstrap_servers: str,
    metrics: RouterMetrics,
    dead_letters: DeadLetterQueue | None,
    sink_factory: SinkFactory = create_sink,
) -> list[RouteWorker]:
    """Build and start one worker per route; on any failure close those started and raise ConfigError."""
    started: list[RouteWorker] = []
    for route in routes:
        sink: Sink | None = None
        try:
            sink = sink_factory(route.sink, SinkContext(route=route.name, kafka_bootstrap_servers=bootstrap_servers))
            worker = RouteWorker(route, sink, metrics=metrics, dead_letters=dead_letters)
            await worker.start()
        except Exception as error:
            # A sink may hold half-opened connections when its start failed.
            if sink is not None:
                await _close_quietly(sink)
            for worker in started:
                await worker.close()
            raise ConfigError(
                f"route {route.name!r}: its {route.sink.type} sink did not start: {type(error).__name__}: {error}; "
                "fix the sink settings (or the service they point to) and try again"
            ) from error
        started.append(worker)
    return started


async def _close_quietly(sink: Sink) -> None:
    try:
        await sink.close()
    except Exception:
        pass
