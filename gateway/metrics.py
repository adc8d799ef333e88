"""Prometheus metrics of the ingress.

Each application gets its own registry, so several gateways in one process (as in the
tests) do not collide.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PRODUCE_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class IngressMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "hitl_gateway_requests_total",
            "Webhook requests by outcome: accepted, duplicate, or the rejection reason.",
            ["outcome"],
            registry=self.registry,
        )
        self.signature_failures = Counter(
            "hitl_gateway_signature_failures_total",
            "Requests rejected because their signature was missing, invalid or expired.",
            registry=self.registry,
        )
        self.duplicates = Counter(
            "hitl_gateway_duplicates_total",
            "Deliveries of an event id that was already accepted within the window.",
            registry=self.registry,
        )
        self.produce_latency = Histogram(
            "hitl_gateway_produce_latency_seconds",
            "Time from handing a record to the producer until the broker acknowledged it.",
            buckets=PRODUCE_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "hitl_gateway_requests_in_flight",
            "Webhook requests being handled now.",
            registry=self.registry,
        )
        self.dedup_evictions = Counter(
            "hitl_gateway_dedup_evictions_total",
            "Event ids forgotten before their window ended because the in-memory store was full.",
            registry=self.registry,
        )
        self.dedup_bypassed = Counter(
            "hitl_gateway_dedup_bypassed_total",
            "Events produced without deduplication because the shared store was unreachable (fail_open).",
            registry=self.registry,
        )
