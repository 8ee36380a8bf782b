"""An Approval as the operator writes it: created for a kept recommendation (pending, or
decided by policy), its status in each phase (the decision as recorded, the votes, the
message and conditions), how it ended for its successor's history, and whether its votes
back the decision its spec states.

Pure, as ``core.lifecycle`` that uses it: no I/O, no clock (``now`` is passed in).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Final

from coordinator.api.approval import (
    HISTORY_LIMIT,
    POLICY_DECIDER,
    Approval,
    ApprovalPhase,
    ApprovalRecord,
    ApprovalSpec,
    ApprovalStatus,
    ApproverSet,
    Decision,
    Response,
)
from coordinator.api.common import (
    DECIDED_AT_ANNOTATION,
    DECIDED_BY_ANNOTATION,
    SUBMITTED_BY_ANNOTATION,
    Condition,
    ConditionStatus,
    format_time,
)
from coordinator.api.meta import ObjectMeta
from coordinator.api.recommendation import Recommendation
from coordinator.core import approval as policy_
from coordinator.core import catalogue
from coordinator.core import conditions as conditions_
from coordinator.core import policy as policies_

UNKNOWN_DECIDER: Final = "unknown"
"""decidedBy when no admission webhook recorded who decided."""


def expired(approval: Approval, *, now: datetime) -> bool:
    return approval.spec.decision is Decision.PENDING and policy_.is_expired(
        approval.spec.expires_at, now=now
    )


def unbacked(approval: Approval, rec: Recommendation) -> bool:
    """An N-of-M approval whose spec says Approved without the votes that approve it (set
    while the admission webhooks were off): it must not count."""
    if approval.spec.decision is not Decision.APPROVED:
        return False
    if approval.spec.required == 1 and not approval.spec.approver_sets:
        return False
    return _tally(approval, rec).outcome != "Approved"


def _tally(approval: Approval, rec: Recommendation) -> policies_.Tally:
    votes = policies_.read_votes(approval.metadata.annotations.get(policies_.RESPONSES_ANNOTATION))
    sets = [
        policies_.ApproverSet(s.policy, tuple(s.approvers)) for s in approval.spec.approver_sets
    ]
    submitter = rec.metadata.annotations.get(SUBMITTED_BY_ANNOTATION)
    return policies_.tally(votes, required=approval.spec.required, sets=sets, submitter=submitter)


def still_needed(approval: Approval, rec: Recommendation) -> str:
    """What an N-of-M approval still needs, when it needs more than one person."""
    if approval.spec.required == 1 and not approval.spec.approver_sets:
        return ""
    result = _tally(approval, rec)
    return f"still needed: {result.missing}" if result.missing else ""


def _responses(approval: Approval) -> list[Response]:
    """The votes the admission webhook recorded, for status.responses."""
    return [
        Response(
            user=v.user,
            groups=list(v.groups),
            decision=Decision(v.decision),
            reason=v.reason,
            at=v.at,
        )
        for v in policies_.read_votes(
            approval.metadata.annotations.get(policies_.RESPONSES_ANNOTATION)
        )
        if v.decision in (Decision.APPROVED.value, Decision.REJECTED.value)
    ]


def changed_phase(approval: Approval, phase: ApprovalPhase) -> bool:
    return approval.status is None or approval.status.phase is not phase


def _message(approval: Approval, phase: ApprovalPhase) -> str:
    """The message of `phase`; a pending one keeps what it said at creation (why a person
    must decide)."""
    base = _MESSAGES[phase]
    said = approval.status.message if approval.status else None
    if phase is ApprovalPhase.PENDING and said and said.startswith(base):
        return said
    return base


def status_in(approval: Approval, phase: ApprovalPhase, *, now: datetime) -> ApprovalStatus:
    """The status an existing approval should have in `phase`, keeping what was recorded."""
    old = approval.status or ApprovalStatus()
    annotations = approval.metadata.annotations
    decided = phase in (ApprovalPhase.APPROVED, ApprovalPhase.REJECTED)
    decided_at = old.decided_at
    decided_by = old.decided_by
    if decided and decided_at is None:
        raw = annotations.get(DECIDED_AT_ANNOTATION)
        decided_at = datetime.fromisoformat(raw.replace("Z", "+00:00")) if raw else now
        decided_by = annotations.get(DECIDED_BY_ANNOTATION, UNKNOWN_DECIDER)
    return old.model_copy(
        update={
            "phase": phase,
            "requested_at": old.requested_at or approval.metadata.creation_timestamp or now,
            "expires_at": approval.spec.expires_at,
            "decided_at": decided_at if decided else None,
            "decided_by": decided_by if decided else None,
            "reason": approval.spec.reason if decided else None,
            "observed_generation": approval.metadata.generation,
            "responses": _responses(approval),
            "message": _message(approval, phase),
            "conditions": _conditions(
                old.conditions,
                phase,
                approval.metadata.generation,
                expires_at=approval.spec.expires_at,
                now=now,
            ),
        }
    )


_READY: Final[Mapping[ApprovalPhase, ConditionStatus]] = {
    ApprovalPhase.PENDING: ConditionStatus.UNKNOWN,
    ApprovalPhase.APPROVED: ConditionStatus.TRUE,
    ApprovalPhase.REJECTED: ConditionStatus.FALSE,
    ApprovalPhase.EXPIRED: ConditionStatus.FALSE,
    ApprovalPhase.WITHDRAWN: ConditionStatus.FALSE,
}


_PROGRESS: Final[Mapping[ApprovalPhase, conditions_.Progress]] = {
    ApprovalPhase.PENDING: conditions_.Progress.IN_PROGRESS,
    ApprovalPhase.APPROVED: conditions_.Progress.CURRENT,
    ApprovalPhase.REJECTED: conditions_.Progress.FAILED,
    ApprovalPhase.EXPIRED: conditions_.Progress.FAILED,
    ApprovalPhase.WITHDRAWN: conditions_.Progress.FAILED,
}


def _conditions(
    old: Sequence[Condition],
    phase: ApprovalPhase,
    generation: int | None,
    *,
    expires_at: datetime,
    now: datetime,
) -> list[Condition]:
    """An approval's conditions, the reason of each the phase. Ready: True once approved,
    Unknown while pending, False when it ended otherwise. Reconciling while pending
    (waiting for people, until `expires_at`); Stalled once rejected, expired or withdrawn:
    it can never be decided again (a new Approval replaces a withdrawn one)."""
    ready = conditions_.condition(
        old,
        conditions_.READY,
        _READY[phase],
        reason=phase.value,
        message=_MESSAGES[phase],
        generation=generation,
        now=now,
    )
    message = _MESSAGES[phase]
    if phase is ApprovalPhase.PENDING:
        message += f" (it expires at {format_time(expires_at)})"
    return conditions_.progressed(
        conditions_.merged(old, ready),
        _PROGRESS[phase],
        old=old,
        reason=phase.value,
        message=message,
        generation=generation,
        now=now,
    )


def history_record(approval: Approval, *, now: datetime) -> ApprovalRecord:
    """How `approval` ended, for the history of the approval that replaces it.

    Its decision as the spec and the admission webhook's annotations show it, even if
    the operator had not recorded it in the status yet; a request that was withdrawn, or
    never decided, ended Withdrawn (or Expired, if its time was over).
    """
    status = approval.status or ApprovalStatus()
    decision = approval.spec.decision
    if status.phase is ApprovalPhase.WITHDRAWN:  # a late decision on it never counted
        phase = ApprovalPhase.WITHDRAWN
    elif decision is Decision.APPROVED:
        phase = ApprovalPhase.APPROVED
    elif decision is Decision.REJECTED:
        phase = ApprovalPhase.REJECTED
    elif status.phase is ApprovalPhase.EXPIRED or expired(approval, now=now):
        phase = ApprovalPhase.EXPIRED
    else:
        phase = ApprovalPhase.WITHDRAWN
    recorded = status_in(approval, phase, now=now)
    return ApprovalRecord(
        generation=approval.spec.recommendation_generation,
        phase=phase,
        requested_at=recorded.requested_at,
        expires_at=approval.spec.expires_at,
        decided_at=recorded.decided_at,
        decided_by=recorded.decided_by,
        reason=recorded.reason,
    )


def _history(previous: Approval | None, *, now: datetime) -> list[ApprovalRecord]:
    """The history of an approval that replaces `previous`: its history and its record,
    the newest HISTORY_LIMIT entries."""
    if previous is None:
        return []
    earlier = previous.status.history if previous.status is not None else []
    return [*earlier, history_record(previous, now=now)][-HISTORY_LIMIT:]


_MESSAGES: Final[Mapping[ApprovalPhase, str]] = {
    ApprovalPhase.PENDING: "Waiting for a decision: set spec.decision to Approved or Rejected",
    ApprovalPhase.APPROVED: "Approved",
    ApprovalPhase.REJECTED: "Rejected",
    ApprovalPhase.EXPIRED: "Expired before a decision; it can no longer be decided",
    ApprovalPhase.WITHDRAWN: "Withdrawn: the recommendation was superseded, blocked or changed",
}


def new_approval(
    rec: Recommendation,
    *,
    policy: policy_.ApprovalPolicy,
    now: datetime,
    previous: Approval | None = None,
    assessment: policy_.Assessment | None = None,
    merged: policies_.Merged = policies_.DEFAULT,
) -> Approval:
    """The Approval to create for a kept recommendation: pending, or decided by policy.

    `previous` is the approval it replaces (of an earlier generation, or withdrawn): how
    that one ended is kept in the new one's ``status.history``.
    """
    if assessment is None:
        assessment = policy_.assess(
            rec.spec,
            catalogue.plan_steps(rec.spec),
            annotations=rec.metadata.annotations,
            policy=policy,
        )
    auto = not assessment.needs_person
    expires_at = now + merged.expiry.get(
        assessment.risk, policy_.expires_after(assessment.risk, policy=policy)
    )
    spec = ApprovalSpec(
        recommendation=rec.name,
        recommendation_generation=rec.metadata.generation,
        customer_id=rec.spec.customer_id,
        risk_level=assessment.risk,
        expires_at=expires_at,
        decision=Decision.APPROVED if auto else Decision.PENDING,
        reason=f"{assessment.risk.value} risk and autoApprove: approved by policy"
        if auto
        else None,
        required=merged.required,
        approver_sets=[
            ApproverSet(policy=s.policy, approvers=list(s.approvers)) for s in merged.approver_sets
        ],
        policies=list(merged.policies),
    )
    phase = ApprovalPhase.APPROVED if auto else ApprovalPhase.PENDING
    status = ApprovalStatus(
        phase=phase,
        requested_at=now,
        expires_at=expires_at,
        decided_at=now if auto else None,
        decided_by=POLICY_DECIDER if auto else None,
        reason=spec.reason,
        observed_generation=1,
        message=_MESSAGES[phase] + (f" ({assessment.why})" if assessment.reasons else ""),
        conditions=_conditions((), phase, 1, expires_at=expires_at, now=now),
        history=_history(previous, now=now),
    )
    return Approval(
        metadata=ObjectMeta(name=rec.name, namespace=rec.metadata.namespace),
        spec=spec,
        status=status,
    )
