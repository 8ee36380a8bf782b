"""The Store without a cluster: records not models, event order, dependents, what a
fresh listing removes, endpoints read from it, and ended recommendations' approvals and
plans let go of and read again (a fake API server; seconds, not minutes)."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any, cast

import pytest

from coordinator import reconciler as reconciler_
from coordinator import store as store_
from coordinator.api.common import APPROVALS, ENDPOINTS, PLANS, RECOMMENDATIONS
from coordinator.core.origin import Origin
from coordinator.executors import endpoints as endpoints_
from coordinator.k8s import client as client_
from tests.support.fakeapi import FakeApi
from tests.support.shell import (
    NS,
    counting_decisions,
    endpoint_body,
    in_loop,
    plan_body,
    rec_body,
    shell,
)

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
    for name in ("a", "b"):
        store.apply(RECOMMENDATIONS, api.put(RECOMMENDATIONS, rec_body(name)))
    gone = store.resync(RECOMMENDATIONS, lambda ns: ns == NS, {(NS, "a")})
    assert store.names_in(NS) == {"a"}
    assert [(c.record.name, c.deleted, c.origin) for c in gone] == [("b", True, Origin.LISTED)]
    assert dict(store.phases) == {"Pending": 1}


@in_loop
async def test_endpoints_are_read_from_the_store_and_one_not_watched_yet_with_a_get() -> None:
    """Admission reads the AgentEndpoints a plan names: those the Store holds cost no
    request; one applied a moment ago (not in the Store yet) is still found, with one GET;
    a missing one is missing. An endpoint queues no group."""
    api = FakeApi()
    store, reconciler, _ = shell(api)
    store.apply(ENDPOINTS, api.put(ENDPOINTS, endpoint_body("watched")))
    api.put(ENDPOINTS, endpoint_body("just-applied"))  # not seen by the watch yet
    assert len(reconciler.queue) == 0  # an endpoint queues no group
    resolver = endpoints_.ClientResolver(
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


# --- ended recommendations: their approvals and plans out of memory ---------------------


def _held(store: store_.Store, plural: str, name: str) -> bool | None:
    """Whether the Store holds the body of `name` (None: it does not know it at all)."""
    record = store.record(plural, (NS, name))
    return None if record is None else record.body is not None


@in_loop
async def test_an_ended_recommendation_lets_its_approval_and_plan_go_and_reads_them_again() -> None:
    api = FakeApi()
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

    api = FakeApi()
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


@in_loop
async def test_admission_finds_a_dependency_the_store_does_not_hold() -> None:
    """With shards the Store holds this replica's customers only, and any replica answers
    admission: a dependsOn name it does not hold is looked up on the API server."""
    from coordinator.parts import facts as facts_  # noqa: PLC0415 - the shell, only here

    api = FakeApi()
    store = store_.Store()
    store.apply(RECOMMENDATIONS, api.put(RECOMMENDATIONS, rec_body("held")))
    api.put(RECOMMENDATIONS, rec_body("elsewhere", customer="other"))
    facts = facts_.Facts.__new__(facts_.Facts)  # only its Store and client are asked
    facts._store, facts._client = store, cast(client_.Client, api)
    found = await facts.existing(NS, ["held", "elsewhere", "missing"])
    assert found == {"held", "elsewhere"}
