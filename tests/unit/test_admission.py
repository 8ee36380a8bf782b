"""Admission rules, without a cluster: stamps and refusals as the webhooks apply them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

from coordinator.api.approval import Approval
from coordinator.api.endpoint import AgentEndpointSpec
from coordinator.api.plan import Executor, Step
from coordinator.api.recommendation import Recommendation
from coordinator.core import admission, catalogue, policy
from tests.support import builders

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
BY = admission.DECIDED_BY_ANNOTATION
AT = admission.DECIDED_AT_ANNOTATION
SUBMITTED = admission.SUBMITTED_BY_ANNOTATION
GROUPS = admission.SUBMITTED_GROUPS_ANNOTATION


def asked(
    decision: str = "Pending",
    *,
    annotations: dict[str, str] | None = None,
    phase: str | None = None,
    **spec: Any,
) -> Approval:
    """The Approval of rec-1 as a webhook reads it, expiring an hour after NOW."""
    return Approval.model_validate(
        builders.approval(
            metadata={"annotations": annotations or {}},
            status={"phase": phase} if phase else None,
            **({"expiresAt": NOW + timedelta(hours=1), "decision": decision} | spec),
        )
    )


def proposed(
    *, annotations: dict[str, str] | None = None, phase: str | None = None, **spec: Any
) -> Recommendation:
    """Recommendation rec-1 (scale_down) as a webhook reads it."""
    return Recommendation.model_validate(
        builders.recommendation(
            metadata={"annotations": annotations or {}},
            status={"phase": phase} if phase else None,
            **({"action": "scale_down"} | spec),
        )
    )


RESPONSES = policy.RESPONSES_ANNOTATION


def stamp(old: Approval | None, new: Approval, user: str, **kw: Any) -> admission.VoteOutcome:
    return admission.record_vote(
        old=old, new=new, user=user, groups=kw.pop("groups", ()), submitter=None, now=NOW, **kw
    )


def test_a_decision_is_stamped_with_the_authenticated_user_and_the_time() -> None:
    outcome = stamp(asked(), asked("Approved", annotations={BY: "ceo"}), "alice")
    assert outcome.refusal is None
    assert outcome.spec == {}
    assert outcome.annotations[BY] == "alice"
    assert outcome.annotations[AT] == "2026-11-24T12:00:00Z"
    assert [v.user for v in policy.read_votes(outcome.annotations[RESPONSES])] == ["alice"]


def test_stamps_cannot_be_changed_afterwards() -> None:
    old = asked("Approved", annotations={BY: "alice", AT: "2026-11-24T12:00:00Z"})
    new = asked("Approved", annotations={BY: "mallory", RESPONSES: "[]"})
    assert stamp(old, new, "mallory").annotations == {
        BY: "alice",
        AT: "2026-11-24T12:00:00Z",
        RESPONSES: None,
    }


def test_stamps_sent_with_a_new_approval_are_dropped() -> None:
    new = asked("Approved", annotations={BY: "mallory", AT: "x"})
    assert stamp(None, new, "mallory").annotations == {BY: None, AT: None}


def test_no_stamp_without_a_decision() -> None:
    assert stamp(asked(), asked(), "bob").annotations == {}


SETS = [{"policy": "p", "approvers": [{"group": "sre"}, {"user": "alice"}]}]


def test_two_of_three_through_the_same_patch() -> None:
    first = stamp(asked(required=2, approverSets=SETS),
                  asked("Approved", required=2, approverSets=SETS), "alice")  # fmt: skip
    assert first.refusal is None
    assert first.spec == {"decision": "Pending"}  # not decided yet: the next one patches too
    assert "still needed: 1 more of 2 approvals" in (first.warning or "")
    votes = first.annotations[RESPONSES]
    assert votes is not None
    after_first = asked(required=2, approverSets=SETS, annotations={RESPONSES: votes})
    again = stamp(after_first, asked("Approved", required=2, approverSets=SETS), "alice")
    assert again.spec == {"decision": "Pending"}
    assert "counts once" in (again.warning or "")
    outsider = stamp(after_first, asked("Approved", required=2, approverSets=SETS), "mallory")
    assert outsider.refusal == (
        "mallory may not decide approval rec-1: the approvers are group sre or user alice "
        "(policy p)"
    )
    second = stamp(
        after_first, asked("Approved", required=2, approverSets=SETS), "bob", groups=("sre",)
    )
    assert second.spec == {}
    assert second.annotations[BY] == "alice, bob"


def test_the_first_rejection_rejects() -> None:
    outcome = stamp(asked(required=3), asked("Rejected", required=3), "bob")
    assert outcome.spec == {}
    assert outcome.annotations[BY] == "bob"


def test_the_submitter_cannot_decide() -> None:
    reason = admission.check_decision(
        old=asked(), new=asked("Approved"), user="alice", submitter="alice", now=NOW
    )
    assert reason is not None
    assert "alice submitted or last changed recommendation rec-1" in reason
    assert (
        admission.check_decision(
            old=asked(), new=asked("Approved"), user="bob", submitter="alice", now=NOW
        )
        is None
    )


def test_an_expired_approval_cannot_be_decided_and_the_message_says_when() -> None:
    expired = asked(expiresAt=NOW)
    reason = admission.check_decision(
        old=expired, new=asked("Rejected", expiresAt=NOW), user="bob", submitter=None, now=NOW
    )
    assert reason == "approval rec-1 expired at 2026-11-24T12:00:00Z and can no longer be decided"


def test_a_withdrawn_approval_cannot_be_decided() -> None:
    reason = admission.check_decision(
        old=asked(phase="Withdrawn"), new=asked("Approved"), user="b", submitter=None, now=NOW
    )
    assert reason is not None
    assert "withdrawn" in reason


def submit(old: Recommendation | None, new: Recommendation, user: str) -> admission.Annotations:
    return admission.stamp_submitter(
        old_spec=old.spec.to_wire() if old else None,
        new_spec=new.spec.to_wire(),
        old_annotations=old.metadata.annotations if old else None,
        new_annotations=new.metadata.annotations,
        user=user,
        groups=["agents", "system:authenticated"],
    )


def test_submitter_is_recorded_on_spec_changes_only() -> None:
    groups = '["agents", "system:authenticated"]'
    assert submit(None, proposed(), "agent") == {SUBMITTED: "agent", GROUPS: groups}
    old = proposed(annotations={SUBMITTED: "agent", GROUPS: "[]"})
    assert submit(old, proposed(priority=5), "bob") == {SUBMITTED: "bob", GROUPS: groups}
    same = proposed(annotations={SUBMITTED: "forged", GROUPS: '["system:masters"]'})
    assert submit(old, same, "bob") == {SUBMITTED: "agent", GROUPS: "[]"}


def test_an_unstamped_recommendation_is_stamped_by_any_update() -> None:
    """Stored without the stamps (webhooks not in force then): whoever updates it next,
    even without a spec change, is stamped as its submitter (and checked as one)."""
    unstamped = proposed()
    assert submit(unstamped, proposed(), "agent")[SUBMITTED] == "agent"
    assert admission.resubmitted(unstamped.spec, unstamped.spec, {})
    assert not admission.resubmitted(unstamped.spec, unstamped.spec, {SUBMITTED: "agent"})
    assert admission.submitter_groups({GROUPS: '["a", "b"]'}) == ["a", "b"]
    assert admission.submitter_groups({GROUPS: "not json"}) == []


def test_no_decision_on_an_unstamped_recommendation() -> None:
    reason = admission.check_decision(
        old=asked(), new=asked("Approved"), user="b", submitter=None, now=NOW, stamped=False
    )
    assert reason is not None
    assert "not stamped by the admission webhooks" in reason
    assert "re-applies it" in reason
    outcome = admission.record_vote(
        old=asked(),
        new=asked("Approved"),
        user="b",
        groups=(),
        submitter=None,
        now=NOW,
        stamped=False,
    )
    assert outcome.refusal == reason


# --- AgentEndpoint submitters -------------------------------------------------------------


def submitted_by(submitters: list[dict[str, Any]] | None) -> AgentEndpointSpec:
    """The spec of an AgentEndpoint listing `submitters` (None: the field left out)."""
    return AgentEndpointSpec.model_validate(builders.endpoint(submitters=submitters)["spec"])


def webhook_rec(agent: str = "infra-agent") -> Recommendation:
    """A low-risk resize_database of `agent` in team-a: its default plan is a webhook step."""
    return Recommendation.model_validate(
        builders.recommendation(
            namespace="team-a", agentId=agent, action="resize_database", riskLevel="low"
        )
    )


def test_a_missing_endpoint_never_refuses_a_recommendation() -> None:
    r = webhook_rec()
    steps = catalogue.plan_steps(r.spec)
    assert admission.webhook_endpoints(steps) == {"infra-agent"}
    assert (
        admission.endpoint_problem(
            r, steps, endpoints={"infra-agent": None}, user="cost-agent", groups=[]
        )
        is None
    )


def test_an_endpoint_takes_steps_only_of_its_submitters() -> None:
    """cost-agent may not have the operator call infra-agent's endpoint for it."""
    r = webhook_rec()
    steps = catalogue.plan_steps(r.spec)
    infra = submitted_by(
        [
            {"user": "infra-agent"},
            {"group": "infra-team"},
            {"serviceAccount": {"name": "infra", "namespace": "agents"}},
        ]
    )

    def problem(user: str, groups: list[str]) -> str | None:
        endpoints = {"infra-agent": infra}
        return admission.endpoint_problem(r, steps, endpoints=endpoints, user=user, groups=groups)

    refused = problem("cost-agent", ["agents"])
    assert refused is not None
    assert "cost-agent may not send steps to AgentEndpoint infra-agent of namespace team-a" in (
        refused
    )
    assert "user infra-agent, group infra-team, serviceAccount agents/infra" in refused
    assert problem("infra-agent", []) is None
    assert problem("someone", ["infra-team"]) is None
    assert problem("system:serviceaccount:agents:infra", []) is None
    assert problem("system:serviceaccount:other:infra", []) is not None


