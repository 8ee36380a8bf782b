"""The catalogue of default plans (RULES 5): which real steps carry out an action.

Without a target, the proposing agent carries the steps out (webhook to the AgentEndpoint
named after agentId); with a target, cluster actions run on the kubernetes executor.
Never the simulated executor."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from coordinator.api.plan import Executor, Step
from coordinator.api.recommendation import RecommendationSpec
from coordinator.core import catalogue
from tests.support import builders

# The actions the examples use, each with its own (not the generic) default plan.
EXAMPLE_ACTIONS = (
    "migrate_to_spot",
    "migrate_to_on_demand",
    "scale_down",
    "scale_up",
    "optimize_kv_cache",
    "migrate_database",
    "rightsize",
)


def spec_of(
    action: str,
    steps: list[Step] | None = None,
    *,
    target: dict[str, str] | None = None,
    parameters: dict[str, Any] | None = None,
    agent: str = "cost-agent-1",
) -> RecommendationSpec:
    """The spec of a low-risk recommendation of `agent` to do `action`."""
    document = builders.recommendation(
        agentId=agent,
        title="A change",
        action=action,
        riskLevel="low",
        steps=[s.to_wire() for s in steps] if steps is not None else None,
        target=target,
        parameters=parameters,
    )
    return RecommendationSpec.model_validate(document["spec"])


def defaults(action: str, **kwargs: Any) -> list[Step]:
    return catalogue.default_steps(spec_of(action, **kwargs))


WEB = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}


def flags(steps: list[Step]) -> list[tuple[str, bool, bool]]:
    return [(s.name, s.critical, s.reversible) for s in steps]


def test_migrate_to_spot_is_the_origin_plan() -> None:
    assert flags(defaults("migrate_to_spot")) == [
        ("take_snapshot", True, True),
        ("migrate_workload", True, True),
        ("validate_quality", True, False),
    ]


@pytest.mark.parametrize("action", EXAMPLE_ACTIONS)
def test_example_actions_have_their_own_realistic_default(action: str) -> None:
    steps = defaults(action)
    assert catalogue.templates_for(action) is catalogue.DEFAULT_PLANS[action]
    assert 2 <= len(steps) <= 4
    assert len({s.name for s in steps}) == len(steps)
    assert all(s.name == s.action for s in steps)
    # Done by the agent that proposed it, at its registered endpoint: never simulated.
    assert all(s.executor is Executor.WEBHOOK for s in steps)
    assert all(s.params == {"endpoint": "cost-agent-1"} for s in steps)
    # Something reversible is done first, and the last step checks the result (cannot be undone).
    assert steps[0].reversible
    assert (steps[-1].critical, steps[-1].reversible) == (True, False)


def test_scale_down_records_capacity_before_removing_nodes() -> None:
    assert [s.name for s in defaults("scale_down")] == [
        "record_capacity",
        "drain_nodes",
        "remove_nodes",
        "validate_quality",
    ]


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("increase_memory", "resize_workload"),
        ("decrease_replicas", "resize_workload"),
        ("resize_disk", "resize_workload"),
        ("gpu_up", "resize_workload"),
        ("memory_down", "resize_workload"),
        ("enable_compression", "apply_config"),
        ("disable_autoscaler", "apply_config"),
        ("tune_batch_size", "apply_config"),
        ("migrate_to_arm", "migrate_workload"),
        ("reboot_everything", "apply"),
    ],
)
def test_action_families_share_a_default(action: str, expected: str) -> None:
    assert [s.name for s in defaults(action)][1] == expected


def test_unknown_actions_get_the_generic_plan() -> None:
    assert flags(defaults("do_something_new")) == [
        ("prepare", True, True),
        ("apply", True, True),
        ("verify", True, False),
    ]


def test_plan_steps_prefers_the_recommendations_own_steps() -> None:
    own = [
        Step(
            name="only",
            action="custom_thing",
            critical=False,
            reversible=False,
            executor=Executor.SIMULATED,
        )
    ]
    assert catalogue.plan_steps(spec_of("migrate_to_spot", own)) == own


def test_plan_steps_falls_back_to_the_default_of_the_action() -> None:
    assert catalogue.plan_steps(spec_of("scale_up", None)) == defaults("scale_up")


def test_an_empty_step_list_is_refused_rather_than_taken_as_the_default() -> None:
    with pytest.raises(pydantic.ValidationError, match="at least 1 item"):
        spec_of("scale_up", [])


def test_each_call_returns_fresh_values() -> None:
    first = defaults("migrate_to_spot")
    params: dict[str, Any] = first[0].params
    params["fail"] = True
    first.pop()
    again = defaults("migrate_to_spot")
    assert len(again) == 3
    assert again[0].params == {"endpoint": "cost-agent-1"}


def test_the_agents_parameters_go_to_every_webhook_step() -> None:
    steps = defaults("optimize_kv_cache", parameters={"cacheMb": 512})
    assert {s.executor for s in steps} == {Executor.WEBHOOK}
    assert all(s.params == {"cacheMb": 512, "endpoint": "cost-agent-1"} for s in steps)


def test_an_agent_id_that_cannot_name_an_endpoint_has_no_default() -> None:
    with pytest.raises(catalogue.NoDefaultPlanError, match=r"spec\.agentId 'Cost Agent'"):
        defaults("migrate_to_spot", agent="Cost Agent")


def test_scaling_a_target_scales_it_then_waits_until_it_is_available() -> None:
    scale, wait = defaults("scale_down", target=WEB, parameters={"replicas": 2})
    assert (scale.action, scale.executor, scale.params) == (
        "scale",
        Executor.KUBERNETES,
        {"target": WEB, "replicas": 2},
    )
    assert (wait.action, wait.executor, wait.reversible) == ("wait", Executor.KUBERNETES, False)
    assert wait.params == {
        "target": WEB,
        "condition": {"type": "Available", "status": "True"},
        "timeoutSeconds": 300,
    }


def test_rightsizing_a_target_patches_the_containers_resources() -> None:
    resources = {"requests": {"cpu": "250m"}, "limits": {"memory": "512Mi"}}
    patch, _ = defaults(
        "increase_memory", target=WEB, parameters={"container": "app", "resources": resources}
    )
    assert (patch.action, patch.params["type"], patch.params["target"]) == (
        "patch",
        "strategic",
        WEB,
    )
    assert patch.params["patch"] == {
        "spec": {"template": {"spec": {"containers": [{"name": "app", "resources": resources}]}}}
    }


def test_enabling_autoscaling_applies_an_hpa_for_the_target() -> None:
    apply, wait = defaults("enable_autoscaling", target=WEB, parameters={"maxReplicas": 6})
    hpa = apply.params["manifest"]
    assert (apply.action, hpa["kind"], hpa["metadata"]["name"]) == (
        "apply",
        "HorizontalPodAutoscaler",
        "web",
    )
    assert hpa["spec"]["scaleTargetRef"] == WEB
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 6)
    assert wait.action == "wait"


@pytest.mark.parametrize(
    ("action", "parameters", "missing"),
    [
        ("scale_up", {}, "spec.parameters.replicas"),
        ("rightsize", {"container": "app"}, "spec.parameters.resources"),
        ("enable_autoscaling", {}, "spec.parameters.maxReplicas"),
        ("migrate_to_spot", {}, "no default plan acts on a target for action migrate_to_spot"),
    ],
)
def test_a_cluster_action_without_what_it_needs_has_no_default_and_says_what_to_add(
    action: str, parameters: dict[str, Any], missing: str
) -> None:
    with pytest.raises(catalogue.NoDefaultPlanError, match=missing):
        defaults(action, target=WEB, parameters=parameters)
