"""The plan state machine (RULES 5), driven step by step through a fake API server."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest

from coordinator.api.common import Condition, ConditionStatus
from coordinator.api.plan import (
    ExecutionPlanSpec,
    ExecutionPlanStatus,
    PlanPhase,
    StepPhase,
    StepStatus,
)
from coordinator.api.recommendation import RecommendationPhase
from coordinator.core import plan
from tests.support.plans import START, Harness, RecordingExecutor, plan_spec, step

P = StepPhase

ORIGIN = plan_spec(
    step("take_snapshot"),
    step("migrate_workload"),
    step("validate_quality", reversible=False),
)


def phases(status: ExecutionPlanStatus) -> list[StepPhase]:
    return [s.phase for s in status.steps]


# --- how a plan ends --------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    id: str
    spec: ExecutionPlanSpec
    failing: frozenset[int]
    failing_undo: frozenset[int]
    executed: list[int]
    undone: list[int]
    steps: list[StepPhase]
    phase: PlanPhase


# s0, s2, s3 reversible; s1 irreversible; s4 non-critical.
FIVE = plan_spec(
    step("s0"),
    step("s1", reversible=False),
    step("s2", critical=False),
    step("s3"),
    step("s4"),
)

SCENARIOS = [
    Scenario(
        "happy path",
        ORIGIN,
        frozenset(),
        frozenset(),
        [0, 1, 2],
        [],
        [P.SUCCEEDED] * 3,
        PlanPhase.SUCCEEDED,
    ),
    Scenario(
        "non-critical failure goes on",
        FIVE,
        frozenset({2}),
        frozenset(),
        [0, 1, 2, 3, 4],
        [],
        [P.SUCCEEDED, P.SUCCEEDED, P.FAILED, P.SUCCEEDED, P.SUCCEEDED],
        PlanPhase.SUCCEEDED,
    ),
    Scenario(
        "critical failure rolls back the completed reversible steps in reverse",
        FIVE,
        frozenset({4}),
        frozenset(),
        [0, 1, 2, 3, 4],
        [3, 2, 0],
        [P.ROLLED_BACK, P.SUCCEEDED, P.ROLLED_BACK, P.ROLLED_BACK, P.FAILED],
        PlanPhase.ROLLED_BACK,
    ),
    Scenario(
        "a failed non-critical step is not undone; unstarted steps are skipped",
        FIVE,
        frozenset({2, 3}),
        frozenset(),
        [0, 1, 2, 3],
        [0],
        [P.ROLLED_BACK, P.SUCCEEDED, P.FAILED, P.FAILED, P.SKIPPED],
        PlanPhase.ROLLED_BACK,
    ),
    Scenario(
        "first step fails: nothing to undo",
        ORIGIN,
        frozenset({0}),
        frozenset(),
        [0],
        [],
        [P.FAILED, P.SKIPPED, P.SKIPPED],
        PlanPhase.ROLLED_BACK,
    ),
    Scenario(
        "irreversible last step fails",
        ORIGIN,
        frozenset({2}),
        frozenset(),
        [0, 1, 2],
        [1, 0],
        [P.ROLLED_BACK, P.ROLLED_BACK, P.FAILED],
        PlanPhase.ROLLED_BACK,
    ),
    Scenario(
        "a failed undo does not stop the rollback; the plan fails",
        FIVE,
        frozenset({4}),
        frozenset({3}),
        [0, 1, 2, 3, 4],
        [3, 2, 0],
        [P.ROLLED_BACK, P.SUCCEEDED, P.ROLLED_BACK, P.ROLLBACK_FAILED, P.FAILED],
        PlanPhase.FAILED,
    ),
]


@pytest.mark.parametrize("case", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_how_a_plan_ends(case: Scenario) -> None:
    harness = Harness(
        case.spec,
        RecordingExecutor(failing=case.failing, failing_undo=case.failing_undo),
    )
    assert harness.run() == plan.Done(phase=case.phase)
    status = harness.saved
    assert harness.executor.indices("execute") == case.executed
    assert harness.executor.indices("undo") == case.undone
    assert phases(status) == case.steps
    assert status.phase is case.phase
    assert status.current_step is None
    assert status.finished_at is not None
    # Every execute and undo happened only after the status said so.
    for call in harness.executor.calls:
        if call.kind == "execute":
            assert call.persisted.phase is PlanPhase.RUNNING
            assert call.persisted.steps[call.index].phase is P.RUNNING
        else:
            assert call.persisted.phase is PlanPhase.ROLLING_BACK
            assert call.persisted.current_step == call.index
    for index, entry in enumerate(status.steps):
        assert (entry.rolled_back_at is not None) == (
            index in case.undone and index not in case.failing_undo
        )
        assert (entry.error is not None) == (
            index in case.failing or index in case.failing_undo & set(case.undone)
        )


def test_the_happy_path_move_by_move() -> None:
    harness = Harness(ORIGIN)
    kinds = []
    while not isinstance(move := harness.step(), plan.Done):
        kinds.append((type(move).__name__, getattr(move, "index", None)))
    assert kinds == [
        ("Advance", None),  # Running, startedAt, step 0 Running: one write
        ("Execute", 0),
        ("Advance", None),
        ("Execute", 1),
        ("Advance", None),
        ("Execute", 2),
        ("Advance", None),  # Succeeded
    ]
    status = harness.saved
    assert status.message == "all 3 steps done"
    assert [s.result for s in status.steps] == [{"step": 0}, {"step": 1}, {"step": 2}]


def test_rollback_leaves_irreversible_and_unstarted_steps_with_a_message() -> None:
    harness = Harness(FIVE, RecordingExecutor(failing=frozenset({3})))
    harness.run()
    steps = harness.saved.steps
    assert (steps[1].phase, steps[1].message) == (P.SUCCEEDED, plan.NOT_REVERSIBLE)
    assert (steps[4].phase, steps[4].message) == (P.SKIPPED, plan.NOT_STARTED)
    assert steps[4].started_at is None
    assert steps[3].error == "execute of step 3 broke"
    assert harness.saved.message == ("rolled back (step 4/5 s3 failed: execute of step 3 broke)")


def test_rollback_failure_is_reported_on_the_step_and_the_plan() -> None:
    harness = Harness(
        ORIGIN, RecordingExecutor(failing=frozenset({2}), failing_undo=frozenset({1}))
    )
    harness.run()
    status = harness.saved
    assert status.steps[1].error == "rollback failed: undo of step 1 broke"
    assert status.steps[1].rolled_back_at is None
    assert status.message == (
        "step 3/3 validate_quality failed: execute of step 2 broke; "
        "rollback failed for: migrate_workload"
    )


def test_undo_is_marked_before_it_runs() -> None:
    harness = Harness(ORIGIN, RecordingExecutor(failing=frozenset({2})))
    while not isinstance(harness.step(), plan.Undo):
        pass
    marked = harness.executor.calls[-1].persisted
    assert marked.phase is PlanPhase.ROLLING_BACK
    assert marked.current_step == 1
    assert marked.message == (
        "rolling back step 2/3 migrate_workload "
        "(step 3/3 validate_quality failed: execute of step 2 broke)"
    )


@pytest.mark.parametrize(
    ("failing", "progress"),
    [
        (frozenset(), ["0/3", "1/3", "1/3", "2/3", "2/3", "3/3", "3/3"]),
        # step 1 fails, the rollback is marked, step 0 is undone (RolledBack counts).
        (frozenset({1}), ["0/3", "1/3", "1/3", "2/3", "2/3", "2/3", "2/3"]),
    ],
)
def test_progress_counts_the_steps_that_ran_to_an_end(
    failing: frozenset[int], progress: list[str]
) -> None:
    harness = Harness(ORIGIN, RecordingExecutor(failing=failing))
    seen = []
    while not isinstance(harness.step(), plan.Done):
        seen.append(harness.saved.progress)
    assert seen == progress


# --- time -------------------------------------------------------------------------------


def test_durations_come_from_the_timestamps() -> None:
    harness = Harness(ORIGIN)
    harness.run()
    status = harness.saved
    # Each move ticks the clock by a second; recording an outcome ticks it once more.
    assert status.started_at == START + timedelta(seconds=1)
    for index, entry in enumerate(status.steps):
        assert entry.started_at == START + timedelta(seconds=1 + 3 * index)
        assert entry.finished_at == entry.started_at + timedelta(seconds=2)
        assert entry.duration_ms == 2000
    assert status.finished_at == START + timedelta(seconds=10)
    assert status.total_duration_ms == 9000


def test_a_duration_reported_by_the_executor_wins() -> None:
    harness = Harness(ORIGIN, RecordingExecutor(reported_ms=500))
    harness.run()
    assert [s.duration_ms for s in harness.saved.steps] == [500, 500, 500]
    assert harness.saved.total_duration_ms == 9000


def test_naive_times_are_taken_as_utc() -> None:
    naive = START.replace(tzinfo=None)
    move = plan.next_move(spec=ORIGIN, status=None, now=naive, dependencies_ready=True)
    assert isinstance(move, plan.Advance)
    assert move.status.started_at == START
    assert move.status.steps[0].started_at == START


# --- suspend ----------------------------------------------------------------------------


def test_a_suspended_plan_does_not_start() -> None:
    harness = Harness(ORIGIN.model_copy(update={"suspend": True}))
    assert harness.run() == plan.Wait(
        reason=plan.WaitReason.SUSPENDED, message="suspended: set spec.suspend to false to start"
    )
    assert harness.wire is None
    harness.spec = ORIGIN
    assert harness.run() == plan.Done(phase=PlanPhase.SUCCEEDED)


def test_suspend_mid_run_finishes_the_step_in_flight_then_pauses() -> None:
    harness = Harness(ORIGIN)
    harness.step()  # step 0 marked Running
    harness.spec = ORIGIN.model_copy(update={"suspend": True})
    assert harness.run() == plan.Wait(
        reason=plan.WaitReason.SUSPENDED, message="suspended before step 2/3 migrate_workload"
    )
    assert harness.executor.indices("execute") == [0]
    assert harness.saved.phase is PlanPhase.RUNNING
    assert phases(harness.saved) == [P.SUCCEEDED, P.PENDING, P.PENDING]
    harness.spec = ORIGIN
    assert harness.run() == plan.Done(phase=PlanPhase.SUCCEEDED)
    assert harness.executor.indices("execute") == [0, 1, 2]


def test_suspend_does_not_pause_a_rollback() -> None:
    harness = Harness(ORIGIN, RecordingExecutor(failing=frozenset({2})))
    while not isinstance(harness.step(), plan.Undo):
        pass
    harness.spec = ORIGIN.model_copy(update={"suspend": True})
    assert harness.run() == plan.Done(phase=PlanPhase.ROLLED_BACK)
    assert harness.executor.indices("undo") == [1, 0]


# --- abort ------------------------------------------------------------------------------


@pytest.mark.parametrize("suspend", [True, False])
def test_abort_before_start_ends_rolled_back_in_one_write(suspend: bool) -> None:
    harness = Harness(ORIGIN.model_copy(update={"abort": True, "suspend": suspend}))
    assert harness.run() == plan.Done(phase=PlanPhase.ROLLED_BACK)
    assert harness.writes == 1
    assert harness.executor.calls == []
    status = harness.saved
    assert phases(status) == [P.SKIPPED] * 3
    assert (status.started_at, status.total_duration_ms) == (None, None)
    assert status.finished_at is not None
    assert status.message == "rolled back (aborted)"


def test_abort_mid_run_undoes_the_completed_steps() -> None:
    harness = Harness(ORIGIN)
    while harness.executor.indices("execute") != [0, 1]:
        harness.step()
    harness.spec = ORIGIN.model_copy(update={"abort": True})
    assert harness.run() == plan.Done(phase=PlanPhase.ROLLED_BACK)
    assert harness.executor.indices("execute") == [0, 1]
    assert harness.executor.indices("undo") == [1, 0]
    assert phases(harness.saved) == [P.ROLLED_BACK, P.ROLLED_BACK, P.SKIPPED]


@pytest.mark.parametrize(
    ("reversible", "undone", "interrupted"),
    [
        (True, [1, 0], StepStatus(name="s1", phase=P.ROLLED_BACK)),
        (False, [0], StepStatus(name="s1", phase=P.FAILED, error=plan.INTERRUPTED)),
    ],
)
def test_abort_treats_a_running_step_as_possibly_done(
    reversible: bool, undone: list[int], interrupted: StepStatus
) -> None:
    spec = plan_spec(step("s0"), step("s1", reversible=reversible), step("s2"))
    harness = Harness(spec)
    while harness.executor.indices("execute") != [0]:
        harness.step()
    harness.step()  # s1 marked Running; the operator dies before running it
    harness.spec = spec.model_copy(update={"abort": True})
    assert harness.run() == plan.Done(phase=PlanPhase.ROLLED_BACK)
    assert harness.executor.indices("execute") == [0]
    assert harness.executor.indices("undo") == undone
    entry = harness.saved.steps[1]
    assert (entry.phase, entry.error) == (interrupted.phase, interrupted.error)
    if not reversible:
        assert entry.message == plan.NOT_REVERSIBLE
        assert entry.finished_at is not None


def test_abort_during_a_rollback_changes_nothing() -> None:
    harness = Harness(ORIGIN, RecordingExecutor(failing=frozenset({2})))
    while not isinstance(harness.step(), plan.Undo):
        pass
    harness.spec = ORIGIN.model_copy(update={"abort": True})
    assert harness.run() == plan.Done(phase=PlanPhase.ROLLED_BACK)
    assert harness.executor.indices("undo") == [1, 0]
    assert "validate_quality failed" in (harness.saved.message or "")


@pytest.mark.parametrize("failing", [frozenset(), frozenset({1})])
def test_an_ended_plan_never_moves(failing: frozenset[int]) -> None:
    harness = Harness(ORIGIN, RecordingExecutor(failing=failing))
    done = harness.run()
    ended = harness.wire
    for flags in ({"abort": True}, {"suspend": True}, {"abort": True, "suspend": True}):
        harness.spec = ORIGIN.model_copy(update=flags)
        harness.dependencies_ready = False
        assert harness.run() == done
    assert harness.wire == ended


# --- dependencies -----------------------------------------------------------------------


def test_a_plan_waits_for_its_dependencies_only_before_it_starts() -> None:
    harness = Harness(ORIGIN, dependencies_ready=False)
    move = harness.run()
    assert isinstance(move, plan.Wait)
    assert move.reason is plan.WaitReason.WAITING_FOR_DEPENDENCIES
    assert "depends on" in move.message
    assert harness.wire is None
    harness.dependencies_ready = True
    harness.step()
    harness.dependencies_ready = False
    assert harness.run() == plan.Done(phase=PlanPhase.SUCCEEDED)


# --- resuming ---------------------------------------------------------------------------


def test_a_running_step_is_run_again_after_a_crash_and_completed_ones_are_not() -> None:
    harness = Harness(ORIGIN)
    while harness.executor.indices("execute") != [0, 1]:
        harness.step()
    # The operator died after running step 1 and before writing its outcome.
    harness.wire = harness.executor.calls[-1].persisted.to_wire()
    assert phases(harness.saved) == [P.SUCCEEDED, P.RUNNING, P.PENDING]
    assert harness.run() == plan.Done(phase=PlanPhase.SUCCEEDED)
    assert harness.executor.indices("execute") == [0, 1, 1, 2]


def test_an_undo_is_run_again_after_a_crash_and_finished_ones_are_not() -> None:
    harness = Harness(FIVE, RecordingExecutor(failing=frozenset({4})))
    while harness.executor.indices("undo") != [3, 2]:
        harness.step()
    harness.wire = harness.executor.calls[-1].persisted.to_wire()
    assert harness.run() == plan.Done(phase=PlanPhase.ROLLED_BACK)
    assert harness.executor.indices("undo") == [3, 2, 2, 0]


@pytest.mark.parametrize(
    "persisted",
    [
        ExecutionPlanStatus(),
        ExecutionPlanStatus(phase=PlanPhase.RUNNING, started_at=START),
        ExecutionPlanStatus(
            phase=PlanPhase.RUNNING,
            started_at=START,
            steps=[StepStatus(name="take_snapshot", phase=P.SUCCEEDED)],
        ),
        ExecutionPlanStatus(
            phase=PlanPhase.RUNNING,
            started_at=START,
            steps=[
                StepStatus(name="take_snapshot", phase=P.SUCCEEDED),
                StepStatus(name="migrate_workload", phase=P.SUCCEEDED),
                StepStatus(name="validate_quality"),
                StepStatus(name="left-over"),
            ],
        ),
    ],
    ids=["empty", "running-without-entries", "fewer-entries", "extra-entries"],
)
def test_missing_or_extra_step_entries_are_initialised(persisted: ExecutionPlanStatus) -> None:
    harness = Harness(ORIGIN)
    harness.persist(persisted)
    assert harness.run() == plan.Done(phase=PlanPhase.SUCCEEDED)
    done = sum(1 for s in persisted.steps if s.phase is P.SUCCEEDED)
    assert harness.executor.indices("execute") == list(range(done, 3))
    assert [s.name for s in harness.saved.steps] == [s.name for s in ORIGIN.steps]


def test_initial_status_has_one_pending_entry_per_step() -> None:
    assert plan.initial_status(ORIGIN) == ExecutionPlanStatus(
        phase=PlanPhase.PENDING,
        progress="0/3",
        steps=[
            StepStatus(name=n) for n in ("take_snapshot", "migrate_workload", "validate_quality")
        ],
    )


# --- stale outcomes ---------------------------------------------------------------------


def test_an_outcome_for_a_step_that_is_not_running_is_refused() -> None:
    status = plan.initial_status(ORIGIN)
    ok = plan.Outcome(ok=True)
    with pytest.raises(plan.PlanError):
        plan.record_outcome(spec=ORIGIN, status=status, index=0, outcome=ok, now=START)
    with pytest.raises(plan.PlanError):
        plan.record_rollback(spec=ORIGIN, status=status, index=0, outcome=ok, now=START)


def test_an_outcome_for_a_step_out_of_range_is_refused() -> None:
    harness = Harness(ORIGIN)
    harness.step()
    with pytest.raises(plan.PlanError):
        plan.record_outcome(
            spec=ORIGIN, status=harness.saved, index=7, outcome=plan.Outcome(ok=True), now=START
        )


def test_an_undo_of_another_step_than_the_marked_one_is_refused() -> None:
    harness = Harness(ORIGIN, RecordingExecutor(failing=frozenset({2})))
    while not isinstance(harness.step(), plan.Undo):
        pass
    marked = harness.executor.calls[-1].persisted
    with pytest.raises(plan.PlanError):
        plan.record_rollback(
            spec=ORIGIN, status=marked, index=0, outcome=plan.Outcome(ok=True), now=START
        )


# --- the recommendation mirrors its plan ------------------------------------------------


@pytest.mark.parametrize(
    ("plan_phase", "expected"),
    [
        (PlanPhase.PENDING, None),
        (PlanPhase.RUNNING, RecommendationPhase.EXECUTING),
        (PlanPhase.ROLLING_BACK, RecommendationPhase.EXECUTING),
        (PlanPhase.SUCCEEDED, RecommendationPhase.SUCCEEDED),
        (PlanPhase.FAILED, RecommendationPhase.FAILED),
        (PlanPhase.ROLLED_BACK, RecommendationPhase.ROLLED_BACK),
    ],
)
def test_recommendation_phase(plan_phase: PlanPhase, expected: RecommendationPhase | None) -> None:
    assert plan.recommendation_phase(plan_phase) is expected


# --- the Ready condition the runner writes with every status -----------------------------


@pytest.mark.parametrize(
    ("phase", "ready"),
    [
        (PlanPhase.PENDING, "Unknown"),
        (PlanPhase.RUNNING, "Unknown"),
        (PlanPhase.SUCCEEDED, "True"),
        (PlanPhase.ROLLING_BACK, "False"),
        (PlanPhase.ROLLED_BACK, "False"),
        (PlanPhase.FAILED, "False"),
    ],
)
def test_ready_says_whether_the_plan_succeeded(phase: PlanPhase, ready: str) -> None:
    status = plan.with_conditions(
        ExecutionPlanStatus(phase=phase, message="what happened"), generation=3, now=START
    )
    (condition,) = [c for c in status.conditions if c.type == "Ready"]
    assert (condition.type, condition.status.value, condition.reason) == ("Ready", ready, phase)
    assert (condition.message, condition.observed_generation) == ("what happened", 3)
    assert condition.last_transition_time == START
    assert status.observed_generation == 3


def _ready_history(
    spec: ExecutionPlanSpec, executor: RecordingExecutor | None = None
) -> tuple[Harness, list[Condition]]:
    """Run `spec` writing every status as the runner does; every Ready written, in order."""
    h = Harness(spec, executor=executor or RecordingExecutor())
    written: list[Condition] = []
    persist = h.persist

    def persist_with_conditions(status: ExecutionPlanStatus) -> None:
        status = plan.with_conditions(status, generation=1, now=h.now)
        written.append(next(c for c in status.conditions if c.type == "Ready"))
        persist(status)

    h.persist = persist_with_conditions  # type: ignore[method-assign]
    h.run()
    return h, written


def test_a_finished_plan_is_ready_since_it_succeeded() -> None:
    h, written = _ready_history(ORIGIN)
    assert {(c.status.value, c.reason) for c in written[:-1]} == {("Unknown", "Running")}
    (ready,) = h.saved.conditions
    assert (ready.status.value, ready.reason) == ("True", "Succeeded")
    assert ready.last_transition_time == h.saved.finished_at
    # While Unknown, the time it became Unknown stays through every step's write.
    assert {c.last_transition_time for c in written[:-1]} == {written[0].last_transition_time}


def test_a_rolled_back_plan_is_not_ready() -> None:
    h, _ = _ready_history(ORIGIN, executor=RecordingExecutor(failing=frozenset({1})))
    assert h.saved.phase is PlanPhase.ROLLED_BACK
    (ready,) = [c for c in h.saved.conditions if c.type == "Ready"]
    assert (ready.status.value, ready.reason) == ("False", "RolledBack")


def test_ready_leaves_other_conditions_alone() -> None:
    other = Condition(type="Other", status=ConditionStatus.TRUE, reason="Because")
    status = plan.with_conditions(ExecutionPlanStatus(conditions=[other]), generation=1, now=START)
    assert [c.type for c in status.conditions] == ["Other", "Ready", "Reconciling"]
    assert status.conditions[0] == other
