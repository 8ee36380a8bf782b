"""The health GitOps tools read from our statuses, for every phase of every kind.

The statuses come from the pure core (the lifecycle and the plan machine, as the
operator writes them); kstatus (what Flux's health checks compute) and the Argo CD Lua
health checks of docs/argocd/health/ are run on them (tests/health_support.py).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from coordinator.api.approval import ApprovalPhase, Decision
from coordinator.api.common import Condition, ConditionStatus
from coordinator.api.plan import ExecutionPlanStatus, PlanPhase
from coordinator.api.recommendation import RecommendationPhase
from coordinator.core import conditions, lifecycle, plan
from tests.support.health import GITOPS_FAMILY, KINDS, argocd_health, kstatus, script
from tests.support.lifecycle import NOW, World, rec, world

DOCS = Path(__file__).parents[2] / "docs"


def _awaiting() -> World:
    return world(rec("r"))


def _approved(**spec: Any) -> World:
    return world(rec("r", riskLevel="low", **spec))


def _decided(decision: Decision) -> World:
    w = _awaiting()
    w.settle()
    w.decide("r", decision, reason="no" if decision is Decision.REJECTED else "")
    return w


def _expired() -> World:
    w = _awaiting()
    w.settle()
    w.settle(now=w.approvals["r"].spec.expires_at)
    return w


def _superseded() -> World:
    return world(
        rec("r", affectedResources=["shared"], priority=1),
        rec("winner", affectedResources=["shared"], priority=10),
    )


def _plan_ended(phase: PlanPhase) -> Callable[[], World]:
    def make() -> World:
        w = _approved()
        w.settle()
        w.set_plan("r", phase)
        return w

    return make


# phase: (world, kstatus, Reconciling/Stalled condition or None, Argo CD health)
RECOMMENDATIONS: dict[RecommendationPhase, tuple[Callable[[], World], str, str | None, str]] = {
    RecommendationPhase.AWAITING_APPROVAL: (_awaiting, "InProgress", "Reconciling", "Suspended"),
    RecommendationPhase.APPROVED: (_approved, "InProgress", "Reconciling", "Suspended"),
    RecommendationPhase.SUPERSEDED: (_superseded, "InProgress", "Reconciling", "Progressing"),
    RecommendationPhase.EXECUTING: (
        _plan_ended(PlanPhase.RUNNING), "InProgress", "Reconciling", "Progressing",
    ),
    RecommendationPhase.SUCCEEDED: (_plan_ended(PlanPhase.SUCCEEDED), "Current", None, "Healthy"),
    RecommendationPhase.FAILED: (_plan_ended(PlanPhase.FAILED), "Failed", "Stalled", "Degraded"),
    RecommendationPhase.ROLLED_BACK: (
        _plan_ended(PlanPhase.ROLLED_BACK), "Failed", "Stalled", "Degraded",
    ),
    RecommendationPhase.REJECTED: (
        lambda: _decided(Decision.REJECTED), "Failed", "Stalled", "Degraded",
    ),
    RecommendationPhase.EXPIRED: (_expired, "Failed", "Stalled", "Degraded"),
    RecommendationPhase.BLOCKED: (
        lambda: world(rec("r", dependsOn=["missing"])), "Failed", "Stalled", "Degraded",
    ),
}  # fmt: skip


def _abnormal(obj: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [
        (c["type"], c["status"], c["reason"])
        for c in obj["status"]["conditions"]
        if c["type"] in (conditions.RECONCILING, conditions.STALLED)
    ]


def _conditions(w: World, name: str) -> list[Condition]:
    status = w.recs[name].status
    assert status is not None
    return status.conditions


def test_every_phase_has_a_place_for_kstatus() -> None:
    assert set(lifecycle.PROGRESS) == set(RecommendationPhase)


@pytest.mark.parametrize("phase", list(RECOMMENDATIONS))
def test_a_recommendation_tells_gitops_tools_where_it_stands(phase: RecommendationPhase) -> None:
    make, expected, abnormal, health = RECOMMENDATIONS[phase]
    w = make()
    w.settle()
    assert w.phase("r") is phase
    obj = w.recs["r"].to_wire()
    assert _abnormal(obj) == ([(abnormal, "True", phase.value)] if abnormal else [])
    status, message = kstatus(obj)
    assert status == expected
    assert argocd_health(obj) == (health, f"{phase.value}: {obj['status']['message']}")
    assert GITOPS_FAMILY[health] == status
    if abnormal:
        assert message  # kstatus shows why: what it waits for, or why it stopped


def test_awaiting_approval_says_what_it_waits_for() -> None:
    w = _awaiting()
    w.settle()
    (reconciling,) = [c for c in _conditions(w, "r") if c.type == conditions.RECONCILING]
    assert reconciling.message.startswith("Waiting for a decision on approval r until ")


def test_superseded_says_who_won_and_that_it_comes_back() -> None:
    w = _superseded()
    w.settle()
    (reconciling,) = [c for c in _conditions(w, "r") if c.type == conditions.RECONCILING]
    assert reconciling.message.startswith("Superseded by winner; judged again once it has ended")


def test_approved_with_execute_now_is_progressing_for_argocd() -> None:
    w = _approved(executeNow=True)
    w.settle()
    assert argocd_health(w.recs["r"].to_wire())[0] == "Progressing"


def test_reconciling_keeps_its_time_through_phases_and_goes_when_it_succeeds() -> None:
    w = _awaiting()
    w.settle()
    w.decide("r", Decision.APPROVED)
    w.settle(now=NOW + timedelta(hours=1))
    assert w.phase("r") is RecommendationPhase.APPROVED
    (reconciling,) = [c for c in _conditions(w, "r") if c.type == conditions.RECONCILING]
    assert (reconciling.reason, reconciling.last_transition_time) == ("Approved", NOW)
    w.set_plan("r", PlanPhase.SUCCEEDED)
    w.settle(now=NOW + timedelta(hours=2))
    types = [c.type for c in _conditions(w, "r")]
    assert conditions.RECONCILING not in types
    assert conditions.STALLED not in types
    # Settled: later evaluations write nothing (no flapping of the new conditions).
    assert w.step(now=NOW + timedelta(days=3)) == 0


def test_a_spec_change_is_in_progress_until_the_operator_has_seen_it() -> None:
    w = _plan_ended(PlanPhase.SUCCEEDED)()
    w.settle()
    obj = w.recs["r"].to_wire()
    obj["metadata"]["generation"] = 2
    assert kstatus(obj)[0] == "InProgress"
    assert argocd_health(obj) == (
        "Progressing",
        "Waiting for the operator to evaluate generation 2",
    )


@pytest.mark.parametrize("kind", KINDS)
def test_an_object_without_status_is_progressing_for_argocd(kind: str) -> None:
    obj = {"kind": kind, "metadata": {"name": "r", "generation": 1}, "spec": {}}
    assert argocd_health(obj)[0] == "Progressing"


# --- approvals ---------------------------------------------------------------------------

APPROVALS: dict[ApprovalPhase, tuple[Callable[[], World], str, str]] = {
    ApprovalPhase.PENDING: (_awaiting, "InProgress", "Suspended"),
    ApprovalPhase.APPROVED: (_approved, "Current", "Healthy"),
    ApprovalPhase.REJECTED: (lambda: _decided(Decision.REJECTED), "Failed", "Degraded"),
    ApprovalPhase.EXPIRED: (_expired, "Failed", "Degraded"),
    ApprovalPhase.WITHDRAWN: (_superseded, "Failed", "Degraded"),
}


def _withdrawn_first(phase: ApprovalPhase, w: World) -> None:
    """A superseded recommendation's approval is withdrawn only if it had one: ask first."""
    if phase is ApprovalPhase.WITHDRAWN:
        w.recs.pop("winner")
        w.settle()
        w.recs["winner"] = rec("winner", affectedResources=["shared"], priority=10)


