"""Admission rules: who may decide, what may change, what the API server records.

The operator's admission webhooks call these functions with the request as the API
server saw it: the authenticated user (never a name the client claims), the object
before and after. Mutations return the annotations to set; validations return the
reason to refuse, or None. A decision is stamped with the deciding user and time in
annotations that no client can write, and the operator copies them into the
Approval's status (which approvers cannot write at all). A webhook step must name an
AgentEndpoint; one that exists must list the submitter among its ``submitters``. A
VerificationTemplate's CEL conditions must compile and its queries use only the known
placeholders (``template_problem``).

Pure: no I/O, no clock (``now`` is passed in), no kopf, no kubernetes client.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from coordinator.api.approval import Approval, ApprovalPhase, Decision
from coordinator.api.common import (
    DECIDED_AT_ANNOTATION,
    DECIDED_BY_ANNOTATION,
    SUBMITTED_BY_ANNOTATION,
    SUBMITTED_GROUPS_ANNOTATION,
    SUBMITTER_MAY_NOT_ANNOTATION,
    format_time,
)
from coordinator.api.endpoint import AgentEndpointSpec
from coordinator.api.plan import Executor, Step
from coordinator.api.recommendation import Recommendation, RecommendationPhase
from coordinator.api.verification import VerificationTemplate
from coordinator.core import approval as approval_
from coordinator.core import catalogue, steps, verification
from coordinator.core import policy as policy_

Annotations = dict[str, str | None]
"""Annotations to set (a value) or remove (None)."""


def _keep(old: Mapping[str, str], new: Mapping[str, str], keys: Collection[str]) -> Annotations:
    """Undo any change a client made to `keys`: put back the old values, drop new ones."""
    changes: Annotations = {}
    for key in keys:
        if new.get(key) != old.get(key):
            changes[key] = old.get(key)
    return changes


def approver_sets(approval: Approval) -> list[policy_.ApproverSet]:
    """The approver lists an approval carries (from the policies that applied)."""
    return [policy_.ApproverSet(s.policy, tuple(s.approvers)) for s in approval.spec.approver_sets]


@dataclasses.dataclass(frozen=True, slots=True)
class VoteOutcome:
    """What the admission webhook does with an update of an Approval: refuse it, or record
    the annotations (and, for a vote that does not decide yet, put the decision back to
    Pending: ``spec``)."""

    refusal: str | None = None
    annotations: Annotations = dataclasses.field(default_factory=dict)
    spec: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Fields of spec to set (camelCase), e.g. ``{"decision": "Pending"}``."""
    warning: str | None = None


