"""`coordinator gateway`: the origin document's validation steps, sent with curl as it
sends them (plus an Authorization header), against the shared operator; approvals
decided as the caller; a forged user_id refused."""

from __future__ import annotations

import json
from typing import Any

import kubernetes
import pytest

from tests.support import Kubectl, wait_for
from tests.support.cluster import register_agents
from tests.support.gateway import GatewayProcess, curl, request, service_account_tokens
from tests.support.kube import APPROVALS, PLANS, RECS, Objects
from tests.support.processes import AgentProcess

# The origin document's clients know nothing of AgentEndpoints: every request here is
# sent against a namespace where none exists (the executed plan's test registers one).
pytestmark = pytest.mark.no_endpoints


def origin_rec(rec_id: str, agent: str, agent_type: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": rec_id,
        "agent_id": agent,
        "agent_type": agent_type,
        "customer_id": "customer-1",
        "type": agent_type,
        **fields,
    }


# The request bodies of the origin document's validation steps (STEP 5 to 7).
TEST_1 = {
    "customer_id": "customer-1",
    "recommendations": [
        origin_rec(
            "rec-001", "cost-agent-1", "cost", title="Migrate to Spot Instances",
            description="Migrate 5 instances to spot pricing", action="migrate_to_spot",
            risk_level="medium", estimated_savings=2000.00,
            affected_resources=["i-001", "i-002", "i-003"], priority=10, confidence=0.92,
        ),
        origin_rec(
            "rec-002", "perf-agent-1", "performance", title="Optimize KV Cache",
            description="Tune KV cache for better latency", action="optimize_kv_cache",
            risk_level="low", estimated_savings=500.00, affected_resources=["model-a"],
            priority=5, confidence=0.88,
        ),
    ],
    "auto_approve": True,
    "execute_now": False,
}  # fmt: skip
TEST_2 = {
    "customer_id": "customer-1",
    "recommendations": [
        origin_rec(
            "rec-003", "cost-agent-1", "cost", title="Migrate to Spot",
            action="migrate_to_spot", risk_level="medium", estimated_savings=2000.00,
            affected_resources=["i-101", "i-102", "i-103"], priority=10, confidence=0.92,
        ),
        origin_rec(
            "rec-004", "resource-agent-1", "resource", title="Scale Down Cluster",
            action="scale_down", risk_level="medium", estimated_savings=1500.00,
            affected_resources=["i-102", "i-103", "i-104"], priority=8, confidence=0.85,
        ),
    ],
    "auto_approve": False,
    "execute_now": False,
}  # fmt: skip
TEST_3 = {
    "customer_id": "customer-1",
    "recommendations": [
        origin_rec(
            "rec-005", "resource-agent-1", "resource", title="Scale Up", action="scale_up",
            risk_level="low", estimated_savings=0, affected_resources=["cluster-a"],
            priority=8, confidence=0.90,
        ),
        origin_rec(
            "rec-006", "cost-agent-1", "cost", title="Scale Down", action="scale_down",
            risk_level="medium", estimated_savings=1000.00, affected_resources=["cluster-a"],
            priority=10, confidence=0.88,
        ),
    ],
    "auto_approve": False,
    "execute_now": False,
}  # fmt: skip
REJECT_SETUP = {
    "customer_id": "customer-1",
    "recommendations": [
        origin_rec(
            "rec-007", "cost-agent-1", "cost", title="Database Migration",
            action="migrate_database", risk_level="high", estimated_savings=5000.00,
            affected_resources=["db-prod"], priority=15, confidence=0.75,
        ),
    ],
    "auto_approve": False,
    "execute_now": False,
}  # fmt: skip
EXECUTE = {
    "customer_id": "customer-1",
    "recommendations": [
        origin_rec(
            "rec-008", "cost-agent-1", "cost", title="Migrate to Spot",
            action="migrate_to_spot", risk_level="low", estimated_savings=3000.00,
            affected_resources=["i-201", "i-202"], priority=10, confidence=0.95,
        ),
    ],
    "auto_approve": True,
    "execute_now": True,
}  # fmt: skip


