"""The validating webhook of VerificationTemplates (``template-check``): a bad CEL condition
or an unknown placeholder is refused with a 4xx naming the field; a valid template passes."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from coordinator import app, handlers
from coordinator.core import admission
from coordinator.k8s.admission import RefusedError, Review, Verdict
from coordinator.parts.facts import Facts
from tests.support.builders import metric
from tests.support.verification import tpl


def review(template: dict[str, Any], operation: str = "CREATE") -> Review:
    return Review(
        operation=operation,
        user="admin",
        userinfo={"username": "admin"},
        object=template,
        old=template if operation == "UPDATE" else None,
    )


def check(body: dict[str, Any]) -> Verdict:
    hook = handlers.admission(cast(Facts, object()))["template-check"]
    return asyncio.run(hook(review(body)))


def body(*metrics: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return tpl("latency", *metrics, **spec).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )


def test_the_hook_is_registered_for_verification_templates() -> None:
    (hook,) = [h for h in app.HOOKS if h.id == "template-check"]
    assert hook.plural == "verificationtemplates"
    assert not hook.mutating


def test_a_valid_template_is_allowed() -> None:
    assert check(body(metric())) == Verdict()


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"successCondition": "result <= baseline *"},
            "spec.metrics[0].successCondition: does not compile",
        ),
        ({"failureCondition": "latency > 1.0"}, "spec.metrics[0].failureCondition:"),
        ({"query": 'up{pod="{{pod}}"}'}, "spec.metrics[0].query: unknown placeholder {{pod}}"),
        ({"query": 'up{ns="{{ namespace }}"}'}, "unknown placeholder {{ namespace }}"),
        ({"query": 'up{ns="{{namespace"}'}, "spec.metrics[0].query: unclosed placeholder"),
    ],
)
def test_a_bad_condition_or_placeholder_is_refused_naming_the_field(
    fields: dict[str, Any], expected: str
) -> None:
    with pytest.raises(RefusedError) as refused:
        check(body(metric(**fields)))
    assert 400 <= refused.value.code < 500
    assert refused.value.message.startswith("VerificationTemplate latency: ")
    assert expected in refused.value.message


def test_the_savings_query_is_checked_too() -> None:
    savings = {"query": "cost{team='{{team}}'}", "window": "1h"}
    with pytest.raises(RefusedError) as refused:
        check(body(metric(), savings=savings))
    assert "spec.savings.query: unknown placeholder {{team}}" in refused.value.message


def test_every_problem_is_named_at_once() -> None:
    problem = admission.template_problem(
        tpl(
            "two",
            metric("a", successCondition="result >>> 1"),
            metric("b", query="x{a='{{nope}}'}"),
        )
    )
    assert problem is not None
    assert "spec.metrics[0].successCondition" in problem
    assert "spec.metrics[1].query" in problem
