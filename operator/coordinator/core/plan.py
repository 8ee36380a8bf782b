"""The ExecutionPlan state machine: where a plan stands and what to do next.

Pure: no I/O, no clock (every function that needs the time takes ``now``), no kopf, no
kubernetes client, no executor. The whole state is the persisted ``ExecutionPlanStatus``;
nothing is remembered between calls, so the machine resumes from whatever status was
last written, after a crash between any two writes.

How the operator drives it, persisting the status after every write and before doing
anything else::

    while True:
        move = plan.next_move(spec=spec, status=status, now=now(), dependencies_ready=ready)
        match move:
            case plan.Wait() | plan.Done():
                break                                  # come back on the next event
            case plan.Advance(status=new):
                status = persist(new)                  # bookkeeping only, nothing runs
            case plan.Execute(index=i, step=step):     # step i is persisted as Running
                outcome = executor.execute(step)
                status = persist(plan.record_outcome(spec=spec, status=status, index=i,
                                                     outcome=outcome, now=now()))
            case plan.Undo(index=i, step=step):        # rollback of step i is persisted
                outcome = executor.undo(step)
                status = persist(plan.record_rollback(spec=spec, status=status, index=i,
                                                      outcome=outcome, now=now()))
            case plan.Verify(verification=v):          # measure what is due
                v = measure_due(v)                     # core.verification: begin, due, record
                status = persist(plan.record_verification(spec=spec, status=status,
                                                          verification=v))
                # nothing changed: come back at verification.next_due

``Execute`` is only returned for a step whose persisted phase is ``Running`` and ``Undo``
only for the step the persisted ``RollingBack`` status names in ``currentStep``: after a
crash the executor may be called again for that one step (executors are idempotent), but
a step that is ``Succeeded``, ``Failed``, ``Skipped``, ``RolledBack`` or
``RollbackFailed`` is never executed or undone again. If a write fails, drop the
in-memory status and start over from the stored one. A waiting plan writes nothing:
create it with ``initial_status`` so that its steps show from the start.

Decisions where the rules are silent:

- ``suspend`` keeps a ``Pending`` plan from starting. Set on a running plan, the step in
  flight is finished and the plan pauses before the next one. It does not pause a
  rollback, which always runs to the end.
- ``abort`` on a ``Pending`` or ``Running`` plan starts a rollback (it wins over
  ``suspend``). A step still ``Running`` at that moment may have taken effect: if it is
  reversible it is undone with the completed ones; if not it becomes ``Failed`` and is
  left as is. ``abort`` on a rolling-back or ended plan changes nothing.
- A rollback goes on after an undo fails (it restores as much as it can); the plan then
  ends ``Failed`` instead of ``RolledBack``.
- ``dependencies_ready`` only gates the start; a running plan is never stopped by it.
- ``currentStep`` is set only while a step is running or being undone; ``progress``
  counts the steps that ran to an end (Succeeded, Failed, RolledBack, RollbackFailed).
- A step's ``durationMs`` is the duration the executor reports, or else the time between
  ``startedAt`` and ``finishedAt`` (whole seconds once read back: times are stored to
  the second). ``totalDurationMs`` is always ``finishedAt - startedAt``.
- Step entries are matched to ``spec.steps`` by position and name; missing ones (or
  ones naming another step) start as ``Pending``, extra ones are dropped.

Verification (``core.verification``): a plan whose status has ``verification`` (the
baseline, recorded before its first step) is verified against its metrics after the last
step instead of succeeding at once:

- After the last step the plan is ``Verifying`` and ``next_move`` returns ``Verify``
  while the verification has not ended; the shell measures and hands the new
  verification status to ``record_verification``.
- Successful -> ``Succeeded``. Failed -> a rollback of the reversible steps in reverse
  order, ending ``RolledBack``, the message naming the metric, its value, the baseline and
  the condition. Inconclusive -> ``Wait`` for a person's decision (``verification_decision``
  of ``next_move``, recorded in status): Keep -> ``Succeeded``, RollBack -> rolled back.
- ``abort`` during verification rolls back; ``suspend`` does not pause a verification.
- A plan without ``status.verification`` never enters ``Verifying``: it behaves as it
  always did.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TypeAlias

from coordinator.api.common import ConditionStatus
from coordinator.api.plan import (
    ExecutionPlanSpec,
    ExecutionPlanStatus,
    PlanPhase,
    Step,
    StepPhase,
    StepStatus,
)
from coordinator.api.recommendation import RecommendationPhase
from coordinator.api.verification import (
    VerificationDecision,
    VerificationPhase,
    VerificationStatus,
)
from coordinator.core import conditions as conditions_
from coordinator.core import text

NOT_REVERSIBLE: Final = "not reversible: left as is"
NOT_STARTED: Final = "not started: skipped"
INTERRUPTED: Final = "interrupted by the abort: it may have taken effect"

# A step in one of these phases has produced its effect (or may have) and can be undone.
_UNDOABLE: Final = frozenset({StepPhase.SUCCEEDED, StepPhase.RUNNING})
# A step in one of these phases has not finished running yet.
_OPEN: Final = frozenset({StepPhase.PENDING, StepPhase.RUNNING})
# A step in one of these phases ran to an end; ``progress`` counts them.
_FINISHED: Final = frozenset(
    {StepPhase.SUCCEEDED, StepPhase.FAILED, StepPhase.ROLLED_BACK, StepPhase.ROLLBACK_FAILED}
)


class WaitReason(enum.StrEnum):
    """Why a plan that has not ended is not moving."""

    SUSPENDED = "Suspended"
    WAITING_FOR_DEPENDENCIES = "WaitingForDependencies"
    AWAITING_VERIFICATION_DECISION = "AwaitingVerificationDecision"
    WAITING_FOR_BASELINE = "WaitingForBaseline"
    MEASURING = "Measuring"


@dataclass(frozen=True, kw_only=True)
class Wait:
    """Nothing to do until the spec or the dependencies change."""

    reason: WaitReason
    message: str
    until: datetime | None = None
    """When to look again without an event (the next measurement, a baseline retry)."""


@dataclass(frozen=True, kw_only=True)
class Done:
    """The plan has ended; it never moves again."""

    phase: PlanPhase


@dataclass(frozen=True, kw_only=True)
class Advance:
    """Persist this status. Nothing runs; call ``next_move`` again afterwards."""

    status: ExecutionPlanStatus


@dataclass(frozen=True, kw_only=True)
class Execute:
    """Run step ``index`` (persisted as Running), then ``record_outcome``."""

    index: int
    step: Step


@dataclass(frozen=True, kw_only=True)
class Undo:
    """Undo step ``index`` (persisted as the step rolling back), then ``record_rollback``."""

    index: int
    step: Step


@dataclass(frozen=True, kw_only=True)
class Verify:
    """The plan is Verifying: begin the verification if it has not begun, take the
    measurements that are due (``core.verification``), then ``record_verification``."""

    verification: VerificationStatus


Move: TypeAlias = Wait | Done | Advance | Execute | Undo | Verify


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What an executor reports for one execute or undo call. Its error and result come
    from outside (an agent, an object): ``record_outcome`` and ``record_rollback`` store
    them cleaned (``core.text``)."""

    ok: bool
    result: Mapping[str, Any] | None = None
    error: str | None = None
    duration_ms: int | None = None


