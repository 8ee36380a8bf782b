"""A recommendation's lifecycle: from what the world shows to what it should be.

The operator observes, for one customer, every recommendation with the Approval and
ExecutionPlan it owns. This module turns that into, per recommendation, the status it
should have, what to do about its Approval and its plan, and the Events to post. The
operator writes the result and nothing else; status is always reconstituted from the
objects (never trusted as the only input), so every step is idempotent and a restart
continues where the world stands.

Two passes:

1. ``effective_phase``: the phase the world shows before resolution — a running plan
   means Executing, a rejected or expired approval of the current generation means
   Rejected or Expired, an ended plan ends the recommendation. These phases feed
   ``conflicts.evaluate``, so a winner that was just rejected frees its losers in the
   same evaluation.
2. ``decide``: with the verdict of the evaluation, the desired status and actions. The
   Approvals it creates and the status each should have are ``core.approvalstatus``'.

Pure: no I/O, no clock (``now`` is passed in), no kopf, no kubernetes client.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Final

from coordinator.api.approval import (
    POLICY_DECIDER,
    Approval,
    ApprovalPhase,
    ApprovalStatus,
    Decision,
)
from coordinator.api.common import (
    GENERATION_ANNOTATION,
    format_time,
)
from coordinator.api.meta import ObjectMeta
from coordinator.api.plan import ExecutionPlan, ExecutionPlanSpec, PlanPhase
from coordinator.api.policy import ApprovalPolicy as PolicyObject
from coordinator.api.recommendation import (
    Conflict,
    Recommendation,
    RecommendationPhase,
    RecommendationStatus,
)
from coordinator.api.verification import SavingsStatus
from coordinator.core import approval as policy_
from coordinator.core import approvalstatus, catalogue, conflicts, verification
from coordinator.core import conditions as conditions_
from coordinator.core import plan as plan_
from coordinator.core import policy as policies_

_FINAL: Final = frozenset(
    {RecommendationPhase.SUCCEEDED, RecommendationPhase.FAILED, RecommendationPhase.ROLLED_BACK}
)


class EventType(enum.StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """A Kubernetes Event to post on the recommendation (or its approval)."""

    reason: str
    message: str
    type: EventType = EventType.NORMAL
    on_approval: bool = False
    key: str = ""
    """Tells apart the events of one reason in one evaluation (which conflict)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Observed:
    """One recommendation as the operator sees it, with what it owns."""

    recommendation: Recommendation
    approval: Approval | None = None
    plan: ExecutionPlan | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Desired:
    """What the operator should make true for one recommendation."""

    status: RecommendationStatus
    create_approval: Approval | None = None
    """Create this Approval; if one exists (withdrawn or of an old generation) delete it first."""
    approval_status: ApprovalStatus | None = None
    """The status the existing Approval should have (written when it differs)."""
    create_plan: ExecutionPlan | None = None
    delete_plan: bool = False
    """Delete the existing plan: it never started and its approval no longer holds."""
    events: tuple[Event, ...] = ()


Known = Callable[[Observed, RecommendationPhase, "conflicts.Verdict | None"], "Desired | None"]
"""What a caller already knows a recommendation's desired state to be (see `evaluate`)."""


def _plan_generation(plan: ExecutionPlan) -> int | None:
    raw = plan.metadata.annotations.get(GENERATION_ANNOTATION)
    return int(raw) if raw and raw.isdigit() else None


def _plan_phase(plan: ExecutionPlan | None) -> PlanPhase:
    return plan.status.phase if plan is not None and plan.status else PlanPhase.PENDING


def _current(observed: Observed) -> Approval | None:
    """The approval if it holds: about the current generation, and not withdrawn."""
    approval, rec = observed.approval, observed.recommendation
    if approval is None or approval.spec.recommendation_generation != rec.metadata.generation:
        return None
    if approval.status is not None and approval.status.phase is ApprovalPhase.WITHDRAWN:
        return None
    return approval


