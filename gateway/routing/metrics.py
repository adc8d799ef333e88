"""Prometheus metrics of the router, and the small HTTP server that exposes them.

Each router gets its own registry, so several routers in one process (as in the tests)
do not collide.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
from aiohttp import web
from gateway.errors import ConfigError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

log = structlog.get_logger("gateway.routing.metrics")

DELIVERY_LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class RouterMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.delivered = Counter(
            "hitl_router_events_delivered_total",
            "Events a route's sink accepted.",
            ["route"],
            registry=self.registry,
        )
        self.failed_attempts = Counter(
            "hitl_router_delivery_failures_total",
            "Delivery attempts that failed, counted per event (a failed batch of n counts n).",
            ["route"],
            registry=self.registry,
        )
        self.retried = Counter(
            "hitl_router_events_retried_total",
            "Delivery attempts that were scheduled again after a failure.",
            ["route"],
            registry=self.registry,
        )
        self.dead_lettered = Counter(
            "hitl_router_events_dead_lettered_total",
            "Events parked in a dead-letter topic after the route's last attempt failed.",
            ["route"],
            registry=self.registry,
        )
        self.dropped = Counter(
            "hitl_router_events_dropped_total",
            "Events given up after the route's last attempt failed (on_failure: drop).",
            ["route"],
            registry=self.registry,
        )
        self.stale = Counter(
            "hitl_router_stale_events_total",
            "Events older than one already delivered for the same request, by what the route did.",
            ["route", "action"],
            registry=self.registry,
        )

        self.delivery_latency = Histogram(
            "hitl_router_delivery_latency_seconds",
            "Time from reading a record until the route's sink accepted it, queueing and retries included.",
            ["route"],
            buckets=DELIVERY_LATENCY_BUCKETS_S,
            registry=self.registry,
        )

        self.consumer_lag = Gauge(
            "hitl_router_consumer_lag",
            "Records in a partition after the router's committable offset.",
            ["topic", "partition"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "hitl_router_events_in_flight",
            "Records read but not yet finished by every route that matched them.",
            registry=self.registry,
        )

        self.config_reloads = Counter(
            "hitl_router_config_reloads_total",
            "Attempts to apply a changed routing file, by result.",
            ["result"],
            registry=self.registry,
        )
        self.invalid_records = Counter(
            "hitl_router_invalid_records_total",
            "Records skipped because their value is not a JSON event with a type.",
            ["topic"],
            registry=self.registry,
        )
        for result in ("success", "failure"):
            self.config_reloads.labels(result=result)

    def forget_route(self, route: str) -> None:
        """Drop the series of a route that a reload removed."""
        for metric in (self.delivered, self.failed_attempts, self.retried, self.dead_lettered, self.dropped, self.delivery_latency):
            try:
                metric.remove(route)
            except KeyError:
                pass
        for action in ("skip", "mark"):
            try:
                self.stale.remove(route, action)
            except KeyError:
                pass


class MetricsServer:
    """Serves ``/metrics`` and ``/healthz`` on one address; ``is_healthy`` decides the latter."""

    def __init__(self, metrics: RouterMetrics, host: str, port: int, is_healthy: Callable[[], bool]) -> None:
        self._metrics = metrics
        self._host = host
        self._port = port
        self._is_healthy = is_healthy
        self._runner: web.AppRunner | None = None
        self.bound_port: int | None = None

    async def start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_get("/metrics", self._serve_metrics)
        app.router.add_get("/healthz", self._serve_health)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        try:
            await site.start()
        except OSError as error:
            await runner.cleanup()
            raise ConfigError(
                f"cannot serve router metrics on {self._host}:{self._port}: {error.strerror or error}; "
                "pick another --metrics-port (0 chooses a free one)"
            ) from error
        self._runner = runner
        sockets = site._server.sockets if site._server is not None else ()  # noqa: SLF001
        self.bound_port = sockets[0].getsockname()[1] if sockets else self._port
        log.info("metrics_listening", url=f"http://{self._host}:{self.bound_port}/metrics")

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _serve_metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self._metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _serve_health(self, request: web.Request) -> web.Response:
        if self._is_healthy():
            return web.json_response({"status": "ok"})
        return web.json_response({"status": "unavailable"}, status=503)