class PlanError(ValueError):
    """An outcome was recorded for a move the status does not allow (a stale move)."""


def initial_status(spec: ExecutionPlanSpec) -> ExecutionPlanStatus:
    """The status of a plan that has not started: Pending, one Pending entry per step."""
    return _counted(ExecutionPlanStatus(steps=[StepStatus(name=s.name) for s in spec.steps]))


def next_move(
    *,
    spec: ExecutionPlanSpec,
    status: ExecutionPlanStatus | None,
    now: datetime,
    dependencies_ready: bool,
    verification_decision: VerificationDecision | None = None,
) -> Move:
    """What to do now, from the spec and the persisted status alone.

    ``verification_decision``: a person's answer to an Inconclusive verification (the
    ``<plan>-verify`` approval: Approved keeps, Rejected or Expired rolls back); it is
    read only while the plan waits for it."""
    current = _aligned(spec, status)
    if current.phase.ended:
        return Done(phase=current.phase)
    now = _utc(now)
    if current.phase is PlanPhase.PENDING:
        move = _pending_move(spec, current, now, dependencies_ready=dependencies_ready)
    elif current.phase is PlanPhase.RUNNING:
        move = _running_move(spec, current, now)
    elif current.phase is PlanPhase.VERIFYING:
        move = _verifying_move(spec, current, now, decision=verification_decision)
    else:
        move = _rolling_back_move(spec, current, now)
    return Advance(status=_counted(move.status)) if isinstance(move, Advance) else move


