"""A driver for the plan machine in tests: a fake API server, a fake clock, a recording executor.

It drives ``coordinator.core.plan`` the way the operator must: the status is read back from
the store (a JSON round trip, as through the API server) before every move, and every new
status is written before the next move. A crash can be injected into any one write.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from coordinator.api.plan import (
    ExecutionPlanSpec,
    ExecutionPlanStatus,
    Executor,
    Step,
    StepPhase,
)
from coordinator.api.verification import VerificationDecision, VerificationStatus
from coordinator.core import plan, verification

START = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def step(name: str, *, critical: bool = True, reversible: bool = True, **params: Any) -> Step:
    return Step(
        name=name,
        action=name,
        critical=critical,
        reversible=reversible,
        executor=Executor.SIMULATED,
        params=params,
    )


def plan_spec(*steps: Step, suspend: bool = False, abort: bool = False) -> ExecutionPlanSpec:
    return ExecutionPlanSpec(
        recommendation="rec-008",
        customer_id="customer-1",
        suspend=suspend,
        abort=abort,
        steps=list(steps),
    )


class Crash(enum.StrEnum):
    """What goes wrong with one write."""

    LOST = "lost"  # the process died before the write reached the API server
    PENDING_TAIL_DROPPED = "pending-tail-dropped"  # written without trailing Pending entries


@dataclass(frozen=True)
class Call:
    """One executor call, with the status that was persisted when it was made."""

    kind: str  # "execute" or "undo"
    index: int
    persisted: ExecutionPlanStatus


@dataclass
class RecordingExecutor:
    """Fails the steps it is told to; records every call; reports a duration if asked."""

    failing: frozenset[int] = frozenset()
    failing_undo: frozenset[int] = frozenset()
    reported_ms: int | None = None
    calls: list[Call] = field(default_factory=list)

    def run(self, kind: str, index: int, persisted: ExecutionPlanStatus) -> plan.Outcome:
        self.calls.append(Call(kind, index, persisted))
        failing = self.failing if kind == "execute" else self.failing_undo
        if index in failing:
            return plan.Outcome(ok=False, error=f"{kind} of step {index} broke")
        return plan.Outcome(ok=True, result={"step": index}, duration_ms=self.reported_ms)

    def indices(self, kind: str) -> list[int]:
        return [call.index for call in self.calls if call.kind == kind]


@dataclass
class Harness:
    spec: ExecutionPlanSpec
    executor: RecordingExecutor = field(default_factory=RecordingExecutor)
    dependencies_ready: bool = True
    wire: dict[str, Any] | None = None
    now: datetime = START
    tick: timedelta = timedelta(seconds=1)
    writes: int = 0
    # Verification: the metrics, what Prometheus answers for (metric, measurement number),
    # and a person's decision on an Inconclusive verification.
    checks: tuple[verification.Check, ...] = ()
    readings: Callable[[str, int], verification.Reading] | None = None
    decision: VerificationDecision | None = None

    @property
    def status(self) -> ExecutionPlanStatus | None:
        """The persisted status, as the operator reads it back."""
        return None if self.wire is None else ExecutionPlanStatus.model_validate(self.wire)

    @property
    def saved(self) -> ExecutionPlanStatus:
        status = self.status
        assert status is not None, "nothing was persisted"
        return status

    def persist(self, status: ExecutionPlanStatus) -> None:
        self.wire = status.to_wire()
        self.writes += 1

    def clock(self) -> datetime:
        self.now += self.tick
        return self.now

    def step(self, *, crash: Crash | None = None) -> plan.Move:
        """One move: decide, act, write (unless ``crash`` says the write went wrong)."""
        status = self.status
        move = plan.next_move(
            spec=self.spec,
            status=status,
            now=self.clock(),
            dependencies_ready=self.dependencies_ready,
            verification_decision=self.decision,
        )
        match move:
            case plan.Advance(status=new):
                pass
            case plan.Verify(verification=current):
                assert status is not None, "verified before anything was persisted"
                new = plan.record_verification(
                    spec=self.spec, status=status, verification=self.measure(current)
                )
            case plan.Execute(index=index) | plan.Undo(index=index):
                assert status is not None, "ran a step before anything was persisted"
                kind = "execute" if isinstance(move, plan.Execute) else "undo"
                outcome = self.executor.run(kind, index, status)
                record = plan.record_outcome if kind == "execute" else plan.record_rollback
                new = record(
                    spec=self.spec, status=status, index=index, outcome=outcome, now=self.clock()
                )
            case _:
                return move
        if crash is Crash.LOST:
            return move
        if crash is Crash.PENDING_TAIL_DROPPED:
            new = drop_pending_tail(new)
        self.persist(new)
        return move

    def measure(self, current: VerificationStatus) -> VerificationStatus:
        """Begin the verification and take the measurements due; if none is, wait (move the
        clock) until one is."""
        assert self.readings is not None, "a verified plan needs readings"
        status = verification.begin(self.checks, current, now=self.clock())
        due = verification.due(self.checks, status, now=self.now)
        if not due and (at := verification.next_due(self.checks, status)) is not None:
            self.now = max(self.now, at)
            due = verification.due(self.checks, status, now=self.now)
        for check in due:
            taken = next(m.taken for m in status.metrics if m.name == check.name)
            reading = self.readings(check.name, taken)
            status = verification.record(self.checks, status, check.name, reading, now=self.now)
        return status

    def run(self, *, max_moves: int = 200) -> plan.Wait | plan.Done:
        """Move until the machine waits or is done."""
        for _ in range(max_moves):
            move = self.step()
            if isinstance(move, plan.Wait | plan.Done):
                return move
        raise AssertionError(f"the plan did not stop within {max_moves} moves")


def drop_pending_tail(status: ExecutionPlanStatus) -> ExecutionPlanStatus:
    """The status without its trailing Pending entries (they say nothing the spec does not)."""
    entries = list(status.steps)
    while entries and entries[-1].phase is StepPhase.PENDING and entries[-1].started_at is None:
        entries.pop()
    return status.model_copy(update={"steps": entries})
