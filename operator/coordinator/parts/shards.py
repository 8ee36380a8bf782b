"""Shards: which customers this replica drives, and how it takes and lets go of them.

With ``coordinator run --shard`` every replica acts, each for its own customers
(``core.shards``: a customer belongs to one member of the ring of live shard Leases by
consistent hashing). Two parts, as leadership has two (``parts.leadership``):

- `ShardLease` (started early, stopped late) renews this replica's Lease and reads the
  ring (``k8s.shardlease``); at the stop, once the plans' daemons have left their steps,
  it releases every customer's hand-off record and deletes the Lease, so that the others
  take its customers at once.
- `Shards` follows the Lease and the ring: `leading` while the Lease is held; on every
  change, the customers the ring no longer gives this replica are let go (their daemons
  leave their steps, as at a stop; no reconcile or start of theirs is in flight; they
  leave the Store; the release is written) and those it gives are claimed by the
  hand-off rule (``core.handoff`` through ``k8s.handoff``: only after the old owner let
  go, or its Lease expired) and then taken in: their objects listed into the Store as
  at a start-up, dispatched as any listing is.

The Store takes in only the customers held (`Shards.drives` is its ``drives``); a
customer seen for the first time (any watch event, held or not) wakes the rebalance.
A replica whose Lease lapsed stops acting at once (``leading`` cleared), forgets its
customers without releasing them (the others wait for its Lease to expire) and claims
them anew once it holds the Lease again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from coordinator import metrics
from coordinator import store as store_
from coordinator.core import shards as ring_
from coordinator.core.origin import Origin
from coordinator.k8s import client as client_
from coordinator.k8s import handoff, shardlease
from coordinator.parts import CLEANUP_SECONDS, first
from coordinator.parts.daemons import STEP_GRACE_SECONDS, Daemons
from coordinator.parts.starts import Starts
from coordinator.workqueue import WorkQueue

logger = logging.getLogger(__name__)

Deliver = Callable[..., None]
"""``parts.dispatch.Dispatch.deliver``: (plural, raw, *, deleted, origin)."""

IN_FLIGHT_SECONDS: Final = 10.0
"""How long a customer let go waits for its reconcile or plan start in flight."""
CLAIMS_AT_ONCE: Final = 8
"""Hand-off records read and written at the same time (two requests each)."""


class Shards:
    """The customers this replica drives; `drives` answers for the Store."""

    name = "shards"
    stop_seconds = CLEANUP_SECONDS

    def __init__(
        self,
        lease: shardlease.ShardLease,
        records: handoff.Records,
        *,
        client: client_.Client,
        store: store_.Store,
        queue: WorkQueue,
        daemons: Daemons,
        starts: Starts,
        deliver: Deliver,
        leading: asyncio.Event,
        following: asyncio.Event,
    ) -> None:
        self.lease = lease
        self.records = records
        self.identity = lease.identity
        self._client = client
        self._store = store
        self._queue = queue
        self._daemons = daemons
        self._starts = starts
        self._deliver = deliver
        self.leading = leading
        self.following = following
        self.held: set[ring_.Customer] = set()
        """The customers claimed and taken in: the Store holds them, this replica drives them."""
        self._known: set[ring_.Customer] = set()
        """Every customer seen, held or not (the ring decides among them)."""
        self._wake = asyncio.Event()
        self._retry_at: float | None = None
        self._settle = True
        self._task: asyncio.Task[None] | None = None
        store.drives = self.drives
        metrics.SHARD_CUSTOMERS.labels(shard=self.identity).set(0)

    def drives(self, customer: ring_.Customer) -> bool:
        """Whether this replica drives `customer` (the Store takes in only those); a
        customer seen for the first time wakes the rebalance."""
        if customer in self.held:
            return True
        if customer not in self._known:
            self._known.add(customer)
            self._wake.set()
        return False

    async def start(self) -> None:
        self._lead(False)
        self._task = asyncio.create_task(self._follow(), name="shards")

    async def stop(self) -> None:
        """Stop acting (the daemons leave their steps); `ShardLease` releases later."""
        self._lead(False)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _lead(self, leading: bool) -> None:
        (self.leading if leading else self.following).set()
        (self.following if leading else self.leading).clear()

    async def _follow(self) -> None:
        while True:
            timeout = None
            if self._retry_at is not None:
                timeout = max(0.0, self._retry_at - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(first(self.lease.changed.wait(), self._wake.wait()), timeout)
            self.lease.changed.clear()
            self._wake.clear()
            try:
                await self.rebalance()
            except Exception:
                logger.exception("shard %s: rebalancing failed; again soon", self.identity)
                self._retry_at = time.monotonic() + self.lease.timing.retry

    async def rebalance(self) -> None:
        """Follow the Lease and the ring: let go of the customers that moved away, claim
        those that moved here."""
        self._retry_at = None
        if not self.lease.holding:
            if self.leading.is_set() or self.held:
                self._lead(False)
                await self.leave(set(self.held), release=False)
            return
        ring = self.lease.ring
        if self.identity not in ring.members:
            return  # the ring not read since this replica's Lease was written
        if not self.leading.is_set():
            self._lead(True)
            if self._settle:  # replicas started together see each other before claiming
                self._settle = False
                await asyncio.sleep(self.lease.timing.retry)
                ring = self.lease.ring
        # The models materialised lately are the working set of the customers held: a
        # cache sized for one replica would make every shard as large as one.
        self._store.cache_size = max(store_.MODEL_CACHE // len(ring.members), 256)
        mine = {c for c in self._known if ring_.owner(ring, *c) == self.identity}
        if lost := self.held - mine:
            await self.leave(lost, release=True)
        if wanted := mine - self.held:
            await self._claim(wanted, ring)

    async def leave(self, customers: Collection[ring_.Customer], *, release: bool) -> None:
        """Let `customers` go at a step boundary: their daemons leave their steps, their
        reconciles and plan starts in flight end, they leave the Store; with `release`,
        their records say so (the new owner starts at once)."""
        if not customers:
            return
        began = time.monotonic()
        self.held.difference_update(customers)
        await self._daemons.leave(customers)
        for _ in range(int(IN_FLIGHT_SECONDS / 0.05)):  # reconciles and starts in flight
            if not any(self._queue.active(c) or self._starts.busy(c) for c in customers):
                break
            await asyncio.sleep(0.05)
        dropped = self._store.drop(customers)
        if release:
            await in_threads(self.records.release, sorted(customers))
        metrics.SHARD_MOVES.labels(direction="out").inc(len(customers))
        metrics.SHARD_CUSTOMERS.labels(shard=self.identity).set(len(self.held))
        logger.info(
            "shard %s: let go of %d customers (%d objects) in %.2f s%s; drives %d",
            self.identity,
            len(customers),
            dropped,
            time.monotonic() - began,
            "" if release else " (lease lapsed: not released)",
            len(self.held),
        )

    async def _claim(self, wanted: Collection[ring_.Customer], ring: ring_.Ring) -> None:
        """Claim what the hand-off rule allows now; take the claimed in; come back for the
        others when the old owner's Lease would expire (or after a retry period)."""
        began = time.monotonic()
        ordered = sorted(wanted)
        verdicts = await in_threads(lambda c: self.records.claim(ring, c), ordered)
        claimed: list[ring_.Customer] = []
        later: list[float] = []
        for customer, verdict in zip(ordered, verdicts, strict=True):
            if isinstance(verdict, BaseException):
                logger.warning("shard %s: claiming %s/%s: %s", self.identity, *customer, verdict)
                later.append(time.monotonic() + self.lease.timing.retry)
            elif verdict.start:
                claimed.append(customer)
                logger.info(
                    "shard %s: claimed %s/%s (%s)", self.identity, *customer, verdict.reason
                )
            else:
                # Asked again after a renewal period (the old owner lets go at its next
                # step boundary), or when its Lease expires, if sooner.
                wait = self.lease.timing.retry
                if verdict.retry_at is not None:
                    expiry = (verdict.retry_at - datetime.now(UTC)).total_seconds() + 0.2
                    wait = max(0.2, min(wait, expiry))
                later.append(time.monotonic() + wait)
        if later:
            self._retry_at = min([*later, *([self._retry_at] if self._retry_at else [])])
        if claimed:
            await self._take_in(claimed)
            metrics.SHARD_MOVES.labels(direction="in").inc(len(claimed))
            metrics.SHARD_HANDOFF.observe(time.monotonic() - began)
        metrics.SHARD_CUSTOMERS.labels(shard=self.identity).set(len(self.held))
        logger.info(
            "shard %s: drives %d customers (+%d, %d waiting) after %.2f s",
            self.identity,
            len(self.held),
            len(claimed),
            len(later),
            time.monotonic() - began,
        )

    async def _take_in(self, customers: list[ring_.Customer]) -> None:
        """Held from now on (what the watch shows of them is taken in), then listed into
        the Store: recommendations first, then approvals and plans (a plan's
        dependencies are in when it is dispatched)."""
        self.held.update(customers)
        by_namespace: dict[str, set[str]] = collections.defaultdict(set)
        for namespace, customer_id in customers:
            by_namespace[namespace].add(customer_id)
        for namespace, ids in sorted(by_namespace.items()):
            listed: list[tuple[str, Mapping[str, Any]]] = []
            try:
                for plural in store_.CUSTOMER_KINDS:
                    async for page in self._client.pages(plural, namespace):
                        listed.extend(
                            (plural, raw)
                            for raw in page
                            if str((raw.get("spec") or {}).get("customerId") or "") in ids
                        )
            except Exception:  # taken in again at the next rebalance (the claim stands)
                logger.exception("shard %s: listing %s failed", self.identity, namespace)
                await self.leave({(namespace, i) for i in ids}, release=False)
                self._retry_at = time.monotonic() + self.lease.timing.retry
                continue
            for plural, raw in listed:  # at once: nothing runs between the deliveries
                self._deliver(plural, raw, deleted=False, origin=Origin.LISTED)

    def ready(self) -> tuple[bool, str]:
        """Readiness with shards: acting while the Lease is held."""
        if self.lease.holding:
            return True, (
                f"acting for {len(self.held)} customers of ring {self.lease.ring_name} "
                f"as {self.identity}"
            )
        return False, f"shard {self.identity}: lease {self.lease.name} not held"