def record_outcome(
    *,
    spec: ExecutionPlanSpec,
    status: ExecutionPlanStatus,
    index: int,
    outcome: Outcome,
    now: datetime,
) -> ExecutionPlanStatus:
    """The status after step ``index`` ran (the answer to ``Execute``); persist it."""
    current = _aligned(spec, status)
    if current.phase is not PlanPhase.RUNNING or _phase_at(current, index) is not StepPhase.RUNNING:
        raise PlanError(f"step {index} is not running in a running plan")
    now = _utc(now)
    entry = current.steps[index]
    error = None if outcome.ok else text.clean(outcome.error or "") or "failed"
    done = entry.model_copy(
        update={
            "phase": StepPhase.SUCCEEDED if outcome.ok else StepPhase.FAILED,
            "finished_at": now,
            "duration_ms": _duration(outcome, entry.started_at, now),
            "result": None if outcome.result is None else text.clean_value(dict(outcome.result)),
            "error": error,
        }
    )
    label = _label(spec, index)
    if outcome.ok:
        message = f"{label} succeeded"
    elif spec.steps[index].critical:
        message = f"{label} failed: {error}"
    else:
        message = f"{label} failed (not critical, going on): {error}"
    return _counted(_with_step(current, index, done, message=message))


def record_rollback(
    *,
    spec: ExecutionPlanSpec,
    status: ExecutionPlanStatus,
    index: int,
    outcome: Outcome,
    now: datetime,
) -> ExecutionPlanStatus:
    """The status after step ``index`` was undone (the answer to ``Undo``); persist it."""
    current = _aligned(spec, status)
    if (
        current.phase is not PlanPhase.ROLLING_BACK
        or current.current_step != index
        or _next_undo(spec, current) != index
    ):
        raise PlanError(f"step {index} is not the step rolling back")
    entry = current.steps[index]
    label = _label(spec, index)
    if outcome.ok:
        undone = entry.model_copy(
            update={"phase": StepPhase.ROLLED_BACK, "rolled_back_at": _utc(now)}
        )
        message = f"{label} rolled back"
    else:
        error = f"rollback failed: {text.clean(outcome.error or '') or 'no reason given'}"
        undone = entry.model_copy(update={"phase": StepPhase.ROLLBACK_FAILED, "error": error})
        message = f"{label}: {error}; going on with the others"
    return _counted(_with_step(current, index, undone, message=message))


def record_verification(
    *,
    spec: ExecutionPlanSpec,
    status: ExecutionPlanStatus,
    verification: VerificationStatus,
) -> ExecutionPlanStatus:
    """The status with the verification's progress (the answer to ``Verify``); persist it.
    The plan's own phase changes on the next ``next_move``."""
    current = _aligned(spec, status)
    if current.phase is not PlanPhase.VERIFYING:
        raise PlanError("the plan is not verifying")
    return current.model_copy(update={"verification": verification})


_RECOMMENDATION_PHASES: Final[Mapping[PlanPhase, RecommendationPhase]] = {
    PlanPhase.RUNNING: RecommendationPhase.EXECUTING,
    PlanPhase.VERIFYING: RecommendationPhase.EXECUTING,
    PlanPhase.ROLLING_BACK: RecommendationPhase.EXECUTING,
    PlanPhase.SUCCEEDED: RecommendationPhase.SUCCEEDED,
    PlanPhase.FAILED: RecommendationPhase.FAILED,
    PlanPhase.ROLLED_BACK: RecommendationPhase.ROLLED_BACK,
}


def recommendation_phase(plan_phase: PlanPhase) -> RecommendationPhase | None:
    """The phase the recommendation mirrors for its plan; None while the plan is Pending."""
    return _RECOMMENDATION_PHASES.get(plan_phase)


