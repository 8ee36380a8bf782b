"""The operator's defaults, each named once: the backoff of every retry and poll, and the
defaults of ``coordinator run``'s flags, which its ``Config`` takes as well.

A `Backoff` is a policy as a value, as client-go's ``wait.Backoff`` and the
``ItemExponentialFailureRateLimiter`` of its work queue have it: the first pause, a
factor per failure, a cap, and optionally jitter. It is pure: no clock, no randomness of
its own (a caller that wants jitter passes the random draw in). The per-key limiter of
the reconciler's work queue is ``core.backoff.RateLimiter``.

Every retry or poll loop of the operator takes its pauses from one of the policies below;
none writes its own doubling.

The flags' defaults are here rather than in the parser or in ``app.Config``: both read them
(``coordinator run`` stays light, without importing the operator's shell).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Final


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Pauses that start at `first` seconds and grow by `factor` per failure, never beyond
    `cap`; `jitter` shortens each by up to that fraction, at random (0.5: a pause is
    0.5 to 1 times its delay; jitter never makes a pause longer than `cap`)."""

    first: float
    cap: float
    factor: float = 2.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.cap:
            raise ValueError(f"a backoff needs 0 < first <= cap, got {self.first} / {self.cap}")
        if not self.factor >= 1:
            raise ValueError(f"a backoff's factor must be >= 1, got {self.factor}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"a backoff's jitter must be between 0 and 1, got {self.jitter}")

    def delay(self, attempt: int, *, rand: float = 0.0) -> float:
        """The pause after failure number `attempt + 1` (0: the first failure); `rand` in
        [0, 1) is the random draw that jitter scales (0: the full delay)."""
        if attempt < 0:
            raise ValueError(f"attempt must be >= 0, got {attempt}")
        try:
            grown = self.first * self.factor**attempt
        except OverflowError:  # thousands of failures: long past the cap
            grown = self.cap
        return min(grown, self.cap) * (1.0 - self.jitter * rand)

    def delays(self, rand: Callable[[], float] | None = None) -> Iterator[float]:
        """The pauses, one per failure, without end (`rand`: draws for the jitter)."""
        attempt = 0
        while True:
            yield self.delay(attempt, rand=rand() if rand is not None else 0.0)
            attempt += 1


RECONCILE_RETRY: Final = Backoff(first=0.5, cap=60.0)
"""A failed reconcile of a customer group (per key: ``core.backoff.RateLimiter``): 0.5 s,
doubling per failure of the same key up to a minute; a success resets it."""
API_RETRY: Final = Backoff(first=0.2, cap=5.0, jitter=0.5)
"""A transient API error in the plan runner's reads and writes, and a watch of the informer
that ended with an error: 0.2 s doubling to 5 s, each pause 0.5 to 1 times that (replicas
and watch threads that failed together do not come back together)."""
AGENT_RETRY: Final = Backoff(first=0.5, cap=5.0)
"""Between the requests of a webhook step to its agent (no answer, 202, 5xx) and between
the attempts of a notification: 0.5 s, doubling, at most 5 s."""
BASELINE_RETRY: Final = Backoff(first=2.0, cap=300.0)
"""Before a plan that could not get its verification baseline (no data, Prometheus not
answering) asks again: 2 s, doubling per failure of the same plan, at most 5 minutes."""
WAIT_POLL: Final = Backoff(first=0.5, cap=5.0)
"""Between the reads of a kubernetes ``wait`` step: 0.5 s, doubling, at most 5 s."""
CONFLICT_RETRY: Final = Backoff(first=0.05, cap=0.4)
"""Before a kubernetes step reads and writes again after a 409 Conflict (the object changed
between its read and its write): 0.05 s, doubling, at most 0.4 s."""
ADMISSION_PROBE: Final = Backoff(first=0.05, cap=1.0)
"""Between the dry-run probes that wait, at start, for the API server to apply the
admission webhooks just registered: 0.05 s, doubling, at most 1 s."""


# --- coordinator run: the flags' defaults (and Config's) -----------------------------------

WORKERS: Final = 16
"""Customer groups reconciled at once, and API calls in flight (``--workers``)."""
WEBHOOKS: Final = "auto"
"""How the API server reaches the admission webhooks (``--webhooks``)."""
WATCH: Final = "informer"
"""What lists and watches the kinds into the Store (``--watch``): informer | kopf."""
WEBHOOK_PORT: Final = 0
"""The admission server's port (``--webhook-port``); 0: a free port (local) or 9443 (service)."""
OPERATOR_NAMESPACE: Final = "optiinfra-system"
OPERATOR_NAME: Final = "optiinfra-coordinator"
WEBHOOK_SERVICE_PORT: Final = 443
WEBHOOK_SERVICE: Final = f"{OPERATOR_NAMESPACE}/{OPERATOR_NAME}:{WEBHOOK_SERVICE_PORT}"
"""The Service in front of the replicas (``--webhook-service``; manifests/service.yaml)."""
LEASE_NAMESPACE: Final = "default"
"""The Lease's namespace out of a cluster, when ``--lease-namespace`` is not given."""
LEASE_DURATION_SECONDS: Final = 12.0
"""``--lease-duration``: a standby takes over once the Lease was not renewed this long."""
SHUTDOWN_TIMEOUT_SECONDS: Final = 10.0
"""``--shutdown-timeout``: after SIGTERM the process exits within this time."""
NOTIFY_EXPIRING_BEFORE_SECONDS: Final = 3600.0
"""``--notify-expiring-before``: ApprovalExpiringSoon this long before a pending approval
expires."""
