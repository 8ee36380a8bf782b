"""The pure core of verification: which templates apply, queries filled in, the measurement
state machine (Argo Rollouts' AnalysisRun), its schedule across restarts, savings and
calibration."""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.api.common import RiskLevel
from coordinator.api.recommendation import Recommendation
from coordinator.api.verification import (
    MeasurementPhase,
    PrometheusProvider,
    SavingsStatus,
    VerificationPhase,
    VerificationStatus,
)
from coordinator.core import conflicts, verification
from coordinator.core.verification import Check, Reading
from tests.support.builders import metric
from tests.support.verification import NO_DATA, T0, checks_of, rec, tpl


def started(
    checks: Sequence[Check], baseline: dict[str, float] | None = None
) -> VerificationStatus:
    return verification.begin(
        checks, VerificationStatus(baseline=baseline or {c.name: 1.0 for c in checks}), now=T0
    )


def run(
    checks: Sequence[Check], readings: Sequence[Reading], *, name: str | None = None
) -> VerificationStatus:
    """Feed the readings of one metric, each at the time it is due."""
    status = started(checks)
    target = name or checks[0].name
    check = next(c for c in checks if c.name == target)
    for reading in readings:
        at = verification.due_at(check, status)
        assert at is not None, "not due any more"
        status = verification.record(checks, status, target, reading, now=at)
    return status


def entry(status: VerificationStatus, name: str) -> Any:
    return next(m for m in status.metrics if m.name == name)


# --- which templates apply ----------------------------------------------------------------------


def test_every_selecting_template_applies_plus_the_named_ones() -> None:
    templates = [
        tpl("all"),
        tpl("cost-only", selector={"agentTypes": ["cost"]}),
        tpl("perf-only", selector={"agentTypes": ["performance"]}),
        tpl("named", selector={"agentTypes": ["performance"]}),
        tpl("elsewhere", namespace="team-b"),
    ]
    selection = verification.select(templates, rec(templates=["named"]), risk=RiskLevel.LOW)
    assert selection.templates == ("all", "cost-only", "named")
    assert [c.name for c in selection.checks] == [
        "all/latency",
        "cost-only/latency",
        "named/latency",
    ]
    assert selection.problems == ()


def test_a_named_template_that_does_not_exist_is_a_problem() -> None:
    selection = verification.select([], rec(templates=["slo"]), risk=RiskLevel.LOW)
    assert selection.problems == (
        "VerificationTemplate slo (spec.verification.templates) does not exist",
    )


def test_queries_are_filled_in_and_averaged_for_the_baseline() -> None:
    query = 'x{ns="{{namespace}}",k="{{target.kind}}",n="{{target.name}}",c="{{customerId}}"}'
    (check,) = checks_of(tpl("t", metric(query=query), baseline={"window": "15m"}))
    assert check.query == 'x{ns="team-a",k="Deployment",n="workers",c="acme"}'
    assert check.baseline_query == f"avg_over_time(({check.query})[15m:15s])"


@pytest.mark.parametrize("customer", ['acme"} or vector(0) #', "acme corp", "a{b}", "acme\nx"])
def test_a_value_that_would_change_the_query_is_refused(customer: str) -> None:
    """An agent writes its recommendation: its customerId must not rewrite the query that
    judges its change (for example into one that always passes)."""
    query = 'errors{customer="{{customerId}}"}'
    selection = verification.select(
        [tpl("t", metric(query=query))], rec(customerId=customer), risk=RiskLevel.LOW
    )
    assert selection.checks == ()
    assert len(selection.problems) == 1
    assert "VerificationTemplate t: {{customerId}}:" in selection.problems[0]
    assert "is not a plain name" in selection.problems[0]


def test_a_template_that_cannot_be_filled_in_applies_not_at_all() -> None:
    plain = metric("errors", query='errors{customer="{{customerId}}"}')
    selection = verification.select(
        [tpl("a", plain), tpl("b", plain, metric())], rec(target=None), risk=RiskLevel.LOW
    )
    assert [c.name for c in selection.checks] == ["a/errors"]  # none of b's
    assert selection.problems == (
        "VerificationTemplate b: {{target.name}}: the recommendation has no target",
    )


