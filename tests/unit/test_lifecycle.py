"""The lifecycle of recommendations, approvals and plans, as the operator applies it.

A tiny in-memory world stands in for the API server: it applies what
``lifecycle.evaluate`` asks for (status writes, approval and plan creation and
deletion) and the tests step it until nothing changes, as the operator would.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from coordinator.api.approval import (
    HISTORY_LIMIT,
    ApprovalPhase,
    ApprovalRecord,
    Decision,
)
from coordinator.api.common import Condition
from coordinator.api.plan import ExecutionPlanStatus, PlanPhase
from coordinator.api.policy import ApprovalPolicy
from coordinator.api.recommendation import (
    Recommendation,
    RecommendationPhase,
    RecommendationStatus,
)
from coordinator.api.verification import SavingsStatus, VerificationStatus
from coordinator.core import approval as policy_
from coordinator.core import lifecycle
from coordinator.core import policy as policies_
from tests.support import builders
from tests.support.lifecycle import NOW, POLICY, World, rec, world


def test_medium_risk_asks_for_a_decision_that_expires_after_48h() -> None:
    w = world(rec("rec-001"))
    w.settle()
    assert w.phase("rec-001") is RecommendationPhase.AWAITING_APPROVAL
    approval = w.approvals["rec-001"]
    assert approval.spec.decision is Decision.PENDING
    assert approval.spec.expires_at == NOW + timedelta(hours=48)
    assert approval.spec.recommendation_generation == 1
    assert "rec-001" not in w.plans
    assert ("rec-001", "ApprovalRequested") in w.events
    status = w.recs["rec-001"].status
    assert status is not None
    assert status.approval == "rec-001"
    assert status.observed_generation == 1


def test_low_risk_is_approved_by_policy_and_gets_a_suspended_plan() -> None:
    w = world(rec("rec-002", riskLevel="low"))
    w.settle()
    assert w.phase("rec-002") is RecommendationPhase.APPROVED
    approval = w.approvals["rec-002"]
    assert approval.spec.decision is Decision.APPROVED
    assert approval.status is not None
    assert approval.status.decided_by == "policy"
    plan = w.plans["rec-002"]
    assert plan.spec.suspend is True
    assert [s.name for s in plan.spec.steps] == [
        "take_snapshot",
        "migrate_workload",
        "validate_quality",
    ]


def test_execute_now_creates_the_plan_unsuspended() -> None:
    w = world(rec("rec-008", riskLevel="low", executeNow=True))
    w.settle()
    assert w.plans["rec-008"].spec.suspend is False


def test_low_risk_without_auto_approve_waits_for_a_person() -> None:
    w = world(rec("rec-009", riskLevel="low", autoApprove=False))
    w.settle()
    assert w.phase("rec-009") is RecommendationPhase.AWAITING_APPROVAL
    assert w.approvals["rec-009"].spec.expires_at == NOW + timedelta(hours=72)


def test_approval_by_a_person_is_recorded_and_makes_the_plan() -> None:
    w = world(rec("rec-003"))
    w.settle()
    w.decide("rec-003", Decision.APPROVED, by="approver")
    w.settle()
    assert w.phase("rec-003") is RecommendationPhase.APPROVED
    status = w.approvals["rec-003"].status
    assert status is not None
    assert (status.phase, status.decided_by, status.decided_at) == (
        ApprovalPhase.APPROVED,
        "approver",
        NOW,
    )
    assert "rec-003" in w.plans
    assert ("rec-003", "Approved") in w.events


def test_rejection_ends_the_recommendation_with_the_reason() -> None:
    w = world(rec("rec-007", riskLevel="high"))
    w.settle()
    w.decide("rec-007", Decision.REJECTED, reason="Too risky during peak hours")
    w.settle()
    assert w.phase("rec-007") is RecommendationPhase.REJECTED
    status = w.recs["rec-007"].status
    assert status is not None
    assert status.message == "Rejected by approver: Too risky during peak hours"
    approval_status = w.approvals["rec-007"].status
    assert approval_status is not None
    assert approval_status.phase is ApprovalPhase.REJECTED
    assert approval_status.reason == "Too risky during peak hours"
    assert "rec-007" not in w.plans


def test_an_undecided_approval_expires_at_its_time_even_without_an_event() -> None:
    w = world(rec("rec-010", riskLevel="critical"))
    w.settle()
    expires = w.approvals["rec-010"].spec.expires_at
    assert expires == NOW + timedelta(hours=4)
    w.settle(now=expires - timedelta(seconds=1))
    assert w.phase("rec-010") is RecommendationPhase.AWAITING_APPROVAL
    w.settle(now=expires)
    assert w.phase("rec-010") is RecommendationPhase.EXPIRED
    approval_status = w.approvals["rec-010"].status
    assert approval_status is not None
    assert approval_status.phase is ApprovalPhase.EXPIRED


def test_superseded_before_a_decision_withdraws_the_approval() -> None:
    w = world(rec("rec-004", priority=8, affectedResources=["i-102"]))
    w.settle()
    assert w.phase("rec-004") is RecommendationPhase.AWAITING_APPROVAL
    w.recs["rec-003"] = rec("rec-003", priority=10, affectedResources=["i-102"])
    w.settle()
    assert w.phase("rec-004") is RecommendationPhase.SUPERSEDED
    status = w.recs["rec-004"].status
    assert status is not None
    assert status.superseded_by == "rec-003"
    approval_status = w.approvals["rec-004"].status
    assert approval_status is not None
    assert approval_status.phase is ApprovalPhase.WITHDRAWN


def test_a_superseded_one_comes_back_and_asks_again_when_its_winner_is_rejected() -> None:
    w = world(
        rec("rec-004", priority=8, affectedResources=["i-102"]),
        rec("rec-003", priority=10, affectedResources=["i-102"]),
    )
    w.settle()
    assert w.phase("rec-004") is RecommendationPhase.SUPERSEDED
    w.decide("rec-003", Decision.REJECTED)
    w.settle()
    assert w.phase("rec-003") is RecommendationPhase.REJECTED
    assert w.phase("rec-004") is RecommendationPhase.AWAITING_APPROVAL
    approval = w.approvals["rec-004"]
    assert approval.spec.decision is Decision.PENDING
    assert approval.status is not None
    assert approval.status.phase is ApprovalPhase.PENDING


def test_a_spec_change_after_approval_voids_it_and_asks_again() -> None:
    w = world(rec("rec-011"))
    w.settle()
    w.decide("rec-011", Decision.APPROVED)
    w.settle()
    assert "rec-011" in w.plans
    w.recs["rec-011"] = rec("rec-011", generation=2, priority=5).model_copy(
        update={"status": w.recs["rec-011"].status}
    )
    w.settle()
    assert w.phase("rec-011") is RecommendationPhase.AWAITING_APPROVAL
    approval = w.approvals["rec-011"]
    assert (approval.spec.recommendation_generation, approval.spec.decision) == (
        2,
        Decision.PENDING,
    )
    assert "rec-011" not in w.plans


def test_a_rejected_recommendation_whose_spec_changes_is_a_new_proposal() -> None:
    w = world(rec("rec-012"))
    w.settle()
    w.decide("rec-012", Decision.REJECTED)
    w.settle()
    w.recs["rec-012"] = rec("rec-012", generation=2).model_copy(
        update={"status": w.recs["rec-012"].status}
    )
    w.settle()
    assert w.phase("rec-012") is RecommendationPhase.AWAITING_APPROVAL
    assert w.approvals["rec-012"].spec.recommendation_generation == 2


@pytest.mark.parametrize(
    ("plan_phase", "expected"),
    [
        (PlanPhase.RUNNING, RecommendationPhase.EXECUTING),
        (PlanPhase.ROLLING_BACK, RecommendationPhase.EXECUTING),
        (PlanPhase.SUCCEEDED, RecommendationPhase.SUCCEEDED),
        (PlanPhase.FAILED, RecommendationPhase.FAILED),
        (PlanPhase.ROLLED_BACK, RecommendationPhase.ROLLED_BACK),
    ],
)
def test_the_recommendation_mirrors_its_plan(
    plan_phase: PlanPhase, expected: RecommendationPhase
) -> None:
    w = world(rec("rec-013", riskLevel="low"))
    w.settle()
    w.set_plan("rec-013", plan_phase)
    w.settle()
    assert w.phase("rec-013") is expected


def test_an_executing_one_holds_its_resources_against_a_better_newcomer() -> None:
    w = world(rec("rec-020", riskLevel="low", priority=1, affectedResources=["db"]))
    w.settle()
    w.set_plan("rec-020", PlanPhase.RUNNING)
    w.recs["rec-021"] = rec("rec-021", riskLevel="low", priority=100, affectedResources=["db"])
    w.settle()
    assert w.phase("rec-020") is RecommendationPhase.EXECUTING
    assert w.phase("rec-021") is RecommendationPhase.SUPERSEDED


def test_settled_state_is_a_fixed_point_with_no_writes_and_no_events() -> None:
    w = world(
        rec("rec-003", priority=10, estimatedSavings=2000, affectedResources=["i-102", "i-103"]),
        rec("rec-004", priority=8, affectedResources=["i-102", "i-104"]),
        rec("rec-005", riskLevel="low", affectedResources=["cluster-a"]),
    )
    w.settle()
    events = len(w.events)
    assert w.step() == 0
    assert len(w.events) == events


def test_a_withdrawn_approval_is_not_touched_while_superseded() -> None:
    w = world(rec("rec-004", priority=8, affectedResources=["i-102"]))
    w.settle()
    w.recs["rec-003"] = rec("rec-003", riskLevel="low", priority=10, affectedResources=["i-102"])
    w.settle()
    withdrawn = w.approvals["rec-004"]
    assert w.step(now=NOW + timedelta(days=30)) == 0  # long past the withdrawn one's expiry
    assert w.phase("rec-004") is RecommendationPhase.SUPERSEDED
    assert w.approvals["rec-004"] == withdrawn


# --- decision history (status.history) and the Ready condition of approvals ---------------


def _change_spec(w: World, name: str, generation: int, **spec: Any) -> None:
    w.recs[name] = rec(name, generation=generation, **spec).model_copy(
        update={"status": w.recs[name].status}
    )


def _ready(conditions: list[Condition]) -> tuple[str, str]:
    (ready,) = [c for c in conditions if c.type == "Ready"]
    return ready.status.value, ready.reason


def test_a_spec_change_after_approval_keeps_who_decided_generation_1() -> None:
    w = world(rec("rec-011"))
    w.settle()
    w.decide("rec-011", Decision.APPROVED, by="approver", reason="fine")
    w.settle()
    first = w.approvals["rec-011"]
    _change_spec(w, "rec-011", 2, priority=5)
    w.settle(now=NOW + timedelta(minutes=5))
    approval = w.approvals["rec-011"]
    assert approval.spec.recommendation_generation == 2
    assert approval.status is not None
    assert approval.status.phase is ApprovalPhase.PENDING
    assert approval.status.history == [
        ApprovalRecord(
            generation=1,
            phase=ApprovalPhase.APPROVED,
            requested_at=NOW,
            expires_at=first.spec.expires_at,
            decided_at=NOW,
            decided_by="approver",
            reason="fine",
        )
    ]
    # The history stays through the new request's own decision.
    w.decide("rec-011", Decision.APPROVED, by="other")
    w.settle(now=NOW + timedelta(minutes=6))
    status = w.approvals["rec-011"].status
    assert status is not None
    assert (status.decided_by, [h.decided_by for h in status.history]) == ("other", ["approver"])
    assert status.history[0].to_wire()["decidedBy"] == "approver"


def test_a_spec_change_before_a_decision_records_the_request_as_withdrawn() -> None:
    w = world(rec("rec-012"))
    w.settle()
    _change_spec(w, "rec-012", 2)
    w.settle()
    status = w.approvals["rec-012"].status
    assert status is not None
    (record,) = status.history
    assert (record.generation, record.phase, record.decided_by, record.decided_at) == (
        1,
        ApprovalPhase.WITHDRAWN,
        None,
        None,
    )


def test_a_rejection_and_an_expiry_are_kept_when_the_spec_changes() -> None:
    w = world(rec("rec-013", riskLevel="critical"))
    w.settle()
    w.decide("rec-013", Decision.REJECTED, reason="no")
    w.settle()
    _change_spec(w, "rec-013", 2, riskLevel="critical")
    w.settle()
    expires = w.approvals["rec-013"].spec.expires_at
    w.settle(now=expires)
    assert w.phase("rec-013") is RecommendationPhase.EXPIRED
    _change_spec(w, "rec-013", 3, riskLevel="critical")
    w.settle(now=expires)
    status = w.approvals["rec-013"].status
    assert status is not None
    assert [(h.generation, h.phase, h.decided_by, h.reason) for h in status.history] == [
        (1, ApprovalPhase.REJECTED, "approver", "no"),
        (2, ApprovalPhase.EXPIRED, None, None),
    ]


def test_a_withdrawn_request_asked_again_is_kept_in_the_history() -> None:
    w = world(rec("rec-004", priority=8, affectedResources=["i-102"]))
    w.settle()
    w.recs["rec-003"] = rec("rec-003", priority=10, affectedResources=["i-102"])
    w.settle()
    w.decide("rec-003", Decision.REJECTED)
    w.settle()
    assert w.phase("rec-004") is RecommendationPhase.AWAITING_APPROVAL
    status = w.approvals["rec-004"].status
    assert status is not None
    assert [(h.generation, h.phase) for h in status.history] == [(1, ApprovalPhase.WITHDRAWN)]


def test_the_history_keeps_the_newest_entries_only() -> None:
    w = world(rec("rec-014", riskLevel="low"))
    w.settle()
    last = HISTORY_LIMIT + 5
    for generation in range(2, last + 1):
        _change_spec(w, "rec-014", generation, riskLevel="low")
        w.settle()
    approval = w.approvals["rec-014"]
    assert approval.spec.recommendation_generation == last
    assert approval.status is not None
    history = approval.status.history
    # Generations 1 to last-1 were decided; the newest HISTORY_LIMIT of them are kept.
    assert [h.generation for h in history] == list(range(last - HISTORY_LIMIT, last))
    assert {(h.phase, h.decided_by) for h in history} == {(ApprovalPhase.APPROVED, "policy")}


def test_an_approval_is_ready_once_approved_and_unknown_while_pending() -> None:
    w = world(rec("rec-015"), rec("rec-016", riskLevel="low", affectedResources=["x"]))
    w.settle()
    pending = w.approvals["rec-015"].status
    assert pending is not None
    assert _ready(pending.conditions) == ("Unknown", "Pending")
    since = pending.conditions[0].last_transition_time
    assert since == NOW
    auto = w.approvals["rec-016"].status
    assert auto is not None
    assert _ready(auto.conditions) == ("True", "Approved")
    # Nothing changes while it waits: the condition (and its time) stay as they are.
    assert w.step(now=NOW + timedelta(hours=1)) == 0
    later = NOW + timedelta(hours=2)
    w.decide("rec-015", Decision.APPROVED)
    w.settle(now=later)
    decided = w.approvals["rec-015"].status
    assert decided is not None
    (ready,) = decided.conditions
    assert (ready.status.value, ready.reason, ready.last_transition_time) == (
        "True",
        "Approved",
        later,
    )


@pytest.mark.parametrize(
    ("end", "reason"),
    [("rejected", "Rejected"), ("expired", "Expired"), ("withdrawn", "Withdrawn")],
)
def test_an_approval_that_ended_otherwise_is_not_ready(end: str, reason: str) -> None:
    w = world(rec("rec-017", priority=1, affectedResources=["i-1"]))
    w.settle()
    now = NOW
    if end == "rejected":
        w.decide("rec-017", Decision.REJECTED)
    elif end == "expired":
        now = w.approvals["rec-017"].spec.expires_at
    else:
        w.recs["rec-018"] = rec("rec-018", priority=9, affectedResources=["i-1"])
    w.settle(now=now)
    status = w.approvals["rec-017"].status
    assert status is not None
    assert _ready(status.conditions) == ("False", reason)


def test_a_self_dependency_is_reported_as_a_conflict_with_itself() -> None:
    w = world(rec("rec-019", dependsOn=["rec-019"]))
    w.settle()
    assert w.phase("rec-019") is RecommendationPhase.BLOCKED
    status = w.recs["rec-019"].status
    assert status is not None
    assert [c.with_ for c in status.conflicts] == [[]]
    desired = lifecycle.evaluate(
        [lifecycle.Observed(recommendation=rec("rec-019", dependsOn=["rec-019"]))],
        policy=POLICY,
        now=NOW,
    )
    messages = [e.message for e in desired["rec-019"].events if e.reason == "ConflictDetected"]
    assert messages == ["Circular dependency: rec-019 -> rec-019 (with itself)"]


TWO = ApprovalPolicy.model_validate(
    builders.policy("two", approvals={"required": 2}, expiry={"medium": "1h"})
)


def test_a_policy_sets_the_approval_and_an_unbacked_decision_never_counts() -> None:
    w = world(rec("rec-001"))
    w.policies = [TWO]
    w.settle()
    approval = w.approvals["rec-001"]
    assert approval.spec.required == 2
    assert approval.spec.policies == ["two"]
    assert approval.spec.expires_at == NOW + timedelta(hours=1)
    status = w.recs["rec-001"].status
    assert status is not None
    assert status.policies == ["two"]
    assert "still needed: 2 more of 2 approvals" in (status.message or "")
    # Approved in spec with no votes recorded (admission webhooks off): fail closed.
    w.decide("rec-001", Decision.APPROVED)
    w.settle()
    assert w.phase("rec-001") is RecommendationPhase.AWAITING_APPROVAL
    assert "are the webhooks off?" in (w.recs["rec-001"].status.message or "")  # type: ignore[union-attr]
    assert "rec-001" not in w.plans
    # With the two votes the webhook records, it is approved, and the votes are in status.
    votes = [policies_.Vote(u, (), "Approved", None, NOW) for u in ("alice", "bob")]
    approval = w.approvals["rec-001"]
    w.approvals["rec-001"] = approval.model_copy(
        update={
            "metadata": approval.metadata.model_copy(
                update={
                    "annotations": {
                        **approval.metadata.annotations,
                        policies_.RESPONSES_ANNOTATION: policies_.write_votes(votes),
                    }
                }
            )
        }
    )
    w.settle()
    assert w.phase("rec-001") is RecommendationPhase.APPROVED
    assert "rec-001" in w.plans
    final = w.approvals["rec-001"].status
    assert final is not None
    assert [r.user for r in final.responses] == ["alice", "bob"]


def decided(r: Recommendation, **policy: Any) -> lifecycle.Desired:
    observed = [lifecycle.Observed(recommendation=r, approval=None, plan=None)]
    desired = lifecycle.evaluate(observed, policy=policy_.ApprovalPolicy(**policy), now=NOW)
    return desired[r.name]


def stamped(r: Recommendation) -> Recommendation:
    annotations = {policy_.SUBMITTED_BY_ANNOTATION: "agent"}
    return r.model_copy(
        update={"metadata": r.metadata.model_copy(update={"annotations": annotations})}
    )


def test_an_unstamped_recommendation_is_never_approved_by_policy() -> None:
    """With the admission webhooks on, one they did not stamp (written while they were not
    in force) waits for a person, says why, and carries Admitted=False."""
    low = rec("rec-u1", riskLevel="low", executeNow=True)
    d = decided(low, admission=True)
    assert d.status.phase is RecommendationPhase.AWAITING_APPROVAL
    assert d.create_approval is not None
    assert d.create_approval.spec.decision is Decision.PENDING
    assert "the admission webhooks did not stamp it" in (d.status.message or "")
    [admitted] = [c for c in d.status.conditions if c.type == "Admitted"]
    assert (admitted.status.value, admitted.reason) == ("False", "NotStamped")
    d = decided(stamped(low), admission=True)
    assert d.status.phase is RecommendationPhase.APPROVED
    [admitted] = [c for c in d.status.conditions if c.type == "Admitted"]
    assert admitted.status.value == "True"


def test_with_the_webhooks_off_a_plan_that_acts_needs_a_person() -> None:
    """Nothing checked what its submitter may do: kubernetes and webhook steps (the
    default plan of migrate_to_spot asks its agent) need a person; simulated ones do not."""
    acting = rec("rec-u2", riskLevel="low")
    d = decided(acting, admission=False)
    assert d.status.phase is RecommendationPhase.AWAITING_APPROVAL
    assert "the admission webhooks are off" in (d.status.message or "")
    assert "webhook steps" in (d.status.message or "")
    simulated = rec(
        "rec-u3",
        riskLevel="low",
        steps=[{"name": "one", "action": "do_one", "executor": "simulated"}],
    )
    assert decided(simulated, admission=False).status.phase is RecommendationPhase.APPROVED
    assert not [
        c for c in decided(simulated, admission=False).status.conditions if c.type == "Admitted"
    ]


def test_the_savings_a_verified_plan_realised_are_copied_to_the_recommendation() -> None:
    w = world(rec("rec-030", riskLevel="low"))
    w.settle()
    measured = SavingsStatus(estimated_monthly=100.0, realised_monthly=73.0, ratio=0.73)
    plan = w.plans["rec-030"]
    w.plans["rec-030"] = plan.model_copy(
        update={
            "status": ExecutionPlanStatus(
                phase=PlanPhase.SUCCEEDED, verification=VerificationStatus(savings=measured)
            )
        }
    )
    w.settle()
    assert w.recs["rec-030"].status is not None
    assert w.recs["rec-030"].status.realised_savings == measured
    w2 = world(rec("rec-031", riskLevel="low"))
    w2.settle()
    w2.set_plan("rec-031", PlanPhase.SUCCEEDED)
    w2.settle()
    assert w2.recs["rec-031"].status is not None
    assert w2.recs["rec-031"].status.realised_savings is None


def _verified(name: str, agent: str, ratio: float, day: int) -> Recommendation:
    """An ended recommendation of `agent` whose verified change realised `ratio`."""
    done = rec(name, agentId=agent, customerId=f"past-{name}")
    savings = SavingsStatus(
        estimated_monthly=100.0,
        realised_monthly=100.0 * ratio,
        ratio=ratio,
        measured_at=NOW - timedelta(days=day),
    )
    status = RecommendationStatus(phase=RecommendationPhase.SUCCEEDED, realised_savings=savings)
    return done.model_copy(update={"status": status})


@pytest.mark.parametrize("calibrate", [False, True])
def test_calibration_makes_an_over_promising_agent_lose_its_conflicts(calibrate: bool) -> None:
    """Both want the same resource; the over-promiser claims 3x the savings, but its past
    changes realised a fifth of their claims and the honest agent's all of them."""
    history = [
        _verified("past-1", "over-promiser", 0.2, 3),
        _verified("past-2", "over-promiser", 0.2, 2),
        _verified("past-3", "honest", 1.0, 1),
    ]
    honest = rec("rec-h", agentId="honest", estimatedSavings=100.0, affectedResources=["db"])
    loud = rec("rec-o", agentId="over-promiser", estimatedSavings=300.0, affectedResources=["db"])
    group = [lifecycle.Observed(recommendation=r) for r in (honest, loud)]
    desired = lifecycle.evaluate(
        group,
        namespace=[honest, loud, *history],
        policy=policy_.ApprovalPolicy(calibrate_savings=calibrate),
        now=NOW,
    )
    loser = "rec-o" if calibrate else "rec-h"
    assert desired[loser].status.phase is RecommendationPhase.SUPERSEDED
    assert desired[loser].status.superseded_by == ({"rec-o", "rec-h"} - {loser}).pop()
