"""The work queue of customer groups, and what one reconcile of a group takes and gives.

`WorkQueue` holds the keys to reconcile (each at most once at a time, a listing's keys
behind the changes of now, requeue-after, per-key backoff); `Reconciling` is the context
of one reconcile of one group, created by the worker and passed down to every write the
reconcile makes; `Result` is what the reconcile gives back to the worker's caller
(``parts.dispatch.Dispatch``): the changes its writes made in the Store, to dispatch, and
the plans to start — values, never call-backs.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from collections.abc import Collection, Mapping
from typing import Any

from coordinator import store as store_
from coordinator.api import defaults
from coordinator.api.common import ENDPOINTS, POLICIES, RECOMMENDATIONS
from coordinator.api.defaults import Backoff
from coordinator.api.plan import ExecutionPlan
from coordinator.core import backoff
from coordinator.core.origin import waits

GroupKey = store_.GroupKey
ObjectKey = store_.ObjectKey

Version = tuple[str, ObjectKey, int]
"""(plural, object, resourceVersion; -1 for a deletion) of a change or a write."""


class WorkQueue:
    """Keys to reconcile: each at most once at a time, re-run if it changed meanwhile;
    `add_after` brings one back at a time, `retry` after a per-key exponential backoff.

    Two priorities, as controller-runtime's priority queue has them: what a listing
    shows (a start-up with 10 000 recommendations queues all 500 groups) is the backlog,
    taken only when no key of a change happening now waits; a key of the backlog that
    changes now moves ahead.

    A change of a key being reconciled is remembered with its version (`add`'s
    `change`), and the key runs again once when its reconcile is `done` — unless every
    change seen meanwhile is one of that reconcile's own writes (the watch often shows a
    write before its answer arrives: that echo is no reason to run again)."""

    def __init__(self, *, retry: Backoff = defaults.RECONCILE_RETRY) -> None:
        self._queue: collections.deque[GroupKey] = collections.deque()
        self._backlog: collections.deque[GroupKey] = collections.deque()
        self._queued: dict[GroupKey, bool] = {}
        """Each key waiting, and whether it is (only) in the backlog."""
        self._active: set[GroupKey] = set()
        self._dirty: dict[GroupKey, set[Version | None]] = {}
        """The keys being reconciled that changed meanwhile, and the changes (None: no
        version, such as a timer or an ApprovalPolicy: it runs again whatever)."""
        self._timers: dict[GroupKey, asyncio.TimerHandle] = {}
        self._limiter = backoff.RateLimiter[GroupKey](retry)
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def add(self, key: GroupKey, *, backlog: bool = False, change: Version | None = None) -> None:
        self._idle.clear()
        if key in self._active:
            self._dirty.setdefault(key, set()).add(change)
            return
        waiting = self._queued.get(key)
        if waiting is None or (waiting and not backlog):  # new, or out of the backlog
            self._queued[key] = backlog
            (self._backlog if backlog else self._queue).append(key)
            self._ready.set()

    def enqueue(self, change: store_.Change, store: store_.Store) -> None:
        """The one place a change of the Store becomes queue keys: the groups it concerns
        — its own, and for a recommendation the groups of those that depend on it (looked
        up in `store`); for an ApprovalPolicy every group of its namespace; an
        AgentEndpoint none. Where it came from decides the rest (``core.origin``): a
        listing's keys wait behind the changes of now; a change of a group being
        reconciled runs it again afterwards, unless it is one of that reconcile's own
        writes (`Reconciling`). Called by dispatch (``parts.dispatch``) with each change
        the Store answered."""
        plural, record, deleted = change.plural, change.record, change.deleted
        if plural == ENDPOINTS:
            return
        backlog = waits(change.origin)
        if plural == POLICIES:
            for key in store.groups_in(record.namespace):
                self.add(key, backlog=backlog)
            return
        version = (plural, record.key, -1 if deleted else record.rv)
        self.add((record.namespace, record.customer), backlog=backlog, change=version)
        if plural != RECOMMENDATIONS:
            return
        for dependent in store.dependents(record.key):
            customer = store.customer_of(dependent)
            if customer is not None:
                self.add((record.namespace, customer), backlog=backlog)

    # Why a reconcile's own writes do not run it again: the reconcile that wrote them
    # computed the group's whole desired state from what it observed, so running it again
    # right away would only find nothing to do (it was one extra reconcile of the whole
    # group per write; the profile put reconciles at a third of the operator's CPU). The
    # groups that depend on it are still queued, and anyone else's change (a watch event
    # at another version, a write of the runner) runs the group again.

    def add_after(self, key: GroupKey, seconds: float) -> None:
        """Add `key` in `seconds` (the earliest of the times asked for wins)."""
        loop = asyncio.get_running_loop()
        old = self._timers.get(key)
        if old is not None and old.when() <= loop.time() + seconds:
            return
        if old is not None:
            old.cancel()
        self._timers[key] = loop.call_later(max(0.0, seconds), self._fire, key)

    def _fire(self, key: GroupKey) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def retry(self, key: GroupKey) -> float:
        """`key` failed: add it again after its backoff; the delay."""
        delay = self._limiter.when(key)
        self.add_after(key, delay)
        return delay

    def forget(self, key: GroupKey) -> None:
        """`key` succeeded: its next failure starts the backoff again."""
        self._limiter.forget(key)

    async def get(self) -> GroupKey:
        while True:
            while not self._queue and not self._backlog:
                self._ready.clear()
                await self._ready.wait()
            from_backlog = not self._queue
            key = (self._backlog if from_backlog else self._queue).popleft()
            waiting = self._queued.get(key)
            if waiting is None or waiting != from_backlog:
                continue  # taken already, or moved ahead (its other entry counts)
            del self._queued[key]
            self._active.add(key)
            return key

    def done(self, key: GroupKey, own: Collection[Version] = ()) -> None:
        """The reconcile of `key` ended; `own`: its writes. The key runs again once if a
        change other than those was seen meanwhile."""
        self._active.discard(key)
        changes = self._dirty.pop(key, None)
        if changes is not None and any(c is None or c not in own for c in changes):
            self.add(key)
        elif not self._queued and not self._active:
            self._idle.set()

    def active(self, key: GroupKey) -> bool:
        """Whether `key` is being reconciled now."""
        return key in self._active

    async def idle(self) -> None:
        """Until nothing is queued or being reconciled."""
        await self._idle.wait()

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def __len__(self) -> int:
        return len(self._queued)


@dataclasses.dataclass(slots=True)
class Reconciling:
    """One reconcile of one group: created by the worker that took `key`, passed down to
    every write the reconcile makes; its writes go back with the `Result`."""

    key: GroupKey
    store: store_.Store
    writes: set[Version] = dataclasses.field(default_factory=set)
    """The versions this reconcile wrote (`written`): the queue's `done` takes them."""
    changes: list[store_.Change] = dataclasses.field(default_factory=list)
    """The Store's answers to those writes, in order, for the worker's caller to dispatch."""

    def written(self, plural: str, raw: Mapping[str, Any]) -> None:
        """The answer to one of this reconcile's writes: remembered as its own, into the
        Store at once as an own write (``core.origin``), its change kept to dispatch."""
        meta = raw.get("metadata") or {}
        key = (meta.get("namespace") or "default", meta.get("name") or "")
        self.writes.add((plural, key, store_.version(meta.get("resourceVersion"))))
        change = self.store.own_write(plural, raw)
        if change is not None:
            self.changes.append(change)


@dataclasses.dataclass(frozen=True, slots=True)
class Result:
    """What one reconcile gives back: to run again after `requeue_after` seconds (an
    approval's expiry, an ApprovalExpiringSoon), the plans it created (to start at once),
    the pending plans to consider again (a namespace with ApprovalPolicies); and, from its
    context, the versions it wrote and the changes those made in the Store."""

    requeue_after: float | None = None
    created_plans: tuple[ExecutionPlan, ...] = ()
    pending_plans: tuple[ExecutionPlan, ...] = ()
    writes: frozenset[Version] = frozenset()
    changes: tuple[store_.Change, ...] = ()

    @property
    def to_start(self) -> tuple[ExecutionPlan, ...]:
        """The plans the worker's caller starts (``parts.starts``)."""
        return (*self.created_plans, *self.pending_plans)
