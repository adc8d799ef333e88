"""How long a route waits before trying a failed delivery again."""

from __future__ import annotations

import random

# A Retry-After longer than this is taken as this: a remote system must not be able to
# park a loop's events for hours with one header.
MAX_RETRY_AFTER_S = 300.0


class Backoff:
    """Exponential backoff with jitter: initial, doubling per failure, capped at max.

    Jitter takes up to that fraction off each delay, so many keys failing at once do not
    retry in lockstep, and no delay exceeds ``max_backoff_s``.
    """

    def __init__(
        self, initial_backoff_s: float, max_backoff_s: float, jitter: float, rng: random.Random | None = None
    ) -> None:
        if initial_backoff_s < 0 or max_backoff_s < initial_backoff_s:
            raise ValueError(
                f"backoff needs 0 <= initial_backoff_s <= max_backoff_s, got {initial_backoff_s} and {max_backoff_s}"
            )
        if not 0 <= jitter <= 1:
            raise ValueError(f"jitter is a fraction from 0 to 1, got {jitter}")
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.jitter = jitter
        self._rng = rng or random.Random()

    def delay_s(self, failures: int, retry_after_s: float | None = None) -> float:
        """Return the wait after ``failures`` failed attempts in a row (1 after the first failure).

        A ``retry_after_s`` from the remote system is honoured when it is the longer wait.
        """
        if failures < 1:
            raise ValueError(f"failures counts failed attempts and starts at 1, got {failures}")
        # 2**60 is far past any cap; the exponent is limited so the float cannot overflow.
        base_s = min(self.max_backoff_s, self.initial_backoff_s * 2.0 ** min(failures - 1, 60))
        delay_s = base_s * (1.0 - self.jitter * self._rng.random())
        if retry_after_s is not None and retry_after_s > delay_s:
            delay_s = min(retry_after_s, MAX_RETRY_AFTER_S)
        return delay_s