_READY: Final[Mapping[PlanPhase, ConditionStatus]] = {
    PlanPhase.PENDING: ConditionStatus.UNKNOWN,
    PlanPhase.RUNNING: ConditionStatus.UNKNOWN,
    PlanPhase.VERIFYING: ConditionStatus.UNKNOWN,
    PlanPhase.SUCCEEDED: ConditionStatus.TRUE,
    PlanPhase.ROLLING_BACK: ConditionStatus.FALSE,
    PlanPhase.ROLLED_BACK: ConditionStatus.FALSE,
    PlanPhase.FAILED: ConditionStatus.FALSE,
}


_PROGRESS: Final[Mapping[PlanPhase, conditions_.Progress]] = {
    PlanPhase.PENDING: conditions_.Progress.IN_PROGRESS,
    PlanPhase.RUNNING: conditions_.Progress.IN_PROGRESS,
    PlanPhase.VERIFYING: conditions_.Progress.IN_PROGRESS,
    PlanPhase.ROLLING_BACK: conditions_.Progress.IN_PROGRESS,
    PlanPhase.SUCCEEDED: conditions_.Progress.CURRENT,
    PlanPhase.ROLLED_BACK: conditions_.Progress.FAILED,
    PlanPhase.FAILED: conditions_.Progress.FAILED,
}


def with_conditions(
    status: ExecutionPlanStatus, *, generation: int | None, now: datetime
) -> ExecutionPlanStatus:
    """The status as it is written: ``observedGeneration`` and the conditions.

    Ready is True once the plan Succeeded, Unknown while it is Pending, Running or
    Verifying, False once it is rolling back or ended otherwise. Reconciling is True while
    it is Pending (suspended, or waiting for its dependencies), Running, Verifying or
    RollingBack; Stalled once it ended Failed or RolledBack (see ``conditions.progressed``).
    Their reason is the phase and their message the status message. The runner applies
    this to every status it writes; the machine itself never reads the conditions.
    """
    message = status.message or status.phase.value
    ready = conditions_.condition(
        status.conditions,
        conditions_.READY,
        _READY[status.phase],
        reason=status.phase.value,
        message=message,
        generation=generation,
        now=_utc(now),
    )
    conditions = conditions_.progressed(
        conditions_.merged(status.conditions, ready),
        _PROGRESS[status.phase],
        old=status.conditions,
        reason=status.phase.value,
        message=message,
        generation=generation,
        now=_utc(now),
    )
    return status.model_copy(update={"observed_generation": generation, "conditions": conditions})


# --- the moves of each plan phase ------------------------------------------------------


def _pending_move(
    spec: ExecutionPlanSpec, status: ExecutionPlanStatus, now: datetime, *, dependencies_ready: bool
) -> Move:
    if spec.abort:
        return Advance(status=_begin_rollback(spec, status, now))
    if spec.suspend:
        return Wait(
            reason=WaitReason.SUSPENDED, message="suspended: set spec.suspend to false to start"
        )
    if not dependencies_ready:
        return Wait(
            reason=WaitReason.WAITING_FOR_DEPENDENCIES,
            message="waiting for the recommendations it depends on to succeed",
        )
    started = status.model_copy(update={"phase": PlanPhase.RUNNING, "started_at": now})
    first = _first_open(started)
    return Advance(status=started if first is None else _mark_running(spec, started, first, now))


def _running_move(spec: ExecutionPlanSpec, status: ExecutionPlanStatus, now: datetime) -> Move:
    if spec.abort or _failed_critical(spec, status) is not None:
        return Advance(status=_begin_rollback(spec, status, now))
    index = _first_open(status)
    if index is None:
        message = _steps_done(spec, status)
        if status.verification is not None:
            verifying = status.model_copy(
                update={
                    "phase": PlanPhase.VERIFYING,
                    "current_step": None,
                    "message": f"{message}; verifying the change against its metrics",
                }
            )
            return Advance(status=verifying)
        return Advance(status=_finish(status, PlanPhase.SUCCEEDED, now, message=message))
    if status.steps[index].phase is StepPhase.RUNNING:
        return Execute(index=index, step=spec.steps[index])
    if spec.suspend:
        return Wait(reason=WaitReason.SUSPENDED, message=f"suspended before {_label(spec, index)}")
    return Advance(status=_mark_running(spec, status, index, now))


