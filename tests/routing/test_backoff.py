"""Backoff delays and Retry-After handling."""

from __future__ import annotations

import random

import pytest

from gateway.routing.backoff import MAX_RETRY_AFTER_S, Backoff


def test_doubles_from_initial_up_to_max_without_jitter() -> None:
    backoff = Backoff(initial_backoff_s=0.5, max_backoff_s=4.0, jitter=0.0)
    assert [backoff.delay_s(failures) for failures in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_jitter_stays_within_fraction_and_max() -> None:
    backoff = Backoff(initial_backoff_s=1.0, max_backoff_s=8.0, jitter=0.2, rng=random.Random(7))
    delays = [backoff.delay_s(3) for _ in range(500)]
    assert all(3.2 <= delay <= 4.0 for delay in delays)
    assert len(set(delays)) > 100
    assert all(backoff.delay_s(50) <= 8.0 for _ in range(100))


def test_retry_after_is_honoured_when_longer_and_capped() -> None:
    backoff = Backoff(initial_backoff_s=0.5, max_backoff_s=2.0, jitter=0.0)
    assert backoff.delay_s(1, retry_after_s=7.0) == 7.0
    assert backoff.delay_s(3, retry_after_s=0.1) == 2.0
    assert backoff.delay_s(1, retry_after_s=10_000) == MAX_RETRY_AFTER_S


def test_huge_failure_counts_do_not_overflow() -> None:
    assert Backoff(0.5, 30.0, 0.0).delay_s(10_000) == 30.0


@pytest.mark.parametrize(
    ("initial_s", "max_s", "jitter"), [(-1.0, 1.0, 0.1), (2.0, 1.0, 0.1), (0.5, 1.0, 1.5)]
)
def test_rejects_impossible_settings(initial_s: float, max_s: float, jitter: float) -> None:
    with pytest.raises(ValueError):
        Backoff(initial_s, max_s, jitter)