class ShardLease:
    """Runs the shard's Lease; at the stop (after the daemons left their steps) writes
    the releases of its customers and deletes the Lease."""

    name = "shard lease"
    stop_seconds = CLEANUP_SECONDS + STEP_GRACE_SECONDS

    def __init__(self, shards: Shards) -> None:
        self._shards = shards
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._shards.lease.run(), name="shard lease")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        shards = self._shards
        customers = sorted(shards.held)
        shards.held.clear()
        try:
            await asyncio.wait_for(in_threads(shards.records.release, customers), CLEANUP_SECONDS)
            await asyncio.wait_for(asyncio.to_thread(shards.lease.release), CLEANUP_SECONDS)
        except Exception as exc:  # never block the exit: the Lease expires for the others
            logger.warning("shard %s: could not let go at exit: %s", shards.identity, exc)
        logger.info(
            "shard %s: released %d customers and its lease", shards.identity, len(customers)
        )


async def in_threads(call: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """`call` (blocking) on each item in threads, CLAIMS_AT_ONCE at a time; the results
    in order, exceptions as values."""
    limit = asyncio.Semaphore(CLAIMS_AT_ONCE)

    async def one(item: Any) -> Any:
        async with limit:
            return await asyncio.to_thread(call, item)

    return await asyncio.gather(*(one(item) for item in items), return_exceptions=True)
