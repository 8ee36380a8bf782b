"""Whether this replica may start driving a customer: the hand-off rule of shards.

When the ring changes, a customer's owner by consistent hashing (``core.shards``) changes
at once in every replica's view, but the replica that drove it may still be in the middle
of a step. Each customer therefore has a hand-off record: the shard that drives it
(``owner``) and, once that shard let it go at a step boundary, when (``released_at``). A
new owner starts only

- when the ring, as this replica sees it, gives it the customer, and
- when nobody drives it: no record, an empty owner, this replica's own record, the old
  owner released it, or the old owner's Lease is gone or expired (renewed at ``renewed``,
  for ``duration`` seconds, not renewed since).

Starting is a claim: the caller writes the record with this replica as owner and no
``released_at``, replacing it with the resourceVersion it read, so that of two replicas
that both decided yes only one claim succeeds. The inputs must be read from the API
server (a consistent read), not from a cache: a stale Lease shows an older renewal and
would look expired too early.

Why an expired Lease is enough: a shard stops acting on its own once it has not renewed
for its renew deadline (2/3 of the duration, as the leader does, ``k8s.lease.Timing``),
before its Lease expires; after a lapse it drives a customer again only by claiming it
anew through this rule. The gap between the two (4 s of 12 by default) is also what
clocks may differ by. The plan status writes keep their resourceVersion precondition as
the last guard.

Pure: no I/O; ``now`` is passed in.
"""

from __future__ import annotations

import dataclasses
import datetime

from coordinator.core import shards


@dataclasses.dataclass(frozen=True, kw_only=True)
class Record:
    """A customer's hand-off record as read."""

    owner: str
    """The shard that drives (or drove) the customer; empty: nobody."""
    released_at: datetime.datetime | None = None
    """When the owner let it go; None while it drives it."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class OwnerLease:
    """The old owner's Lease as read: its holder, last renewal and duration."""

    holder: str
    renewed: datetime.datetime | None
    duration: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class Verdict:
    """`start`: whether to claim the customer now; `reason`: why, for logs and kubectl;
    `retry_at`: when the answer may change by itself (the old owner's Lease expires)."""

    start: bool
    reason: str
    retry_at: datetime.datetime | None = None


def may_start(
    *,
    me: str,
    ring: shards.Ring,
    customer: shards.Customer,
    record: Record | None,
    lease: OwnerLease | None,
    now: datetime.datetime,
) -> Verdict:
    """The hand-off rule (the module's docstring). `lease` is the Lease of
    ``record.owner``; None when it does not exist (deleted at a graceful stop)."""
    assigned = shards.owner(ring, *customer)
    if assigned != me:
        return Verdict(start=False, reason=f"the ring gives it to {assigned or 'nobody'}")
    if record is None or not record.owner:
        return Verdict(start=True, reason="nobody drives it")
    if record.owner == me:
        return Verdict(start=True, reason="this shard drives it already")
    old = record.owner
    if record.released_at is not None:
        return Verdict(start=True, reason=f"{old} released it at {record.released_at}")
    if lease is None or lease.holder != old:
        return Verdict(start=True, reason=f"{old} holds no Lease any more")
    if lease.renewed is None or not shards.live(lease.renewed, lease.duration, now):
        return Verdict(start=True, reason=f"the Lease of {old} expired")
    expires = lease.renewed + datetime.timedelta(seconds=lease.duration)
    return Verdict(
        start=False,
        reason=f"{old} drives it until it lets go or its Lease expires at {expires}",
        retry_at=expires,
    )
