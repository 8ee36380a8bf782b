"""Builders for verification tests: recommendations, templates, metrics and their checks."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from coordinator.api.common import RiskLevel
from coordinator.api.meta import ObjectMeta
from coordinator.api.recommendation import Recommendation, RecommendationSpec
from coordinator.api.verification import VerificationTemplate, VerificationTemplateSpec
from coordinator.core import verification
from coordinator.core.verification import Check, Reading

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
    body: dict[str, Any] = {
        "customerId": "acme",
        "agentId": "cost-agent",
        "agentType": "cost",
        "title": "Scale the workers down",
        "action": "scale_down",
        "riskLevel": "low",
        "target": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "workers"},
        **spec,
    }
    if templates:
        body["verification"] = {"templates": list(templates)}
    return Recommendation(
        metadata=ObjectMeta(name=name, namespace=namespace),
        spec=RecommendationSpec.model_validate(body),
    )


def tpl(
    name: str, *metrics: dict[str, Any], namespace: str = NS, **spec: Any
) -> VerificationTemplate:
    body = {
        "provider": {"prometheus": {"address": "http://127.0.0.1:9090"}},
        "metrics": list(metrics) or [metric()],
        **spec,
    }
    return VerificationTemplate(
        metadata=ObjectMeta(name=name, namespace=namespace),
        spec=VerificationTemplateSpec.model_validate(body),
    )


def metric(name: str = "latency", **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "query": 'latency{deployment="{{target.name}}"}',
        "successCondition": "result <= baseline * 1.10",
        "failureCondition": "result > baseline * 1.25",
        **fields,
    }


def checks_of(
    *templates: VerificationTemplate, recommendation: Recommendation | None = None
) -> tuple[Check, ...]:
    selection = verification.select(templates, recommendation or rec(), risk=RiskLevel.LOW)
    assert selection.problems == ()
    return selection.checks
