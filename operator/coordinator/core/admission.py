"""Admission rules: who may decide, what may change, what the API server records.

The operator's admission webhooks call these functions with the request as the API
server saw it: the authenticated user (never a name the client claims), the object
before and after. Mutations return the annotations to set; validations return the
reason to refuse, or None. A decision is stamped with the deciding user and time in
annotations that no client can write, and the operator copies them into the
Approval's status (which approvers cannot write at all).

Pure: no I/O, no clock (``now`` is passed in), no kopf, no kubernetes client.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Final

from coordinator.api.approval import Approval, ApprovalPhase, Decision
from coordinator.api.common import format_time
from coordinator.api.recommendation import Recommendation, RecommendationPhase
from coordinator.core import steps
from coordinator.core.lifecycle import DECIDED_AT_ANNOTATION, DECIDED_BY_ANNOTATION

SUBMITTED_BY_ANNOTATION: Final = "optiinfra.io/submitted-by"
"""Set on a Recommendation at admission: who created it or last changed its spec."""

STAMPS: Final = (DECIDED_BY_ANNOTATION, DECIDED_AT_ANNOTATION, SUBMITTED_BY_ANNOTATION)
"""Annotations only the webhooks write; whatever a client sends for them is replaced."""

Annotations = dict[str, str | None]
"""Annotations to set (a value) or remove (None)."""


def _keep(old: Mapping[str, str], new: Mapping[str, str], keys: Collection[str]) -> Annotations:
    """Undo any change a client made to `keys`: put back the old values, drop new ones."""
    changes: Annotations = {}
    for key in keys:
        if new.get(key) != old.get(key):
            changes[key] = old.get(key)
    return changes


def stamp_decision(*, old: Approval | None, new: Approval, user: str, now: datetime) -> Annotations:
    """Record who decided and when, at the moment the decision is made."""
    before = old.metadata.annotations if old else {}
    after = new.metadata.annotations
    deciding = new.spec.decision is not Decision.PENDING and (
        old is None or old.spec.decision is Decision.PENDING
    )
    if old is None:  # created: nobody has decided anything through this request yet
        return {key: None for key in (DECIDED_BY_ANNOTATION, DECIDED_AT_ANNOTATION) if key in after}
    if deciding:
        return {DECIDED_BY_ANNOTATION: user, DECIDED_AT_ANNOTATION: format_time(now)}
    return _keep(before, after, (DECIDED_BY_ANNOTATION, DECIDED_AT_ANNOTATION))


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


def step_problems(*, old: Recommendation | None, new: Recommendation) -> list[str]:
    """Why the steps of `new` cannot run (the params of each executor and action, naming the
    field: ``spec.steps[2].params.target.kind: required``). Checked when the spec is created
    or changed only, so that an object stored before a rule existed can still be updated
    (finalizers, labels) and deleted."""
    if new.spec.steps is None or (old is not None and old.spec == new.spec):
        return []
    return steps.steps_problems(new.spec.steps, namespace=new.metadata.namespace)
