"""VerificationTemplate: the model refuses what cannot work, only admins write it, and
``template_problems`` names the field of every bad condition or placeholder (admission)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from coordinator.api.recommendation import RecommendationSpec
from coordinator.api.verification import VerificationTemplateSpec

ROLES = Path(__file__).parents[2] / "manifests" / "user-roles.yaml"


def template(*metrics: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "provider": {"prometheus": {"address": "http://127.0.0.1:9090"}},
        "metrics": list(metrics)
        or [{"name": "latency", "query": "q", "successCondition": "result < 1.0"}],
        **extra,
    }


def metric(name: str = "latency", **fields: Any) -> dict[str, Any]:
    return {"name": name, "query": "rate(x[5m])", **fields}


# --- the model -------------------------------------------------------------------------------


def test_defaults_are_those_of_the_contract() -> None:
    spec = VerificationTemplateSpec.model_validate(template(metric(successCondition="true")))
    m = spec.metrics[0]
    assert (m.interval, m.count, m.initial_delay) == ("1m", 5, "0")
    assert (m.failure_limit, m.inconclusive_limit, m.consecutive_error_limit) == (0, 0, 4)
    assert m.dry_run is False
    assert spec.baseline.window == "30m"
    assert spec.provider.prometheus.timeout_seconds == 10


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (template(metric()), "a metric needs a successCondition, a failureCondition or both"),
        (
            template(metric(successCondition="true"), metric(failureCondition="false")),
            "metric names must be unique; repeated: latency",
        ),
        (template(metric(successCondition="true", interval="")), "interval"),
        (template(metric(successCondition="true", interval="5 minutes")), "interval"),
        (template(metric(successCondition="true"), baseline={"window": "0"}), "window"),
        (template(metric(successCondition="true", count=0)), "count"),
        (template(metric(successCondition="true")) | {"metrics": []}, "metrics"),
        (
            template(metric(successCondition="true"))
            | {"provider": {"prometheus": {"address": "file:///etc/passwd"}}},
            "address",
        ),
    ],
)
def test_the_model_refuses_what_cannot_work(body: dict[str, Any], says: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=says):
        VerificationTemplateSpec.model_validate(body)


def test_a_recommendation_names_more_templates_as_a_set() -> None:
    base = {
        "customerId": "acme",
        "agentId": "a",
        "agentType": "cost",
        "title": "t",
        "action": "scale_down",
        "riskLevel": "low",
    }
    spec = RecommendationSpec.model_validate(base | {"verification": {"templates": ["slo"]}})
    assert spec.verification is not None
    assert spec.verification.templates == ["slo"]
    with pytest.raises(pydantic.ValidationError, match="templates is a set"):
        RecommendationSpec.model_validate(base | {"verification": {"templates": ["a", "a"]}})


# --- who may write templates ---------------------------------------------------------------------


def _rights(role: str, resource: str) -> set[str]:
    docs = [d for d in yaml.safe_load_all(ROLES.read_text()) if d]
    (found,) = [d for d in docs if d["metadata"]["name"] == role]
    return {
        verb
        for rule in found["rules"]
        if resource in rule.get("resources", ())
        for verb in rule["verbs"]
    }


@pytest.mark.parametrize("role", ["optiinfra-viewer", "optiinfra-agent", "optiinfra-approver"])
def test_people_and_agents_only_read_templates(role: str) -> None:
    assert _rights(role, "verificationtemplates") == {"get", "list", "watch"}


def test_admins_write_templates() -> None:
    assert _rights("optiinfra-policy-admin", "verificationtemplates") == {
        "create",
        "update",
        "patch",
        "delete",
    }
