"""The plan runner: drives one ExecutionPlan through ``core.plan``, persisting every move.

Only the runner writes a plan's status, one merge patch per move, before the next move
begins: a step is recorded as Running before its executor is called, and its outcome
is recorded before the next step starts. After a crash the runner starts again from
the stored status; the core guarantees that no completed step runs again.

Every status write carries the plan's resourceVersion as the runner last read or wrote
it: a write over a status someone else changed meanwhile is answered 409 Conflict. The
runner then reads the plan again; if another writer moved it (a step or the phase is
not what the runner read), it stops driving the plan and leaves it to that writer; if
only the spec or metadata changed, it decides again from the fresh object (recording
the outcome of a step it already ran, never running it again).

Transient API errors (5xx, 429, connection refused or reset, timeouts) in those reads
and writes are retried (``k8s.retrying``), with a short exponential backoff, until the
daemon stops.

Events (which ones: ``core.planevents``): each transition event is named after the plan's
uid and the transition (see ``coordinator.k8s.events``). When the runner starts driving a
plan, and when it sees a plan that ended lately, it records again every event the stored
status implies: those already posted are answered 409 and not duplicated, those a crash
lost are posted. The events of its own writes (never replays) also go to ``on_events``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Final

from coordinator import metrics
from coordinator import verifier as verifier_
from coordinator.api.common import API_VERSION, PLANS
from coordinator.api.plan import (
    ExecutionPlan,
    ExecutionPlanSpec,
    ExecutionPlanStatus,
    Executor,
    PlanPhase,
    StepPhase,
)
from coordinator.core import plan as plan_
from coordinator.core import planevents
from coordinator.executors import Executor as StepExecutor
from coordinator.executors import StepContext
from coordinator.k8s import client as client_
from coordinator.k8s import events as events_
from coordinator.k8s import retrying as retrying_
from coordinator.k8s import status as status_

logger = logging.getLogger(__name__)

START_ATTEMPTS: Final = 5
"""Tries of a transient error when starting a plan (no daemon yet to stop it): ~3 s."""
START_CONFLICT_ROUNDS: Final = 5
REPLAY_WINDOW: Final = timedelta(minutes=10)
"""Ended plans whose events are recorded again when seen: those that ended this lately
(a crash may have lost them); a restart does not post again the events of old plans."""


def _wait_text(message: str, ready: bool, why: str) -> str:
    """The message of a waiting plan, with why its dependencies are not ready."""
    return why if why and not ready else message


def _moved(read: ExecutionPlanStatus | None, stored: ExecutionPlanStatus | None) -> bool:
    """Whether another writer moved the plan (its phase, a step's phase or start)."""
    if read is None or stored is None:
        return (read is None) != (stored is None)
    if read.phase is not stored.phase:
        return True
    mine = [(s.name, s.phase, s.started_at) for s in read.steps]
    theirs = [(s.name, s.phase, s.started_at) for s in stored.steps]
    return mine != theirs


class _SupersededError(Exception):
    """Another writer moved the plan (or it is gone): this runner stops driving it."""

    def __init__(self, plan: ExecutionPlan | None) -> None:
        super().__init__()
        self.plan = plan


_AGAIN: Final = None
"""What `_move` returns instead of a move when it must decide again from a fresh plan."""


class PlanRunner:
    def __init__(
        self,
        *,
        client: client_.Client,
        recorder: events_.Recorder,
        executors: Mapping[Executor, StepExecutor],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        writer: status_.StatusWriter | None = None,
        submitter: Callable[[str, str], tuple[str | None, tuple[str, ...]]] | None = None,
        verifier: verifier_.Verifier | None = None,
    ) -> None:
        self.client = client
        self.verifier = verifier or verifier_.Verifier(client=client, query=None, clock=clock)
        self.submitter = submitter or (lambda namespace, name: (None, ()))
        """(namespace, recommendation) -> who submitted it and their groups (the stamps)."""
        self.writer = writer or status_.StatusWriter(client)
        """Writes every status (and tells the Store what it wrote)."""
        self.recorder = recorder
        self.executors = executors
        self.clock = clock
        self.sleep = sleep
        self.on_events: Callable[[ExecutionPlan, list[planevents.PlanEvent]], None] | None = None

    async def start(
        self,
        plan: ExecutionPlan,
        *,
        dependencies: tuple[bool, str],
    ) -> ExecutionPlanStatus | None:
        """Start a pending plan if it may start, else record why it waits.

        Makes at most the first move: a started plan (Running) is then driven by
        `drive`, in its own task. A new plan gets its steps (all Pending) and the outcome
        of that first move in one write: a move from Pending never runs a step, so there
        is nothing between the two that a crash could lose. Returns the status reached.
        """
        control = retrying_.Control(
            stopped=lambda: False, sleep=self.sleep, attempts=START_ATTEMPTS
        )
        current = plan
        try:
            for _ in range(START_CONFLICT_ROUNDS):
                if current.status is None:
                    written = await self._first_write(current, dependencies, control)
                    if written is None:  # a conflict that changed nothing: try again
                        current = await self._reread(current, None, control)
                        continue
                    return written.status
                if current.status.phase is not PlanPhase.PENDING:
                    return current.status
                current, move = await self._move(current, current.spec, dependencies, control)
                if move is not _AGAIN:
                    return current.status
        except _SupersededError as exc:
            return exc.plan.status if exc.plan is not None else None
        return current.status

    async def _first_write(
        self,
        plan: ExecutionPlan,
        dependencies: tuple[bool, str],
        control: retrying_.Control,
    ) -> ExecutionPlan | None:
        """The steps and the first move of a plan without a status; None on a conflict."""
        initial = plan_.initial_status(plan.spec)
        ready, why = dependencies
        move = await self.verifier.next_move(plan, plan.spec, initial, ready=ready)
        match move:
            case plan_.Advance(status=new):
                pass
            case plan_.Wait(message=message):
                new = initial.model_copy(update={"message": _wait_text(message, ready, why)})
            case _:  # Done, or a step to run: never the first move of a pending plan
                new = initial
        try:
            return await self._write(plan, None, new, control)
        except client_.ApiException as exc:
            if client_.conflict(exc):
                return None
            raise

    async def drive(
        self,
        plan: ExecutionPlan,
        *,
        latest: Callable[[], ExecutionPlan],
        dependencies: Callable[[], tuple[bool, str]],
        stopped: Callable[[], bool],
        wake: Callable[[float], Awaitable[None]],
        abort: bool = False,
    ) -> PlanPhase:
        """Run moves until the plan ends or `stopped()`; returns the phase reached.

        `latest()` gives the newest known plan (for suspend/abort changes); `wake(t)`
        returns when something may have changed, or after `t` seconds. With `abort` the
        plan is rolled back whatever its spec says (the owner is being deleted). Stops
        early, leaving the plan as it is, when another writer moved it, or when
        `stopped()` during the retries of a transient API error.
        """
        control = retrying_.Control(
            stopped=stopped, sleep=lambda t: retrying_.pause(t, stopped, self.sleep)
        )
        current = plan
        self.replay(current)
        try:
            while not stopped():
                spec = latest().spec
                if abort:
                    spec = spec.model_copy(update={"abort": True})
                current, move = await self._move(
                    current, spec, dependencies(), control, abort=abort
                )
                if isinstance(move, plan_.Done):
                    return move.phase
                if isinstance(move, plan_.Wait):
                    await wake(self.verifier.pause(move))
        except retrying_.StoppedError:
            pass
        except _SupersededError as exc:
            return exc.plan.status_phase if exc.plan is not None else current.status_phase
        return current.status_phase

    def replay(self, plan: ExecutionPlan) -> None:
        """Record every event the stored status of `plan` implies (see the module)."""
        if plan.status is None or not plan.metadata.uid:
            return
        self._record(plan, planevents.implied_events(plan.status))

    def replay_if_recent(self, plan: ExecutionPlan) -> None:
        """`replay` for a plan that ended within REPLAY_WINDOW (a crash may have lost the
        events of its last writes); nothing for others."""
        status = plan.status
        if status is None or not status.phase.ended or status.finished_at is None:
            return
        if self.clock() - status.finished_at <= REPLAY_WINDOW:
            self.replay(plan)

    async def _move(
        self,
        current: ExecutionPlan,
        spec: ExecutionPlanSpec,
        dependencies: tuple[bool, str],
        control: retrying_.Control,
        *,
        abort: bool = False,
    ) -> tuple[ExecutionPlan, plan_.Move | None]:
        """Make one move of the plan machine and persist its outcome.

        Returns the plan as written (or as read) and the move, or `_AGAIN` when a
        conflict showed that the plan changed harmlessly and nothing ran: decide again.
        """
        status = current.status or plan_.initial_status(current.spec)
        ready, why = dependencies
        move = await self.verifier.next_move(current, spec, status, ready=ready)
        submitter, groups = self.submitter(current.metadata.namespace, current.spec.recommendation)
        context = StepContext(
            namespace=current.metadata.namespace,
            plan=current.metadata.name,
            uid=current.metadata.uid or "",
            recommendation=current.spec.recommendation,
            customer_id=current.spec.customer_id,
            submitter=submitter,
            groups=groups,
        )
        record: Callable[[ExecutionPlanSpec, ExecutionPlanStatus], ExecutionPlanStatus] | None
        record = None
        match move:
            case plan_.Done():
                return current, move
            case plan_.Wait(message=message):
                new = status.model_copy(update={"message": _wait_text(message, ready, why)})
            case plan_.Advance(status=new):
                pass
            case plan_.Execute(index=index, step=step):
                outcome = await self._run(
                    self.executors[step.executor].execute(step, context=context)
                )

                def record(sp: ExecutionPlanSpec, st: ExecutionPlanStatus) -> ExecutionPlanStatus:
                    return plan_.record_outcome(
                        spec=sp, status=st, index=index, outcome=outcome, now=self.clock()
                    )

                new = record(spec, status)
            case plan_.Undo(index=index, step=step):
                result = status.steps[index].result
                undo = self.executors[step.executor].undo(step, result=result, context=context)
                outcome = await self._run(undo)

                def record(sp: ExecutionPlanSpec, st: ExecutionPlanStatus) -> ExecutionPlanStatus:
                    return plan_.record_rollback(
                        spec=sp, status=st, index=index, outcome=outcome, now=self.clock()
                    )

                new = record(spec, status)
        while True:
            try:
                return await self._write(current, status, new, control), move
            except client_.ApiException as exc:
                if not client_.conflict(exc):
                    raise
            fresh = await self._reread(current, status, control)
            if record is None:  # nothing ran: decide again from the fresh plan
                return fresh, _AGAIN
            # The step ran: record its outcome on the fresh status (unchanged where it
            # matters, `_reread` made sure), with the fresh spec.
            current = fresh
            status = fresh.status or plan_.initial_status(fresh.spec)
            spec = fresh.spec.model_copy(update={"abort": True}) if abort else fresh.spec
            new = record(spec, status)

    async def _reread(
        self, current: ExecutionPlan, read: ExecutionPlanStatus | None, control: retrying_.Control
    ) -> ExecutionPlan:
        """The plan as stored now, after a write of ours was refused (409 Conflict).

        Raises `_SupersededError` when the plan is gone or another writer moved it since this
        runner read `read`.
        """
        ns, name = current.metadata.namespace, current.metadata.name
        raw = await retrying_.retrying(
            lambda: self.client.get(PLANS, ns, name), control, f"read plan {ns}/{name}"
        )
        fresh = ExecutionPlan.model_validate(raw) if raw is not None else None
        if fresh is None or fresh.metadata.uid != current.metadata.uid:
            logger.info("plan %s/%s is gone; stopped driving it", ns, name)
            raise _SupersededError(None)
        if _moved(read, fresh.status):
            logger.warning(
                "plan %s/%s was moved by another writer since this one read it "
                "(resourceVersion %s, now %s); leaving it to that writer",
                ns,
                name,
                current.metadata.resource_version,
                fresh.metadata.resource_version,
            )
            raise _SupersededError(fresh)
        return fresh

    def _record(self, plan: ExecutionPlan, events: list[planevents.PlanEvent]) -> None:
        """Record `events` on `plan` (each under its key: posted at most once)."""
        ref = events_.ObjectRef(
            API_VERSION,
            "ExecutionPlan",
            plan.metadata.namespace,
            plan.metadata.name,
            plan.metadata.uid,
        )
        for event in events:
            self.recorder.record(
                ref, reason=event.reason, message=event.message, key=event.key, type_=event.type
            )

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
        current: ExecutionPlan,
        old: ExecutionPlanStatus | None,
        new: ExecutionPlanStatus,
        control: retrying_.Control,
    ) -> ExecutionPlan:
        """Write `new` over `old` if the plan is still at the version of `current`.

        Returns the plan as written; raises the 409 ApiException when it is not.
        """
        new = plan_.with_conditions(new, generation=current.metadata.generation, now=self.clock())
        ns, name = current.metadata.namespace, current.metadata.name
        before, after = old.to_wire() if old else None, new.to_wire()
        raw = await retrying_.retrying(
            lambda: self.writer.write(
                PLANS, ns, name, before, after, resource_version=current.metadata.resource_version
            ),
            control,
            f"write status of plan {ns}/{name}",
        )
        if raw is None:  # nothing changed
            return current
        written = ExecutionPlan.model_validate(raw)
        self._record(current, events := planevents.transition_events(old, new))
        if self.on_events is not None:  # the notifications (coordinator.app)
            self.on_events(current, events)
        _observe(current, old, new)
        return written


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