@pytest.fixture
def tokens(
    api: kubernetes.client.ApiClient, kubectl: Kubectl, e2e_namespace: str
) -> dict[str, str]:
    return service_account_tokens(api, kubectl, e2e_namespace)


def coordinate(served: GatewayProcess, token: str, body: dict[str, Any]) -> dict[str, Any]:
    status, answer = curl(
        "POST", f"{served.url}/coordination/coordinate", token=token, body=json.dumps(body)
    )
    assert status == 200, answer
    assert answer["settled"], answer
    return answer


def test_the_origin_documents_validation_steps(  # noqa: PLR0917 - fixtures are positional
    served: GatewayProcess,
    tokens: dict[str, str],
    e2e_namespace: str,
    objects: Objects,
    kubectl: Kubectl,
    reference_agent: AgentProcess,
) -> None:
    """Against a namespace where no AgentEndpoint exists (yet): conflicts, decisions and
    approvals as the origin document says; the executed plan waits for its endpoint and
    runs once an admin registers it."""
    agent, approver = tokens["gw-agent"], tokens["gw-approver"]
    approver_name = f"system:serviceaccount:{e2e_namespace}:gw-approver"

    # STEP 5, test 1: no conflict; one auto-approved (low), one needs approval (medium).
    one = coordinate(served, agent, TEST_1)
    assert one["id"].startswith("coord-")
    assert (one["total_recommendations"], one["conflicts_detected"]) == (2, 0)
    assert (one["conflicts_resolved"], one["recommendations_kept"]) == (0, 2)
    assert (one["approvals_required"], one["auto_approved"]) == (1, 1)
    assert one["conflicts"] == []
    assert {r["id"] for r in one["recommendations"]} == {"rec-001", "rec-002"}
    assert {a["recommendation_id"]: a["status"] for a in one["approvals"]} == {
        "rec-001": "pending",
        "rec-002": "approved",
    }

    # Test 2: a resource conflict, resolved by priority.
    two = coordinate(served, agent, TEST_2)
    assert (two["total_recommendations"], two["conflicts_detected"]) == (2, 1)
    assert (two["conflicts_resolved"], two["recommendations_kept"]) == (1, 1)
    assert (two["approvals_required"], two["auto_approved"]) == (1, 0)
    (conflict,) = two["conflicts"]
    assert conflict["type"] == "resource"
    assert conflict["recommendation_ids"] == ["rec-003", "rec-004"]
    assert conflict["description"] == "Both recommendations affect resources: [i-102 i-103]"
    assert conflict["severity"] == "medium"
    assert conflict["resolved"] is True
    assert conflict["resolution"] == (
        "Kept recommendation rec-003 (priority: 10, savings: 2000.00), discarded rec-004"
    )
    assert [r["id"] for r in two["recommendations"]] == ["rec-003"]

    # Test 3: contradictory actions on a shared resource: two conflicts, one kept.
    three = coordinate(served, agent, TEST_3)
    assert three["conflicts_detected"] == 2
    assert three["recommendations_kept"] == 1
    by_type = {c["type"]: c for c in three["conflicts"]}
    assert (
        by_type["resource"]["description"] == "Both recommendations affect resources: [cluster-a]"
    )
    assert by_type["action"]["description"] == "Contradictory actions: scale_up vs scale_down"
    assert by_type["action"]["severity"] == "high"
    assert [r["id"] for r in three["recommendations"]] == ["rec-006"]

    # STEP 6, test 1: the approvals waiting for customer-1.
    status, listed = curl(
        "GET", f"{served.url}/coordination/approvals?customer_id=customer-1", token=approver
    )
    assert status == 200
    assert listed["count"] == len(listed["approvals"]) == 3
    waiting = {a["recommendation_id"]: a for a in listed["approvals"]}
    assert set(waiting) == {"rec-001", "rec-003", "rec-006"}
    assert waiting["rec-003"]["risk_level"] == "medium"
    assert waiting["rec-003"]["status"] == "pending"
    assert waiting["rec-003"]["customer_id"] == "customer-1"
    assert waiting["rec-003"]["expires_at"] > waiting["rec-003"]["requested_at"]

    # Test 2: approve, as the caller: the webhook records the token's user.
    approval_id = waiting["rec-003"]["id"]
    status, said = curl(
        "POST", f"{served.url}/coordination/approvals/{approval_id}/approve", token=approver,
        body=json.dumps({"user_id": approver_name}),
    )  # fmt: skip
    assert (status, said["message"]) == (200, "Recommendation approved")
    assert said["approval"]["decided_by"] == approver_name
    recorded = objects.wait_phase(APPROVALS, "rec-003", "Approved")["status"]
    assert recorded["decidedBy"] == approver_name

    # A body user_id that is not the caller is refused; nothing changes.
    status, said = curl(
        "POST", f"{served.url}/coordination/approvals/{waiting['rec-006']['id']}/approve",
        token=approver, body=json.dumps({"user_id": "admin@example.com"}),
    )  # fmt: skip
    assert status == 403
    assert "user_id admin@example.com is not the caller" in said["error"]
    assert objects.get(APPROVALS, "rec-006")["spec"]["decision"] == "Pending"

    # The submitter's token may not decide (RBAC names who it is).
    status, said = curl(
        "POST", f"{served.url}/coordination/approvals/rec-006/approve", token=agent, body="{}"
    )
    assert status == 403
    assert f'"system:serviceaccount:{e2e_namespace}:gw-agent" cannot patch' in said["error"]

    # Test 3: reject, with the reason.
    seven = coordinate(served, agent, REJECT_SETUP)
    assert seven["approvals_required"] == 1
    status, said = curl(
        "POST", f"{served.url}/coordination/approvals/{seven['approvals'][0]['id']}/reject",
        token=approver,
        body=json.dumps({"user_id": approver_name, "reason": "Too risky during peak hours"}),
    )  # fmt: skip
    assert (status, said["message"]) == (200, "Recommendation rejected")
    rejected = objects.wait_phase(APPROVALS, "rec-007", "Rejected")["status"]
    assert rejected["decidedBy"] == approver_name
    assert rejected["reason"] == "Too risky during peak hours"

    # STEP 7, test 1: auto-approved and executed at once.
    eight = coordinate(served, agent, EXECUTE)
    (plan,) = eight["execution_plans"]
    assert plan["recommendation_id"] == "rec-008"
    assert [(s["action"], s["critical"], s["reversible"]) for s in plan["steps"]] == [
        ("take_snapshot", True, True),
        ("migrate_workload", True, True),
        ("validate_quality", True, False),
    ]
    # It waits for the AgentEndpoint of its agent; an admin registers it (taking the
    # gateway agent's steps), and it runs.
    wait_for(
        lambda: (
            "waiting for AgentEndpoint cost-agent-1 to be registered"
            in (objects.status(PLANS, plan["id"]).get("message") or "")
        ),
        what="the plan to wait for AgentEndpoint cost-agent-1",
    )
    assert objects.phase(PLANS, plan["id"]) == "Pending"
    gateway_agent = {"serviceAccount": {"name": "gw-agent", "namespace": e2e_namespace}}
    register_agents(kubectl, e2e_namespace, reference_agent.url, submitters=[gateway_agent])
    # Test 2: the plan's status, once it has run.
    objects.wait_phase(PLANS, plan["id"], "Succeeded", timeout=60)
    status, shown = curl("GET", f"{served.url}/coordination/plans/{plan['id']}", token=agent)
    assert status == 200
    assert shown["status"] == "completed"
    assert shown["customer_id"] == "customer-1"
    assert [s["status"] for s in shown["steps"]] == ["completed"] * 3
    assert all(s["duration_ms"] is not None and s["result"] for s in shown["steps"])
    assert shown["total_duration_ms"] is not None

    # POST /coordination/plans/{id}/execute starts the suspended plan of rec-003.
    objects.wait_phase(PLANS, "rec-003", "Pending")
    status, said = curl(
        "POST", f"{served.url}/coordination/plans/rec-003/execute", token=approver, body="{}"
    )
    assert (status, said["message"]) == (200, "Plan execution started")
    assert objects.get(PLANS, "rec-003")["spec"]["suspend"] is False
    status, said = curl(
        "POST", f"{served.url}/coordination/plans/rec-003/execute", token=approver, body="{}"
    )
    assert status == 409