def effective_phase(observed: Observed, *, now: datetime) -> RecommendationPhase:
    """The phase the world shows, before conflict resolution."""
    rec = observed.recommendation
    if rec.phase in _FINAL:
        return rec.phase
    mirrored = plan_.recommendation_phase(_plan_phase(observed.plan))
    if mirrored is not None:
        return mirrored
    approval = _current(observed)
    if approval is not None:
        if approval.status is not None and approval.status.phase is ApprovalPhase.EXPIRED:
            return RecommendationPhase.EXPIRED
        if approval.spec.decision is Decision.REJECTED:
            return RecommendationPhase.REJECTED
        if approvalstatus.expired(approval, now=now):
            return RecommendationPhase.EXPIRED
    if rec.phase in (RecommendationPhase.REJECTED, RecommendationPhase.EXPIRED):
        # Ended for the generation it was decided on; a new spec is a new proposal.
        return rec.phase if approval is not None else RecommendationPhase.PENDING
    return rec.phase


def with_phase(rec: Recommendation, phase: RecommendationPhase) -> Recommendation:
    """The recommendation with `phase` as its status phase (for evaluation)."""
    if rec.phase is phase:
        return rec
    status = rec.status or RecommendationStatus()
    return rec.model_copy(update={"status": status.model_copy(update={"phase": phase})})


def evaluate(
    group: Sequence[Observed],
    *,
    namespace: Sequence[Recommendation] = (),
    policy: policy_.ApprovalPolicy,
    now: datetime,
    policies: Sequence[PolicyObject] = (),
    known: Known | None = None,
) -> dict[str, Desired]:
    """Desired state for every recommendation of one customer in one namespace.

    `known`, when given, is asked first for each recommendation with its effective phase
    and verdict: a Desired it returns is taken as is (the caller knows that the same
    inputs decided nothing to do), else the recommendation is decided."""
    effective = {
        o.recommendation.name: with_phase(o.recommendation, effective_phase(o, now=now))
        for o in group
    }
    ranking = None
    if policy.calibrate_savings:  # an agent's record backs its promises (--calibrate-savings)
        history = verification.realisation_history(namespace)
        ranking = functools.partial(verification.calibrated_rank, history=history)
    evaluation = conflicts.evaluate(list(effective.values()), namespace=namespace, ranking=ranking)
    desired = {}
    for o in group:
        name = o.recommendation.name
        phase = effective[name].phase
        verdict = evaluation.verdicts.get(name)
        found = known(o, phase, verdict) if known is not None else None
        desired[name] = found or decide(
            o, phase=phase, verdict=verdict, policy=policy, now=now, policies=policies
        )
    return desired


def settled(observed: Observed, desired: Desired) -> bool:
    """`desired` asks nothing of `observed`: no write, no create or delete, no Event."""
    return (
        desired.create_approval is None
        and desired.approval_status is None
        and desired.create_plan is None
        and not desired.delete_plan
        and not desired.events
        and observed.recommendation.status == desired.status
    )