def record_vote(
    *,
    old: Approval | None,
    new: Approval,
    user: str,
    groups: Sequence[str],
    submitter: str | None,
    now: datetime,
    stamped: bool = True,
) -> VoteOutcome:
    """N-of-M: every eligible person decides with the same patch of spec.decision.

    A vote (decision set from Pending) is refused when the approval cannot be decided
    (withdrawn, expired), the voter submitted the recommendation, or is not among the
    approvers (the message says who may decide). Otherwise it is recorded, with the
    user and groups of the authenticated request, in the responses annotation; if it
    completes the approval (``required`` distinct eligible people approved and every
    approver list has an approving member) or rejects it, the decision stands and the
    deciders are stamped; if not, the decision is put back to Pending so the next
    approver can patch it the same way. A second vote by the same person counts once.
    Any other update keeps the webhook's annotations as they were.
    """
    if old is None:
        stamps = (DECIDED_BY_ANNOTATION, DECIDED_AT_ANNOTATION, policy_.RESPONSES_ANNOTATION)
        return VoteOutcome(annotations={k: None for k in stamps if k in new.metadata.annotations})
    keys = (DECIDED_BY_ANNOTATION, DECIDED_AT_ANNOTATION, policy_.RESPONSES_ANNOTATION)
    kept = _keep(old.metadata.annotations, new.metadata.annotations, keys)
    deciding = old.spec.decision is Decision.PENDING and new.spec.decision is not Decision.PENDING
    if not deciding:
        return VoteOutcome(annotations=kept)
    refusal = check_decision(
        old=old, new=new, user=user, submitter=submitter, now=now, stamped=stamped
    )
    if refusal:
        return VoteOutcome(refusal=refusal)
    sets = approver_sets(new)
    name = new.metadata.name
    if not policy_.eligible(user, groups, sets):
        return VoteOutcome(
            refusal=f"{user} may not decide approval {name}: the approvers are "
            f"{policy_.who_may_decide(sets)}"
        )
    votes = policy_.read_votes(old.metadata.annotations.get(policy_.RESPONSES_ANNOTATION))
    back = _back_to_pending(old, new)
    required = new.spec.required
    if any(v.user == user for v in votes):
        counted = policy_.tally(votes, required=required, sets=sets, submitter=submitter)
        return VoteOutcome(
            annotations=kept,
            spec=back,
            warning=f"{user} approved approval {name} already; a person counts once "
            f"(still needed: {counted.missing})",
        )
    vote = policy_.Vote(user, tuple(groups), new.spec.decision.value, new.spec.reason, now)
    votes.append(vote)
    result = policy_.tally(votes, required=required, sets=sets, submitter=submitter)
    annotations: Annotations = {**kept, policy_.RESPONSES_ANNOTATION: policy_.write_votes(votes)}
    if result.outcome == "Pending":
        return VoteOutcome(
            annotations=annotations,
            spec=back,
            warning=f"approval of {name} by {user} recorded; still needed: {result.missing}",
        )
    deciders = user if result.outcome == "Rejected" else ", ".join(result.approvers)
    annotations[DECIDED_BY_ANNOTATION] = deciders
    annotations[DECIDED_AT_ANNOTATION] = format_time(now)
    return VoteOutcome(annotations=annotations)


def _back_to_pending(old: Approval, new: Approval) -> dict[str, Any]:
    """The spec fields that undo a vote that did not decide: decision Pending, and the
    reason as it was (the vote's reason is in its response)."""
    back: dict[str, Any] = {"decision": Decision.PENDING.value}
    if new.spec.reason != old.spec.reason:
        back["reason"] = old.spec.reason
    return back


def check_decision(
    *,
    old: Approval,
    new: Approval,
    user: str,
    submitter: str | None,
    now: datetime,
    stamped: bool = True,
) -> str | None:
    """Why this update of an Approval must be refused, or None. `stamped`: whether the
    recommendation carries the admission webhooks' stamps (an unstamped one is never
    decided: nobody knows who submitted it, so nobody can be kept from approving their
    own)."""
    if old.spec.decision is not Decision.PENDING or new.spec.decision is Decision.PENDING:
        return None  # not a decision (a decided one cannot change: the CRD's rule says so)
    name = new.metadata.name
    phase = old.status.phase if old.status else ApprovalPhase.PENDING
    if phase is ApprovalPhase.WITHDRAWN:
        return (
            f"approval {name} was withdrawn (its recommendation was superseded, blocked or "
            "changed) and can no longer be decided; a new approval is requested when it is "
            "kept again"
        )
    if phase is ApprovalPhase.EXPIRED or now >= new.spec.expires_at:
        return (
            f"approval {name} expired at {format_time(new.spec.expires_at)} and can no "
            "longer be decided"
        )
    if not stamped:
        rec = new.spec.recommendation
        return (
            f"recommendation {rec} was not stamped by the admission webhooks (who submitted it "
            f"is unknown), so approval {name} cannot be decided: {approval_.resubmit_hint(rec)}; "
            "then another person decides"
        )
    if submitter is not None and submitter == user:
        return (
            f"{user} submitted or last changed recommendation {new.spec.recommendation} and "
            "cannot decide its approval: another person must"
        )
    return None


