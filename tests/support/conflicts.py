"""Helpers of the conflict and approval-policy tests: typed recommendations in one line."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from coordinator.api.recommendation import Recommendation, RecommendationPhase
from coordinator.core import conflicts
from tests.support import builders

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def rec(
    name: str,
    *resources: str,
    customer: str = "customer-1",
    namespace: str = "default",
    phase: RecommendationPhase | None = None,
    action: str = "rightsize",
    priority: int = 0,
    savings: float = 0,
    confidence: float = 1,
    risk: str = "medium",
    created: datetime | None = None,
    depends_on: Sequence[str] = (),
    **spec: Any,
) -> Recommendation:
    """A recommendation affecting ``resources``; ``spec`` adds fields by their wire names."""
    defaults = {
        "customerId": customer,
        "agentId": "agent-1",
        "action": action,
        "riskLevel": risk,
        "estimatedSavings": savings,
        "affectedResources": list(resources),
        "priority": priority,
        "confidence": confidence,
        "dependsOn": list(depends_on),
    }
    document = builders.recommendation(
        name,
        namespace=namespace,
        metadata={"creationTimestamp": created} if created is not None else None,
        status={"phase": phase} if phase is not None else None,
        **(defaults | spec),
    )
    return Recommendation.model_validate(document)


def minutes(count: int) -> datetime:
    return T0 + timedelta(minutes=count)


def outcomes(evaluation: conflicts.Evaluation) -> dict[str, str]:
    """``{name: "kept" | "superseded by x" | "blocked" | "executing"}``, easy to compare."""
    return {
        verdict.name: f"superseded by {verdict.superseded_by}"
        if verdict.outcome is conflicts.Outcome.SUPERSEDED
        else verdict.outcome.value
        for verdict in evaluation.verdicts.values()
    }