@pytest.mark.parametrize("phase", list(APPROVALS))
def test_an_approval_tells_gitops_tools_where_it_stands(phase: ApprovalPhase) -> None:
    make, expected, health = APPROVALS[phase]
    w = make()
    _withdrawn_first(phase, w)
    w.settle()
    approval = w.approvals["r"]
    assert approval.status is not None
    assert approval.status.phase is phase
    obj = approval.to_wire()
    abnormal = {"InProgress": "Reconciling", "Failed": "Stalled"}.get(expected)
    assert _abnormal(obj) == ([(abnormal, "True", phase.value)] if abnormal else [])
    assert kstatus(obj)[0] == expected
    assert argocd_health(obj)[0] == health
    assert GITOPS_FAMILY[health] == expected


def test_a_pending_approval_says_until_when() -> None:
    w = _awaiting()
    w.settle()
    approval = w.approvals["r"]
    message = f"(it expires at {approval.spec.expires_at:%Y-%m-%dT%H:%M:%SZ})"
    assert kstatus(approval.to_wire())[1].endswith(message)
    assert argocd_health(approval.to_wire())[1].endswith(message)


# --- plans -------------------------------------------------------------------------------

PLANS: list[tuple[PlanPhase, bool, str, str | None, str]] = [
    (PlanPhase.PENDING, True, "InProgress", "Reconciling", "Suspended"),
    (PlanPhase.PENDING, False, "InProgress", "Reconciling", "Progressing"),
    (PlanPhase.RUNNING, False, "InProgress", "Reconciling", "Progressing"),
    (PlanPhase.VERIFYING, False, "InProgress", "Reconciling", "Progressing"),
    (PlanPhase.ROLLING_BACK, False, "InProgress", "Reconciling", "Progressing"),
    (PlanPhase.SUCCEEDED, False, "Current", None, "Healthy"),
    (PlanPhase.FAILED, False, "Failed", "Stalled", "Degraded"),
    (PlanPhase.ROLLED_BACK, False, "Failed", "Stalled", "Degraded"),
]