def test_a_target_placeholder_without_a_target_is_a_problem() -> None:
    selection = verification.select([tpl("t")], rec(target=None), risk=RiskLevel.LOW)
    assert selection.problems == (
        "VerificationTemplate t: {{target.name}}: the recommendation has no target",
    )


# --- one metric ----------------------------------------------------------------------------------


def test_a_metric_that_holds_is_successful_after_count_measurements() -> None:
    checks = checks_of(tpl("t", metric(count=3)))
    status = run(checks, [Reading(value=1.0), Reading(value=1.05)])
    assert status.phase is VerificationPhase.RUNNING
    assert entry(status, "t/latency").phase is VerificationPhase.RUNNING
    status = run(checks, [Reading(value=1.0), Reading(value=1.05), Reading(value=0.9)])
    m = entry(status, "t/latency")
    assert (m.phase, m.successful, m.taken) == (VerificationPhase.SUCCESSFUL, 3, 3)
    assert status.phase is VerificationPhase.SUCCESSFUL
    assert status.finished_at == T0 + timedelta(minutes=2)
    assert status.message == "all 1 metrics successful"


def test_a_failure_past_the_limit_fails_and_says_metric_value_baseline_condition() -> None:
    checks = checks_of(tpl("t", metric(failureLimit=1)))
    status = run(checks, [Reading(value=1.3)])
    assert status.phase is VerificationPhase.RUNNING  # one failure is tolerated
    status = run(checks, [Reading(value=1.3), Reading(value=1.5)])
    assert status.phase is VerificationPhase.FAILED
    assert status.message == (
        "metric t/latency failed: failureCondition result > baseline * 1.25 "
        "(result 1.5, baseline 1)"
    )


def test_neither_condition_is_inconclusive_past_the_limit() -> None:
    checks = checks_of(tpl("t", metric(inconclusiveLimit=1)))
    status = run(checks, [Reading(value=1.2), Reading(value=1.2)])
    m = entry(status, "t/latency")
    assert (m.phase, m.inconclusive) == (VerificationPhase.INCONCLUSIVE, 2)
    assert m.measurements[-1].message == "neither condition holds (result 1.2, baseline 1)"
    assert status.phase is VerificationPhase.INCONCLUSIVE


def test_errors_in_a_row_past_the_limit_are_inconclusive_and_a_value_resets_them() -> None:
    checks = checks_of(tpl("t", metric(consecutiveErrorLimit=1, count=10)))
    status = run(checks, [NO_DATA, Reading(value=1.0), Reading(error="503 from Prometheus")])
    m = entry(status, "t/latency")
    assert (m.errors, m.consecutive_errors, m.phase) == (2, 1, VerificationPhase.RUNNING)
    status = run(
        checks, [NO_DATA, Reading(value=1.0), Reading(error="timeout"), Reading(value=None)]
    )
    m = entry(status, "t/latency")
    assert m.phase is VerificationPhase.INCONCLUSIVE
    assert m.message == "metric t/latency inconclusive: 2 errors in a row (no data)"
    assert [x.phase for x in m.measurements] == [
        MeasurementPhase.ERROR,
        MeasurementPhase.SUCCESSFUL,
        MeasurementPhase.ERROR,
        MeasurementPhase.ERROR,
    ]


@pytest.mark.parametrize("reading", [NO_DATA, Reading(value=float("nan")), Reading(error="x")])
def test_no_data_is_never_successful(reading: Reading) -> None:
    """Even with errors tolerated: a metric without one successful measurement is
    Inconclusive, never Successful."""
    checks = checks_of(tpl("t", metric(count=3, consecutiveErrorLimit=10)))
    status = run(checks, [reading] * 3)
    m = entry(status, "t/latency")
    assert (m.phase, m.successful, m.errors) == (VerificationPhase.INCONCLUSIVE, 0, 3)
    assert status.phase is VerificationPhase.INCONCLUSIVE


def test_a_success_only_metric_fails_when_it_does_not_hold() -> None:
    checks = checks_of(tpl("t", metric(failureCondition=None, count=1)))
    status = run(checks, [Reading(value=2.0)])
    assert status.phase is VerificationPhase.FAILED
    assert "not successCondition result <= baseline * 1.10 (result 2, baseline 1)" in (
        status.message or ""
    )


