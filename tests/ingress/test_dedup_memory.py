import asyncio

import pytest

from gateway.dedup import Receipt
from gateway.dedup.memory import MemoryDedupStore
from gateway.errors import DedupUnavailable

RECEIPT = Receipt("hitl.request", 2, 41)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_first_claim_reserves():
    store = MemoryDedupStore()
    assert await store.claim("e1") is None


async def test_completed_id_is_duplicate_with_same_receipt():
    store = MemoryDedupStore()
    await store.claim("e1")
    await store.complete("e1", RECEIPT)
    assert await store.claim("e1") == RECEIPT


async def test_released_id_can_be_claimed_again():
    store = MemoryDedupStore()
    await store.claim("e1")
    await store.release("e1")
    assert await store.claim("e1") is None


async def test_in_flight_duplicate_waits_for_completion():
    store = MemoryDedupStore()
    await store.claim("e1")
    waiter = asyncio.create_task(store.claim("e1"))
    await asyncio.sleep(0.01)
    assert not waiter.done()

    await store.complete("e1", RECEIPT)
    assert await waiter == RECEIPT


async def test_in_flight_duplicate_takes_over_after_release():
    store = MemoryDedupStore()
    await store.claim("e1")
    waiter = asyncio.create_task(store.claim("e1"))
    await asyncio.sleep(0.01)

    await store.release("e1")
    assert await waiter is None
    # The waiter now has the reservation, so a third delivery waits again.
    third = asyncio.create_task(store.claim("e1"))
    await asyncio.sleep(0.01)
    assert not third.done()
    await store.complete("e1", RECEIPT)
    assert await third == RECEIPT


async def test_in_flight_wait_is_bounded():
    store = MemoryDedupStore(wait_timeout_s=0.05)
    await store.claim("e1")
    with pytest.raises(DedupUnavailable, match="still in flight"):
        await store.claim("e1")


async def test_id_forgotten_after_window():
    clock = FakeClock()
    store = MemoryDedupStore(window_s=60, clock=clock)
    await store.claim("e1")
    await store.complete("e1", RECEIPT)

    clock.now += 59
    assert await store.claim("e1") == RECEIPT
    clock.now += 2
    assert await store.claim("e1") is None


async def test_abandoned_reservation_expires():
    clock = FakeClock()
    store = MemoryDedupStore(reservation_ttl_s=30, wait_timeout_s=0.01, clock=clock)
    await store.claim("e1")
    clock.now += 31
    assert await store.claim("e1") is None


async def test_oldest_completed_id_evicted_when_full():
    evicted = []
    store = MemoryDedupStore(max_entries=3, on_evict=lambda: evicted.append(1))
    for number in range(4):
        await store.claim(f"e{number}")
        await store.complete(f"e{number}", RECEIPT)

    assert len(store) == 3
    assert len(evicted) == 1
    assert await store.claim("e0") is None
    assert await store.claim("e3") == RECEIPT


async def test_in_flight_reservation_never_evicted():
    store = MemoryDedupStore(max_entries=2)
    await store.claim("pending")
    for number in range(3):
        await store.claim(f"e{number}")
        await store.complete(f"e{number}", RECEIPT)

    waiter = asyncio.create_task(store.claim("pending"))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    await store.complete("pending", RECEIPT)
    assert await waiter == RECEIPT
