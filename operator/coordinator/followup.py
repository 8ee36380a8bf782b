"""What one reconcile asks for after acting, computed from what it decided (no I/O):
when to run the group again (`requeue_after`), the pending plans to ask the gate again
(`pending_plans`), the body of an approval or plan it creates (`child_body`), and how
long a person took to decide an approval (`observe_decision`, a metric).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

from coordinator import metrics
from coordinator import notifications as notifications_
from coordinator.api.approval import POLICY_DECIDER, Approval, ApprovalPhase, ApprovalStatus
from coordinator.api.common import API_VERSION
from coordinator.api.plan import ExecutionPlan, PlanPhase
from coordinator.api.policy import ApprovalPolicy
from coordinator.api.recommendation import Recommendation, RecommendationPhase
from coordinator.core import lifecycle
from coordinator.k8s import client as client_

CREATE_AGAIN_SECONDS: Final = 0.5
"""When a create found the name still taken (the old object is going away)."""
SETTLE_AGAIN_SECONDS: Final = 1.0
"""When a recommendation was written ended: the group is reconciled again, finds it
settled, and lets its approval and plan go (`Store.evict`); nothing else might bring
the group back."""


def requeue_after(
    group: list[lifecycle.Observed],
    desired: dict[str, lifecycle.Desired],
    policies: list[ApprovalPolicy],
    notifications: notifications_.Notifications,
    *,
    now: datetime,
    create_again: bool,
    ending: bool,
) -> float | None:
    """When to reconcile the group again: at the earliest expiry of a pending approval
    (expiry needs no event), or when an ApprovalPolicy's ApprovalExpiringSoon is due;
    soon when a create must be tried again (`create_again`) or one was written ended
    (`ending`); None: only when something changes."""
    expiries: list[datetime] = []
    for o in group:  # when a pending approval expires, or is to be told expiring soon
        wanted = desired[o.recommendation.name]
        if wanted.status.phase is not RecommendationPhase.AWAITING_APPROVAL:
            continue
        if wanted.create_approval is not None:  # created now: no watch event brings it back
            expires = wanted.create_approval.spec.expires_at
            expiries.append(expires)
            if policies:
                expiries.append(max(now, expires - notifications.lead))
        elif o.approval is not None:
            expiries.append(o.approval.spec.expires_at)
    if policies:
        expiries.extend(notifications.expiring(group, desired, policies, now=now))
    requeue = None
    if expiries:
        requeue = max(0.0, (min(expiries) - now).total_seconds()) + 0.05
    if create_again:
        requeue = _sooner(requeue, CREATE_AGAIN_SECONDS)
    if ending:
        requeue = _sooner(requeue, SETTLE_AGAIN_SECONDS)
    return requeue


def _sooner(requeue: float | None, seconds: float) -> float:
    return min(requeue, seconds) if requeue else seconds


def pending_plans(
    group: Iterable[lifecycle.Observed], created: Iterable[ExecutionPlan]
) -> tuple[ExecutionPlan, ...]:
    """The group's pending plans, not suspended, other than those just `created`: in a
    namespace with ApprovalPolicies a budget freed or a window opened, so the plan gate
    is asked again."""
    names = {p.metadata.name for p in created}
    return tuple(
        o.plan
        for o in group
        if o.plan is not None
        and o.plan.metadata.name not in names
        and o.plan.status_phase is PlanPhase.PENDING
        and not o.plan.spec.suspend
    )


def child_body(owner: Recommendation, child: Approval | ExecutionPlan) -> dict[str, Any]:
    """The object to create for `child` (an approval or plan `owner` owns), without its
    status (the status subresource ignores it in a create)."""
    return {
        "apiVersion": API_VERSION,
        "kind": child.kind,
        "metadata": {
            "name": child.metadata.name,
            "namespace": owner.metadata.namespace,
            "annotations": dict(child.metadata.annotations),
            "ownerReferences": [
                client_.owner_reference(
                    {
                        "apiVersion": API_VERSION,
                        "kind": owner.kind,
                        "metadata": {"name": owner.name, "uid": owner.metadata.uid},
                    }
                )
            ],
        },
        "spec": child.spec.to_wire(),
    }


def observe_decision(approval: Approval, status: ApprovalStatus) -> None:
    """A person's decision was just recorded: how long did it take?"""
    was = approval.status.phase if approval.status else ApprovalPhase.PENDING
    decided = status.phase in (ApprovalPhase.APPROVED, ApprovalPhase.REJECTED)
    if was is not ApprovalPhase.PENDING or not decided or status.decided_by == POLICY_DECIDER:
        return
    if status.decided_at is not None and status.requested_at is not None:
        wait = (status.decided_at - status.requested_at).total_seconds()
        metrics.APPROVAL_WAIT.labels(status.phase.value).observe(max(0.0, wait))


__all__ = [
    "CREATE_AGAIN_SECONDS",
    "SETTLE_AGAIN_SECONDS",
    "child_body",
    "observe_decision",
    "pending_plans",
    "requeue_after",
]
