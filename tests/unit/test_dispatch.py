"""One pass from a delivered object to the queue, and from a reconcile's result to the
plans: the Store answers each change as a value and `parts.dispatch.Dispatch` hands it
on; the Store calls nobody, a reconcile gives its writes and plans back, and the
runner's and daemons' own writes come through the outbox."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any, cast

from coordinator import outbox as outbox_
from coordinator import reconciler as reconciler_
from coordinator import store as store_
from coordinator.api.common import PLANS, RECOMMENDATIONS
from coordinator.api.plan import ExecutionPlan
from coordinator.core import approval as policy_
from coordinator.core.origin import Origin
from coordinator.k8s import client as client_
from coordinator.k8s import events as events_
from coordinator.parts import Background
from coordinator.parts import daemons as daemons_
from coordinator.parts import dispatch as dispatch_
from coordinator.parts import starts as starts_
from tests.support.fakeapi import FakeApi, FakeRecorder
from tests.support.shell import NOW, NS, in_loop, plan_body, rec_body, until


class _Daemons:
    """What dispatch asks of the plan daemons, recorded."""

    def __init__(self) -> None:
        self.supervised: list[tuple[str, str | None, bool]] = []

    def supervise(self, record: store_.Record, deleted: bool) -> None:
        self.supervised.append((record.name, record.phase, deleted))

    def wake(self, key: tuple[str, str]) -> None:
        pass


class _Starts:
    """What dispatch asks of the plan starts, recorded."""

    def __init__(self) -> None:
        self.started: list[str] = []

    async def start_plan(self, plan: ExecutionPlan) -> None:
        self.started.append(plan.metadata.name)

    async def start_pending(self) -> None:
        pass

    async def start_recorded(self, key: tuple[str, str]) -> None:
        pass


@dataclasses.dataclass
class _Shell:
    dispatch: dispatch_.Dispatch
    store: store_.Store
    outbox: outbox_.Outbox
    reconciler: reconciler_.Reconciler
    daemons: _Daemons
    starts: _Starts


def _shell(api: FakeApi) -> _Shell:
    """Dispatch over a plain Store (nobody listens to it), the reconciler and its outbox;
    the plans' side recorded."""
    store = store_.Store(loader=api.get)
    outbox = outbox_.Outbox(store)
    reconciler = reconciler_.Reconciler(
        client=cast(client_.Client, api),
        recorder=cast(events_.Recorder, FakeRecorder()),
        policy=policy_.ApprovalPolicy(),
        store=store,
        clock=lambda: NOW,
        workers=2,
    )
    daemons, starts = _Daemons(), _Starts()
    listed = asyncio.Event()
    listed.set()
    dispatch = dispatch_.Dispatch(
        store=store,
        outbox=outbox,
        reconciler=reconciler,
        daemons=cast(daemons_.Daemons, daemons),
        starts=cast(starts_.Starts, starts),
        leading=reconciler.acting,
        listed=listed,
        background=Background(logging.getLogger(__name__)),
    )
    return _Shell(dispatch, store, outbox, reconciler, daemons, starts)


def test_the_store_answers_a_change_as_a_value_and_keeps_no_listeners() -> None:
    store, api = store_.Store(), FakeApi()
    assert not hasattr(store, "listeners")
    raw = api.put(RECOMMENDATIONS, rec_body("a"))
    change = store.apply(RECOMMENDATIONS, raw, origin=Origin.LISTED)
    assert change is not None
    assert (change.plural, change.record.name, change.deleted, change.origin) == (
        RECOMMENDATIONS,
        "a",
        False,
        Origin.LISTED,
    )
    assert store.apply(RECOMMENDATIONS, raw) is None  # the same version: no change
    gone = store.apply(RECOMMENDATIONS, raw, deleted=True)
    assert gone is not None
    assert gone.deleted


@in_loop
async def test_a_delivered_object_is_stored_and_its_group_queued_in_one_pass() -> None:
    api = FakeApi()
    shell = _shell(api)
    rec = api.put(RECOMMENDATIONS, rec_body("a"))
    shell.dispatch.deliver(RECOMMENDATIONS, rec, deleted=False, origin=Origin.WATCHED)
    assert shell.store.recommendation((NS, "a")) is not None
    assert len(shell.reconciler.queue) == 1  # queued before deliver returned
    plan = api.put(PLANS, plan_body("p"))
    shell.dispatch.deliver(PLANS, plan, deleted=False, origin=Origin.WATCHED)
    assert shell.daemons.supervised == [("p", "Pending", False)]


