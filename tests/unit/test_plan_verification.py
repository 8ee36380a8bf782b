"""The plan machine with verification: after the last step a verified plan is Verifying;
Successful -> Succeeded, Failed -> rolled back with the reason, Inconclusive -> a person
decides. Plans without verification are untouched (test_plan_machine, test_plan_properties)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.api.common import ConditionStatus
from coordinator.api.plan import ExecutionPlanStatus, PlanPhase, StepPhase
from coordinator.api.recommendation import RecommendationPhase
from coordinator.api.verification import (
    VerificationDecision,
    VerificationPhase,
    VerificationStatus,
)
from coordinator.core import plan
from coordinator.core.verification import Check, Reading
from tests.support.builders import metric
from tests.support.plans import START, Crash, Harness, plan_spec, step
from tests.support.verification import checks_of, tpl

Readings = Callable[[str, int], Reading]


def always(value: float | None) -> Readings:
    return lambda _name, _n: Reading(value=value)


def verified(
    readings: Readings,
    *,
    checks: tuple[Check, ...] | None = None,
    steps: int = 2,
    decision: VerificationDecision | None = None,
    reversible: tuple[bool, ...] | None = None,
) -> Harness:
    """A started plan whose baseline (1.0 for every metric) was recorded before its steps."""
    flags = reversible or (True,) * steps
    spec = plan_spec(*(step(f"s{i}", reversible=flags[i]) for i in range(steps)))
    checks = checks if checks is not None else checks_of(tpl("slo", metric(count=3)))
    harness = Harness(spec=spec, checks=checks, readings=readings, decision=decision)
    baseline = VerificationStatus(templates=["slo"], baseline={c.name: 1.0 for c in checks})
    harness.persist(plan.initial_status(spec).model_copy(update={"verification": baseline}))
    return harness


def test_a_plan_without_verification_never_verifies() -> None:
    harness = Harness(spec=plan_spec(step("a")))
    moves = [harness.step() for _ in range(6)]
    assert not any(isinstance(m, plan.Verify) for m in moves)
    assert harness.saved.phase is PlanPhase.SUCCEEDED
    assert harness.saved.verification is None


def test_after_the_last_step_a_verified_plan_is_verifying_then_succeeds() -> None:
    harness = verified(always(1.05))
    seen: list[PlanPhase] = []
    for _ in range(50):
        move = harness.step()
        seen.append(harness.saved.phase)
        if isinstance(move, plan.Done):
            break
    assert PlanPhase.VERIFYING in seen
    assert seen.index(PlanPhase.VERIFYING) > seen.index(PlanPhase.RUNNING)
    status = harness.saved
    assert status.phase is PlanPhase.SUCCEEDED
    assert status.message == "all 2 steps done; verified: all 1 metrics successful"
    assert status.verification is not None
    assert status.verification.phase is VerificationPhase.SUCCESSFUL
    (m,) = status.verification.metrics
    assert (m.successful, len(m.measurements)) == (3, 3)
    assert harness.executor.indices("undo") == []


def test_verifying_is_executing_for_the_recommendation_and_in_progress() -> None:
    assert plan.recommendation_phase(PlanPhase.VERIFYING) is RecommendationPhase.EXECUTING
    status = ExecutionPlanStatus(phase=PlanPhase.VERIFYING)
    written = plan.with_conditions(status, generation=1, now=START).conditions
    assert {c.type: c.status for c in written} == {
        "Ready": ConditionStatus.UNKNOWN,
        "Reconciling": ConditionStatus.TRUE,  # kstatus: still on its way
    }


def test_a_failed_verification_rolls_back_the_reversible_steps_in_reverse_order() -> None:
    harness = verified(always(1.5), steps=3, reversible=(True, False, True))
    assert isinstance(harness.run(), plan.Done)
    status = harness.saved
    assert status.phase is PlanPhase.ROLLED_BACK
    assert harness.executor.indices("undo") == [2, 0]
    assert [s.phase for s in status.steps] == [
        StepPhase.ROLLED_BACK,
        StepPhase.SUCCEEDED,
        StepPhase.ROLLED_BACK,
    ]
    assert status.message == (
        "rolled back (verification failed: metric slo/latency failed: failureCondition "
        "result > baseline * 1.25 (result 1.5, baseline 1))"
    )


def test_an_inconclusive_verification_waits_for_a_person() -> None:
    harness = verified(always(None))  # no data
    move = harness.run()
    assert isinstance(move, plan.Wait)
    assert move.reason is plan.WaitReason.AWAITING_VERIFICATION_DECISION
    assert "verification inconclusive (metric slo/latency inconclusive" in move.message
    assert harness.saved.phase is PlanPhase.VERIFYING
    assert harness.run() == move  # still waiting; nothing written
    assert harness.executor.indices("undo") == []


def test_a_person_keeps_an_inconclusive_change() -> None:
    harness = verified(always(None))
    harness.run()
    harness.decision = VerificationDecision.KEEP
    assert isinstance(harness.run(), plan.Done)
    status = harness.saved
    assert status.phase is PlanPhase.SUCCEEDED
    assert status.message is not None
    assert status.message.endswith("kept by decision")
    assert status.verification is not None
    assert status.verification.decision is VerificationDecision.KEEP
    assert harness.executor.indices("undo") == []


def test_a_person_rolls_back_an_inconclusive_change() -> None:
    harness = verified(always(None))
    harness.run()
    harness.decision = VerificationDecision.ROLL_BACK
    assert isinstance(harness.run(), plan.Done)
    status = harness.saved
    assert status.phase is PlanPhase.ROLLED_BACK
    assert harness.executor.indices("undo") == [1, 0]
    assert status.message is not None
    assert status.message.endswith("rolled back by decision)")


def test_an_abort_during_verification_rolls_back() -> None:
    harness = verified(always(1.0))
    while harness.status is None or harness.saved.phase is not PlanPhase.VERIFYING:
        harness.step()
    harness.spec = harness.spec.model_copy(update={"abort": True})
    assert isinstance(harness.run(), plan.Done)
    assert harness.saved.phase is PlanPhase.ROLLED_BACK
    assert harness.saved.message == "rolled back (aborted)"


def test_a_verification_is_recorded_only_on_a_verifying_plan() -> None:
    spec = plan_spec(step("a"))
    with pytest.raises(plan.PlanError, match="not verifying"):
        plan.record_verification(
            spec=spec, status=plan.initial_status(spec), verification=VerificationStatus()
        )


# --- properties ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    values: tuple[float | None, ...]  # the readings, in order (cycled)
    dry_run_values: tuple[float | None, ...]
    reversible: tuple[bool, ...]
    decision: VerificationDecision | None
    crashes: tuple[bool, ...]  # a write lost at move k


@st.composite
def cases(draw: st.DrawFn) -> Case:
    value = st.one_of(st.none(), st.sampled_from([0.9, 1.0, 1.2, 1.3, 2.0]))
    return Case(
        values=tuple(draw(st.lists(value, min_size=1, max_size=6))),
        dry_run_values=tuple(draw(st.lists(value, min_size=1, max_size=6))),
        reversible=tuple(draw(st.lists(st.booleans(), min_size=1, max_size=4))),
        decision=draw(st.sampled_from([None, *VerificationDecision])),
        crashes=tuple(draw(st.lists(st.booleans(), max_size=80))),
    )


@settings(max_examples=200, deadline=None)
@given(case=cases())
def test_verification_outcomes_end_the_plan_as_the_contract_says(case: Case) -> None:
    """Whatever the readings, the lost writes and the decision: each metric has at most its
    count of measurements; the plan ends Succeeded exactly when the verification was
    Successful or a person kept it, and otherwise rolls back every reversible step once,
    in reverse order; dry-run metrics never change the outcome."""
    checks = checks_of(
        tpl(
            "slo",
            metric("latency", count=3, failureLimit=0, consecutiveErrorLimit=1),
            metric("errors", count=2, dryRun=True),
        )
    )

    def readings(name: str, n: int) -> Reading:
        series = case.values if name == "slo/latency" else case.dry_run_values
        return Reading(value=series[n % len(series)])

    harness = verified(
        readings,
        checks=checks,
        steps=len(case.reversible),
        reversible=case.reversible,
        decision=case.decision,
    )
    end: plan.Move | None = None
    for k in range(300):
        crash = Crash.LOST if k < len(case.crashes) and case.crashes[k] else None
        end = harness.step(crash=crash)
        if isinstance(end, plan.Wait | plan.Done):
            break
    status = harness.saved
    v = status.verification
    assert v is not None
    assert v.phase is not None
    assert v.phase is not VerificationPhase.RUNNING
    for m in v.metrics:
        assert m.taken <= (3 if m.name == "slo/latency" else 2)
    # the dry-run metric decided nothing: the outcome follows the deciding one
    deciding = next(m for m in v.metrics if m.name == "slo/latency")
    if deciding.phase is VerificationPhase.FAILED:
        assert v.phase is VerificationPhase.FAILED
    elif deciding.phase is VerificationPhase.SUCCESSFUL:
        assert v.phase is VerificationPhase.SUCCESSFUL
    kept = v.phase is VerificationPhase.SUCCESSFUL or (
        v.phase is VerificationPhase.INCONCLUSIVE and case.decision is VerificationDecision.KEEP
    )
    if v.phase is VerificationPhase.INCONCLUSIVE and case.decision is None:
        assert isinstance(end, plan.Wait)
        assert status.phase is PlanPhase.VERIFYING
        return
    assert isinstance(end, plan.Done)
    undone = harness.executor.indices("undo")
    if kept:
        assert status.phase is PlanPhase.SUCCEEDED
        assert undone == []
    else:
        assert status.phase is PlanPhase.ROLLED_BACK
        expected = [i for i in reversed(range(len(case.reversible))) if case.reversible[i]]
        assert list(dict.fromkeys(undone)) == expected  # each once (again only after a lost write)
        assert status.message is not None
        assert "verification" in status.message
