"""Per-key backoff of failures, as client-go's ``ItemExponentialFailureRateLimiter``.

The pauses come from an ``api.defaults.Backoff`` policy; the limiter only counts the
failures of each key since its last success. No clock: the work queue that asks `when`
schedules the retry itself.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

from coordinator.api.defaults import Backoff

K = TypeVar("K", bound=Hashable)


class RateLimiter(Generic[K]):
    """`when(key)`: a failure of `key`, and the pause before it is tried again (the
    policy's first pause, growing per failure of the same key); `forget(key)`: it
    succeeded, its next failure starts from the first pause again."""

    def __init__(self, backoff: Backoff) -> None:
        self.backoff = backoff
        self._failures: dict[K, int] = {}

    def when(self, key: K, *, rand: float = 0.0) -> float:
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        return self.backoff.delay(failures, rand=rand)

    def forget(self, key: K) -> None:
        self._failures.pop(key, None)

    def retries(self, key: K) -> int:
        """The failures of `key` since it last succeeded."""
        return self._failures.get(key, 0)