@in_loop
async def test_a_fresh_listing_s_deletions_are_dispatched() -> None:
    api = FakeApi()
    shell = _shell(api)
    for name in ("p", "q"):
        plan = api.put(PLANS, plan_body(name))
        shell.dispatch.deliver(PLANS, plan, deleted=False, origin=Origin.LISTED)
    shell.dispatch.unlisted(PLANS, lambda ns: ns == NS, {(NS, "p")})
    assert shell.store.plan((NS, "q")) is None
    assert shell.daemons.supervised[-1] == ("q", "Pending", True)


@in_loop
async def test_a_reconcile_gives_its_writes_and_plans_back_to_the_worker_s_caller() -> None:
    """A low-risk recommendation: the reconcile creates its approval and plan; the worker
    dispatches the changes its writes made (the plan reaches the daemons), starts the
    plan it created, and does not run the group again for its own writes."""
    api = FakeApi()
    shell = _shell(api)
    dispatch, store, reconciler = shell.dispatch, shell.store, shell.reconciler
    reconciles = 0
    real = reconciler.reconcile

    async def counted(ctx: Any) -> reconciler_.Result:
        nonlocal reconciles
        reconciles += 1
        return await real(ctx)

    reconciler.reconcile = counted  # type: ignore[method-assign]
    dispatch.deliver(
        RECOMMENDATIONS,
        api.put(RECOMMENDATIONS, rec_body("a", risk="low")),
        deleted=False,
        origin=Origin.WATCHED,
    )
    await dispatch.start()
    try:
        await until(lambda: bool(shell.starts.started), 5)
        await asyncio.wait_for(reconciler.queue.idle(), 5)
    finally:
        await dispatch.stop()
    assert shell.starts.started == ["a"]
    assert [name for name, _, _ in shell.daemons.supervised] == ["a"]  # the plan's create
    assert store.approval((NS, "a")) is not None
    assert reconciles == 1


@in_loop
async def test_the_runner_s_own_write_goes_through_the_outbox_to_the_queue() -> None:
    """A recommendation the Store holds but nobody queued: the runner's write of its plan
    (an own write, through the outbox) is in the Store at once, reaches the daemons, and
    queues the group, whose reconcile then writes the recommendation's status."""
    api = FakeApi()
    shell = _shell(api)
    dispatch, store, outbox = shell.dispatch, shell.store, shell.outbox
    store.apply(RECOMMENDATIONS, api.put(RECOMMENDATIONS, rec_body("a")))  # not dispatched
    await dispatch.start()
    try:
        outbox.own_write(PLANS, api.put(PLANS, plan_body("p", phase="Running")))
        assert store.plan((NS, "p")) is not None  # in the Store at once

        def reconciled() -> bool:
            """Recommendation a has a status written."""
            rec = store.recommendation((NS, "a"))
            return rec is not None and rec.status is not None

        await until(reconciled, 5)
    finally:
        await dispatch.stop()
    assert shell.daemons.supervised == [("p", "Running", False)]


@in_loop
async def test_a_listing_read_before_a_deletion_does_not_bring_the_object_back() -> None:
    """A shard lists the customers it takes (``parts.shards``) while the watch runs: a
    deletion the watch delivered first is not undone by the older listing."""
    api = FakeApi()
    shell = _shell(api)
    rec = api.put(RECOMMENDATIONS, rec_body("a"))
    shell.dispatch.deliver(RECOMMENDATIONS, rec, deleted=True, origin=Origin.WATCHED)
    shell.dispatch.deliver(RECOMMENDATIONS, rec, deleted=False, origin=Origin.LISTED)
    assert shell.store.recommendation((NS, "a")) is None
    assert len(shell.reconciler.queue) == 0


def test_with_shards_the_store_takes_in_only_the_customers_driven_and_drops_them_whole() -> None:
    store, api = store_.Store(), FakeApi()
    seen: list[tuple[str, str]] = []

    def drives(customer: tuple[str, str]) -> bool:
        seen.append(customer)
        return customer == (NS, "mine")

    store.drives = drives
    mine, theirs = rec_body("a", customer="mine"), rec_body("b", customer="theirs")
    assert store.apply(RECOMMENDATIONS, api.put(RECOMMENDATIONS, mine)) is not None
    assert store.apply(RECOMMENDATIONS, api.put(RECOMMENDATIONS, theirs)) is None
    assert store.apply(PLANS, api.put(PLANS, plan_body("a"))) is None  # plan_body: c1
    assert seen == [(NS, "mine"), (NS, "theirs"), (NS, "c1")]
    assert store.groups() == [(NS, "mine")]
    assert store.drop([(NS, "mine")]) == 1
    assert store.recommendation((NS, "a")) is None
    assert store.groups() == []
    assert dict(store.phases) == {"Pending": 0}
