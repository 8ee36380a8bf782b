"""The shell without a cluster: the Store, the work queue, the status writer and the
reconciler's actions, against a fake API server (seconds, not minutes).

The fake keeps objects by (plural, namespace, name), bumps a resourceVersion on every
write, merges status patches, and honours uid preconditions on delete. Every write the
reconciler makes is recorded, so a test can say exactly what was written.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import itertools
from collections.abc import Callable, Coroutine, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from unittest import mock

import pytest

from coordinator import reconciler as reconciler_
from coordinator import store as store_
from coordinator.api.common import APPROVALS, ENDPOINTS, PLANS, POLICIES, RECOMMENDATIONS
from coordinator.api.defaults import Backoff
from coordinator.core import approval as policy_
from coordinator.core import lifecycle
from coordinator.executors import webhook as webhook_
from coordinator.k8s import client as client_
from coordinator.k8s import events as events_

NS = "team-a"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def rec_body(
    name: str,
    *,
    customer: str = "c1",
    risk: str = "medium",
    resources: tuple[str, ...] = ("web",),
    depends_on: tuple[str, ...] = (),
    priority: int = 0,
) -> dict[str, Any]:
    return {
        "apiVersion": "optiinfra.io/v1alpha1",
        "kind": "Recommendation",
        "metadata": {
            "name": name,
            "namespace": NS,
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": '{"a whole": "manifest"}',
                "optiinfra.io/submitted-by": "agent",
            },
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
        },
        "spec": {
            "customerId": customer,
            "agentId": "a",
            "agentType": "cost",
            "title": name,
            "action": "migrate_to_spot",
            "riskLevel": risk,
            "affectedResources": list(resources),
            "dependsOn": list(depends_on),
            "priority": priority,
            "steps": [{"name": "s", "action": "noop", "executor": "simulated"}],
        },
    }


class FakeApi:
    """Just enough of an API server for the reconciler."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.writes: list[tuple[str, str, str, str]] = []  # (verb, plural, name, what)
        self._rv = itertools.count(100)
        self._uid = itertools.count(1)
        self.conflict_on_create: set[tuple[str, str]] = set()

    def _bump(self, obj: dict[str, Any]) -> None:
        obj["metadata"]["resourceVersion"] = str(next(self._rv))

    def put(self, plural: str, body: Mapping[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(dict(body))
        meta = obj["metadata"]
        meta.setdefault("uid", f"uid-{next(self._uid)}")
        meta.setdefault("generation", 1)
        meta.setdefault("creationTimestamp", "2026-01-02T03:00:00Z")
        self._bump(obj)
        self.objects[(plural, meta["namespace"], meta["name"])] = obj
        return copy.deepcopy(obj)

    async def create(self, plural: str, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        if (plural, name) in self.conflict_on_create or (plural, namespace, name) in self.objects:
            self.conflict_on_create.discard((plural, name))
            raise client_.ApiException(status=409, reason="Conflict")
        self.writes.append(("create", plural, name, ""))
        return self.put(plural, {**body, "metadata": {**body["metadata"], "namespace": namespace}})

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.objects.get((plural, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    async def patch_status(
        self,
        plural: str,
        namespace: str,
        name: str,
        patch: Mapping[str, Any],
        *,
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        obj = self.objects.get((plural, namespace, name))
        if obj is None:
            raise client_.ApiException(status=404, reason="Not Found")
        if resource_version is not None and resource_version != obj["metadata"]["resourceVersion"]:
            raise client_.ApiException(status=409, reason="Conflict")
        status = dict(obj.get("status") or {})
        for key, value in patch.items():
            if value is None:
                status.pop(key, None)
            else:
                status[key] = copy.deepcopy(value)
        obj["status"] = status
        self._bump(obj)
        self.writes.append(("status", plural, name, ",".join(sorted(patch))))
        return copy.deepcopy(obj)

    async def delete(self, plural: str, namespace: str, name: str, *, uid: str | None) -> None:
        obj = self.objects.get((plural, namespace, name))
        if obj is not None and (uid is None or obj["metadata"]["uid"] == uid):
            del self.objects[(plural, namespace, name)]
            self.writes.append(("delete", plural, name, ""))


class FakeRecorder:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def record(self, ref: events_.ObjectRef, *, reason: str, **_: Any) -> None:
        self.reasons.append(reason)


def in_loop(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an async test in a fresh event loop."""

    @functools.wraps(test)
    def run() -> None:
        asyncio.run(test())

    return run


def shell(api: FakeApi) -> tuple[store_.Store, reconciler_.Reconciler, FakeRecorder]:
    store = store_.Store(loader=api.get)
    recorder = FakeRecorder()
    client = cast(client_.Client, api)
    reconciler = reconciler_.Reconciler(
        client=client,
        recorder=cast(events_.Recorder, recorder),
        policy=policy_.ApprovalPolicy(),
        store=store,
        clock=lambda: NOW,
    )
    store.listeners.append(reconciler.enqueue)
    return store, reconciler, recorder


def watched(api: FakeApi, store: store_.Store) -> None:
    """What the watch would show: every object as the fake holds it now."""
    for (plural, _, _), obj in list(api.objects.items()):
        store.apply(plural, obj)


# --- the Store ------------------------------------------------------------------------


def test_the_store_keeps_records_not_models_and_drops_what_nobody_reads() -> None:
    store = store_.Store()
    raw = FakeApi().put(RECOMMENDATIONS, rec_body("a"))
    assert store.apply(RECOMMENDATIONS, raw)
    record = store.record(RECOMMENDATIONS, (NS, "a"))
    assert record is not None
    text = record.text()
    assert b"managedFields" not in text
    assert b"last-applied-configuration" not in text
    assert b"optiinfra.io/submitted-by" in text
    rec = store.recommendation((NS, "a"))
    assert rec is not None
    assert rec.metadata.annotations == {"optiinfra.io/submitted-by": "agent"}
    assert rec.spec.customer_id == "c1"
    assert store.group((NS, "c1")) == [record]


def test_the_store_ignores_an_event_older_than_what_it_holds() -> None:
    api, store = FakeApi(), store_.Store()
    old = api.put(RECOMMENDATIONS, rec_body("a"))
    newer = copy.deepcopy(old)
    newer["metadata"]["resourceVersion"] = str(int(old["metadata"]["resourceVersion"]) + 5)
    newer["status"] = {"phase": "AwaitingApproval"}
    assert store.apply(RECOMMENDATIONS, newer)  # our own write's answer
    assert not store.apply(RECOMMENDATIONS, old)  # the watch, behind
    record = store.record(RECOMMENDATIONS, (NS, "a"))
    assert record is not None
    assert record.phase == "AwaitingApproval"
    assert dict(store.phases) == {"AwaitingApproval": 1}


def test_dependents_follow_depends_on_as_it_changes_and_go_with_the_dependent() -> None:
    api, store = FakeApi(), store_.Store()
    for body in (
        rec_body("a"),
        rec_body("b", depends_on=("a",)),
        rec_body("c", customer="d", depends_on=("a",)),
    ):
        store.apply(RECOMMENDATIONS, api.put(RECOMMENDATIONS, body))
    assert store.dependents((NS, "a")) == [(NS, "b"), (NS, "c")]
    store.apply(RECOMMENDATIONS, api.put(RECOMMENDATIONS, rec_body("b")))  # b drops a
    assert store.dependents((NS, "a")) == [(NS, "c")]
    store.apply(RECOMMENDATIONS, api.objects[(RECOMMENDATIONS, NS, "c")], deleted=True)
    assert store.dependents((NS, "a")) == []
    assert store._dependents == {}
    assert store.dependencies_succeeded((NS, "b")) == (True, "")


def test_a_dependency_that_has_not_succeeded_holds_the_plan() -> None:
    api, store = FakeApi(), store_.Store()
    store.apply(RECOMMENDATIONS, api.put(RECOMMENDATIONS, rec_body("b", depends_on=("a", "z"))))
    a = api.put(RECOMMENDATIONS, {**rec_body("a"), "status": {"phase": "Succeeded"}})
    store.apply(RECOMMENDATIONS, a)
    assert store.dependencies_succeeded((NS, "b")) == (False, "waiting for z to succeed")


def test_a_fresh_listing_removes_what_went_while_the_watch_was_away() -> None:
    api, store = FakeApi(), store_.Store()
    told: list[tuple[str, bool]] = []
    store.listeners.append(lambda plural, record, deleted, _: told.append((record.name, deleted)))
    for name in ("a", "b"):
        store.apply(RECOMMENDATIONS, api.put(RECOMMENDATIONS, rec_body(name)))
    store.resync(RECOMMENDATIONS, lambda ns: ns == NS, {(NS, "a")})
    assert store.names_in(NS) == {"a"}
    assert told[-1] == ("b", True)
    assert dict(store.phases) == {"Pending": 1}


def endpoint_body(name: str, url: str = "https://agent.example.com/hook") -> dict[str, Any]:
    return {
        "apiVersion": "optiinfra.io/v1alpha1",
        "kind": "AgentEndpoint",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"url": url, "secretRef": {"name": f"{name}-hmac", "key": "k"}},
    }


class CountingApi(FakeApi):
    def __init__(self) -> None:
        super().__init__()
        self.gets: list[tuple[str, str]] = []

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.gets.append((plural, name))
        return await super().get(plural, namespace, name)


@in_loop
async def test_endpoints_are_read_from_the_store_and_one_not_watched_yet_with_a_get() -> None:
    """Admission reads the AgentEndpoints a plan names: those the Store holds cost no
    request; one applied a moment ago (not in the Store yet) is still found, with one GET;
    a missing one is missing. An endpoint queues no group."""
    api = CountingApi()
    store, reconciler, _ = shell(api)
    store.apply(ENDPOINTS, api.put(ENDPOINTS, endpoint_body("watched")))
    api.put(ENDPOINTS, endpoint_body("just-applied"))  # not seen by the watch yet
    assert len(reconciler.queue) == 0  # an endpoint queues no group
    resolver = webhook_.ClientResolver(
        cast(client_.Client, api), lambda ns, name: store.endpoint((ns, name))
    )
    assert await resolver.endpoint(NS, "watched") is not None
    assert api.gets == []
    assert await resolver.endpoint(NS, "just-applied") is not None
    assert await resolver.endpoint(NS, "gone") is None
    assert api.gets == [(ENDPOINTS, "just-applied"), (ENDPOINTS, "gone")]
    endpoint = await resolver.endpoint(NS, "watched")
    assert endpoint is not None
    assert endpoint.spec.url == "https://agent.example.com/hook"
    assert len(api.gets) == 2  # the step's read came from the Store too
    gone = api.objects.pop((ENDPOINTS, NS, "watched"))
    store.apply(ENDPOINTS, gone, deleted=True)
    assert await resolver.endpoint(NS, "watched") is None


# --- the work queue -------------------------------------------------------------------


@in_loop
async def test_what_changes_now_goes_ahead_of_what_a_listing_showed() -> None:
    queue = reconciler_.WorkQueue()
    for customer in ("a", "b", "c"):
        queue.add((NS, customer), backlog=True)  # the start-up listing
    queue.add((NS, "new"))  # a recommendation created now
    queue.add((NS, "c"))  # and a change of one in the backlog: it moves ahead
    queue.add((NS, "b"), backlog=True)  # listed again: stays where it is
    taken = []
    while len(queue):
        key = await queue.get()
        taken.append(key[1])
        queue.done(key)
    assert taken == ["new", "c", "a", "b"]
    await asyncio.wait_for(queue.idle(), 1)


@in_loop
async def test_the_queue_backs_off_per_key_exponentially_up_to_a_cap() -> None:
    queue = reconciler_.WorkQueue(retry=Backoff(first=0.5, cap=4.0))
    key = (NS, "c1")
    assert [queue.retry(key) for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert queue.retry((NS, "other")) == 0.5
    queue.forget(key)
    assert queue.retry(key) == 0.5
    queue.close()


@in_loop
async def test_a_key_that_keeps_failing_stays_at_the_cap() -> None:
    # 1 024 failures at the one-minute cap (17 hours of an API server that refuses a
    # group) used to overflow the doubling, an error that ended the reconciler
    queue = reconciler_.WorkQueue()
    key = (NS, "c1")
    delays = [queue.retry(key) for _ in range(2000)]
    assert delays[-1] == delays[100] == 60.0
    queue.close()


@in_loop
async def test_the_queue_brings_a_key_back_at_the_earliest_time_asked() -> None:
    queue = reconciler_.WorkQueue()
    key = (NS, "c1")
    queue.add_after(key, 60.0)
    queue.add_after(key, 0.01)
    queue.add_after(key, 30.0)
    assert await asyncio.wait_for(queue.get(), 2.0) == key
    queue.done(key)
    queue.close()


# --- the reconciler's actions ---------------------------------------------------------


@in_loop
async def test_a_new_recommendation_gets_an_approval_and_its_status_in_one_write_each() -> None:
    api = FakeApi()
    store, reconciler, recorder = shell(api)
    store.apply(RECOMMENDATIONS, api.put(RECOMMENDATIONS, rec_body("a")))
    result = await reconciler.reconcile((NS, "c1"))
    assert [w[:3] for w in api.writes] == [
        ("create", APPROVALS, "a"),
        ("status", APPROVALS, "a"),
        ("status", RECOMMENDATIONS, "a"),
    ]
    assert all("observedGeneration" in w[3].split(",") for w in api.writes[1:])
    rec = store.recommendation((NS, "a"))  # what was written, before any watch event
    assert rec is not None
    assert rec.phase.value == "AwaitingApproval"
    assert store.approval((NS, "a")) is not None
    # Medium risk: 48 h to decide; the group comes back when it expires (no watch event
    # of the approval it created does: that is the reconcile's own write).
    assert result.requeue_after == pytest.approx(timedelta(hours=48).total_seconds() + 0.05)
    assert recorder.reasons  # the transition is told in Events
    api.writes.clear()
    again = await reconciler.reconcile((NS, "c1"))
    assert api.writes == []  # nothing changed: nothing written
    # Medium risk: 48 h to decide; the group comes back when it expires.
    assert again.requeue_after == pytest.approx(timedelta(hours=48).total_seconds() + 0.05)


@in_loop
async def test_an_approved_recommendation_gets_its_plan_created_and_handed_over() -> None:
    api = FakeApi()
    store, reconciler, _ = shell(api)
    store.apply(RECOMMENDATIONS, api.put(RECOMMENDATIONS, rec_body("a", risk="low")))
    result = await reconciler.reconcile((NS, "c1"))
    assert [p.metadata.name for p in result.created_plans] == ["a"]
    assert ("create", PLANS, "a", "") in api.writes
    assert store.plan((NS, "a")) is not None
    rec = store.recommendation((NS, "a"))
    assert rec is not None
    assert rec.phase.value == "Approved"


@in_loop
async def test_the_loser_of_a_conflict_is_superseded_and_its_group_written_once() -> None:
    api = FakeApi()
    store, reconciler, _ = shell(api)
    store.apply(RECOMMENDATIONS, api.put(RECOMMENDATIONS, rec_body("win", priority=10)))
    store.apply(RECOMMENDATIONS, api.put(RECOMMENDATIONS, rec_body("lose", priority=1)))
    await reconciler.reconcile((NS, "c1"))
    lose = store.recommendation((NS, "lose"))
    assert lose is not None
    assert lose.phase.value == "Superseded"
    assert lose.status is not None
    assert lose.status.superseded_by == "win"
    assert [w[:3] for w in api.writes if w[2] == "lose"] == [("status", RECOMMENDATIONS, "lose")]


@in_loop
async def test_a_create_refused_while_the_old_object_goes_comes_back_shortly() -> None:
    api = FakeApi()
    store, reconciler, _ = shell(api)
    store.apply(RECOMMENDATIONS, api.put(RECOMMENDATIONS, rec_body("a")))
    api.conflict_on_create.add((APPROVALS, "a"))
    result = await reconciler.reconcile((NS, "c1"))
    assert result.requeue_after == reconciler_.CREATE_AGAIN_SECONDS
    assert store.approval((NS, "a")) is None
    await reconciler.reconcile((NS, "c1"))
    assert store.approval((NS, "a")) is not None


@in_loop
async def test_a_change_queues_its_group_and_the_groups_that_depend_on_it() -> None:
    api = FakeApi()
    store, reconciler, _ = shell(api)
    store.apply(
        RECOMMENDATIONS, api.put(RECOMMENDATIONS, rec_body("c", customer="d", depends_on=("a",)))
    )
    store.apply(RECOMMENDATIONS, api.put(RECOMMENDATIONS, rec_body("a")))
    assert sorted(reconciler.queue._queued) == [(NS, "c1"), (NS, "d")]


@in_loop
async def test_a_failing_reconcile_is_retried_with_backoff_and_then_succeeds() -> None:
    api = FakeApi()
    store, reconciler, _ = shell(api)
    reconciler.queue = reconciler_.WorkQueue(retry=Backoff(first=0.01, cap=0.02))
    store.apply(RECOMMENDATIONS, api.put(RECOMMENDATIONS, rec_body("a")))
    real = api.patch_status
    failures = [client_.ApiException(status=500, reason="boom")] * 2

    async def flaky(*args: Any, **kwargs: Any) -> dict[str, Any]:
        if failures:
            raise failures.pop()
        return await real(*args, **kwargs)

    api.patch_status = flaky  # type: ignore[method-assign]
    started: list[str] = []

    async def start(plan: Any) -> None:
        started.append(plan.metadata.name)

    written = asyncio.Event()
    store.listeners.append(
        lambda plural, record, *_: plural == RECOMMENDATIONS and record.phase and written.set()
    )
    task = asyncio.create_task(reconciler.run(start))
    try:
        await asyncio.wait_for(written.wait(), 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert not failures
    rec = store.recommendation((NS, "a"))
    assert rec is not None
    assert rec.phase.value == "AwaitingApproval"


async def _reconciles_until_idle(
    reconciler: reconciler_.Reconciler, during: Callable[[], None] = lambda: None
) -> int:
    """Run the workers until the queue is idle; how many reconciles ran. `during` runs
    inside the first reconcile (a change the watch shows meanwhile)."""
    count = 0
    real = reconciler.reconcile

    async def counted(key: Any) -> Any:
        nonlocal count
        count += 1
        if count == 1:
            during()
        return await real(key)

    reconciler.reconcile = counted  # type: ignore[method-assign]

    async def start(_: Any) -> None:
        pass

    task = asyncio.create_task(reconciler.run(start))
    try:
        await asyncio.sleep(0)
        await asyncio.wait_for(reconciler.queue.idle(), 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return count


def _echoing(api: FakeApi, store: store_.Store) -> None:
    """The watch shows each status write before its response arrives (as it often does)."""
    real = api.patch_status

    async def patch_status(plural: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        written = await real(plural, *args, **kwargs)
        store.apply(plural, copy.deepcopy(written))  # the echo, first
        return written

    api.patch_status = patch_status  # type: ignore[method-assign]


@in_loop
async def test_the_watch_echo_of_a_reconcile_own_writes_does_not_run_it_again() -> None:
    api = FakeApi()
    store, reconciler, _ = shell(api)
    _echoing(api, store)
    store.apply(RECOMMENDATIONS, api.put(RECOMMENDATIONS, rec_body("a")))
    assert await _reconciles_until_idle(reconciler) == 1
    assert [w[:3] for w in api.writes] == [
        ("create", APPROVALS, "a"),
        ("status", APPROVALS, "a"),
        ("status", RECOMMENDATIONS, "a"),
    ]


@in_loop
async def test_a_change_the_watch_shows_during_a_reconcile_runs_it_again() -> None:
    api = FakeApi()
    store, reconciler, _ = shell(api)
    _echoing(api, store)
    store.apply(RECOMMENDATIONS, api.put(RECOMMENDATIONS, rec_body("a")))
    late = api.put(RECOMMENDATIONS, rec_body("b", resources=("db",)))
    assert await _reconciles_until_idle(reconciler, lambda: store.apply(RECOMMENDATIONS, late)) == 2
    b = store.recommendation((NS, "b"))
    assert b is not None
    assert b.phase.value == "AwaitingApproval"


@contextlib.contextmanager
def counting_decisions() -> Iterator[list[str]]:
    """The names of the recommendations `lifecycle.decide` is asked about, in order."""
    decided: list[str] = []
    real = lifecycle.decide

    def counting(observed: lifecycle.Observed, **kwargs: Any) -> lifecycle.Desired:
        decided.append(observed.recommendation.name)
        return real(observed, **kwargs)

    with mock.patch.object(lifecycle, "decide", counting):
        yield decided


@in_loop
async def test_a_settled_recommendation_is_not_decided_again_until_an_input_changes() -> None:
    api = FakeApi()
    store, reconciler, _ = shell(api)
    for name, resource in (("a", "web"), ("b", "db")):
        store.apply(
            RECOMMENDATIONS, api.put(RECOMMENDATIONS, rec_body(name, resources=(resource,)))
        )
    with counting_decisions() as decided:
        await _settle_and_change(api, store, reconciler, decided)


async def _settle_and_change(
    api: FakeApi, store: store_.Store, reconciler: reconciler_.Reconciler, decided: list[str]
) -> None:
    await reconciler.reconcile((NS, "c1"))  # both new: decided, written
    await reconciler.reconcile((NS, "c1"))  # as written: decided once more, nothing to do
    decided.clear()
    api.writes.clear()
    await reconciler.reconcile((NS, "c1"))
    assert decided == []  # settled, same inputs
    assert api.writes == []
    # A person rejects b: only b is decided again.
    approval = api.objects[(APPROVALS, NS, "b")]
    approval["spec"]["decision"] = "Rejected"
    store.apply(APPROVALS, api.put(APPROVALS, approval))
    await reconciler.reconcile((NS, "c1"))
    assert decided == ["b"]
    b = store.recommendation((NS, "b"))
    assert b is not None
    assert b.phase.value == "Rejected"
    # Time passes beyond a's expiry: its effective phase changes, so it is decided again.
    decided.clear()
    reconciler.clock = lambda: NOW + timedelta(hours=49)
    await reconciler.reconcile((NS, "c1"))
    assert "a" in decided
    a = store.recommendation((NS, "a"))
    assert a is not None
    assert a.phase.value == "Expired"


# --- readiness ------------------------------------------------------------------------


@in_loop
async def test_readiness_waits_for_the_initial_listing_then_follows_leadership() -> None:
    from coordinator import app  # noqa: PLC0415 - kopf and the kubernetes client, only here

    operator = app.Operator.__new__(app.Operator)  # the parts readiness reads, no client
    operator.started = True
    operator.informer = cast(Any, type("Listing", (), {"listed": asyncio.Event()})())
    operator.elector = None
    operator.leading = asyncio.Event()
    assert operator.ready() == (False, "starting: listing and indexing the objects")
    operator.informer.listed.set()
    assert operator.ready() == (True, "acting")


# --- ApprovalPolicies: the plan-start gate --------------------------------------------


def policy_body(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "optiinfra.io/v1alpha1",
        "kind": "ApprovalPolicy",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


def plan_body(
    name: str, *, phase: str = "Pending", suspend: bool = False, owner: str | None = None
) -> dict[str, Any]:
    """A plan; `owner`: the uid of the recommendation `name` that owns it."""
    references = [
        {
            "apiVersion": "optiinfra.io/v1alpha1",
            "kind": "Recommendation",
            "name": name,
            "uid": owner,
            "controller": True,
        }
    ]
    return {
        "apiVersion": "optiinfra.io/v1alpha1",
        "kind": "ExecutionPlan",
        "metadata": {
            "name": name,
            "namespace": NS,
            **({"ownerReferences": references} if owner else {}),
        },
        "spec": {
            "recommendation": name,
            "customerId": "c1",
            "suspend": suspend,
            "steps": [{"name": "s", "action": "noop", "executor": "simulated"}],
        },
        "status": {"phase": phase},
    }


FREEZE = {"name": "freeze", "kind": "Deny", "schedule": "0 0 * * *", "duration": "1d"}
"""A Deny window open at every moment (a day long, opening every midnight)."""


def gated(*recs: dict[str, Any], policies: list[dict[str, Any]]) -> reconciler_.Reconciler:
    """A shell holding `recs` (each with a pending, unsuspended plan) and `policies`."""
    api = FakeApi()
    store, reconciler, _ = shell(api)
    for body in recs:
        store.apply(RECOMMENDATIONS, api.put(RECOMMENDATIONS, body))
        store.apply(PLANS, api.put(PLANS, plan_body(body["metadata"]["name"])))
    for body in policies:
        store.apply(POLICIES, api.put(POLICIES, body))
    return reconciler


def test_only_plans_otherwise_ready_compete_for_the_budget() -> None:
    budget = policy_body("budget", maxConcurrentPlans=1)
    frozen = policy_body("freeze-high", selector={"riskLevels": ["high"]}, windows=[FREEZE])
    reconciler = gated(
        rec_body("held", risk="high", priority=10, resources=("x",)),  # held by the window
        rec_body("blocked", priority=9, resources=("y",), depends_on=("missing",)),
        rec_body("ready", priority=1, resources=("z",)),
        policies=[budget, frozen],
    )
    ready, why, until = reconciler.plan_gate((NS, "held"))
    assert not ready
    assert "inside Deny window freeze" in why
    assert until is not None
    assert reconciler.plan_gate((NS, "blocked")) == (False, "waiting for missing to succeed", None)
    # Ranked below both, it is the only plan that could start: it does.
    assert reconciler.plan_gate((NS, "ready")) == (True, "", None)


def test_the_budget_holds_a_lower_ranked_ready_plan_and_counts_the_running_ones() -> None:
    budget = policy_body("budget", maxConcurrentPlans=1)
    reconciler = gated(
        rec_body("first", priority=10, resources=("x",)),
        rec_body("second", priority=1, resources=("y",)),
        policies=[budget],
    )
    assert reconciler.plan_gate((NS, "first")) == (True, "", None)
    ready, why, until = reconciler.plan_gate((NS, "second"))
    assert not ready
    assert until is None
    assert why.startswith("waiting: budget: at most 1 plan(s)")
    assert "(policy budget)" in why
    store = reconciler.store
    store.apply(PLANS, FakeApi().put(PLANS, plan_body("first", phase="Running")))
    ready, why, _ = reconciler.plan_gate((NS, "second"))
    assert not ready
    assert "running: first" in why


@in_loop
async def test_a_policy_change_queues_every_group_of_its_namespace() -> None:
    api = FakeApi()
    store, reconciler, _ = shell(api)
    for body in (rec_body("a"), rec_body("b", customer="d")):
        store.apply(RECOMMENDATIONS, api.put(RECOMMENDATIONS, body))
    reconciler.queue._queued.clear()
    reconciler.queue._queue.clear()
    store.apply(POLICIES, api.put(POLICIES, policy_body("p", maxConcurrentPlans=2)))
    assert sorted(reconciler.queue._queued) == [(NS, "c1"), (NS, "d")]
    assert [p.metadata.name for p in store.policies(NS)] == ["p"]
    store.apply(POLICIES, api.objects[(POLICIES, NS, "p")], deleted=True)
    assert store.policies(NS) == []


# --- ended recommendations: their approvals and plans out of memory ---------------------


def _held(store: store_.Store, plural: str, name: str) -> bool | None:
    """Whether the Store holds the body of `name` (None: it does not know it at all)."""
    record = store.record(plural, (NS, name))
    return None if record is None else record.body is not None


@in_loop
async def test_an_ended_recommendation_lets_its_approval_and_plan_go_and_reads_them_again() -> None:
    api = CountingApi()
    store, reconciler, _ = shell(api)
    store.apply(RECOMMENDATIONS, api.put(RECOMMENDATIONS, rec_body("rejected")))
    store.apply(RECOMMENDATIONS, api.put(RECOMMENDATIONS, rec_body("done", resources=("db",))))
    store.apply(RECOMMENDATIONS, api.put(RECOMMENDATIONS, rec_body("live", resources=("x",))))
    await reconciler.reconcile((NS, "c1"))  # three approvals, all pending
    # A person rejects one and approves another, whose plan then succeeds.
    for name, decision in (("rejected", "Rejected"), ("done", "Approved")):
        approval = api.objects[(APPROVALS, NS, name)]
        approval["spec"]["decision"] = decision
        store.apply(APPROVALS, api.put(APPROVALS, approval))
    await reconciler.reconcile((NS, "c1"))  # rejected; the plan of "done" created
    plan = api.objects[(PLANS, NS, "done")]
    plan["status"] = {"phase": "Succeeded", "message": "all steps succeeded"}
    store.apply(PLANS, api.put(PLANS, plan))
    ended = await reconciler.reconcile((NS, "c1"))  # "done" Succeeded; approvals written
    # Written ended: the group comes back soon (nothing else might), to let go of them.
    assert ended.requeue_after == reconciler_.SETTLE_AGAIN_SECONDS
    assert store.counts[(PLANS, False)] == 0
    again = await reconciler.reconcile((NS, "c1"))  # settled: nothing to do
    assert again.requeue_after == pytest.approx(timedelta(hours=48).total_seconds() + 0.05)
    phases = {r.name: r.phase for r in store.group((NS, "c1"))}
    assert phases == {"rejected": "Rejected", "done": "Succeeded", "live": "AwaitingApproval"}
    # The ended ones' approvals and plan are stubs now; the live one's approval is held.
    assert _held(store, APPROVALS, "rejected") is False
    assert _held(store, APPROVALS, "done") is False
    assert _held(store, PLANS, "done") is False
    assert _held(store, APPROVALS, "live") is True
    assert store.counts[(APPROVALS, False)] == 2
    assert store.counts[(APPROVALS, True)] == 1
    assert store.counts[(PLANS, False)] == 1
    with pytest.raises(store_.EvictedError, match="not held in memory"):
        store.approval((NS, "done"))
    assert store.held(APPROVALS, (NS, "done")) is None

    # The group changes elsewhere: the ended ones are neither read again nor decided.
    api.gets.clear()
    api.writes.clear()
    live = api.objects[(RECOMMENDATIONS, NS, "live")]
    live["spec"]["priority"] = 5
    live["metadata"]["generation"] = 2
    with counting_decisions() as decided:
        store.apply(RECOMMENDATIONS, api.put(RECOMMENDATIONS, live))
        await reconciler.reconcile((NS, "c1"))
        assert decided == ["live"]
        assert api.gets == []
        # The ended one itself changes (its spec, in Git): what it owns is read again
        # (one GET each), it is decided again from the whole truth, and it still ended.
        decided.clear()
        done = api.objects[(RECOMMENDATIONS, NS, "done")]
        done["metadata"]["labels"] = {"team": "a"}
        store.apply(RECOMMENDATIONS, api.put(RECOMMENDATIONS, done))
        await reconciler.reconcile((NS, "c1"))
    assert sorted(api.gets) == [(APPROVALS, "done"), (PLANS, "done")]
    assert "done" in decided
    assert [w for w in api.writes if w[2] == "done"] == []  # nothing to change
    again = store.recommendation((NS, "done"))
    assert again is not None
    assert again.phase.value == "Succeeded"
    assert _held(store, PLANS, "done") is False  # settled again: let go again


def test_a_watch_event_of_an_evicted_object_brings_its_body_back() -> None:
    api = FakeApi()
    store, _, _ = shell(api)
    store.apply(RECOMMENDATIONS, api.put(RECOMMENDATIONS, rec_body("a")))
    owner = store.record(RECOMMENDATIONS, (NS, "a"))
    assert owner is not None
    store.apply(PLANS, api.put(PLANS, plan_body("a", phase="Running", owner=owner.uid)))
    assert store.evict(owner) == 0  # a running plan stays: it is being driven
    plan = api.objects[(PLANS, NS, "a")]
    plan["status"]["phase"] = "Failed"
    store.apply(PLANS, api.put(PLANS, plan))
    assert store.evict(owner) == 1
    assert _held(store, PLANS, "a") is False
    store.apply(PLANS, copy.deepcopy(plan))  # the same version again: still a stub
    assert _held(store, PLANS, "a") is False
    plan["metadata"]["annotations"] = {"optiinfra.io/note": "x"}
    store.apply(PLANS, api.put(PLANS, plan))  # a newer one
    held = store.plan((NS, "a"))
    assert held is not None
    assert held.status_phase.value == "Failed"


def test_a_replaced_version_leaves_the_model_cache_at_once() -> None:
    """The cache holds models by version: an older version is never asked for again, so
    it must not take the place of a live object's model (it took more than half)."""
    api = FakeApi()
    store = store_.Store(cache_size=8)
    store.apply(RECOMMENDATIONS, api.put(RECOMMENDATIONS, rec_body("a")))
    for priority in range(1, 5):
        assert store.recommendation((NS, "a")) is not None
        store.apply(RECOMMENDATIONS, api.put(RECOMMENDATIONS, rec_body("a", priority=priority)))
    latest = store.recommendation((NS, "a"))
    assert latest is not None
    assert latest.spec.priority == 4
    assert len(store._models) == 1  # only the live version
    store.apply(RECOMMENDATIONS, api.objects[(RECOMMENDATIONS, NS, "a")], deleted=True)
    assert len(store._models) == 0


@in_loop
async def test_plans_considered_at_start_up_skip_the_evicted_without_reading_them_again() -> None:
    """At start-up or a takeover every plan not started is considered (pending ones may
    start, lately ended ones have their Events posted again); an evicted one has ended
    and is passed over without a GET (thousands of them after a takeover)."""
    from coordinator.parts import starts  # noqa: PLC0415 - the shell, only here

    api = CountingApi()
    store, _, _ = shell(api)
    for name, phase in (("ended", "Succeeded"), ("waiting", "Pending")):
        store.apply(RECOMMENDATIONS, api.put(RECOMMENDATIONS, rec_body(name)))
        owner = store.record(RECOMMENDATIONS, (NS, name))
        assert owner is not None
        store.apply(PLANS, api.put(PLANS, plan_body(name, phase=phase, owner=owner.uid)))
    ended = store.record(RECOMMENDATIONS, (NS, "ended"))
    assert ended is not None
    assert store.evict(ended) == 1
    operator = starts.Starts.__new__(starts.Starts)  # the parts start_pending reads
    operator.store = store
    considered: list[str] = []

    async def start_plan(plan: Any) -> None:
        considered.append(plan.metadata.name)

    operator.start_plan = start_plan  # type: ignore[method-assign]
    await operator.start_pending()
    assert considered == ["waiting"]
    assert api.gets == []
