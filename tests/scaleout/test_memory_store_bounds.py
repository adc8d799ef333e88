"""The in-memory dedup store stays within max_entries and counts each id it evicts."""

from __future__ import annotations

from gateway.app import build_dedup_store
from gateway.dedup import Receipt
from gateway.metrics import IngressMetrics
from gateway.settings import GatewaySettings


def evictions(metrics: IngressMetrics) -> float:
    return metrics.registry.get_sample_value("hitl_gateway_dedup_evictions_total")


async def deliver(store, event_id: str) -> None:
    await store.claim(event_id)
    await store.complete(event_id, Receipt("hitl.request", 0, 0))


async def test_evicts_oldest_beyond_max_entries():
    metrics = IngressMetrics()
    store = build_dedup_store(GatewaySettings.model_validate({"dedup": {"max_entries": 3}}), metrics)
    for number in range(5):
        await deliver(store, f"evt-{number}")

    assert len(store) == 3
    assert evictions(metrics) == 2
    # The two oldest were forgotten, so they are accepted again as new.
    assert await store.claim("evt-0") is None


async def test_keeps_newest_after_eviction():
    metrics = IngressMetrics()
    store = build_dedup_store(GatewaySettings.model_validate({"dedup": {"max_entries": 3}}), metrics)
    for number in range(5):
        await deliver(store, f"evt-{number}")

    assert await store.claim("evt-4") is not None


async def test_no_eviction_within_max_entries():
    metrics = IngressMetrics()
    store = build_dedup_store(GatewaySettings.model_validate({"dedup": {"max_entries": 3}}), metrics)
    for number in range(3):
        await deliver(store, f"evt-{number}")

    assert evictions(metrics) == 0
