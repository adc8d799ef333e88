"""The Redis dedup store against a real redis-server: the same semantics as the in-memory
store, across store instances that stand for separate worker processes."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.dedup import Receipt
from gateway.dedup.redis import RedisDedupStore
from gateway.errors import DedupUnavailable
from gateway.settings import DedupSettings

pytestmark = pytest.mark.redis

RECEIPT = Receipt("hitl.request", 3, 41)


def make_store(redis_url: str, **options) -> RedisDedupStore:
    on_bypass = options.pop("on_bypass", None)
    redis_options = {"url": redis_url, **options.pop("redis", {})}
    settings = DedupSettings.model_validate({"backend": "redis", "redis": redis_options, **options})
    return RedisDedupStore(settings, on_bypass=on_bypass)


@pytest.fixture
async def stores(redis_server):
    """Two stores on one Redis, as two workers would have."""
    first = make_store(redis_server.url, wait_timeout_s=5)
    second = make_store(redis_server.url, wait_timeout_s=5)
    yield first, second
    await first.close()
    await second.close()


async def test_first_claim_reserves(stores):
    first, _ = stores

    assert await first.claim("evt-1") is None


async def test_completed_id_is_duplicate_elsewhere(stores):
    first, second = stores
    await first.claim("evt-1")
    await first.complete("evt-1", RECEIPT)

    assert await second.claim("evt-1") == RECEIPT


async def test_duplicate_waits_for_completion(stores):
    first, second = stores
    await first.claim("evt-1")
    waiting = asyncio.create_task(second.claim("evt-1"))
    await asyncio.sleep(0.05)
    assert not waiting.done()

    await first.complete("evt-1", RECEIPT)

    assert await asyncio.wait_for(waiting, 2) == RECEIPT


async def test_waiter_takes_released_reservation(stores):
    first, second = stores
    await first.claim("evt-1")
    waiting = asyncio.create_task(second.claim("evt-1"))
    await asyncio.sleep(0.05)

    await first.release("evt-1")

    assert await asyncio.wait_for(waiting, 2) is None


async def test_dead_holder_reservation_expires(redis_server):
    holder = make_store(redis_server.url, reservation_ttl_s=0.3)
    retry = make_store(redis_server.url, reservation_ttl_s=0.3, wait_timeout_s=5)
    await holder.claim("evt-1")
    # The holder never completes nor releases, as when its process was killed.
    started = time.monotonic()

    outcome = await retry.claim("evt-1")

    assert outcome is None
    assert time.monotonic() - started >= 0.2
    await holder.close()
    await retry.close()


async def test_stale_release_keeps_new_reservation(redis_server):
    slow = make_store(redis_server.url, reservation_ttl_s=0.1)
    fast = make_store(redis_server.url, reservation_ttl_s=30, wait_timeout_s=0.2)
    await slow.claim("evt-1")
    await asyncio.sleep(0.2)
    await fast.claim("evt-1")

    await slow.release("evt-1")

    with pytest.raises(DedupUnavailable):
        await fast.claim("evt-1")
    await slow.close()
    await fast.close()


async def test_wait_times_out(redis_server):
    holder = make_store(redis_server.url)
    waiter = make_store(redis_server.url, wait_timeout_s=0.2)
    await holder.claim("evt-1")

    with pytest.raises(DedupUnavailable, match="still in flight"):
        await waiter.claim("evt-1")
    await holder.close()
    await waiter.close()


async def test_delivery_expires_after_window(redis_server):
    store = make_store(redis_server.url, window_s=0.2)
    await store.claim("evt-1")
    await store.complete("evt-1", RECEIPT)
    await asyncio.sleep(0.3)

    assert await store.claim("evt-1") is None
    await store.close()


async def test_fail_closed_raises_when_down(redis_server):
    store = make_store(redis_server.url, redis={"on_unavailable": "fail_closed"})
    redis_server.stop()

    with pytest.raises(DedupUnavailable, match="failed"):
        await store.claim("evt-1")
    await store.close()


async def test_fail_open_counts_bypass(redis_server):
    bypassed = []
    store = make_store(redis_server.url, redis={"on_unavailable": "fail_open"}, on_bypass=lambda: bypassed.append(1))
    redis_server.stop()

    outcome = await store.claim("evt-1")
    await store.complete("evt-1", RECEIPT)

    assert outcome is None
    assert bypassed == [1]
    await store.close()


async def test_recovers_after_redis_restart(redis_server):
    store = make_store(redis_server.url, redis={"on_unavailable": "fail_open"})
    await store.claim("warm-up")
    redis_server.stop()
    await store.claim("evt-1")
    redis_server.start()

    await store.claim("evt-2")
    await store.complete("evt-2", RECEIPT)

    assert await store.claim("evt-2") == RECEIPT
    await store.close()


async def test_close_twice_is_safe(redis_server):
    store = make_store(redis_server.url)
    await store.claim("evt-1")

    await store.close()
    await store.close()
