"""The origin document's scenarios, translated to our API, with its exact texts.

The origin (an HTTP service) posted batches of recommendations to
``/coordination/coordinate``; here each batch is a set of Recommendation manifests run
through the core and through ``coordinator check``. Its request-level ``auto_approve``
becomes each recommendation's ``spec.autoApprove``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from coordinator import check
from coordinator.api.common import RiskLevel
from coordinator.api.recommendation import Recommendation
from coordinator.core import approval, conflicts
from tests.support.builders import recommendation

REQUESTED_AT = datetime(2025, 10, 20, 9, 0, tzinfo=UTC)


REC_001 = recommendation(
    "rec-001",
    agentId="cost-agent-1",
    agentType="cost",
    type="cost",
    title="Migrate to Spot Instances",
    description="Migrate 5 instances to spot pricing",
    action="migrate_to_spot",
    riskLevel="medium",
    estimatedSavings=2000.00,
    affectedResources=["i-001", "i-002", "i-003"],
    priority=10,
    confidence=0.92,
    autoApprove=True,
)
REC_002 = recommendation(
    "rec-002",
    agentId="perf-agent-1",
    agentType="performance",
    type="performance",
    title="Optimize KV Cache",
    description="Tune KV cache for better latency",
    action="optimize_kv_cache",
    riskLevel="low",
    estimatedSavings=500.00,
    affectedResources=["model-a"],
    priority=5,
    confidence=0.88,
    autoApprove=True,
)
REC_003 = recommendation(
    "rec-003",
    agentId="cost-agent-1",
    agentType="cost",
    type="cost",
    title="Migrate to Spot",
    action="migrate_to_spot",
    riskLevel="medium",
    estimatedSavings=2000.00,
    affectedResources=["i-101", "i-102", "i-103"],
    priority=10,
    confidence=0.92,
    autoApprove=False,
)
REC_004 = recommendation(
    "rec-004",
    agentId="resource-agent-1",
    agentType="resource",
    type="resource",
    title="Scale Down Cluster",
    action="scale_down",
    riskLevel="medium",
    estimatedSavings=1500.00,
    affectedResources=["i-102", "i-103", "i-104"],
    priority=8,
    confidence=0.85,
    autoApprove=False,
)
REC_005 = recommendation(
    "rec-005",
    agentId="resource-agent-1",
    agentType="resource",
    type="resource",
    title="Scale Up",
    action="scale_up",
    riskLevel="low",
    estimatedSavings=0,
    affectedResources=["cluster-a"],
    priority=8,
    confidence=0.90,
    autoApprove=False,
)
REC_006 = recommendation(
    "rec-006",
    agentId="cost-agent-1",
    agentType="cost",
    type="cost",
    title="Scale Down",
    action="scale_down",
    riskLevel="medium",
    estimatedSavings=1000.00,
    affectedResources=["cluster-a"],
    priority=10,
    confidence=0.88,
    autoApprove=False,
)
REC_007 = recommendation(
    "rec-007",
    agentId="cost-agent-1",
    agentType="cost",
    type="cost",
    title="Database Migration",
    action="migrate_database",
    riskLevel="high",
    estimatedSavings=5000.00,
    affectedResources=["db-prod"],
    priority=15,
    confidence=0.75,
    autoApprove=False,
)
REC_008 = recommendation(
    "rec-008",
    agentId="cost-agent-1",
    agentType="cost",
    type="cost",
    title="Migrate to Spot",
    action="migrate_to_spot",
    riskLevel="low",
    estimatedSavings=3000.00,
    affectedResources=["i-201", "i-202"],
    priority=10,
    confidence=0.95,
    autoApprove=True,
    executeNow=True,
)


def evaluate(*manifests: dict[str, Any]) -> conflicts.Evaluation:
    return conflicts.evaluate([Recommendation.model_validate(m) for m in manifests])


def check_json(tmp_path: Path, capsys: pytest.CaptureFixture[str], *manifests: Any) -> Any:
    """``coordinator check -o json`` on the manifests, one file; the entries by name."""
    path = tmp_path / "batch.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": list(manifests)}))
    assert check.main(["-f", str(path), "-o", "json"]) == 0
    return {
        entry["name"]: entry for entry in json.loads(capsys.readouterr().out)["recommendations"]
    }


def test_1_no_conflicts_one_auto_approved_one_approval_required(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    evaluation = evaluate(REC_001, REC_002)
    assert {v.name: v.outcome for v in evaluation.verdicts.values()} == {
        "rec-001": conflicts.Outcome.KEPT,
        "rec-002": conflicts.Outcome.KEPT,
    }
    assert evaluation.conflicts == {}

    entries = check_json(tmp_path, capsys, REC_001, REC_002)
    assert {name: entry["phase"] for name, entry in entries.items()} == {
        "rec-001": "AwaitingApproval",  # medium risk: approval required
        "rec-002": "Approved",  # low risk with autoApprove: approved by policy
    }
    assert entries["rec-001"]["approval"] == {"required": True, "expiresAfterSeconds": 172800}
    assert entries["rec-002"]["approval"] == {"required": False, "expiresAfterSeconds": 259200}


def test_2_resource_conflict_priority_wins(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    resolution = "Kept recommendation rec-003 (priority: 10, savings: 2000.00), discarded rec-004"
    conflict = {
        "type": "resource",
        "resources": ["i-102", "i-103"],
        "severity": "medium",
        "description": "Both recommendations affect resources: [i-102 i-103]",
        "resolution": resolution,
    }
    entries = check_json(tmp_path, capsys, REC_004, REC_003)
    assert entries["rec-003"]["phase"] == "AwaitingApproval"
    assert entries["rec-003"]["supersededBy"] is None
    assert entries["rec-003"]["conflicts"] == [{**conflict, "with": ["rec-004"]}]
    assert entries["rec-004"]["phase"] == "Superseded"
    assert entries["rec-004"]["supersededBy"] == "rec-003"
    assert entries["rec-004"]["conflicts"] == [{**conflict, "with": ["rec-003"]}]
    # One kept, one approval to be asked for (the superseded one never reaches a decision).
    assert [name for name, e in entries.items() if e["phase"] == "AwaitingApproval"] == ["rec-003"]


def test_3_resource_and_action_conflict_higher_priority_and_savings_win() -> None:
    evaluation = evaluate(REC_005, REC_006)
    assert evaluation.verdict("rec-006").outcome is conflicts.Outcome.KEPT
    assert evaluation.verdict("rec-005").superseded_by == "rec-006"
    resolution = "Kept recommendation rec-006 (priority: 10, savings: 1000.00), discarded rec-005"
    assert [
        (c.type.value, c.description, c.severity, c.resolution)
        for c in evaluation.verdict("rec-005").conflicts
    ] == [
        ("resource", "Both recommendations affect resources: [cluster-a]", "medium", resolution),
        ("action", "Contradictory actions: scale_up vs scale_down", RiskLevel.HIGH, resolution),
    ]


def test_rec_007_high_risk_needs_an_approval_that_expires_after_24h() -> None:
    spec = Recommendation.model_validate(REC_007).spec
    assert approval.needs_approval(spec)
    expires = approval.expires_at(REQUESTED_AT, spec.risk_level, policy=approval.DEFAULT_POLICY)
    assert expires == REQUESTED_AT + timedelta(hours=24)
    # Rejection (a person's decision) and what follows belong to the operator's lifecycle;
    # the policy's part: it can be decided until it expires, not after.
    assert not approval.is_expired(expires, now=expires - timedelta(seconds=1))
    assert approval.is_expired(expires, now=expires)


def test_rec_003_medium_risk_expires_two_days_after_the_request() -> None:
    spec = Recommendation.model_validate(REC_003).spec
    expires = approval.expires_at(REQUESTED_AT, spec.risk_level, policy=approval.DEFAULT_POLICY)
    assert expires == datetime(2025, 10, 22, 9, 0, tzinfo=UTC)


def test_rec_008_is_approved_by_policy_with_the_migrate_to_spot_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = check_json(tmp_path, capsys, REC_008)["rec-008"]
    assert entry["phase"] == "Approved"
    assert entry["approval"]["required"] is False
    assert entry["plan"] == {
        "steps": [
            {
                "name": "take_snapshot",
                "action": "take_snapshot",
                "critical": True,
                "reversible": True,
            },
            {
                "name": "migrate_workload",
                "action": "migrate_workload",
                "critical": True,
                "reversible": True,
            },
            {
                "name": "validate_quality",
                "action": "validate_quality",
                "critical": True,
                "reversible": False,
            },
        ]
    }