def _verifying_move(
    spec: ExecutionPlanSpec,
    status: ExecutionPlanStatus,
    now: datetime,
    *,
    decision: VerificationDecision | None,
) -> Move:
    verification = status.verification or VerificationStatus()
    if spec.abort:
        return Advance(status=_begin_rollback(spec, status, now))
    phase = verification.phase
    if phase is None or phase is VerificationPhase.RUNNING:
        return Verify(verification=verification)
    done = _steps_done(spec, status)
    if phase is VerificationPhase.SUCCESSFUL:
        message = f"{done}; verified: {verification.message or 'successful'}"
        return Advance(status=_finish(status, PlanPhase.SUCCEEDED, now, message=message))
    if phase is VerificationPhase.FAILED:
        return Advance(status=_begin_rollback(spec, status, now))
    if decision is None:
        return Wait(
            reason=WaitReason.AWAITING_VERIFICATION_DECISION,
            message=f"verification inconclusive ({verification.message}): waiting for a person "
            "to keep the change or roll it back",
        )
    decided = status.model_copy(
        update={"verification": verification.model_copy(update={"decision": decision})}
    )
    if decision is VerificationDecision.KEEP:
        message = f"{done}; verification inconclusive ({verification.message}); kept by decision"
        return Advance(status=_finish(decided, PlanPhase.SUCCEEDED, now, message=message))
    return Advance(status=_begin_rollback(spec, decided, now))


def _rolling_back_move(spec: ExecutionPlanSpec, status: ExecutionPlanStatus, now: datetime) -> Move:
    index = _next_undo(spec, status)
    if index is not None and status.current_step == index:
        return Undo(index=index, step=spec.steps[index])
    return Advance(status=_continue_rollback(spec, status, now))


# --- transitions -----------------------------------------------------------------------


def _mark_running(
    spec: ExecutionPlanSpec, status: ExecutionPlanStatus, index: int, now: datetime
) -> ExecutionPlanStatus:
    entry = StepStatus(name=spec.steps[index].name, phase=StepPhase.RUNNING, started_at=now)
    return _with_step(
        status, index, entry, message=f"running {_label(spec, index)}", current_step=index
    )


def _begin_rollback(
    spec: ExecutionPlanSpec, status: ExecutionPlanStatus, now: datetime
) -> ExecutionPlanStatus:
    steps = [
        _entry_for_rollback(step, entry, now)
        for step, entry in zip(spec.steps, status.steps, strict=True)
    ]
    rolling = status.model_copy(
        update={"phase": PlanPhase.ROLLING_BACK, "steps": steps, "current_step": None}
    )
    return _continue_rollback(spec, rolling, now)


def _entry_for_rollback(step: Step, entry: StepStatus, now: datetime) -> StepStatus:
    if entry.phase is StepPhase.PENDING:
        return entry.model_copy(update={"phase": StepPhase.SKIPPED, "message": NOT_STARTED})
    if entry.phase is StepPhase.SUCCEEDED and not step.reversible:
        return entry.model_copy(update={"message": NOT_REVERSIBLE})
    if entry.phase is StepPhase.RUNNING:
        if step.reversible:
            return entry.model_copy(update={"message": f"{INTERRUPTED}; undoing it"})
        return entry.model_copy(
            update={
                "phase": StepPhase.FAILED,
                "finished_at": now,
                "duration_ms": _millis(entry.started_at, now),
                "error": INTERRUPTED,
                "message": NOT_REVERSIBLE,
            }
        )
    return entry


def _continue_rollback(
    spec: ExecutionPlanSpec, status: ExecutionPlanStatus, now: datetime
) -> ExecutionPlanStatus:
    """Name the next step to undo in ``currentStep``, or end the plan when none is left."""
    cause = _rollback_cause(spec, status)
    index = _next_undo(spec, status)
    if index is not None:
        message = f"rolling back {_label(spec, index)} ({cause})"
        return status.model_copy(update={"current_step": index, "message": message})
    failed = [s.name for s in status.steps if s.phase is StepPhase.ROLLBACK_FAILED]
    if failed:
        message = f"{cause}; rollback failed for: {', '.join(failed)}"
        return _finish(status, PlanPhase.FAILED, now, message=message)
    return _finish(status, PlanPhase.ROLLED_BACK, now, message=f"rolled back ({cause})")


