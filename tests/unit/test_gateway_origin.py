"""The origin document's API mapped onto the objects (coordinator.gateway.origin): pure."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from coordinator.gateway import origin
from tests.support import builders

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def item(rec_id: str = "rec-003", **fields: Any) -> dict[str, Any]:
    return {
        "id": rec_id,
        "agent_id": "cost-agent-1",
        "agent_type": "cost",
        "customer_id": "customer-1",
        "title": "Migrate to Spot",
        "action": "migrate_to_spot",
        "risk_level": "medium",
        **fields,
    }


def test_a_request_becomes_recommendations_with_the_flags_applied_to_each() -> None:
    customer, objects = origin.coordinate_request(
        {
            "customer_id": "customer-1",
            "recommendations": [
                item(estimated_savings=2000.0, affected_resources=["i-1"], priority=10),
                item("rec-004", execute_now=False, description="why", confidence=0.5),
            ],
            "auto_approve": False,
            "execute_now": True,
        }
    )
    assert customer == "customer-1"
    first, second = objects
    assert first["metadata"] == {"name": "rec-003", "labels": {origin.LABEL: "gateway"}}
    assert first["spec"] == {
        "customerId": "customer-1",
        "agentId": "cost-agent-1",
        "agentType": "cost",
        "title": "Migrate to Spot",
        "action": "migrate_to_spot",
        "riskLevel": "medium",
        "estimatedSavings": 2000.0,
        "affectedResources": ["i-1"],
        "priority": 10,
        "autoApprove": False,
        "executeNow": True,
    }
    assert second["spec"]["executeNow"] is False  # its own flag wins
    assert second["spec"]["description"] == "why"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "body: must be a JSON object"),
        ({"recommendations": []}, "customer_id: required (a non-empty string)"),
        ({"customer_id": "c"}, "recommendations: required (a list)"),
        ({"customer_id": "c", "recommendations": [], "auto_approve": "yes"}, "auto_approve: "),
        ({"customer_id": "c", "recommendations": ["x"]}, "recommendations[0]: must be a JSON"),
        (
            {"customer_id": "customer-1", "recommendations": [item(title="")]},
            "recommendations[0].title: required",
        ),
        (
            {"customer_id": "customer-1", "recommendations": [item("Rec_1")]},
            "recommendations[0].id: 'Rec_1' is not a valid name",
        ),
        (
            {"customer_id": "customer-1", "recommendations": [item(), item()]},
            "recommendations[1].id: rec-003 appears twice",
        ),
        (
            {"customer_id": "other", "recommendations": [item()]},
            "recommendations[0].customer_id: customer-1 differs from the request's customer_id",
        ),
        (
            {"customer_id": "customer-1", "recommendations": [item(risk_level="extreme")]},
            "recommendations[0].risk_level: Input should be 'low', 'medium', 'high' or 'critical'",
        ),
        (
            {"customer_id": "customer-1", "recommendations": [item(priority=5000)]},
            "recommendations[0].priority: Input should be less than or equal to 1000",
        ),
        (
            {"customer_id": "customer-1", "recommendations": [item(colour="red")]},
            "recommendations[0].colour: unknown field",
        ),
    ],
)
def test_bad_requests_name_the_field(body: Any, message: str) -> None:
    with pytest.raises(origin.BadRequestError) as refused:
        origin.coordinate_request(body)
    assert str(refused.value).startswith(message)


def test_decision_bodies() -> None:
    assert origin.decision_request(None, reject=False) == (None, None)
    assert origin.decision_request({"user_id": "u", "reason": "r"}, reject=True) == ("u", "r")
    with pytest.raises(origin.BadRequestError, match="reason: required to reject"):
        origin.decision_request({"user_id": "u"}, reject=True)
    with pytest.raises(origin.BadRequestError, match="user_id: must be a string"):
        origin.decision_request({"user_id": 7}, reject=False)


def at_phase(name: str, phase: str, *, generation: int = 1, **status: Any) -> dict[str, Any]:
    """Recommendation `name` (scale_down) with `status`, observed at generation 1."""
    return builders.recommendation(
        name,
        metadata={"generation": generation, "resourceVersion": "1"},
        status={"phase": phase, "observedGeneration": 1, **status},
        action="scale_down",
    )


def decided(name: str, phase: str, decided_by: str | None = None) -> dict[str, Any]:
    """The Approval of `name` in `phase`, decided by `decided_by`."""
    status: dict[str, Any] = {"phase": phase}
    if decided_by:
        status["decidedBy"] = decided_by
    return builders.approval(name, status=status)


RESOURCE = {
    "type": "resource",
    "resources": ["i-102", "i-103"],
    "severity": "medium",
    "description": "Both recommendations affect resources: [i-102 i-103]",
}
RESOLUTION = "Kept recommendation rec-003 (priority: 10, savings: 2000.00), discarded rec-004"


def test_each_conflict_once_with_the_resolution_from_either_side() -> None:
    kept = at_phase("rec-003", "AwaitingApproval", conflicts=[{**RESOURCE, "with": ["rec-004"]}])
    lost = at_phase(
        "rec-004",
        "Superseded",
        supersededBy="rec-003",
        conflicts=[{**RESOURCE, "with": ["rec-003"], "resolution": RESOLUTION}],
    )
    (conflict,) = origin.conflicts([kept, lost])
    assert conflict == {
        "id": "conflict-resource-rec-003-rec-004",
        "type": "resource",
        "recommendation_ids": ["rec-003", "rec-004"],
        "resources": ["i-102", "i-103"],
        "description": RESOURCE["description"],
        "severity": "medium",
        "resolved": True,
        "resolution": RESOLUTION,
    }


def test_the_summary_counts_what_the_status_says() -> None:
    recs = [
        at_phase("rec-001", "AwaitingApproval", approval="rec-001"),
        at_phase("rec-002", "Approved", approval="rec-002", plan="rec-002"),
        at_phase("rec-004", "Superseded", supersededBy="rec-001"),
    ]
    plan = builders.plan(
        "rec-002",
        customerId="customer-1",
        suspend=True,
        steps=[{"name": "a", "action": "take_snapshot"}],
    )
    answer = origin.summary(
        coordination_id="coord-1",
        recs=recs,
        approvals={
            "rec-001": decided("rec-001", "Pending"),
            "rec-002": decided("rec-002", "Approved", "policy"),
        },
        plans={"rec-002": plan},
        now=NOW,
        settled_=True,
    )
    assert answer["total_recommendations"] == 3
    assert answer["recommendations_kept"] == 2
    assert (answer["approvals_required"], answer["auto_approved"]) == (1, 1)
    assert [r["id"] for r in answer["recommendations"]] == ["rec-001", "rec-002"]
    assert [r["status"] for r in answer["discarded"]] == ["superseded"]
    assert answer["approvals"][1]["auto_approved"] is True
    (shown,) = answer["execution_plans"]
    assert shown["status"] == "pending"
    assert shown["steps"][0] == {
        "name": "a",
        "action": "take_snapshot",
        "executor": None,
        "critical": True,
        "reversible": True,
        "status": "pending",
        "result": None,
        "error": None,
        "duration_ms": None,
        "started_at": None,
        "completed_at": None,
        "rolled_back_at": None,
    }
    assert answer["created_at"] == "2026-01-02T03:04:05Z"


def test_settled_needs_this_generation_and_what_follows_from_it() -> None:
    waiting = at_phase("rec-001", "AwaitingApproval", approval="rec-001")
    assert not origin.settled(None, None, None)
    assert not origin.settled(at_phase("rec-001", "Pending", generation=2), None, None)
    assert not origin.settled(waiting, None, None)
    assert not origin.settled(waiting, decided("rec-001", "Withdrawn"), None)
    assert origin.settled(waiting, decided("rec-001", "Pending"), None)
    approved = at_phase("rec-002", "Approved", approval="rec-002", plan="rec-002")
    assert not origin.settled(approved, decided("rec-002", "Approved"), None)
    assert origin.settled(approved, decided("rec-002", "Approved"), {"metadata": {}})
    assert origin.settled(at_phase("rec-004", "Superseded"), None, None)


def test_plan_status_in_the_origins_words() -> None:
    plan = builders.plan(
        "p",
        recommendation="r",
        customerId="c",
        steps=[{"name": "a"}, {"name": "b"}],
        status={
            "phase": "RolledBack",
            "steps": [
                {"name": "a", "phase": "RolledBack", "rolledBackAt": "2026-01-01T00:00:02Z"},
                {"name": "b", "phase": "Failed", "error": "broke"},
            ],
        },
    )
    shown = origin.plan(plan)
    assert shown["status"] == "rolled_back"
    assert [s["status"] for s in shown["steps"]] == ["rolled_back", "failed"]
    assert shown["steps"][1]["error"] == "broke"
    plan["status"] = {"phase": "Succeeded", "steps": [{"name": "a", "phase": "Succeeded"}]}
    assert origin.plan(plan)["status"] == "completed"
    assert origin.plan(plan)["steps"][0]["status"] == "completed"
