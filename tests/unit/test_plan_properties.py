"""Properties of the plan machine over random plans, outcomes, aborts and crashes.

A crash loses one write (the executor may already have run) or writes the status without
its trailing Pending entries; the driver then resumes from whatever was persisted.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import example, given, settings
from hypothesis import strategies as st

from coordinator.api.plan import ExecutionPlanSpec, ExecutionPlanStatus, PlanPhase, StepPhase
from coordinator.core import plan
from tests.support.plans import Call, Crash, Harness, RecordingExecutor, plan_spec, step

P = StepPhase
# Once a step is persisted in one of these phases, it is never executed (undone) again.
NEVER_EXECUTE_AGAIN = frozenset(P) - {P.PENDING, P.RUNNING}
NEVER_UNDO_AGAIN = frozenset({P.FAILED, P.SKIPPED, P.ROLLED_BACK, P.ROLLBACK_FAILED})


@dataclass(frozen=True)
class Scenario:
    spec: ExecutionPlanSpec
    failing: frozenset[int]
    failing_undo: frozenset[int]
    crashes: list[Crash | None]  # what goes wrong with the write of move k
    abort_at: int | None  # abort is set before move k
    start: ExecutionPlanStatus | None  # what is persisted before the first move

    def flag(self, index: int) -> tuple[bool, bool]:
        s = self.spec.steps[index]
        return s.critical, s.reversible


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    flags = draw(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=6))
    indices = st.integers(0, len(flags) - 1)
    return Scenario(
        spec=plan_spec(
            *(step(f"s{i}", critical=c, reversible=r) for i, (c, r) in enumerate(flags))
        ),
        failing=draw(st.frozensets(indices, max_size=2)),
        failing_undo=draw(st.frozensets(indices)),
        crashes=draw(
            st.lists(st.sampled_from([None, None, Crash.LOST, Crash.PENDING_TAIL_DROPPED]))
        ),
        abort_at=draw(st.none() | st.integers(0, 8)),
        start=draw(st.sampled_from([None, ExecutionPlanStatus()])),
    )


@dataclass
class Run:
    """What happened: the moves, and the persisted status before each one."""

    harness: Harness
    moves: list[plan.Move]
    persisted: list[ExecutionPlanStatus | None]
    aborted_while: PlanPhase | None  # the persisted phase when abort was set

    @property
    def aborted(self) -> bool:
        """Whether the abort came while it could still change the course of the plan."""
        return self.aborted_while in (PlanPhase.PENDING, PlanPhase.RUNNING)


def drive(scenario: Scenario) -> Run:
    harness = Harness(
        scenario.spec,
        RecordingExecutor(failing=scenario.failing, failing_undo=scenario.failing_undo),
    )
    if scenario.start is not None:
        harness.persist(scenario.start)
    n = len(scenario.spec.steps)
    # Start + (execute + mark) per step + rollback (undo + mark) per step + end, plus one
    # repeated move per crash.
    bound = 4 * n + 4 + len(scenario.crashes)
    run = Run(harness, [], [], None)
    ever: dict[StepPhase, set[int]] = {phase: set() for phase in P}
    for k in range(bound):
        before = harness.status
        for index, entry in enumerate(before.steps if before else []):
            ever[entry.phase].add(index)
        if k == scenario.abort_at:
            run.aborted_while = before.phase if before else PlanPhase.PENDING
            harness.spec = scenario.spec.model_copy(update={"abort": True})
        calls = len(harness.executor.calls)
        move = harness.step(crash=scenario.crashes[k] if k < len(scenario.crashes) else None)
        run.moves.append(move)
        run.persisted.append(before)
        assert not isinstance(move, plan.Wait), move
        for call in harness.executor.calls[calls:]:
            check_call_is_allowed(call, before, ever)
        if isinstance(move, plan.Done):
            return run
    raise AssertionError(f"no end within {bound} moves: {run.moves}")


def check_call_is_allowed(
    call: Call, persisted: ExecutionPlanStatus | None, ever: dict[StepPhase, set[int]]
) -> None:
    """The call was announced in the persisted status, and its step never ended before."""
    assert persisted is not None
    never_again = NEVER_EXECUTE_AGAIN if call.kind == "execute" else NEVER_UNDO_AGAIN
    assert not any(call.index in ever[phase] for phase in never_again)
    if call.kind == "execute":
        assert persisted.phase is PlanPhase.RUNNING
        assert persisted.steps[call.index].phase is P.RUNNING
    else:
        assert persisted.phase is PlanPhase.ROLLING_BACK
        assert persisted.current_step == call.index


def collapse(indices: list[int]) -> list[int]:
    """The calls without the repeats a crash causes (the same step called again at once)."""
    return [i for k, i in enumerate(indices) if k == 0 or indices[k - 1] != i]


def expected_without_abort(scenario: Scenario) -> tuple[list[int], list[int], PlanPhase]:
    """The executes, undos and end phase RULES 5 prescribe, worked out independently."""
    executed: list[int] = []
    critical_failure = None
    for index in range(len(scenario.spec.steps)):
        executed.append(index)
        if index in scenario.failing and scenario.flag(index)[0]:
            critical_failure = index
            break
    if critical_failure is None:
        return executed, [], PlanPhase.SUCCEEDED
    undone = [
        i
        for i in reversed(range(critical_failure))
        if scenario.flag(i)[1] and i not in scenario.failing
    ]
    failed = any(i in scenario.failing_undo for i in undone)
    return executed, undone, PlanPhase.FAILED if failed else PlanPhase.ROLLED_BACK


def expected_after_abort(run: Run) -> tuple[list[int], PlanPhase]:
    """Undos of an aborted plan: what had (or may have) taken effect when the rollback began."""
    before = next(
        status
        for status, move in zip(run.persisted, run.moves, strict=True)
        if isinstance(move, plan.Advance)
        and move.status.phase in (PlanPhase.ROLLING_BACK, PlanPhase.ROLLED_BACK)
    )
    spec = run.harness.spec
    entries = before.steps if before else []
    undone = [
        i
        for i in reversed(range(len(entries)))
        if spec.steps[i].reversible and entries[i].phase in (P.SUCCEEDED, P.RUNNING)
    ]
    failed = any(i in run.harness.executor.failing_undo for i in undone)
    return undone, PlanPhase.FAILED if failed else PlanPhase.ROLLED_BACK


FOUR = plan_spec(step("s0"), step("s1"), step("s2"), step("s3"))


@settings(max_examples=200, deadline=None)
@given(scenario=scenarios())
# An undo fails in the middle of a rollback: the others are still undone.
@example(Scenario(FOUR, frozenset({3}), frozenset({1}), [], None, None))
# Aborted while step 1 is persisted Running: it may have taken effect, so it is undone.
@example(Scenario(FOUR, frozenset(), frozenset(), [], 3, None))
# The outcome of step 1 is lost after it ran: it runs again, step 0 does not.
@example(Scenario(FOUR, frozenset(), frozenset(), [None, None, None, Crash.LOST], None, None))
def test_the_machine_keeps_its_promises_through_crashes(scenario: Scenario) -> None:
    run = drive(scenario)
    executor = run.harness.executor
    final = run.harness.saved
    executed, undone = executor.indices("execute"), executor.indices("undo")
    lost = sum(1 for crash in scenario.crashes if crash is Crash.LOST)

    # Steps run in order; a step is only run or undone again after a lost write.
    assert collapse(executed) == sorted(set(executed))
    assert len(executed) + len(undone) - len(collapse(executed)) - len(collapse(undone)) <= lost
    if lost == 0:
        assert collapse(executed) == executed
        assert collapse(undone) == undone

    assert final.phase.ended
    assert run.moves[-1] == plan.Done(phase=final.phase)
    assert final.current_step is None
    assert [s.name for s in final.steps] == [s.name for s in scenario.spec.steps]

    want_executed, want_undone, want_phase = expected_without_abort(scenario)
    if run.aborted:
        # Stopped somewhere along the way the plan would have gone.
        assert collapse(executed) == want_executed[: len(collapse(executed))]
        want_undone, want_phase = expected_after_abort(run)
    else:
        assert collapse(executed) == want_executed
    assert collapse(undone) == want_undone
    assert final.phase is want_phase

    # Every undone step says so, in the order it was undone; nothing else was undone.
    for index, entry in enumerate(final.steps):
        if index not in want_undone:
            assert entry.phase not in (P.ROLLED_BACK, P.ROLLBACK_FAILED)
            assert entry.rolled_back_at is None
        elif index in scenario.failing_undo:
            assert entry.phase is P.ROLLBACK_FAILED
        else:
            assert entry.phase is P.ROLLED_BACK
    times = [final.steps[i].rolled_back_at for i in want_undone if i not in scenario.failing_undo]
    assert times == sorted(t for t in times if t is not None)

    # Outside a rollback, nothing is skipped and nothing left over is Pending or Running.
    if final.phase is PlanPhase.SUCCEEDED:
        assert not undone
        assert {s.phase for s in final.steps} <= {P.SUCCEEDED, P.FAILED}
    assert not {s.phase for s in final.steps} & {P.PENDING, P.RUNNING}


@settings(max_examples=100, deadline=None)
@given(scenario=scenarios())
def test_non_critical_failures_never_roll_back(scenario: Scenario) -> None:
    spec = scenario.spec.model_copy(
        update={"steps": [s.model_copy(update={"critical": False}) for s in scenario.spec.steps]}
    )
    run = drive(
        Scenario(spec, scenario.failing, scenario.failing_undo, scenario.crashes, None, None)
    )
    final = run.harness.saved
    assert final.phase is PlanPhase.SUCCEEDED
    assert run.harness.executor.indices("undo") == []
    assert [s.phase is P.FAILED for s in final.steps] == [
        i in scenario.failing for i in range(len(spec.steps))
    ]
