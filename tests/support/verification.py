"""Builders for verification tests: recommendations, templates, metrics and their checks."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from coordinator.api.common import RiskLevel
from coordinator.api.recommendation import Recommendation
from coordinator.api.verification import VerificationTemplate
from coordinator.core import verification
from coordinator.core.verification import Check, Reading
from tests.support import builders

NS = "team-a"
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
NO_DATA = Reading()


def rec(
    name: str = "rec-1",
    *,
    namespace: str = NS,
    templates: Sequence[str] = (),
    **spec: Any,
) -> Recommendation:
    """Scale Deployment workers down (low risk), verified by `templates`."""
    defaults: dict[str, Any] = {
        "customerId": "acme",
        "agentId": "cost-agent",
        "title": "Scale the workers down",
        "action": "scale_down",
        "riskLevel": "low",
        "target": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "workers"},
        "affectedResources": None,
    }
    if templates:
        defaults["verification"] = {"templates": list(templates)}
    return Recommendation.model_validate(
        builders.recommendation(name, namespace=namespace, **(defaults | spec))
    )


def tpl(
    name: str, *metrics: dict[str, Any], namespace: str = NS, **spec: Any
) -> VerificationTemplate:
    """A template of `metrics` (by default the latency one) on the local Prometheus."""
    given: dict[str, Any] = {"metrics": list(metrics)} if metrics else {}
    return VerificationTemplate.model_validate(
        builders.template(name, namespace=namespace, **(given | spec))
    )


def checks_of(
    *templates: VerificationTemplate, recommendation: Recommendation | None = None
) -> tuple[Check, ...]:
    selection = verification.select(templates, recommendation or rec(), risk=RiskLevel.LOW)
    assert selection.problems == ()
    return selection.checks
