"""Prometheus metrics of the ingress.

Each application gets its own registry, so several gateways in one process (as in the
tests) do not collide.

With several workers (``hitl-gateway serve --workers N``) the supervisor sets
PROMETHEUS_MULTIPROC_DIR before it starts them. prometheus_client then keeps every
value in a memory-mapped file per process in that directory, and the registry that
/metrics renders reads all of them, so any worker reports the sum over all workers,
including those that died and were restarted.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

PRODUCE_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class IngressMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        multiprocess = registry is None and multiprocess_mode()
        if multiprocess:
            # The metrics below then write to this process's files only; the collector
            # renders the files of every worker.
            MultiProcessCollector(self.registry)
        self.multiprocess = multiprocess
        own = None if multiprocess else self.registry

        self.requests = Counter(
            "hitl_gateway_requests_total",
            "Webhook requests by outcome: accepted, duplicate, or the rejection reason.",
            ["outcome"],
            registry=own,
        )
        self.signature_failures = Counter(
            "hitl_gateway_signature_failures_total",
            "Requests rejected because their signature was missing, invalid or expired.",
            registry=own,
        )
        self.duplicates = Counter(
            "hitl_gateway_duplicates_total",
            "Deliveries of an event id that was already accepted within the window.",
            registry=own,
        )
        self.produce_latency = Histogram(
            "hitl_gateway_produce_latency_seconds",
            "Time from handing a record to the producer until the broker acknowledged it.",
            buckets=PRODUCE_LATENCY_BUCKETS_S,
            registry=own,
        )
        self.in_flight = Gauge(
            "hitl_gateway_requests_in_flight",
            "Webhook requests being handled now.",
            multiprocess_mode="livesum",
            registry=own,
        )
        self.dedup_evictions = Counter(
            "hitl_gateway_dedup_evictions_total",
            "Event ids forgotten before their window ended because the in-memory store was full.",
            registry=own,
        )
        self.dedup_bypassed = Counter(
            "hitl_gateway_dedup_bypassed_total",
            "Events produced without deduplication because the shared store was unreachable (fail_open).",
            registry=own,
        )
        self._outcomes: dict[str, Counter] = {}

    def count_outcome(self, outcome: str) -> None:
        """Count one completed webhook request under ``outcome``."""
        # labels() takes a lock and builds a key on every call; the outcomes are few.
        child = self._outcomes.get(outcome)
        if child is None:
            child = self._outcomes[outcome] = self.requests.labels(outcome)
        child.inc()


def multiprocess_mode() -> bool:
    """Return True when values go to the files in PROMETHEUS_MULTIPROC_DIR.

    prometheus_client decides this when it is first imported, so the variable must be
    set before that. A variable set later is ignored here, as prometheus_client ignores it.
    """
    return bool(os.environ.get(MULTIPROCESS_DIR_VARIABLE)) and values.ValueClass is not values.MutexValue

