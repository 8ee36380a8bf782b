"""Event names: one per transition, the same every time it is computed."""

from __future__ import annotations

import re

from coordinator.api.plan import ExecutionPlanStatus, PlanPhase, StepPhase, StepStatus
from coordinator.core.planevents import implied_events, transition_events
from coordinator.k8s.events import NAME_LIMIT, event_name

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def test_the_same_transition_gets_the_same_name() -> None:
    first = event_name("rec-1", "uid-1", "StepSucceeded", "step|a|Succeeded")
    assert first == event_name("rec-1", "uid-1", "StepSucceeded", "step|a|Succeeded")
    assert first.startswith("rec-1.")


def test_different_transitions_get_different_names() -> None:
    names = {
        event_name("rec-1", "uid-1", "StepSucceeded", "step|a|Succeeded"),
        event_name("rec-1", "uid-1", "StepSucceeded", "step|b|Succeeded"),
        event_name("rec-1", "uid-1", "StepRolledBack", "step|a|RolledBack"),
        event_name("rec-1", "uid-1", "StepFailed", "step|a|Failed"),
        event_name("rec-1", "uid-1", "PlanStarted", "phase|Running"),
        event_name("rec-1", "uid-1", "Succeeded", "phase|Succeeded"),
        event_name("rec-1", "uid-2", "StepSucceeded", "step|a|Succeeded"),  # a new object
        event_name("rec-1", "uid-1", "Approved", "41|"),
        event_name("rec-1", "uid-1", "Approved", "42|"),
    }
    assert len(names) == 9


def test_names_are_dns_subdomains_of_at_most_253_characters() -> None:
    for object_name in ("a", "rec-1", "x" * 63, "a." * 120 + "b", "y" * 253, "z" * 236 + "-"):
        name = event_name(object_name, "uid", "StepSucceeded", "step|a|Succeeded")
        assert len(name) <= NAME_LIMIT, name
        assert DNS_SUBDOMAIN.match(name), name


def test_plan_events_are_keyed_by_step_and_phase() -> None:
    old = ExecutionPlanStatus(
        phase=PlanPhase.RUNNING,
        steps=[StepStatus(name="a", phase=StepPhase.RUNNING), StepStatus(name="b")],
    )
    new = old.model_copy(
        update={
            "steps": [StepStatus(name="a", phase=StepPhase.SUCCEEDED), StepStatus(name="b")],
        }
    )
    assert [(e.reason, e.key) for e in transition_events(old, new)] == [
        ("StepSucceeded", "step|a|Succeeded")
    ]
    # What a stored status implies includes that same event (a replay finds it posted).
    assert ("StepSucceeded", "step|a|Succeeded") in [(e.reason, e.key) for e in implied_events(new)]