def _finish(
    status: ExecutionPlanStatus, phase: PlanPhase, now: datetime, *, message: str
) -> ExecutionPlanStatus:
    return status.model_copy(
        update={
            "phase": phase,
            "finished_at": now,
            "total_duration_ms": _millis(status.started_at, now),
            "current_step": None,
            "message": message,
        }
    )


def _with_step(
    status: ExecutionPlanStatus,
    index: int,
    entry: StepStatus,
    *,
    message: str,
    current_step: int | None = None,
) -> ExecutionPlanStatus:
    steps = [*status.steps[:index], entry, *status.steps[index + 1 :]]
    return status.model_copy(
        update={"steps": steps, "message": message, "current_step": current_step}
    )


def _counted(status: ExecutionPlanStatus) -> ExecutionPlanStatus:
    """The status with ``progress`` saying how many steps ran to an end, as "2/3"."""
    finished = sum(1 for entry in status.steps if entry.phase in _FINISHED)
    return status.model_copy(update={"progress": f"{finished}/{len(status.steps)}"})


# --- reading a status ------------------------------------------------------------------


def _aligned(spec: ExecutionPlanSpec, status: ExecutionPlanStatus | None) -> ExecutionPlanStatus:
    """The status with exactly one entry per step of the spec, in order."""
    if status is None:
        return initial_status(spec)
    entries = [
        status.steps[i]
        if i < len(status.steps) and status.steps[i].name == step.name
        else StepStatus(name=step.name)
        for i, step in enumerate(spec.steps)
    ]
    if entries == status.steps:
        return status
    return status.model_copy(update={"steps": entries})


def _phase_at(status: ExecutionPlanStatus, index: int) -> StepPhase | None:
    return status.steps[index].phase if 0 <= index < len(status.steps) else None


def _first_open(status: ExecutionPlanStatus) -> int | None:
    return next((i for i, s in enumerate(status.steps) if s.phase in _OPEN), None)


def _failed_critical(spec: ExecutionPlanSpec, status: ExecutionPlanStatus) -> int | None:
    return next(
        (
            i
            for i, (step, entry) in enumerate(zip(spec.steps, status.steps, strict=True))
            if step.critical and entry.phase is StepPhase.FAILED
        ),
        None,
    )


def _next_undo(spec: ExecutionPlanSpec, status: ExecutionPlanStatus) -> int | None:
    """The last step that took (or may have taken) effect and can be undone."""
    return next(
        (
            i
            for i in reversed(range(len(spec.steps)))
            if spec.steps[i].reversible and status.steps[i].phase in _UNDOABLE
        ),
        None,
    )


def _rollback_cause(spec: ExecutionPlanSpec, status: ExecutionPlanStatus) -> str:
    index = _failed_critical(spec, status)
    # A step interrupted by an abort is the only Failed one: the abort is the cause.
    if index is None or status.steps[index].error == INTERRUPTED:
        return _verification_cause(status.verification) or "aborted"
    return f"{_label(spec, index)} failed: {status.steps[index].error}"


def _verification_cause(verification: VerificationStatus | None) -> str | None:
    """Why the verification rolls the plan back, if it does."""
    if verification is None:
        return None
    if verification.phase is VerificationPhase.FAILED:
        return f"verification failed: {verification.message}"
    if (
        verification.phase is VerificationPhase.INCONCLUSIVE
        and verification.decision is VerificationDecision.ROLL_BACK
    ):
        return f"verification inconclusive ({verification.message}); rolled back by decision"
    return None


def _steps_done(spec: ExecutionPlanSpec, status: ExecutionPlanStatus) -> str:
    failed = [s.name for s in status.steps if s.phase is StepPhase.FAILED]
    message = f"all {len(spec.steps)} steps done"
    if failed:
        message += f"; non-critical steps failed: {', '.join(failed)}"
    return message


def _label(spec: ExecutionPlanSpec, index: int) -> str:
    return f"step {index + 1}/{len(spec.steps)} {spec.steps[index].name}"


# --- time ------------------------------------------------------------------------------


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _millis(start: datetime | None, end: datetime) -> int | None:
    if start is None:
        return None
    return max(0, round((end - start).total_seconds() * 1000))


def _duration(outcome: Outcome, started_at: datetime | None, now: datetime) -> int | None:
    return outcome.duration_ms if outcome.duration_ms is not None else _millis(started_at, now)
