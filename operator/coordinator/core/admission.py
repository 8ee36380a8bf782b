"""Admission rules: who may decide, what may change, what the API server records.

The operator's admission webhooks call these functions with the request as the API
server saw it: the authenticated user (never a name the client claims), the object
before and after. Mutations return the annotations to set; validations return the
reason to refuse, or None. A decision is stamped with the deciding user and time in
annotations that no client can write, and the operator copies them into the
Approval's status (which approvers cannot write at all). A webhook step must name an
AgentEndpoint that exists in the recommendation's namespace.

Pure: no I/O, no clock (``now`` is passed in), no kopf, no kubernetes client.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from coordinator.api.approval import Approval, ApprovalPhase, Decision
from coordinator.api.common import (
    DECIDED_AT_ANNOTATION,
    DECIDED_BY_ANNOTATION,
    SUBMITTED_BY_ANNOTATION,
    SUBMITTER_MAY_NOT_ANNOTATION,
    format_time,
)
from coordinator.api.plan import Executor, Step
from coordinator.api.recommendation import Recommendation, RecommendationPhase
from coordinator.core import catalogue, steps
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
    refusal = check_decision(old=old, new=new, user=user, submitter=submitter, now=now)
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
) -> str | None:
    """Why this update of an Approval must be refused, or None."""
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
    if submitter is not None and submitter == user:
        return (
            f"{user} submitted or last changed recommendation {new.spec.recommendation} and "
            "cannot decide its approval: another person must"
        )
    return None


def stamp_submitter(*, old: Recommendation | None, new: Recommendation, user: str) -> Annotations:
    """Record who submitted the spec: on create and on every spec change, else keep it."""
    if old is None or old.spec != new.spec:
        if new.metadata.annotations.get(SUBMITTED_BY_ANNOTATION) == user:
            return {}
        return {SUBMITTED_BY_ANNOTATION: user}
    return _keep(old.metadata.annotations, new.metadata.annotations, (SUBMITTED_BY_ANNOTATION,))


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
    if old is None or old.spec != new.spec:
        if new.metadata.annotations.get(SUBMITTER_MAY_NOT_ANNOTATION) == denied:
            return {}
        return {SUBMITTER_MAY_NOT_ANNOTATION: denied}
    keys = (SUBMITTER_MAY_NOT_ANNOTATION,)
    return _keep(old.metadata.annotations, new.metadata.annotations, keys)


# --- webhook steps: the AgentEndpoint they name must exist -----------------------------


def webhook_endpoints(steps: Sequence[Step]) -> set[str]:
    """The AgentEndpoint names the webhook steps of `steps` use (to look up before checking)."""
    return {
        name
        for step in steps
        if step.executor is Executor.WEBHOOK
        and isinstance(name := step.params.get("endpoint"), str)
        and name
    }


def check_webhook_steps(
    steps: Sequence[Step], *, namespace: str, existing: Collection[str]
) -> str | None:
    """Why the webhook steps of `steps` (``spec.steps``) must be refused, or None: each one
    names, in params.endpoint, an AgentEndpoint that exists in `namespace`."""
    problems = []
    for index, step in enumerate(steps):
        if step.executor is not Executor.WEBHOOK:
            continue
        field = f"spec.steps[{index}].params.endpoint"
        name = step.params.get("endpoint")
        if not isinstance(name, str) or not name:
            problems.append(
                f"{field}: webhook step {step.name} must name an AgentEndpoint of namespace "
                f"{namespace} (a recommendation never carries a URL)"
            )
        elif name not in existing:
            problems.append(
                f"{field}: webhook step {step.name} names AgentEndpoint {name}, which does not "
                f"exist in namespace {namespace} (an approver or admin creates it)"
            )
    return "; ".join(problems) or None


def endpoint_problem(
    rec: Recommendation, steps: Sequence[Step], *, existing: Collection[str]
) -> str | None:
    """Why the webhook steps of `rec`'s plan (`steps`) must be refused, given the
    AgentEndpoints that exist among those they name: a step of ``spec.steps`` names the
    field, a default plan names the agent."""
    if rec.spec.steps:
        return check_webhook_steps(steps, namespace=rec.metadata.namespace, existing=existing)
    return check_agent_endpoint(rec, names=webhook_endpoints(steps), existing=existing)


def check_agent_endpoint(
    rec: Recommendation, *, names: Collection[str], existing: Collection[str]
) -> str | None:
    """Why a recommendation whose default plan asks its agent must be refused, or None: the
    agent's AgentEndpoint (named after spec.agentId) must be registered in the namespace."""
    missing = sorted(set(names) - set(existing))
    if not missing:
        return None
    return (
        f"spec.agentId: the default plan of {rec.spec.action} is carried out by agent "
        f"{rec.spec.agent_id} through the AgentEndpoint {missing[0]}, which does not exist in "
        f"namespace {rec.metadata.namespace} (an approver or admin registers it), or give "
        "spec.steps (or spec.target, for a cluster action)"
    )


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
