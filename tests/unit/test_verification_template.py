"""VerificationTemplate: the model refuses what cannot work, only admins write it, and
``template_problems`` names the field of every bad condition or placeholder (admission)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from coordinator.api.recommendation import RecommendationSpec
from coordinator.api.verification import VerificationTemplateSpec
from coordinator.core import cel, verification
from tests.support import builders
from tests.support.builders import metric

ROLES = Path(__file__).parents[2] / "manifests" / "user-roles.yaml"


def template_spec(*metrics: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The spec of a VerificationTemplate measuring `metrics`."""
    spec: dict[str, Any] = builders.template(metrics=list(metrics), **extra)["spec"]
    return spec


# --- the model -------------------------------------------------------------------------------


def test_defaults_are_those_of_the_contract() -> None:
    spec = VerificationTemplateSpec.model_validate(template_spec(metric(successCondition="true")))
    m = spec.metrics[0]
    assert (m.interval, m.count, m.initial_delay) == ("1m", 5, "0")
    assert (m.failure_limit, m.inconclusive_limit, m.consecutive_error_limit) == (0, 0, 4)
    assert m.dry_run is False
    assert spec.baseline.window == "30m"
    assert spec.provider.prometheus.timeout_seconds == 10


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (
            template_spec(metric(successCondition=None, failureCondition=None)),
            "a metric needs a successCondition, a failureCondition or both",
        ),
        (
            template_spec(metric(successCondition="true"), metric(failureCondition="false")),
            "metric names must be unique; repeated: latency",
        ),
        (template_spec(metric(successCondition="true", interval="")), "interval"),
        (template_spec(metric(successCondition="true", interval="5 minutes")), "interval"),
        (template_spec(metric(successCondition="true"), baseline={"window": "0"}), "window"),
        (template_spec(metric(successCondition="true", count=0)), "count"),
        (template_spec(metric(successCondition="true")) | {"metrics": []}, "metrics"),
        (
            template_spec(metric(successCondition="true"))
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


# --- CEL conditions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "result <= baseline * 1.10",
        "result < 0.01",
        "result > baseline ? result - baseline < 0.5 : true",
        "true",
    ],
)
def test_good_conditions_have_no_problem(source: str) -> None:
    assert cel.problem(source) is None


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("result <=", "does not compile: .*Syntax error"),
        ("latency < 1.0", "reads latency: a condition may read only result and baseline"),
        ("request.auth.claims.x == 1", "reads request"),
        ("baseline * 2 > result", "does not evaluate with numbers: Unsupported operation"),
        ("result", "yields float, not a bool"),
        ("1/0 > 0", "does not evaluate with numbers: division by zero"),
        ("(" * 600 + "result" + ")" * 600 + " > 1.0", "does not compile"),
    ],
)
def test_bad_conditions_are_named(source: str, says: str) -> None:
    problem = cel.problem(source)
    assert problem is not None
    assert re.search(says, problem), problem


def test_evaluation_needs_the_baseline_it_reads() -> None:
    assert cel.evaluate("result <= baseline * 1.10", result=1.0, baseline=1.0) is True
    assert cel.evaluate("result <= baseline * 1.10", result=1.2, baseline=1.0) is False
    assert cel.evaluate("result < 0.5", result=0.1, baseline=None) is True
    with pytest.raises(cel.CelError, match="no baseline was recorded"):
        cel.evaluate("result <= baseline", result=1.0, baseline=None)
    with pytest.raises(cel.CelError, match="NaN"):
        cel.evaluate("result < 0.5", result=float("nan"), baseline=None)


# --- admission: the problems of a template, by field --------------------------------------------


def test_a_valid_template_has_no_problems() -> None:
    spec = VerificationTemplateSpec.model_validate(
        template_spec(
            metric(
                query='histogram_quantile(0.99, rate(latency_bucket{namespace="{{namespace}}",'
                'deployment="{{target.name}}",kind="{{target.kind}}",c="{{customerId}}"}[5m]))',
                successCondition="result <= baseline * 1.10",
                failureCondition="result > baseline * 1.25",
            ),
            savings={"query": 'cost{c="{{customerId}}"}'},
        )
    )
    assert verification.template_problems(spec) == []


def test_template_problems_name_the_field() -> None:
    spec = VerificationTemplateSpec.model_validate(
        template_spec(
            metric("a", query='up{pod="{{pod}}"}', successCondition="result > 0.0"),
            metric("b", successCondition="result >", failureCondition="cost > 1.0"),
            metric("c", query="up{x='{{namespace'}", failureCondition="result > 1.0"),
            savings={"query": "cost{c='{{ customerId }}'}"},
        )
    )
    assert verification.template_problems(spec) == [
        "spec.metrics[0].query: unknown placeholder {{pod}}: use {{namespace}}, "
        "{{target.kind}}, {{target.name}}, {{customerId}}",
        "spec.metrics[1].successCondition: does not compile: <input>:1:9: Syntax error: "
        "mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', "
        "'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}",
        "spec.metrics[1].failureCondition: reads cost: a condition may read only result and "
        "baseline (both doubles)",
        "spec.metrics[2].query: unclosed placeholder: {{ without }}",
        "spec.savings.query: unknown placeholder {{ customerId }}: use {{namespace}}, "
        "{{target.kind}}, {{target.name}}, {{customerId}}",
    ]