def decide(
    observed: Observed,
    *,
    phase: RecommendationPhase,
    verdict: conflicts.Verdict | None,
    policy: policy_.ApprovalPolicy,
    now: datetime,
    policies: Sequence[PolicyObject] = (),
) -> Desired:
    """The desired state of one recommendation, given its effective phase and verdict."""
    rec = observed.recommendation
    approval = observed.approval
    conflicts_ = verdict.conflicts if verdict else ()
    base = _Draft(
        phase=phase,
        conflicts=conflicts_,
        superseded_by=verdict.superseded_by if verdict else None,
        message=verdict.message if verdict else "",
    )
    if verdict is None or verdict.outcome is conflicts.Outcome.EXECUTING:
        draft = _ended_or_executing(observed, base, now=now)
    elif verdict.outcome in (conflicts.Outcome.BLOCKED, conflicts.Outcome.SUPERSEDED):
        draft = _sidelined(observed, base, verdict=verdict, now=now)
    else:
        draft = _kept(observed, base, policy=policy, now=now, policies=policies)
    has_approval = observed.approval is not None or draft.create_approval is not None
    has_plan = (
        observed.plan is not None and not draft.delete_plan
    ) or draft.create_plan is not None
    admitted = policy_.stamped(rec.metadata.annotations) if policy.admission else None
    status = _status(
        rec, draft, has_approval=has_approval, has_plan=has_plan, admitted=admitted, now=now
    )
    savings = _realised(observed.plan)
    if savings is not None:
        status = status.model_copy(update={"realised_savings": savings})
    if policy.shard is not None:
        status = status.model_copy(update={"shard": policy.shard})
    events = _events(rec, status, draft)
    approval_status = draft.approval_status
    if approval is not None and approval_status is not None and approval.status == approval_status:
        approval_status = None
    return Desired(
        status=status,
        create_approval=draft.create_approval,
        approval_status=approval_status,
        create_plan=draft.create_plan,
        delete_plan=draft.delete_plan,
        events=events,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class _Draft:
    phase: RecommendationPhase
    conflicts: tuple[Conflict, ...] = ()
    superseded_by: str | None = None
    message: str = ""
    create_approval: Approval | None = None
    approval_status: ApprovalStatus | None = None
    create_plan: ExecutionPlan | None = None
    delete_plan: bool = False
    approval_events: tuple[Event, ...] = ()
    policies: tuple[str, ...] = ()


_DECISION_ENDS: Final[Mapping[RecommendationPhase, ApprovalPhase]] = {
    RecommendationPhase.REJECTED: ApprovalPhase.REJECTED,
    RecommendationPhase.EXPIRED: ApprovalPhase.EXPIRED,
}


def _ended_or_executing(observed: Observed, draft: _Draft, *, now: datetime) -> _Draft:
    """Executing, or ended: the plan or the approval tells why; record the approval's end."""
    approval = _current(observed)
    ended = _DECISION_ENDS.get(draft.phase)
    if approval is None or ended is None:
        return dataclasses.replace(
            draft, message=draft.message or _phase_message(observed, draft.phase)
        )
    status = approvalstatus.status_in(approval, ended, now=now)
    if ended is ApprovalPhase.REJECTED:
        message = f"Rejected by {status.decided_by}" + (
            f": {status.reason}" if status.reason else ""
        )
    else:
        message = (
            f"The approval expired at {format_time(approval.spec.expires_at)} without a decision"
        )
    event = Event(ended.value, message, EventType.WARNING, on_approval=True)
    return dataclasses.replace(
        draft,
        message=message,
        approval_status=status,
        approval_events=(event,) if approvalstatus.changed_phase(approval, ended) else (),
    )


def _sidelined(
    observed: Observed, draft: _Draft, *, verdict: conflicts.Verdict, now: datetime
) -> _Draft:
    """Blocked or superseded: a pending approval is withdrawn, an unstarted plan removed."""
    approval = observed.approval
    phase = (
        RecommendationPhase.BLOCKED
        if verdict.outcome is conflicts.Outcome.BLOCKED
        else RecommendationPhase.SUPERSEDED
    )
    draft = dataclasses.replace(draft, phase=phase, delete_plan=observed.plan is not None)
    if approval is None or approval.spec.decision is not Decision.PENDING:
        return draft
    status = approvalstatus.status_in(approval, ApprovalPhase.WITHDRAWN, now=now)
    why = "superseded" if phase is RecommendationPhase.SUPERSEDED else "blocked"
    event = Event("Withdrawn", f"The recommendation was {why} before a decision", on_approval=True)
    return dataclasses.replace(
        draft,
        approval_status=status,
        approval_events=(event,)
        if approvalstatus.changed_phase(approval, ApprovalPhase.WITHDRAWN)
        else (),
    )


def _kept(
    observed: Observed,
    draft: _Draft,
    *,
    policy: policy_.ApprovalPolicy,
    now: datetime,
    policies: Sequence[PolicyObject] = (),
) -> _Draft:
    """Kept: ask for (or take) a decision, and once approved, make the plan."""
    rec = observed.recommendation
    try:
        steps = catalogue.plan_steps(rec.spec)
    except catalogue.NoDefaultPlanError as exc:  # admission refuses these; older ones wait
        return dataclasses.replace(
            draft,
            phase=RecommendationPhase.BLOCKED,
            message=f"No plan can carry it out: {exc}",
            delete_plan=observed.plan is not None and observed.plan.status is None,
        )
    # --- approval policies (issue 14): the policies that select it, merged ----------------
    risk = policy_.assess(rec.spec, steps, annotations=rec.metadata.annotations, policy=policy).risk
    merged = policies_.governing(policies, rec.spec, risk=risk)
    assessment = policy_.assess(
        rec.spec,
        steps,
        annotations=rec.metadata.annotations,
        policy=policy,
        auto_approves=merged.auto_approves,
    )
    draft = dataclasses.replace(draft, policies=merged.policies)
    approval = _current(observed)
    if approval is None:
        # A new request replaces the approval of an earlier generation (or a withdrawn
        # one): its record moves into the new one's status.history.
        fresh = approvalstatus.new_approval(
            rec,
            policy=policy,
            now=now,
            previous=observed.approval,
            assessment=assessment,
            merged=merged,
        )
        return _with_decision(observed, draft, fresh, now=now, created=True, assessment=assessment)
    return _with_decision(observed, draft, approval, now=now, created=False, assessment=assessment)


def _with_decision(
    observed: Observed,
    draft: _Draft,
    approval: Approval,
    *,
    now: datetime,
    created: bool,
    assessment: policy_.Assessment,
) -> _Draft:
    rec = observed.recommendation
    plan = observed.plan
    stale_plan = plan is not None and _plan_generation(plan) != rec.metadata.generation
    create = approval if created else None
    unbacked = not created and approvalstatus.unbacked(approval, rec)
    if approval.spec.decision is Decision.PENDING or unbacked:
        status = (
            approval.status
            if created
            else approvalstatus.status_in(approval, ApprovalPhase.PENDING, now=now)
        )
        until = format_time(approval.spec.expires_at)
        needs = approvalstatus.still_needed(approval, rec)
        if unbacked:  # fail closed: never a plan on a decision the webhook did not count
            needs = (
                "spec.decision says Approved, but the votes the admission webhook recorded "
                f"do not approve it ({needs or 'none recorded'}); are the webhooks off? It "
                "stays pending until it expires"
            )
        return dataclasses.replace(
            draft,
            phase=RecommendationPhase.AWAITING_APPROVAL,
            message=f"Waiting for a decision on approval {approval.metadata.name} until {until}"
            + (f" ({needs})" if needs else "")
            + (f" ({assessment.why})" if assessment.reasons else ""),
            create_approval=create,
            approval_status=None if created else status,
            delete_plan=stale_plan,
        )
    # Approved (Rejected was an effective phase already and never gets here).
    status = (
        approval.status
        if created
        else approvalstatus.status_in(approval, ApprovalPhase.APPROVED, now=now)
    )
    assert status is not None
    decided_by = status.decided_by or approvalstatus.UNKNOWN_DECIDER
    events: tuple[Event, ...] = ()
    if not created and approvalstatus.changed_phase(approval, ApprovalPhase.APPROVED):
        events = (Event("Approved", f"Approved by {decided_by}", on_approval=True),)
    make_plan = plan is None or stale_plan
    return dataclasses.replace(
        draft,
        phase=RecommendationPhase.APPROVED,
        message=(
            f"Approved by policy ({approval.spec.risk_level.value} risk, autoApprove)"
            if decided_by == POLICY_DECIDER
            else f"Approved by {decided_by}"
        )
        + ("" if rec.spec.execute_now else "; start the plan by setting spec.suspend=false"),
        create_approval=create,
        approval_status=None if created else status,
        create_plan=new_plan(rec) if make_plan else None,
        delete_plan=stale_plan,
        approval_events=events,
    )


def new_plan(rec: Recommendation) -> ExecutionPlan:
    """The ExecutionPlan to create for an approved recommendation."""
    return ExecutionPlan(
        metadata=ObjectMeta(
            name=rec.name,
            namespace=rec.metadata.namespace,
            annotations={GENERATION_ANNOTATION: str(rec.metadata.generation)},
        ),
        spec=ExecutionPlanSpec(
            recommendation=rec.name,
            customer_id=rec.spec.customer_id,
            suspend=not rec.spec.execute_now,
            steps=catalogue.plan_steps(rec.spec),
        ),
    )


def _phase_message(observed: Observed, phase: RecommendationPhase) -> str:
    plan = observed.plan
    if phase is RecommendationPhase.EXECUTING:
        detail = plan.status.message if plan and plan.status else None
        return f"Plan {observed.recommendation.name} is running" + (f": {detail}" if detail else "")
    if phase in _FINAL and plan is not None and plan.status and plan.status.message:
        return plan.status.message
    existing = observed.recommendation.status
    return existing.message if existing and existing.message else ""


PROGRESS: Final[Mapping[RecommendationPhase, conditions_.Progress]] = {
    RecommendationPhase.PENDING: conditions_.Progress.IN_PROGRESS,
    RecommendationPhase.AWAITING_APPROVAL: conditions_.Progress.IN_PROGRESS,
    RecommendationPhase.APPROVED: conditions_.Progress.IN_PROGRESS,
    RecommendationPhase.EXECUTING: conditions_.Progress.IN_PROGRESS,
    RecommendationPhase.SUPERSEDED: conditions_.Progress.IN_PROGRESS,
    RecommendationPhase.SUCCEEDED: conditions_.Progress.CURRENT,
    RecommendationPhase.BLOCKED: conditions_.Progress.FAILED,
    RecommendationPhase.REJECTED: conditions_.Progress.FAILED,
    RecommendationPhase.EXPIRED: conditions_.Progress.FAILED,
    RecommendationPhase.FAILED: conditions_.Progress.FAILED,
    RecommendationPhase.ROLLED_BACK: conditions_.Progress.FAILED,
}
"""Where a recommendation of each phase stands for kstatus (and so Flux): Reconciling
while it is on its way or waits for someone, a decision, a start, or a winner to leave
(Superseded: it is judged again when the one that won ends or goes); Stalled once it ended
short of being carried out, or is Blocked (a dependency cycle, a missing or failed
dependency, no plan to carry it out: nothing moves until something is changed);
current (Ready) once Succeeded."""


def _progress_message(draft: _Draft) -> str:
    """The message of Reconciling or Stalled: what it waits for, or why it stopped."""
    if draft.phase is RecommendationPhase.SUPERSEDED and draft.superseded_by:
        return f"Superseded by {draft.superseded_by}; judged again once it has ended or gone" + (
            f" ({draft.message})" if draft.message else ""
        )
    return draft.message or draft.phase.value


def _realised(plan: ExecutionPlan | None) -> SavingsStatus | None:
    """The savings the plan's verification measured, once it has (copied to the
    recommendation's status, where `kubectl get` and calibration read them)."""
    if plan is None or plan.status is None or plan.status.verification is None:
        return None
    savings = plan.status.verification.savings
    return savings if savings is not None and savings.realised_monthly is not None else None


def _status(
    rec: Recommendation,
    draft: _Draft,
    *,
    has_approval: bool,
    has_plan: bool,
    admitted: bool | None = None,
    now: datetime,
) -> RecommendationStatus:
    """The status: phase, conflicts, names, message, and the conditions Conflicting, Ready
    and (with the admission webhooks on: `admitted` not None) Admitted, False for a
    recommendation the webhooks did not stamp."""
    old = rec.status or RecommendationStatus()
    conflicts_ = list(draft.conflicts)
    conditions = [
        conditions_.condition(
            old.conditions,
            "Conflicting",
            bool(conflicts_),
            reason="ConflictsFound" if conflicts_ else "NoConflicts",
            message=f"{len(conflicts_)} conflict(s) with other recommendations"
            if conflicts_
            else "No conflicts",
            generation=rec.metadata.generation,
            now=now,
        ),
        conditions_.condition(
            old.conditions,
            conditions_.READY,
            draft.phase is RecommendationPhase.SUCCEEDED,
            reason=draft.phase.value,
            message=draft.message,
            generation=rec.metadata.generation,
            now=now,
        ),
    ]
    conditions = conditions_.progressed(
        conditions,
        PROGRESS[draft.phase],
        old=old.conditions,
        reason=draft.phase.value,
        message=_progress_message(draft),
        generation=rec.metadata.generation,
        now=now,
    )
    if admitted is not None:
        conditions.append(
            conditions_.condition(
                old.conditions,
                "Admitted",
                admitted,
                reason="Stamped" if admitted else "NotStamped",
                message="The admission webhooks stamped its submitter"
                if admitted
                else policy_.not_admitted(rec.metadata.name),
                generation=rec.metadata.generation,
                now=now,
            )
        )
    return RecommendationStatus.model_validate(
        {
            "phase": draft.phase,
            "conflicts": conflicts_,
            "superseded_by": draft.superseded_by
            if draft.phase is RecommendationPhase.SUPERSEDED
            else None,
            "approval": rec.name if has_approval else None,
            "plan": rec.name if has_plan else None,
            "message": draft.message or None,
            "policies": list(draft.policies),
            "observed_generation": rec.metadata.generation,
            "conditions": conditions,
        }
    )


_PHASE_EVENTS: Final[Mapping[RecommendationPhase, tuple[str, EventType]]] = {
    RecommendationPhase.SUPERSEDED: ("Superseded", EventType.NORMAL),
    RecommendationPhase.BLOCKED: ("Blocked", EventType.WARNING),
    RecommendationPhase.AWAITING_APPROVAL: ("ApprovalRequested", EventType.NORMAL),
    RecommendationPhase.APPROVED: ("Approved", EventType.NORMAL),
    RecommendationPhase.REJECTED: ("Rejected", EventType.WARNING),
    RecommendationPhase.EXPIRED: ("Expired", EventType.WARNING),
    RecommendationPhase.EXECUTING: ("PlanStarted", EventType.NORMAL),
    RecommendationPhase.SUCCEEDED: ("Succeeded", EventType.NORMAL),
    RecommendationPhase.FAILED: ("Failed", EventType.WARNING),
    RecommendationPhase.ROLLED_BACK: ("RolledBack", EventType.WARNING),
}


def _events(rec: Recommendation, status: RecommendationStatus, draft: _Draft) -> tuple[Event, ...]:
    old = rec.status or RecommendationStatus()
    events: list[Event] = []
    new_conflicts = [c for c in status.conflicts if c not in old.conflicts]
    for conflict in new_conflicts:
        events.append(
            Event(
                "ConflictDetected",
                f"{conflict.description} (with {', '.join(conflict.with_) or 'itself'})",
                key=f"{conflict.type.value}|{conflict.description}|{','.join(conflict.with_)}",
            )
        )
    if status.phase is not old.phase or (rec.status is None):
        reason_type = _PHASE_EVENTS.get(status.phase)
        if reason_type is not None:
            reason, type_ = reason_type
            events.append(Event(reason, status.message or status.phase.value, type_))
    return (*events, *draft.approval_events)