def test_a_webhook_step_without_an_endpoint_is_refused() -> None:
    steps = [
        Step(name="snap", action="take_snapshot", executor=Executor.SIMULATED),
        Step(name="resize", action="x", executor=Executor.WEBHOOK, params={"endpoint": "a"}),
        Step(name="bare", action="x", executor=Executor.WEBHOOK, params={}),
    ]
    reason = admission.check_webhook_steps(steps, namespace="team-a") or ""
    assert "spec.steps[2].params.endpoint: webhook step bare must name" in reason
    assert "steps[1]" not in reason
    assert admission.check_webhook_steps(steps[:2], namespace="team-a") is None


def test_an_endpoint_without_submitters_needs_a_person() -> None:
    """One not there yet is judged when the plan would start (it waits for it)."""
    steps = catalogue.plan_steps(webhook_rec().spec)
    assert admission.endpoint_deputy(steps, endpoints={"infra-agent": None}) is None
    open_ = admission.endpoint_deputy(steps, endpoints={"infra-agent": submitted_by(None)})
    assert open_ is not None
    assert "only with a person's approval (it lists no submitters)" in open_
    listed = submitted_by([{"user": "infra-agent"}])
    assert admission.endpoint_deputy(steps, endpoints={"infra-agent": listed}) is None


