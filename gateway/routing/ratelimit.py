"""A token bucket that spaces out one route's deliveries."""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """Allows ``rate_per_s`` events per second on average, bursts up to ``burst`` events.

    A batch larger than the burst is let through once the bucket is full and leaves it in
    debt, so the average rate still holds.
    """

    def __init__(self, rate_per_s: float, burst: float | None = None) -> None:
        if rate_per_s <= 0:
            raise ValueError(f"rate_per_s must be positive, got {rate_per_s}")
        self.rate_per_s = rate_per_s
        self.burst = burst if burst is not None else max(1.0, rate_per_s)
        self._tokens = self.burst
        self._updated = time.monotonic()
        # Waiters are served one at a time in arrival order, so a large batch is not
        # starved by single events.
        self._lock = asyncio.Lock()

    async def acquire(self, count: int = 1) -> None:
        async with self._lock:
            needed = min(float(count), self.burst)
            self._refill()
            while self._tokens < needed:
                await asyncio.sleep((needed - self._tokens) / self.rate_per_s)
                self._refill()
            self._tokens -= count

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate_per_s)
        self._updated = now