def test_the_comprehensive_validation_checklist(
    served: GatewayProcess, tokens: dict[str, str]
) -> None:
    agent = tokens["gw-agent"]
    status, health = curl("GET", f"{served.url}/health")
    assert (status, health["status"]) == (200, "healthy")
    status, answer = curl(
        "POST", f"{served.url}/coordination/coordinate", token=agent,
        body='{"customer_id":"test","recommendations":[]}',
    )  # fmt: skip
    assert status == 200
    assert answer["total_recommendations"] == 0
    status, listed = curl(
        "GET", f"{served.url}/coordination/approvals?customer_id=test", token=agent
    )
    assert (status, listed) == (200, {"approvals": [], "count": 0})
    status, missing = curl("GET", f"{served.url}/coordination/plans/nonexistent", token=agent)
    assert (status, missing) == (404, {"error": "Plan not found"})
    url = f"{served.url}/coordination/approvals/nonexistent/approve"
    status, missing = curl("POST", url, token=tokens["gw-approver"], body="{}")
    assert (status, missing) == (404, {"error": "Approval not found"})


def test_bad_requests_name_the_field(served: GatewayProcess, tokens: dict[str, str]) -> None:
    agent = tokens["gw-agent"]
    url = f"{served.url}/coordination/coordinate"
    status, said = curl("POST", url, token=agent, body='{"customer_id": "c", ')
    assert status == 400
    assert said["error"].startswith("body: invalid JSON")
    cases = [
        ({"recommendations": []}, "customer_id: required"),
        ({"customer_id": "c"}, "recommendations: required"),
        (
            {"customer_id": "c", "recommendations": [{"id": "r-1", "title": "t"}]},
            "recommendations[0].agent_id: required",
        ),
        (
            {
                "customer_id": "customer-1",
                "recommendations": [
                    origin_rec("r-1", "a", "cost", title="t", action="x", risk_level="extreme")
                ],
            },
            "recommendations[0].risk_level: ",
        ),
        (
            {
                "customer_id": "c",
                "recommendations": [
                    origin_rec("r-1", "a", "cost", title="t", action="x", risk_level="low")
                ],
            },
            "recommendations[0].customer_id: customer-1 differs from the request's customer_id c",
        ),
    ]
    for body, expected in cases:
        status, said = request("POST", url, token=agent, body=body)
        assert status == 400, said
        assert said["error"].startswith(expected), said
    status, said = request("POST", url, body={"customer_id": "c", "recommendations": []})
    assert (status, said) == (401, {"error": "Authorization: Bearer <token> required"})
    status, said = request(
        "POST", url, token="not-a-token", body={"customer_id": "c", "recommendations": []}
    )
    assert (status, said) == (401, {"error": "the API server did not accept the bearer token"})
    status, said = request(
        "POST",
        f"{served.url}/coordination/approvals/x/reject",
        token=tokens["gw-approver"],
        body={},
    )
    assert (status, said) == (400, {"error": "reason: required to reject"})


def test_a_viewer_cannot_write_through_the_gateway(
    served: GatewayProcess, tokens: dict[str, str], e2e_namespace: str, objects: Objects
) -> None:
    status, said = request(
        "POST", f"{served.url}/coordination/coordinate", token=tokens["gw-viewer"], body=TEST_2
    )
    assert status == 403
    assert said["error"].startswith("recommendations[0] (rec-003): ")
    assert "gw-viewer" in said["error"]
    assert objects.get(RECS, "rec-003") is None
