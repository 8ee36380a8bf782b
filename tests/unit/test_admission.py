"""Admission rules, without a cluster: stamps and refusals as the webhooks apply them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from coordinator.api.approval import Approval
from coordinator.api.recommendation import Recommendation
from coordinator.core import admission

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
BY = admission.DECIDED_BY_ANNOTATION
AT = admission.DECIDED_AT_ANNOTATION
SUBMITTED = admission.SUBMITTED_BY_ANNOTATION


def approval(
    decision: str = "Pending",
    *,
    annotations: dict[str, str] | None = None,
    phase: str | None = None,
    expires: datetime = NOW + timedelta(hours=1),
) -> Approval:
    body: dict[str, Any] = {
        "metadata": {"name": "rec-1", "annotations": annotations or {}},
        "spec": {
            "recommendation": "rec-1",
            "recommendationGeneration": 1,
            "customerId": "c",
            "riskLevel": "medium",
            "expiresAt": expires,
            "decision": decision,
        },
    }
    if phase:
        body["status"] = {"phase": phase}
    return Approval.model_validate(body)


def rec(
    *, priority: int = 0, annotations: dict[str, str] | None = None, phase: str | None = None
) -> Recommendation:
    body: dict[str, Any] = {
        "metadata": {"name": "rec-1", "annotations": annotations or {}},
        "spec": {
            "customerId": "c",
            "agentId": "a",
            "agentType": "cost",
            "title": "t",
            "action": "scale_down",
            "riskLevel": "medium",
            "priority": priority,
        },
    }
    if phase:
        body["status"] = {"phase": phase}
    return Recommendation.model_validate(body)


def test_a_decision_is_stamped_with_the_authenticated_user_and_the_time() -> None:
    stamps = admission.stamp_decision(
        old=approval(), new=approval("Approved", annotations={BY: "ceo"}), user="alice", now=NOW
    )
    assert stamps == {BY: "alice", AT: "2026-11-24T12:00:00Z"}


def test_stamps_cannot_be_changed_afterwards() -> None:
    old = approval("Approved", annotations={BY: "alice", AT: "2026-11-24T12:00:00Z"})
    new = approval("Approved", annotations={BY: "mallory"})
    assert admission.stamp_decision(old=old, new=new, user="mallory", now=NOW) == {
        BY: "alice",
        AT: "2026-11-24T12:00:00Z",
    }


def test_stamps_sent_with_a_new_approval_are_dropped() -> None:
    new = approval("Approved", annotations={BY: "mallory", AT: "x"})
    assert admission.stamp_decision(old=None, new=new, user="mallory", now=NOW) == {
        BY: None,
        AT: None,
    }


def test_no_stamp_without_a_decision() -> None:
    assert admission.stamp_decision(old=approval(), new=approval(), user="bob", now=NOW) == {}


def test_the_submitter_cannot_decide() -> None:
    reason = admission.check_decision(
        old=approval(), new=approval("Approved"), user="alice", submitter="alice", now=NOW
    )
    assert reason is not None
    assert "alice submitted or last changed recommendation rec-1" in reason
    assert (
        admission.check_decision(
            old=approval(), new=approval("Approved"), user="bob", submitter="alice", now=NOW
        )
        is None
    )


def test_an_expired_approval_cannot_be_decided_and_the_message_says_when() -> None:
    expired = approval(expires=NOW)
    reason = admission.check_decision(
        old=expired, new=approval("Rejected", expires=NOW), user="bob", submitter=None, now=NOW
    )
    assert reason == "approval rec-1 expired at 2026-11-24T12:00:00Z and can no longer be decided"


def test_a_withdrawn_approval_cannot_be_decided() -> None:
    reason = admission.check_decision(
        old=approval(phase="Withdrawn"), new=approval("Approved"), user="b", submitter=None, now=NOW
    )
    assert reason is not None
    assert "withdrawn" in reason


def test_submitter_is_recorded_on_spec_changes_only() -> None:
    assert admission.stamp_submitter(old=None, new=rec(), user="agent") == {SUBMITTED: "agent"}
    old = rec(annotations={SUBMITTED: "agent"})
    assert admission.stamp_submitter(old=old, new=rec(priority=5), user="bob") == {SUBMITTED: "bob"}
    same = rec(annotations={SUBMITTED: "forged"})
    assert admission.stamp_submitter(old=old, new=same, user="bob") == {SUBMITTED: "agent"}


def test_the_spec_is_frozen_while_executing() -> None:
    executing = rec(phase="Executing")
    assert admission.check_spec_change(old=executing, new=rec(priority=3)) is not None
    assert admission.check_spec_change(old=executing, new=rec()) is None
    assert admission.check_spec_change(old=rec(phase="Approved"), new=rec(priority=3)) is None


def test_missing_dependencies_are_warned_about() -> None:
    r = Recommendation.model_validate(
        {
            "metadata": {"name": "rec-2", "namespace": "team-a"},
            "spec": {
                "customerId": "c",
                "agentId": "a",
                "agentType": "cost",
                "title": "t",
                "action": "scale_down",
                "riskLevel": "low",
                "dependsOn": ["rec-1", "rec-9"],
            },
        }
    )
    assert admission.dependency_warnings(r, existing={"rec-1"}) == [
        "spec.dependsOn: recommendation rec-9 does not exist in namespace team-a; "
        "rec-2 stays Blocked until it does"
    ]


def test_the_registered_admission_handlers_are_the_webhooks_the_operator_configures() -> None:
    """Each webhook the operator registers with the API server has its handler, and only
    `register_admission` adds them (kopf refuses to start with handlers and no server)."""
    import kopf  # noqa: PLC0415 - the handlers' module needs kopf; the rest here does not

    from coordinator import app, handlers  # noqa: PLC0415

    assert not kopf.get_default_registry()._webhooks.get_all_handlers()
    registry = kopf.OperatorRegistry()
    handlers.register_admission(registry)
    registered = {
        (h.id, h.reason == "mutating", tuple(sorted(h.operations or ())))
        for h in registry._webhooks.get_all_handlers()
    }
    assert registered == {
        (hook.id, hook.mutating, tuple(sorted(hook.operations))) for hook in app.HOOKS
    }