def test_a_plan_waits_for_its_endpoint_and_for_whom_it_takes() -> None:
    steps = catalogue.plan_steps(webhook_rec().spec)

    def wait(spec: AgentEndpointSpec | None, *, person: bool, user: str = "cost") -> str | None:
        return admission.endpoint_wait(
            steps,
            namespace="team-a",
            endpoints={"infra-agent": spec},
            submitter=user,
            groups=[],
            person_approved=person,
        )

    missing = wait(None, person=True)
    assert missing is not None
    assert "waiting for AgentEndpoint infra-agent to be registered in namespace team-a" in missing
    assert wait(submitted_by(None), person=True) is None
    by_policy = wait(submitted_by(None), person=False)
    assert by_policy is not None
    assert "takes only plans a person approved" in by_policy
    excluded = wait(submitted_by([{"user": "infra"}]), person=True)
    assert excluded is not None
    assert "does not take steps of cost" in excluded
    assert wait(submitted_by([{"user": "cost"}]), person=False) is None


def test_the_spec_is_frozen_while_executing() -> None:
    executing = proposed(phase="Executing")
    assert admission.check_spec_change(old=executing, new=proposed(priority=3)) is not None
    assert admission.check_spec_change(old=executing, new=proposed()) is None
    assert (
        admission.check_spec_change(old=proposed(phase="Approved"), new=proposed(priority=3))
        is None
    )


def test_missing_dependencies_are_warned_about() -> None:
    r = Recommendation.model_validate(
        builders.recommendation(
            "rec-2", namespace="team-a", riskLevel="low", dependsOn=["rec-1", "rec-9"]
        )
    )
    assert admission.dependency_warnings(r, existing={"rec-1"}) == [
        "spec.dependsOn: recommendation rec-9 does not exist in namespace team-a; "
        "rec-2 stays Blocked until it does"
    ]


def test_every_webhook_the_operator_registers_has_its_hook() -> None:
    """Each webhook the operator registers with the API server has its hook, and no
    other hook is served."""
    from coordinator import app, handlers  # noqa: PLC0415 - the shell; the rest here is pure
    from coordinator.parts.facts import Facts  # noqa: PLC0415

    operator = cast(Facts, object())
    assert set(handlers.admission(operator)) == {hook.id for hook in app.HOOKS}
