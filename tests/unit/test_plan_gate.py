"""ApprovalPolicies as the plan-start gate in the reconciler: budgets and Deny windows
(a fake API server; seconds, not minutes)."""

from __future__ import annotations

from typing import Any

from coordinator import reconciler as reconciler_
from coordinator.api.common import PLANS, POLICIES, RECOMMENDATIONS
from tests.support.fakeapi import FakeApi
from tests.support.shell import (
    NS,
    in_loop,
    plan_body,
    policy_body,
    rec_body,
    shell,
)

# --- ApprovalPolicies: the plan-start gate --------------------------------------------


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
