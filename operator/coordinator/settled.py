"""Which recommendations need no deciding: the inputs a recommendation's desired state
is decided from, as versions.

The reconciler keeps, per recommendation whose last evaluation decided nothing to do,
the inputs it was decided from; with the same inputs it is not decided again (most of a
group is settled when one of it changes; deciding was most of a reconcile's CPU), and an
ended one that is settled is not even read (its approval and plan may have left memory).
"""

from __future__ import annotations

from typing import Any, Final

from coordinator import store as store_
from coordinator.api.approval import Approval
from coordinator.api.plan import ExecutionPlan
from coordinator.api.recommendation import RecommendationPhase
from coordinator.core import conflicts, lifecycle

ENDED: Final = frozenset(p.value for p in RecommendationPhase if p.ended)

Ref = tuple[str, int] | None
"""An approval's or plan's uid and resourceVersion; None: there is none."""


def inputs(
    rv: int,
    approval: Ref,
    plan: Ref,
    *,
    phase: RecommendationPhase,
    verdict: conflicts.Verdict | None,
    policies: tuple[tuple[str, str | None], ...],
) -> tuple[Any, ...]:
    """What a recommendation's desired state is decided from, as versions: the objects'
    resourceVersions, its effective phase (expiry included), its verdict, the
    namespace's ApprovalPolicies. The same inputs that once decided nothing to do decide
    nothing again: only its time-dependent parts could differ, and each of those (an
    expiry) changes the effective phase."""
    return (rv, approval, plan, phase, verdict, policies)


def observed_inputs(
    observed: lifecycle.Observed,
    phase: RecommendationPhase,
    verdict: conflicts.Verdict | None,
    policies: tuple[tuple[str, str | None], ...],
) -> tuple[Any, ...]:
    """`inputs` of a recommendation as observed (its models)."""

    def ref(model: Approval | ExecutionPlan | None) -> Ref:
        if model is None:
            return None
        return (model.metadata.uid or "", store_.version(model.metadata.resource_version))

    rec = observed.recommendation
    return inputs(
        store_.version(rec.metadata.resource_version),
        ref(observed.approval),
        ref(observed.plan),
        phase=phase,
        verdict=verdict,
        policies=policies,
    )


def ended_inputs(
    rec: store_.Record,
    approval: store_.Record | None,
    plan: store_.Record | None,
    policies: tuple[tuple[str, str | None], ...],
) -> tuple[Any, ...] | None:
    """`inputs` of an ended recommendation, from the records alone (no model, nothing
    evicted read again): an ended one's effective phase is the one it has once settled,
    and it gets no verdict. None when it has not ended."""
    if rec.phase not in ENDED:
        return None
    return inputs(
        rec.rv,
        (approval.uid, approval.rv) if approval else None,
        (plan.uid, plan.rv) if plan else None,
        phase=RecommendationPhase(rec.phase),
        verdict=None,
        policies=policies,
    )
