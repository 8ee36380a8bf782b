"""The catalogue of default plans (RULES 5): which steps carry out an action."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from coordinator.api.common import RiskLevel
from coordinator.api.plan import Executor, Step
from coordinator.api.recommendation import RecommendationSpec
from coordinator.core import catalogue

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


def recommendation(action: str, steps: list[Step] | None = None) -> RecommendationSpec:
    return RecommendationSpec(
        customer_id="customer-1",
        agent_id="cost-agent-1",
        agent_type="cost",
        title="A change",
        action=action,
        risk_level=RiskLevel.LOW,
        steps=steps,
    )


def flags(steps: list[Step]) -> list[tuple[str, bool, bool]]:
    return [(s.name, s.critical, s.reversible) for s in steps]


def test_migrate_to_spot_is_the_origin_plan() -> None:
    assert flags(catalogue.default_steps("migrate_to_spot")) == [
        ("take_snapshot", True, True),
        ("migrate_workload", True, True),
        ("validate_quality", True, False),
    ]


@pytest.mark.parametrize("action", EXAMPLE_ACTIONS)
def test_example_actions_have_their_own_realistic_default(action: str) -> None:
    steps = catalogue.default_steps(action)
    assert catalogue.templates_for(action) is catalogue.DEFAULT_PLANS[action]
    assert 2 <= len(steps) <= 4
    assert len({s.name for s in steps}) == len(steps)
    assert all(s.name == s.action for s in steps)
    assert all(s.executor is Executor.SIMULATED and s.params == {} for s in steps)
    # Something reversible is done first, and the last step checks the result (cannot be undone).
    assert steps[0].reversible
    assert (steps[-1].critical, steps[-1].reversible) == (True, False)


def test_scale_down_records_capacity_before_removing_nodes() -> None:
    assert [s.name for s in catalogue.default_steps("scale_down")] == [
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
    assert [s.name for s in catalogue.default_steps(action)][1] == expected


def test_unknown_actions_get_the_generic_plan() -> None:
    assert flags(catalogue.default_steps("do_something_new")) == [
        ("prepare", True, True),
        ("apply", True, True),
        ("verify", True, False),
    ]


def test_plan_steps_prefers_the_recommendations_own_steps() -> None:
    own = [Step(name="only", action="custom_thing", critical=False, reversible=False)]
    assert catalogue.plan_steps(recommendation("migrate_to_spot", own)) == own


def test_plan_steps_falls_back_to_the_default_of_the_action() -> None:
    assert catalogue.plan_steps(recommendation("scale_up", None)) == catalogue.default_steps(
        "scale_up"
    )


def test_an_empty_step_list_is_refused_rather_than_taken_as_the_default() -> None:
    with pytest.raises(pydantic.ValidationError, match="at least 1 item"):
        recommendation("scale_up", [])


def test_each_call_returns_fresh_values() -> None:
    first = catalogue.default_steps("migrate_to_spot")
    params: dict[str, Any] = first[0].params
    params["fail"] = True
    first.pop()
    again = catalogue.default_steps("migrate_to_spot")
    assert len(again) == 3
    assert again[0].params == {}
