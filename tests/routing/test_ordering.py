"""The offset tracker and the ledger: what may be committed, and the in-flight bound."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition

from gateway.routing.ordering import Ledger, OffsetTracker

TP = TopicPartition("hitl.request", 0)
OTHER_TP = TopicPartition("hitl.request", 1)


def test_tracker_empty_commits_nothing() -> None:
    assert OffsetTracker().committable() is None


def test_tracker_lowest_unfinished_offset() -> None:
    tracker = OffsetTracker()
    for offset in (10, 11, 12, 13):
        tracker.add(offset)

    assert tracker.committable() == 10
    tracker.finish(10)
    assert tracker.committable() == 11


def test_tracker_out_of_order_completion() -> None:
    tracker = OffsetTracker()
    for offset in range(5):
        tracker.add(offset)

    tracker.finish(3)
    tracker.finish(1)
    tracker.finish(4)
    assert tracker.committable() == 0
    assert tracker.pending == 2

    tracker.finish(0)
    assert tracker.committable() == 2
    tracker.finish(2)
    assert tracker.committable() == 5
    assert tracker.pending == 0


def test_tracker_allows_offset_gaps() -> None:
    # Compaction and transaction markers leave offsets that are never read.
    tracker = OffsetTracker()
    tracker.add(3)
    tracker.add(7)
    tracker.finish(7)
    assert tracker.committable() == 3
    tracker.finish(3)
    assert tracker.committable() == 8


def test_tracker_rejects_descending_offsets() -> None:
    tracker = OffsetTracker()
    tracker.add(5)
    with pytest.raises(ValueError, match="ascending"):
        tracker.add(5)


async def test_ticket_finishes_after_every_route() -> None:
    ledger = Ledger(max_in_flight=10)
    ticket = ledger.open(TP, 0, routes=2)
    later = ledger.open(TP, 1, routes=1)

    later.route_done()
    ticket.route_done()
    assert ledger.committable() == {TP: 0}
    assert ledger.in_flight == 1

    ticket.route_done()
    assert ledger.committable() == {TP: 2}
    assert ledger.in_flight == 0


async def test_ledger_unmatched_record_finished() -> None:
    ledger = Ledger(max_in_flight=10)
    ledger.open(TP, 4, routes=0)
    assert ledger.committable() == {TP: 5}
    assert ledger.in_flight == 0


async def test_ledger_abandon_frees_room() -> None:
    ledger = Ledger(max_in_flight=3)
    done = ledger.open(TP, 0, routes=1)
    stuck = ledger.open(TP, 1, routes=1)
    ledger.open(OTHER_TP, 0, routes=1).route_done()
    done.route_done()
    assert ledger.room == 2

    offsets = ledger.abandon([TP])

    assert offsets == {TP: 1}
    assert stuck.abandoned
    assert ledger.room == 3
    assert ledger.partitions == {OTHER_TP}
    # A late completion of an abandoned record changes nothing.
    stuck.route_done()
    assert ledger.in_flight == 0


async def test_ledger_wait_for_room_wakes() -> None:
    ledger = Ledger(max_in_flight=1)
    ticket = ledger.open(TP, 0, routes=1)
    assert ledger.room == 0

    asyncio.get_running_loop().call_later(0.05, ticket.route_done)
    assert await ledger.wait_for_room(timeout_s=2.0)


async def test_ledger_wait_settled_times_out() -> None:
    ledger = Ledger(max_in_flight=5)
    ledger.open(TP, 0, routes=1)
    assert not await ledger.wait_settled(timeout_s=0.05)
    assert await ledger.wait_settled([OTHER_TP], timeout_s=0.05)


async def test_ticket_sleep_ends_on_abandon() -> None:
    ledger = Ledger(max_in_flight=5)
    ticket = ledger.open(TP, 0, routes=1)
    asyncio.get_running_loop().call_later(0.05, ledger.abandon)

    started = asyncio.get_running_loop().time()
    assert await ticket.sleep_unless_abandoned(5.0)
    assert asyncio.get_running_loop().time() - started < 1.0


async def test_ledger_offset_read_again_restarts() -> None:
    # The consumer's position moved back (a reset or seek): the unfinished records are
    # read again, so their first tickets are abandoned and never committed.
    ledger = Ledger(max_in_flight=10)
    ledger.open(TP, 0, routes=1).route_done()
    first_try = ledger.open(TP, 1, routes=1)
    ledger.open(TP, 2, routes=1)

    again = ledger.open(TP, 1, routes=1)

    assert first_try.abandoned
    assert ledger.in_flight == 1
    assert ledger.committable() == {TP: 1}
    again.route_done()
    assert ledger.committable() == {TP: 2}