def test_a_condition_on_a_missing_baseline_is_an_error_not_a_success() -> None:
    checks = checks_of(tpl("t", metric(count=1, consecutiveErrorLimit=0)))
    status = verification.begin(checks, VerificationStatus(), now=T0)  # --skip-baseline
    status = verification.record(checks, status, "t/latency", Reading(value=0.5), now=T0)
    m = entry(status, "t/latency")
    assert m.measurements[0].phase is MeasurementPhase.ERROR
    assert m.measurements[0].message == "no baseline was recorded, and the condition reads it"
    assert status.phase is VerificationPhase.INCONCLUSIVE


def test_the_last_ten_measurements_are_kept_and_all_are_counted() -> None:
    checks = checks_of(tpl("t", metric(count=25)))
    values = [1.0 + i / 1000 for i in range(25)]
    status = run(checks, [Reading(value=v) for v in values])
    m = entry(status, "t/latency")
    assert (m.successful, m.taken, len(m.measurements)) == (25, 25, 10)
    assert [x.value for x in m.measurements] == values[-10:]


# --- several metrics, dry run ---------------------------------------------------------------------


def test_a_dry_run_metric_is_recorded_but_never_decides() -> None:
    checks = checks_of(tpl("t", metric("latency", count=1), metric("errors", count=1, dryRun=True)))
    status = started(checks)
    status = verification.record(checks, status, "t/errors", Reading(value=9.0), now=T0)
    assert entry(status, "t/errors").phase is VerificationPhase.FAILED
    assert status.phase is VerificationPhase.RUNNING  # its failure decides nothing
    status = verification.record(checks, status, "t/latency", Reading(value=1.0), now=T0)
    assert status.phase is VerificationPhase.SUCCESSFUL
    assert status.message == "all 1 metrics successful (1 dry-run)"


def test_a_failed_metric_ends_the_verification_at_once() -> None:
    checks = checks_of(tpl("t", metric("latency", count=5), metric("errors", count=5)))
    status = started(checks)
    status = verification.record(checks, status, "t/errors", Reading(value=2.0), now=T0)
    assert status.phase is VerificationPhase.FAILED
    assert verification.due(checks, status, now=T0 + timedelta(hours=1)) == []
    assert verification.next_due(checks, status) is None


# --- the schedule ------------------------------------------------------------------------------


def test_the_schedule_follows_initial_delay_and_interval() -> None:
    checks = checks_of(tpl("t", metric(initialDelay="2m", interval="30s", count=2)))
    (check,) = checks
    status = started(checks)
    assert verification.due_at(check, status) == T0 + timedelta(minutes=2)
    assert verification.due(checks, status, now=T0 + timedelta(minutes=1)) == []
    late = T0 + timedelta(minutes=7)  # the operator was down: nothing is lost, the rest shifts
    status = verification.record(checks, status, check.name, Reading(value=1.0), now=late)
    assert verification.next_due(checks, status) == late + timedelta(seconds=30)


def test_a_reading_that_is_not_due_is_ignored() -> None:
    """The same slot recorded twice (a stale caller, a retry) is one measurement."""
    checks = checks_of(tpl("t", metric(count=3)))
    status = started(checks)
    once = verification.record(checks, status, "t/latency", Reading(value=1.0), now=T0)
    twice = verification.record(checks, once, "t/latency", Reading(value=1.0), now=T0)
    assert twice == once
    early = T0 + timedelta(seconds=59)
    assert verification.record(checks, once, "t/latency", Reading(value=1.0), now=early) == once
    assert verification.record(checks, once, "t/other", Reading(value=1.0), now=early) == once


def test_begin_is_idempotent_and_keeps_the_baseline() -> None:
    checks = checks_of(tpl("t"))
    status = started(checks, baseline={"t/latency": 0.25})
    assert status.baseline == {"t/latency": 0.25}
    assert verification.begin(checks, status, now=T0 + timedelta(hours=1)) == status


