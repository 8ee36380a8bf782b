"""Which Events a plan's transitions make: pure functions over its status.

The runner records them (``coordinator.k8s.events``) after each status write, and, when it
starts driving a plan, records again every event the stored status implies: each event's
key names the transition, so one posted already is not posted twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Final

from coordinator.api.plan import ExecutionPlanStatus, PlanPhase, StepPhase
from coordinator.api.verification import VerificationPhase

_STEP_EVENTS: Final[Mapping[StepPhase, tuple[str, str]]] = {
    StepPhase.SUCCEEDED: ("StepSucceeded", "Normal"),
    StepPhase.FAILED: ("StepFailed", "Warning"),
    StepPhase.ROLLED_BACK: ("StepRolledBack", "Normal"),
    StepPhase.ROLLBACK_FAILED: ("RollbackFailed", "Warning"),
}
_PLAN_EVENTS: Final[Mapping[PlanPhase, tuple[str, str]]] = {
    PlanPhase.RUNNING: ("PlanStarted", "Normal"),
    PlanPhase.ROLLING_BACK: ("RollingBack", "Warning"),
    PlanPhase.SUCCEEDED: ("Succeeded", "Normal"),
    PlanPhase.ROLLED_BACK: ("RolledBack", "Warning"),
    PlanPhase.FAILED: ("Failed", "Warning"),
}
_VERIFICATION_EVENTS: Final[Mapping[VerificationPhase, str]] = {
    VerificationPhase.FAILED: "VerificationFailed",
    VerificationPhase.INCONCLUSIVE: "VerificationInconclusive",
}
"""The verification outcomes that have an event (and a notification: ``core.policy``)."""


@dataclasses.dataclass(frozen=True, slots=True)
class PlanEvent:
    """One event of a plan transition; `key` names it (with the plan's uid and reason)."""

    reason: str
    type: str
    message: str
    key: str


def _step_key(name: str, phase: StepPhase) -> str:
    # A step reaches each of these phases at most once, and RolledBack/RollbackFailed
    # only in a rollback: its name and phase name the transition.
    return f"step|{name}|{phase.value}"


def _phase_key(phase: PlanPhase) -> str:
    return f"phase|{phase.value}"  # a plan reaches each phase at most once


def transition_events(old: ExecutionPlanStatus | None, new: ExecutionPlanStatus) -> list[PlanEvent]:
    """The events of every step and plan transition from `old` to `new`."""
    events = []
    old_steps = {s.name: s.phase for s in old.steps} if old else {}
    for step in new.steps:
        if old_steps.get(step.name) is step.phase or step.phase not in _STEP_EVENTS:
            continue
        reason, type_ = _STEP_EVENTS[step.phase]
        detail = step.error or (f"in {step.duration_ms} ms" if step.duration_ms is not None else "")
        message = f"Step {step.name}: {step.phase.value} {detail}".strip()
        events.append(PlanEvent(reason, type_, message, _step_key(step.name, step.phase)))
    if (old.phase if old else PlanPhase.PENDING) is not new.phase and new.phase in _PLAN_EVENTS:
        reason, type_ = _PLAN_EVENTS[new.phase]
        events.append(
            PlanEvent(reason, type_, new.message or new.phase.value, _phase_key(new.phase))
        )
    return [*_verification_events(old, new), *events]


def _verification_events(
    old: ExecutionPlanStatus | None, new: ExecutionPlanStatus
) -> list[PlanEvent]:
    """VerificationFailed or VerificationInconclusive once the verification reaches it (a
    verification reaches each phase at most once); the message names the metrics and why."""
    before = old.verification.phase if old and old.verification else None
    verification = new.verification
    phase = verification.phase if verification is not None else None
    if verification is None or phase is None or phase is before:
        return []
    reason = _VERIFICATION_EVENTS.get(phase)
    if reason is None:
        return []
    message = f"Verification {phase.value}: {verification.message or 'no detail'}"
    return [PlanEvent(reason, "Warning", message, f"verification|{phase.value}")]


def implied_events(status: ExecutionPlanStatus) -> list[PlanEvent]:
    """The events a plan with this stored status has posted (or should have): one per
    step in a phase that has an event, PlanStarted once it started, its phase's event."""
    events = transition_events(None, status)
    undone = (StepPhase.ROLLED_BACK, StepPhase.ROLLBACK_FAILED)
    for step in status.steps:  # undone steps had succeeded first (their event may be lost)
        if step.phase in undone:
            reason, type_ = _STEP_EVENTS[StepPhase.SUCCEEDED]
            detail = f"in {step.duration_ms} ms" if step.duration_ms is not None else ""
            message = f"Step {step.name}: {StepPhase.SUCCEEDED.value} {detail}".strip()
            events.append(
                PlanEvent(reason, type_, message, _step_key(step.name, StepPhase.SUCCEEDED))
            )
    rolled_back = any(step.phase in undone for step in status.steps)
    if status.phase is not PlanPhase.ROLLING_BACK and (
        rolled_back or status.phase is PlanPhase.ROLLED_BACK
    ):
        reason, type_ = _PLAN_EVENTS[PlanPhase.ROLLING_BACK]
        key = _phase_key(PlanPhase.ROLLING_BACK)
        events.append(PlanEvent(reason, type_, "Rolling back", key))
    if status.started_at is not None and status.phase is not PlanPhase.RUNNING:
        reason, type_ = _PLAN_EVENTS[PlanPhase.RUNNING]
        events.append(PlanEvent(reason, type_, "Plan started", _phase_key(PlanPhase.RUNNING)))
    return events