def stamp_submitter(
    *,
    old_spec: Any,
    new_spec: Any,
    old_annotations: Mapping[str, str] | None,
    new_annotations: Mapping[str, str],
    user: str,
    groups: Sequence[str],
) -> Annotations:
    """Record who submitted the spec (user and groups, as the API server authenticated
    them): on create, on every spec change, and on any update of an object stored without
    the stamp (whoever updates it answers for it now); else keep what was recorded. On the
    wire form of the spec, so that an object the models cannot read is stamped all the
    same."""
    keys = (SUBMITTED_BY_ANNOTATION, SUBMITTED_GROUPS_ANNOTATION)
    if resubmitted(old_spec, new_spec, old_annotations):
        stamps = {
            SUBMITTED_BY_ANNOTATION: user,
            SUBMITTED_GROUPS_ANNOTATION: json.dumps(list(groups)),
        }
        return {k: v for k, v in stamps.items() if new_annotations.get(k) != v}
    assert old_annotations is not None
    return _keep(old_annotations, new_annotations, keys)


def resubmitted(old_spec: Any, new_spec: Any, old_annotations: Mapping[str, str] | None) -> bool:
    """Whether an admission request submits the spec anew (and is stamped and checked as a
    submission): a create, a spec change, or an update of an unstamped object."""
    return (
        old_annotations is None
        or old_spec != new_spec
        or not old_annotations.get(SUBMITTED_BY_ANNOTATION)
    )


def submitter_groups(annotations: Mapping[str, str]) -> list[str]:
    """The submitter's groups as stamped (empty when not stamped or unreadable)."""
    try:
        groups = json.loads(annotations.get(SUBMITTED_GROUPS_ANNOTATION) or "[]")
    except ValueError:
        return []
    return [str(g) for g in groups] if isinstance(groups, list) else []


def check_spec_change(*, old: Recommendation, new: Recommendation) -> str | None:
    """A recommendation's spec is frozen while its plan runs: what runs is what was approved."""
    if old.spec == new.spec or old.phase is not RecommendationPhase.EXECUTING:
        return None
    return (
        f"recommendation {new.name} is executing its plan; its spec cannot change until the "
        f"plan ends (to stop it: kubectl patch executionplan {new.name} --type merge "
        """-p '{"spec":{"abort":true}}')"""
    )


def dependency_warnings(rec: Recommendation, *, existing: Collection[str]) -> list[str]:
    """Warnings for dependsOn names that are not (yet) recommendations of the namespace."""
    return [
        f"spec.dependsOn: recommendation {name} does not exist in namespace "
        f"{rec.metadata.namespace}; {rec.name} stays Blocked until it does"
        for name in rec.spec.depends_on
        if name not in existing
    ]


def plan_problem(rec: Recommendation) -> str | None:
    """Why no plan can carry the recommendation out (no steps and no default), or None."""
    try:
        catalogue.plan_steps(rec.spec)
    except catalogue.NoDefaultPlanError as exc:
        return f"recommendation {rec.name} has no plan: {exc}"
    return None


def template_problem(template: VerificationTemplate) -> str | None:
    """Why a VerificationTemplate is refused (each problem naming its field: a CEL condition
    that does not compile or reads other names, an unknown or unclosed query placeholder),
    or None. The API server's schema cannot compile CEL held in a string."""
    problems = verification.template_problems(template.spec)
    if not problems:
        return None
    return f"VerificationTemplate {template.metadata.name}: " + "; ".join(problems)


@dataclasses.dataclass(frozen=True, slots=True)
class Access:
    """A change a plan step makes in the cluster, as an access review asks about it."""

    step: str
    verb: str
    api_version: str
    kind: str
    name: str
    subresource: str = ""

    def text(self) -> str:
        what = f"{self.kind} {self.name}" + (f" ({self.subresource})" if self.subresource else "")
        return f"{self.verb} {what} (step {self.step})"