@settings(max_examples=150, deadline=None)
@given(
    count=st.integers(1, 12),
    delay_s=st.integers(0, 120),
    interval_s=st.integers(1, 300),
    wakeups=st.lists(st.integers(0, 900), min_size=1, max_size=60),
    restarts=st.lists(st.booleans(), min_size=60, max_size=60),
)
def test_a_restarted_driver_takes_every_measurement_once(
    count: int, delay_s: int, interval_s: int, wakeups: list[int], restarts: list[bool]
) -> None:
    """Woken at random times, reading its status back from storage (a JSON round trip) and
    sometimes recording the same reading twice (it crashed after the write): each metric
    ends with exactly ``count`` measurements, never two closer than ``interval``."""
    checks = checks_of(
        tpl("t", metric(count=count, initialDelay=f"{delay_s}s", interval=f"{interval_s}s"))
    )
    stored = started(checks).model_dump(mode="json", by_alias=True)
    now = T0
    steps = iter(wakeups * (count * 2 + 2))
    for wake in range(count * 50 + 100):
        status = VerificationStatus.model_validate(stored)
        if status.phase is not VerificationPhase.RUNNING:
            break
        now += timedelta(seconds=next(steps, 300))
        for check in verification.due(checks, status, now=now):
            new = verification.record(checks, status, check.name, Reading(value=1.0), now=now)
            if restarts[wake % len(restarts)]:
                new = verification.record(checks, new, check.name, Reading(value=1.0), now=now)
            status = new
        stored = status.model_dump(mode="json", by_alias=True)
    final = VerificationStatus.model_validate(stored)
    m = entry(final, "t/latency")
    assert final.phase is VerificationPhase.SUCCESSFUL
    assert m.taken == count
    times = [x.at for x in m.measurements]
    assert times[0] >= T0 + timedelta(seconds=delay_s)
    assert all(b - a >= timedelta(seconds=interval_s) for a, b in itertools.pairwise(times))


# --- savings and calibration ----------------------------------------------------------------------


def test_realised_savings_and_ratio() -> None:
    s = verification.realised_savings(
        estimated_monthly=100.0, before_hourly=0.5, after_hourly=0.4, now=T0
    )
    assert (s.realised_monthly, s.ratio, s.measured_at) == (73.0, 0.73, T0)
    worse = verification.realised_savings(
        estimated_monthly=0, before_hourly=0.5, after_hourly=0.6, now=T0
    )
    assert (worse.realised_monthly, worse.ratio) == (-73.0, None)


def test_the_savings_note_gives_the_figure_or_says_why_there_is_none() -> None:
    check = verification.SavingsCheck(
        template="latency",
        query="cost",
        window="1h",
        provider=PrometheusProvider(address="http://127.0.0.1:9090"),
    )
    before = verification.savings_before(check, Reading(value=0.5), estimated_monthly=100.0)
    assert isinstance(before, SavingsStatus)
    measured = verification.savings_after(before, Reading(value=0.4), now=T0)
    assert verification.savings_note(measured) == (
        "realised savings 73.00 USD/month of 100.00 estimated (ratio 0.73)"
    )
    gap = verification.savings_before(check, NO_DATA, estimated_monthly=100.0)
    assert isinstance(gap, verification.BaselineGap)  # the plan waits, as for a baseline
    assert gap.message.startswith("waiting for the baseline of metric latency/savings: no data")
    failed_after = verification.savings_after(before, Reading(error="timeout"), now=T0)
    assert failed_after.realised_monthly is None
    assert verification.savings_note(failed_after).endswith("no data after the change")
    unestimated = verification.realised_savings(
        estimated_monthly=None, before_hourly=0.5, after_hourly=0.4, now=T0
    )
    assert verification.savings_note(unestimated) == "realised savings 73.00 USD/month"


def test_the_realisation_ratio_averages_the_last_plans_clamped() -> None:
    assert verification.realisation_ratio([]) is None
    assert verification.realisation_ratio([0.2, 0.4], last=10) == pytest.approx(0.3)
    assert verification.realisation_ratio([0.0, 0.5, 3.0, -1.0], last=3) == pytest.approx(0.5)
    assert verification.calibrated_savings(200.0, None) == 200.0
    assert verification.calibrated_savings(200.0, 0.25) == 50.0


def _agent_rec(name: str, agent: str, savings: float) -> Recommendation:
    return rec(name, agentId=agent, estimatedSavings=savings)


