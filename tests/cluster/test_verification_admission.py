"""VerificationTemplates at admission, through kubectl against the real API server and the
shared operator's validating webhook (local mode): a condition that is not valid CEL, or
reads other names, is refused with the field named; an unknown or unsafe query placeholder
is refused with the field named; a valid template is stored."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.support import Kubectl, builders


def manifest(name: str, **metric: Any) -> str:
    """A template selecting scale_downs, its one metric p99 changed by `metric`, as YAML."""
    query = 'max(latency{namespace="{{namespace}}"})'
    p99 = builders.metric("p99", **({"query": query} | metric))
    selector = {"actions": ["scale_down"]}
    address = {"prometheus": {"address": "http://prometheus.monitoring:9090"}}
    body = builders.template(name, provider=address, selector=selector, metrics=[p99])
    return yaml.safe_dump(body)


def test_a_valid_template_is_stored(kubectl: Kubectl, e2e_namespace: str) -> None:
    proc = kubectl("apply", "-n", e2e_namespace, "-f", "-", stdin=manifest("fine"), check=False)
    assert proc.returncode == 0, proc.stderr
    stored = kubectl("get", "verificationtemplate", "fine", "-n", e2e_namespace, "-o", "name")
    assert stored.stdout.strip() == "verificationtemplate.optiinfra.io/fine"


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        (
            {"successCondition": "result <= baseline *"},
            "spec.metrics[0].successCondition: does not compile",
        ),
        ({"failureCondition": "latency > 1.0"}, "spec.metrics[0].failureCondition"),
    ],
)
def test_a_bad_cel_condition_is_refused_by_the_webhook_naming_the_field(
    kubectl: Kubectl, e2e_namespace: str, metric: dict[str, Any], expected: str
) -> None:
    proc = kubectl(
        "apply", "-n", e2e_namespace, "-f", "-", stdin=manifest("bad", **metric), check=False
    )
    assert proc.returncode != 0
    assert 'admission webhook "template-check' in proc.stderr
    assert "denied the request" in proc.stderr
    assert expected in proc.stderr
    gone = kubectl("get", "verificationtemplate", "bad", "-n", e2e_namespace, check=False)
    assert gone.returncode != 0  # nothing stored


@pytest.mark.parametrize(
    "query",
    [
        'max(latency{pod="{{pod}}"})',  # unknown
        'max(latency{namespace="{{ namespace }}"})',  # not the placeholder it looks like
        'max(latency{namespace="{{namespace"})',  # unclosed
    ],
)
def test_an_unknown_placeholder_is_refused_naming_the_field(
    kubectl: Kubectl, e2e_namespace: str, query: str
) -> None:
    proc = kubectl(
        "apply", "-n", e2e_namespace, "-f", "-", stdin=manifest("bad", query=query), check=False
    )
    assert proc.returncode != 0
    assert "spec.metrics[0].query" in proc.stderr
    assert "placeholder" in proc.stderr
    gone = kubectl("get", "verificationtemplate", "bad", "-n", e2e_namespace, check=False)
    assert gone.returncode != 0