@pytest.mark.parametrize(("phase", "suspend", "expected", "abnormal", "health"), PLANS)
def test_a_plan_tells_gitops_tools_where_it_stands(
    phase: PlanPhase, suspend: bool, expected: str, abnormal: str | None, health: str
) -> None:
    made = lifecycle.new_plan(rec("r", executeNow=not suspend))
    status = plan.with_conditions(
        ExecutionPlanStatus(phase=phase, message="what happened"), generation=1, now=NOW
    )
    obj = made.model_copy(update={"status": status}).to_wire()
    obj["metadata"]["generation"] = 1
    assert _abnormal(obj) == ([(abnormal, "True", phase.value)] if abnormal else [])
    assert kstatus(obj)[0] == expected
    assert argocd_health(obj) == (health, f"{phase.value}: what happened")
    assert GITOPS_FAMILY[health] == expected


def test_a_plan_moves_from_reconciling_to_stalled_and_keeps_other_conditions() -> None:
    running = plan.with_conditions(
        ExecutionPlanStatus(phase=PlanPhase.RUNNING), generation=1, now=NOW
    )
    later = NOW + timedelta(minutes=1)
    again = plan.with_conditions(running, generation=1, now=later)
    assert again == running  # unchanged: nothing to write
    ended = plan.with_conditions(
        running.model_copy(update={"phase": PlanPhase.FAILED}), generation=1, now=later
    )
    assert [(c.type, c.status, c.last_transition_time) for c in ended.conditions] == [
        ("Ready", ConditionStatus.FALSE, later),
        ("Stalled", ConditionStatus.TRUE, later),
    ]


# --- the documented install snippet ------------------------------------------------------


def _argocd_cm() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DOCS / "argocd" / "argocd-cm.yaml").read_text())
    return loaded


def test_the_argocd_cm_snippet_carries_each_script_as_it_is_tested() -> None:
    data = _argocd_cm()["data"]
    assert data == {
        f"resource.customizations.health.optiinfra.io_{kind}": script(kind) for kind in KINDS
    }


def test_the_page_shows_the_snippet_as_it_is_in_the_file() -> None:
    page = (DOCS / "argocd.md").read_text()
    assert (DOCS / "argocd" / "argocd-cm.yaml").read_text() in page