@settings(max_examples=300, deadline=None)
@given(
    honest=st.floats(1, 10_000),
    inflation=st.floats(1.01, 20),
    shortfall=st.floats(0.5, 0.99),
    honest_ratios=st.lists(st.floats(1.0, 1.5), min_size=1, max_size=15),
    noise=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=15),
)
def test_an_over_promising_agent_loses_to_an_honest_one_when_calibrated(
    honest: float,
    inflation: float,
    shortfall: float,
    honest_ratios: list[float],
    noise: list[float],
) -> None:
    """Both changes would save ``honest``. The honest agent's past plans realised what it
    claimed (or more); the over-promiser claims ``inflation`` times more and its past plans
    realised less than 1/inflation of their claims. Uncalibrated, the promise wins;
    calibrated, the over-promiser never does."""
    liar_ratios = [shortfall / inflation * n for n in noise]
    history = {"honest-agent": honest_ratios, "liar-agent": liar_ratios}
    a = _agent_rec("rec-a", "honest-agent", honest)
    b = _agent_rec("rec-b", "liar-agent", honest * inflation)
    assert min([a, b], key=conflicts.rank).name == "rec-b"  # the promise wins uncalibrated
    calibrated = min([a, b], key=lambda r: verification.calibrated_rank(r, history))
    assert calibrated.name == "rec-a"


@settings(max_examples=200, deadline=None)
@given(
    claims=st.lists(st.floats(0, 10_000), min_size=2, max_size=6),
    histories=st.lists(st.lists(st.floats(-1, 3), max_size=12), min_size=6, max_size=6),
)
def test_calibrated_ranking_orders_by_backed_savings(
    claims: list[float], histories: list[list[float]]
) -> None:
    """Other things equal, the calibrated order is the order of estimate x realisation
    ratio (ties by name), whatever the histories."""
    recs = [_agent_rec(f"rec-{i}", f"agent-{i}", c) for i, c in enumerate(claims)]
    history = {f"agent-{i}": h for i, h in enumerate(histories)}
    ranked = sorted(recs, key=lambda r: verification.calibrated_rank(r, history))
    backed = [
        verification.calibrated_savings(
            r.spec.estimated_savings, verification.realisation_ratio(history[r.spec.agent_id])
        )
        for r in ranked
    ]
    assert backed == sorted(backed, reverse=True)


@settings(max_examples=200, deadline=None)
@given(
    specs=st.lists(
        st.tuples(st.integers(0, 3), st.floats(0, 10_000), st.floats(0, 1)),
        min_size=2,
        max_size=6,
    ),
    others=st.dictionaries(st.sampled_from(["agent-x", "agent-y"]), st.lists(st.floats(0, 2))),
)
def test_without_history_calibration_changes_no_verdict(
    specs: list[tuple[int, float, float]], others: dict[str, list[float]]
) -> None:
    """Agents with no verified change (the history holds only other agents'): the
    calibrated ranking is the plain one, and every conflict has the same winner."""
    recs = [
        rec(
            f"rec-{i}",
            agentId=f"agent-{i}",
            priority=priority,
            estimatedSavings=savings,
            confidence=confidence,
            affectedResources=["i-shared"],
            target=None,
        )
        for i, (priority, savings, confidence) in enumerate(specs)
    ]
    assert [verification.calibrated_rank(r, others) for r in recs] == [
        conflicts.rank(r) for r in recs
    ]
    plain = conflicts.evaluate(recs)
    assert sum(v.superseded_by is not None for v in plain.verdicts.values()) == len(recs) - 1
    calibrated = conflicts.evaluate(recs, ranking=lambda r: verification.calibrated_rank(r, others))
    assert calibrated.verdicts == plain.verdicts


def test_an_agent_without_history_is_ranked_on_its_estimate() -> None:
    a = _agent_rec("rec-a", "new-agent", 100.0)
    assert verification.calibrated_rank(a, {}) == conflicts.rank(a)


def test_the_operator_imports_the_cel_library_only_for_a_condition() -> None:
    """The CEL package imports its command line (typer, rich, prompt_toolkit: 14 MB of
    RSS) with itself; an operator without VerificationTemplates never loads it."""
    probe = (
        "import sys, coordinator.app, coordinator.handlers, coordinator.core.verification\n"
        "assert 'cel' not in sys.modules, 'imported at start'\n"
        "from coordinator.core import cel\n"
        "assert cel.problem('result < baseline') is None\n"
        "assert 'cel' in sys.modules\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], check=False, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
