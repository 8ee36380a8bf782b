"""Admission rules, without a cluster: stamps and refusals as the webhooks apply them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

from coordinator.api.approval import Approval
from coordinator.api.recommendation import Recommendation
from coordinator.core import admission, policy

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
    required: int = 1,
    sets: list[dict[str, Any]] | None = None,
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
            "required": required,
            "approverSets": sets or [],
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


RESPONSES = policy.RESPONSES_ANNOTATION


def stamp(old: Approval | None, new: Approval, user: str, **kw: Any) -> admission.VoteOutcome:
    return admission.record_vote(
        old=old, new=new, user=user, groups=kw.pop("groups", ()), submitter=None, now=NOW, **kw
    )


def test_a_decision_is_stamped_with_the_authenticated_user_and_the_time() -> None:
    outcome = stamp(approval(), approval("Approved", annotations={BY: "ceo"}), "alice")
    assert outcome.refusal is None
    assert outcome.spec == {}
    assert outcome.annotations[BY] == "alice"
    assert outcome.annotations[AT] == "2026-11-24T12:00:00Z"
    assert [v.user for v in policy.read_votes(outcome.annotations[RESPONSES])] == ["alice"]


def test_stamps_cannot_be_changed_afterwards() -> None:
    old = approval("Approved", annotations={BY: "alice", AT: "2026-11-24T12:00:00Z"})
    new = approval("Approved", annotations={BY: "mallory", RESPONSES: "[]"})
    assert stamp(old, new, "mallory").annotations == {
        BY: "alice",
        AT: "2026-11-24T12:00:00Z",
        RESPONSES: None,
    }


def test_stamps_sent_with_a_new_approval_are_dropped() -> None:
    new = approval("Approved", annotations={BY: "mallory", AT: "x"})
    assert stamp(None, new, "mallory").annotations == {BY: None, AT: None}


def test_no_stamp_without_a_decision() -> None:
    assert stamp(approval(), approval(), "bob").annotations == {}


SETS = [{"policy": "p", "approvers": [{"group": "sre"}, {"user": "alice"}]}]


def test_two_of_three_through_the_same_patch() -> None:
    first = stamp(approval(required=2, sets=SETS), approval("Approved", required=2, sets=SETS),
                  "alice")  # fmt: skip
    assert first.refusal is None
    assert first.spec == {"decision": "Pending"}  # not decided yet: the next one patches too
    assert "still needed: 1 more of 2 approvals" in (first.warning or "")
    votes = first.annotations[RESPONSES]
    assert votes is not None
    after_first = approval(required=2, sets=SETS, annotations={RESPONSES: votes})
    again = stamp(after_first, approval("Approved", required=2, sets=SETS), "alice")
    assert again.spec == {"decision": "Pending"}
    assert "counts once" in (again.warning or "")
    outsider = stamp(after_first, approval("Approved", required=2, sets=SETS), "mallory")
    assert outsider.refusal == (
        "mallory may not decide approval rec-1: the approvers are group sre or user alice "
        "(policy p)"
    )
    second = stamp(after_first, approval("Approved", required=2, sets=SETS), "bob", groups=("sre",))
    assert second.spec == {}
    assert second.annotations[BY] == "alice, bob"


def test_the_first_rejection_rejects() -> None:
    outcome = stamp(approval(required=3), approval("Rejected", required=3), "bob")
    assert outcome.spec == {}
    assert outcome.annotations[BY] == "bob"


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


def test_every_webhook_the_operator_registers_has_its_hook() -> None:
    """Each webhook the operator registers with the API server has its hook, and no
    other hook is served."""
    from coordinator import app, handlers  # noqa: PLC0415 - the shell; the rest here is pure

    operator = cast(app.Operator, object())
    assert set(handlers.admission(operator)) == {hook.id for hook in app.HOOKS}
