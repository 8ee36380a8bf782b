"""The plan runner: drives one ExecutionPlan through ``core.plan``, persisting every move.

Only the runner writes a plan's status, one merge patch per move, before the next move
begins: a step is recorded as Running before its executor is called, and its outcome
is recorded before the next step starts. After a crash the runner starts again from
the stored status; the core guarantees that no completed step runs again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Final

from coordinator import metrics
from coordinator.api.common import API_VERSION
from coordinator.api.plan import (
    ExecutionPlan,
    ExecutionPlanSpec,
    ExecutionPlanStatus,
    Executor,
    PlanPhase,
    StepPhase,
)
from coordinator.core import plan as plan_
from coordinator.executors import Executor as StepExecutor
from coordinator.executors import StepContext
from coordinator.k8s import client as client_
from coordinator.k8s import events as events_

logger = logging.getLogger(__name__)

PLANS: Final = "executionplans"
WAIT_RECHECK_SECONDS: Final = 30.0

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


def transition_events(
    old: ExecutionPlanStatus | None, new: ExecutionPlanStatus
) -> list[tuple[str, str, str]]:
    """(reason, type, message) for every step and plan transition from `old` to `new`."""
    events = []
    old_steps = {s.name: s.phase for s in old.steps} if old else {}
    for step in new.steps:
        if old_steps.get(step.name) is step.phase or step.phase not in _STEP_EVENTS:
            continue
        reason, type_ = _STEP_EVENTS[step.phase]
        detail = step.error or (f"in {step.duration_ms} ms" if step.duration_ms is not None else "")
        events.append((reason, type_, f"Step {step.name}: {step.phase.value} {detail}".strip()))
    if (old.phase if old else PlanPhase.PENDING) is not new.phase and new.phase in _PLAN_EVENTS:
        reason, type_ = _PLAN_EVENTS[new.phase]
        events.append((reason, type_, new.message or new.phase.value))
    return events


def _wait_text(message: str, ready: bool, why: str) -> str:
    """The message of a waiting plan, with why its dependencies are not ready."""
    return f"{message}; {why}" if why and not ready else message


class PlanRunner:
    def __init__(
        self,
        *,
        client: client_.Client,
        recorder: events_.Recorder,
        executors: Mapping[Executor, StepExecutor],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.client = client
        self.recorder = recorder
        self.executors = executors
        self.clock = clock

    async def start(
        self,
        plan: ExecutionPlan,
        *,
        dependencies: tuple[bool, str],
        on_write: Callable[[ExecutionPlan], None] = lambda _: None,
    ) -> ExecutionPlanStatus:
        """Start a pending plan if it may start, else record why it waits.

        Makes at most the first move: a started plan (Running) is then driven by
        `drive`, in its own task. A new plan gets its steps (all Pending) and the outcome
        of that first move in one write: a move from Pending never runs a step, so there
        is nothing between the two that a crash could lose.
        """
        status = plan.status
        if status is None:
            initial = plan_.initial_status(plan.spec)
            ready, why = dependencies
            move = plan_.next_move(
                spec=plan.spec, status=initial, now=self.clock(), dependencies_ready=ready
            )
            match move:
                case plan_.Advance(status=new):
                    pass
                case plan_.Wait(message=message):
                    new = initial.model_copy(update={"message": _wait_text(message, ready, why)})
                case _:  # Done, or a step to run: never the first move of a pending plan
                    new = initial
            return await self._write(plan, None, new, on_write)
        if status.phase is not PlanPhase.PENDING:
            return status
        status, _ = await self._move(plan, plan.spec, status, dependencies, on_write)
        return status

    async def drive(
        self,
        plan: ExecutionPlan,
        *,
        latest: Callable[[], ExecutionPlan],
        dependencies: Callable[[], tuple[bool, str]],
        stopped: Callable[[], bool],
        wake: Callable[[float], Awaitable[None]],
        abort: bool = False,
        on_write: Callable[[ExecutionPlan], None] = lambda _: None,
    ) -> PlanPhase:
        """Run moves until the plan ends or `stopped()`; returns the phase reached.

        `latest()` gives the newest known plan (for suspend/abort changes); `wake(t)`
        returns when something may have changed, or after `t` seconds. With `abort`
        the plan is rolled back whatever its spec says (the owner is being deleted).
        """
        status = plan.status or plan_.initial_status(plan.spec)
        while not stopped():
            spec = latest().spec
            if abort:
                spec = spec.model_copy(update={"abort": True})
            status, move = await self._move(plan, spec, status, dependencies(), on_write)
            if isinstance(move, plan_.Done):
                return move.phase
            if isinstance(move, plan_.Wait):
                await wake(WAIT_RECHECK_SECONDS)
        return status.phase

    async def _move(
        self,
        plan: ExecutionPlan,
        spec: ExecutionPlanSpec,
        status: ExecutionPlanStatus,
        dependencies: tuple[bool, str],
        on_write: Callable[[ExecutionPlan], None],
    ) -> tuple[ExecutionPlanStatus, plan_.Move]:
        """Make one move of the plan machine and persist its outcome."""
        ready, why = dependencies
        move = plan_.next_move(spec=spec, status=status, now=self.clock(), dependencies_ready=ready)
        context = StepContext(
            namespace=plan.metadata.namespace, plan=plan.metadata.name, uid=plan.metadata.uid or ""
        )
        match move:
            case plan_.Done():
                return status, move
            case plan_.Wait(message=message):
                new = status.model_copy(update={"message": _wait_text(message, ready, why)})
            case plan_.Advance(status=new):
                pass
            case plan_.Execute(index=index, step=step):
                outcome = await self._run(
                    self.executors[step.executor].execute(step, context=context)
                )
                new = plan_.record_outcome(
                    spec=spec, status=status, index=index, outcome=outcome, now=self.clock()
                )
            case plan_.Undo(index=index, step=step):
                result = status.steps[index].result
                undo = self.executors[step.executor].undo(step, result=result, context=context)
                outcome = await self._run(undo)
                new = plan_.record_rollback(
                    spec=spec, status=status, index=index, outcome=outcome, now=self.clock()
                )
        return await self._write(plan, status, new, on_write), move

    @staticmethod
    async def _run(call: Awaitable[plan_.Outcome]) -> plan_.Outcome:
        try:
            return await call
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an executor bug is a failed step, not a dead operator
            logger.exception("executor raised")
            return plan_.Outcome(ok=False, error=f"{type(exc).__name__}: {exc}")

    async def _write(
        self,
        plan: ExecutionPlan,
        old: ExecutionPlanStatus | None,
        new: ExecutionPlanStatus,
        on_write: Callable[[ExecutionPlan], None],
    ) -> ExecutionPlanStatus:
        new = plan_.with_conditions(new, generation=plan.metadata.generation, now=self.clock())
        patch = client_.status_patch(old.to_wire() if old else None, new.to_wire())
        if patch is None:
            return new
        raw = await self.client.patch_status(
            PLANS, plan.metadata.namespace, plan.metadata.name, patch
        )
        written = ExecutionPlan.model_validate(raw)
        on_write(written)
        ref = events_.ObjectRef(
            API_VERSION,
            "ExecutionPlan",
            plan.metadata.namespace,
            plan.metadata.name,
            plan.metadata.uid,
        )
        for reason, type_, message in transition_events(old, new):
            self.recorder.record(ref, reason=reason, message=message, type_=type_)
        _observe(plan, old, new)
        return written.status or new


def _observe(
    plan: ExecutionPlan, old: ExecutionPlanStatus | None, new: ExecutionPlanStatus
) -> None:
    """Step and plan durations, for the steps and the plan that just ended."""
    before = {s.name: s.phase for s in old.steps} if old else {}
    actions = {s.name: s.action for s in plan.spec.steps}
    for step in new.steps:
        ended = step.phase in (StepPhase.SUCCEEDED, StepPhase.FAILED)
        if ended and before.get(step.name) is not step.phase and step.duration_ms is not None:
            labels = (actions.get(step.name, "unknown"), step.phase.value)
            metrics.STEP_DURATION.labels(*labels).observe(step.duration_ms / 1000)
    if new.phase.ended and (old is None or not old.phase.ended) and new.total_duration_ms:
        metrics.PLAN_DURATION.labels(new.phase.value).observe(new.total_duration_ms / 1000)
