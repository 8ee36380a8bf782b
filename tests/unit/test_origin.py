"""Where a change came from decides what it queues: one enqueue function, Origin values.

Every change reaches the work queue through `WorkQueue.enqueue` with its origin (the
Store answers it, dispatch hands it on): an own write to the group being reconciled does
not run it again; a watched change during a reconcile does, once, afterwards; a listed
change waits behind a watched one.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from coordinator import reconciler as reconciler_
from coordinator import store as store_
from coordinator import workqueue
from coordinator.api.common import RECOMMENDATIONS
from coordinator.core import approval as policy_
from coordinator.core.origin import Origin, waits
from coordinator.k8s import client as client_
from coordinator.k8s import events as events_
from tests.support import builders
from tests.support.shell import Enqueuing

NS = "team-a"


def raw(name: str, rv: int, customer: str = "c1") -> dict[str, Any]:
    """Recommendation `name` of team-a at resourceVersion `rv`."""
    return builders.recommendation(
        name,
        namespace=NS,
        metadata={"uid": f"uid-{name}", "resourceVersion": str(rv)},
        customerId=customer,
    )


def enqueued() -> tuple[store_.Store, reconciler_.Reconciler]:
    """A Store whose changes go to the reconciler's one enqueue function (no API server:
    nothing here reconciles, only the queue is looked at)."""
    store = Enqueuing()
    reconciler = reconciler_.Reconciler(
        client=cast(client_.Client, None),
        recorder=cast(events_.Recorder, None),
        policy=policy_.ApprovalPolicy(),
        store=store,
    )
    store.reconciler = reconciler
    return store, reconciler


async def _reconciling(
    store: store_.Store, reconciler: reconciler_.Reconciler
) -> workqueue.Reconciling:
    """Recommendation a of c1 watched, and its group taken by a worker: its context."""
    store.apply(RECOMMENDATIONS, raw("a", 1), origin=Origin.WATCHED)
    key = await asyncio.wait_for(reconciler.queue.get(), 1)
    return workqueue.Reconciling(key, store)


async def _taken(queue: workqueue.WorkQueue) -> list[str]:
    """The customers the queue hands out now, in order (each reconcile done at once)."""
    taken = []
    while len(queue):
        key = await asyncio.wait_for(queue.get(), 1)
        taken.append(key[1])
        queue.done(key)
    return taken


def test_an_own_write_to_the_group_being_reconciled_does_not_requeue_it() -> None:
    async def scenario() -> None:
        store, reconciler = enqueued()
        queue = reconciler.queue
        ctx = await _reconciling(store, reconciler)
        ctx.written(RECOMMENDATIONS, raw("a", 2))  # the answer of this reconcile's write
        store.apply(RECOMMENDATIONS, raw("a", 3))  # ... and of its next, echoed first
        ctx.written(RECOMMENDATIONS, raw("a", 3))
        record = store.record(RECOMMENDATIONS, (NS, "a"))
        assert record is not None
        assert record.rv == 3  # in the Store at once
        queue.done(ctx.key, ctx.writes)
        assert len(queue) == 0
        await asyncio.wait_for(queue.idle(), 1)

    asyncio.run(scenario())


def test_a_watched_change_during_a_reconcile_requeues_it_once_afterwards() -> None:
    async def scenario() -> None:
        store, reconciler = enqueued()
        queue = reconciler.queue
        ctx = await _reconciling(store, reconciler)
        ctx.written(RECOMMENDATIONS, raw("a", 2))
        store.apply(RECOMMENDATIONS, raw("b", 5), origin=Origin.WATCHED)  # someone else's
        store.apply(RECOMMENDATIONS, raw("b", 6), origin=Origin.WATCHED)
        assert len(queue) == 0  # never twice at once
        queue.done(ctx.key, ctx.writes)
        assert await _taken(queue) == ["c1"]  # once, after
        await asyncio.wait_for(queue.idle(), 1)

    asyncio.run(scenario())


def test_another_writer_s_own_write_during_a_reconcile_requeues_it() -> None:
    """The runner's writes are own writes too, but not this reconcile's: the plan it
    moved must be looked at again."""

    async def scenario() -> None:
        store, reconciler = enqueued()
        queue = reconciler.queue
        ctx = await _reconciling(store, reconciler)
        store.own_write(RECOMMENDATIONS, raw("a", 2))  # not through this reconcile
        queue.done(ctx.key, ctx.writes)
        assert await _taken(queue) == ["c1"]

    asyncio.run(scenario())


def test_a_listed_change_waits_behind_a_watched_one() -> None:
    async def scenario() -> None:
        store, reconciler = enqueued()
        store.apply(RECOMMENDATIONS, raw("x", 1, customer="listed"), origin=Origin.LISTED)
        store.apply(RECOMMENDATIONS, raw("y", 2, customer="watched"), origin=Origin.WATCHED)
        store.own_write(RECOMMENDATIONS, raw("z", 3, customer="written"))
        assert await _taken(reconciler.queue) == ["watched", "written", "listed"]

    asyncio.run(scenario())


def test_only_a_listing_waits() -> None:
    assert [o for o in Origin if waits(o)] == [Origin.LISTED]
    assert [o.value for o in Origin] == ["listed", "watched", "own write"]