def cluster_accesses(steps: Sequence[Step]) -> list[Access]:
    """What the kubernetes steps of a plan would do, for the access review of the submitter
    (the operator must not do for anybody what they may not do themselves)."""
    accesses = []
    for step in steps:
        if step.executor is not Executor.KUBERNETES:
            continue
        params = step.params
        target = params.get("target")
        api_version, kind, name = _target(target if isinstance(target, dict) else None, params)
        match step.action:
            case "scale" | "scale_workload":
                accesses.append(Access(step.name, "patch", api_version, kind, name, "scale"))
            case "patch":
                accesses.append(Access(step.name, "patch", api_version, kind, name))
            case "apply":  # its undo deletes what it created: both are the submitter's acts
                manifest = _object(params.get("manifest"))
                meta = _object(manifest.get("metadata"))
                for verb in ("create", "delete"):
                    accesses.append(
                        Access(
                            step.name,
                            verb,
                            str(manifest.get("apiVersion") or ""),
                            str(manifest.get("kind") or ""),
                            str(meta.get("name") or ""),
                        )
                    )
            case "wait":
                accesses.append(Access(step.name, "get", api_version, kind, name))
    return [a for a in accesses if a.api_version and a.kind]


def _object(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _target(target: Mapping[str, Any] | None, params: Mapping[str, Any]) -> tuple[str, str, str]:
    if target is not None:
        return (
            str(target.get("apiVersion") or ""),
            str(target.get("kind") or ""),
            str(target.get("name") or ""),
        )
    return "apps/v1", str(params.get("kind") or "Deployment"), str(params.get("name") or "")


def stamp_deputy(
    *, old: Recommendation | None, new: Recommendation, denied: str | None
) -> Annotations:
    """On create and on every spec change: record what the submitter may not do themselves
    (`denied`, from the access reviews), or clear it; otherwise keep what was recorded."""
    old_annotations = old.metadata.annotations if old is not None else None
    if resubmitted(old.spec if old else None, new.spec, old_annotations):
        if new.metadata.annotations.get(SUBMITTER_MAY_NOT_ANNOTATION) == denied:
            return {}
        return {SUBMITTER_MAY_NOT_ANNOTATION: denied}
    keys = (SUBMITTER_MAY_NOT_ANNOTATION,)
    assert old is not None
    return _keep(old.metadata.annotations, new.metadata.annotations, keys)


# --- webhook steps: whose steps an AgentEndpoint takes ------------------------------------
#
# A missing endpoint never refuses a recommendation (conflicts, decisions and approvals do
# not need it; its plan waits for it). What admission can know it refuses: a webhook step
# of spec.steps without params.endpoint, and an existing endpoint whose submitters exclude
# the submitter.


def webhook_endpoints(steps: Sequence[Step]) -> set[str]:
    """The AgentEndpoint names the webhook steps of `steps` use (to look up before checking)."""
    return {
        name
        for step in steps
        if step.executor is Executor.WEBHOOK
        and isinstance(name := step.params.get("endpoint"), str)
        and name
    }


def check_webhook_steps(steps: Sequence[Step], *, namespace: str) -> str | None:
    """Why the webhook steps of `steps` (``spec.steps``) must be refused, or None: each one
    names, in params.endpoint, an AgentEndpoint of `namespace`."""
    problems = [
        f"spec.steps[{index}].params.endpoint: webhook step {step.name} must name an "
        f"AgentEndpoint of namespace {namespace} (a recommendation never carries a URL)"
        for index, step in enumerate(steps)
        if step.executor is Executor.WEBHOOK
        and not (isinstance(name := step.params.get("endpoint"), str) and name)
    ]
    return "; ".join(problems) or None


def endpoint_problem(
    rec: Recommendation,
    steps: Sequence[Step],
    *,
    endpoints: Mapping[str, AgentEndpointSpec | None],
    user: str,
    groups: Sequence[str],
) -> str | None:
    """Why `rec` (submitted by `user` in `groups`) must be refused for the webhook steps of
    its plan (`steps`), or None. `endpoints`: the AgentEndpoints those steps name, None for
    one that does not exist (yet: never a refusal)."""
    if rec.spec.steps:
        problem = check_webhook_steps(steps, namespace=rec.metadata.namespace)
        if problem:
            return problem
    refused = [
        name
        for name in sorted(webhook_endpoints(steps))
        if (endpoint := endpoints.get(name)) is not None and endpoint.admits(user, groups) is False
    ]
    if not refused:
        return None
    name = refused[0]
    endpoint = endpoints[name]
    assert endpoint is not None
    return (
        f"{user} may not send steps to AgentEndpoint {name} of namespace "
        f"{rec.metadata.namespace}: its submitters are {endpoint.submitters_text()} "
        f"(spec.agentId {rec.spec.agent_id}"
        + (", spec.steps" if rec.spec.steps else ", the default plan of " + rec.spec.action)
        + ")"
    )


def endpoint_deputy(
    steps: Sequence[Step], *, endpoints: Mapping[str, AgentEndpointSpec | None]
) -> str | None:
    """What makes a person's approval necessary for the webhook steps of a plan, in the
    words of the submitter-may-not stamp, or None: an endpoint that lists no submitters
    takes only plans a person approved. (One that does not exist yet is judged when the
    plan would start: `endpoint_wait`.)"""
    problems = [
        f"may send steps to AgentEndpoint {name} only with a person's approval "
        "(it lists no submitters)"
        for name in sorted(webhook_endpoints(steps))
        if (endpoint := endpoints.get(name)) is not None and endpoint.admits(None, ()) is None
    ]
    return "; ".join(problems) or None


def endpoint_wait(
    steps: Sequence[Step],
    *,
    namespace: str,
    endpoints: Mapping[str, AgentEndpointSpec | None],
    submitter: str | None,
    groups: Sequence[str],
    person_approved: bool,
) -> str | None:
    """Why an approved plan with these `steps` may not start yet for its webhook steps, or
    None: each AgentEndpoint they name must exist (an admin registers it: the plan starts
    then) and take the submitter's steps; one without submitters only a person's approval.
    Checked again at the start because an endpoint may be created or changed after the
    recommendation was admitted."""
    for name in sorted(webhook_endpoints(steps)):
        endpoint = endpoints.get(name)
        if endpoint is None:
            return (
                f"waiting for AgentEndpoint {name} to be registered in namespace {namespace} "
                "(an approver or admin creates it; the plan starts then)"
            )
        admits = endpoint.admits(submitter, groups)
        if admits is None and not person_approved:
            return (
                f"waiting: AgentEndpoint {name} lists no submitters, so it takes only plans a "
                "person approved, and this one was approved by policy (an admin adds the "
                "submitter to its submitters)"
            )
        if admits is False:
            return (
                f"waiting: AgentEndpoint {name} does not take steps of "
                f"{submitter or 'an unknown submitter'} (its submitters are "
                f"{endpoint.submitters_text()})"
            )
    return None


def step_problems(
    *,
    old: Recommendation | None,
    new: Recommendation,
    kinds: frozenset[str] = steps.DEFAULT_KINDS,
) -> list[str]:
    """Why the steps of `new` cannot run (the params of each executor and action, naming the
    field: ``spec.steps[2].params.target.kind: required``), and a kind outside `kinds` (the
    executor's allowlist) in them or, for a default plan, in ``spec.target.kind``. Checked
    when the spec is created or changed only, so that an object stored before a rule existed
    can still be updated (finalizers, labels) and deleted."""
    if old is not None and old.spec == new.spec:
        return []
    namespace = new.metadata.namespace
    if new.spec.steps is not None:
        return steps.steps_problems(new.spec.steps, namespace=namespace, kinds=kinds)
    target = new.spec.target
    if target is None:
        return []
    try:
        planned = catalogue.plan_steps(new.spec)
    except catalogue.NoDefaultPlanError:
        return []  # plan_problem says so
    found = steps.steps_problems(planned, namespace=namespace, kinds=kinds)
    if not found:
        return []
    name = steps.kind_name(target.api_version, target.kind)
    if name not in kinds:
        allowed = ", ".join(sorted(kinds)) or "none"
        return [
            f"spec.target.kind: the default plan of {new.spec.action} would act on {name} "
            f"({target.api_version} {target.kind}), and the kubernetes executor acts only on "
            f"{allowed} (coordinator run --executor-kinds); or give spec.steps"
        ]
    return [
        f"spec.action: the default plan of {new.spec.action} on {target.text()}: {problem}"
        for problem in found
    ]
