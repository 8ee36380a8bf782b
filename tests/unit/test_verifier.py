"""The verifier driving a plan through its baseline and verification, with a fake reading
source in place of Prometheus (the real one: tests/cluster/test_verification_flow.py).

The plan runner, the verifier and the fake API server share a clock that moves only when
the runner waits: every measurement is due at an exact time.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from coordinator import metrics, plangate, plugin, usecases, verifier
from coordinator import runner as runner_
from coordinator.api.common import APPROVALS, PLANS, RECOMMENDATIONS, TEMPLATES
from coordinator.api.defaults import Backoff
from coordinator.api.plan import ExecutionPlan, Executor, PlanPhase, Step, StepPhase
from coordinator.api.verification import MeasurementPhase, PrometheusProvider, VerificationPhase
from coordinator.core import plan as plan_
from coordinator.core.verification import SKIP_BASELINE_ANNOTATION, Reading, over_window
from coordinator.executors import StepContext
from coordinator.k8s import access
from coordinator.k8s import client as client_
from coordinator.k8s import events as events_
from coordinator.parts import daemons
from tests.support import builders
from tests.support.callers import NAMESPACE as CALLER_NS
from tests.support.callers import FakeCaller
from tests.support.fakeapi import FakeApi, FakeRecorder

NS, NAME, UID = "team-a", "rec-1", "uid-plan"
METRIC = "latency/latency"
INTERVAL = 10


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class Steps:
    """An executor that records the steps it ran and undid."""

    def __init__(self) -> None:
        self.executed: list[str] = []
        self.undone: list[str] = []

    async def execute(self, step: Step, *, context: StepContext) -> plan_.Outcome:
        self.executed.append(step.name)
        return plan_.Outcome(ok=True)

    async def undo(self, step: Step, *, result: Any, context: StepContext) -> plan_.Outcome:
        self.undone.append(step.name)
        return plan_.Outcome(ok=True)


class Source:
    """Prometheus as the verifier sees it: the baseline query answers `baseline`, the
    measurements answer `after` in order (the last one repeats). None is no data."""

    def __init__(self, baseline: float | None, after: Sequence[float | None] = (0.2,)) -> None:
        self.baseline = baseline
        self.after = list(after)
        self.asked: list[str] = []

    async def __call__(
        self, provider: PrometheusProvider, query: str, namespace: str, template: str
    ) -> Reading:
        assert (namespace, template, provider.address) == (NS, "latency", "http://127.0.0.1:9090")
        self.asked.append(query)
        if query.startswith("avg_over_time("):
            return Reading(value=self.baseline)
        measured = [q for q in self.asked if not q.startswith("avg_over_time(")]
        return Reading(value=self.after[min(len(measured), len(self.after)) - 1])

    @property
    def baselines(self) -> int:
        return sum(q.startswith("avg_over_time(") for q in self.asked)


class Setup:
    def __init__(
        self,
        source: Source,
        *,
        metrics: Sequence[dict[str, Any]] = (),
        annotations: dict[str, str] | None = None,
        savings: dict[str, Any] | None = None,
        estimated: float = 0.0,
    ) -> None:
        self.api, self.clock, self.source = FakeApi(), Clock(), source
        rec = builders.recommendation(
            NAME,
            namespace=NS,
            action="scale_down",
            riskLevel="low",
            target={"apiVersion": "apps/v1", "kind": "Deployment", "name": "workers"},
            affectedResources=None,
            estimatedSavings=estimated,
        )
        self.api.put(RECOMMENDATIONS, rec)
        metric = builders.metric(interval=f"{INTERVAL}s", count=3)
        self.api.put(
            TEMPLATES,
            builders.template(namespace=NS, metrics=list(metrics) or [metric], savings=savings),
        )
        plan = builders.plan(
            NAME,
            namespace=NS,
            metadata={"uid": UID, "annotations": annotations or {}},
            customerId="customer-1",
            suspend=False,
            steps=[{"name": n, "action": n, "executor": "simulated"} for n in ("a", "b")],
        )
        self.api.put(PLANS, plan)
        self.executor = Steps()
        self.runner = self.new_runner()
        self.wakes = 0

    def new_runner(self) -> runner_.PlanRunner:
        """A runner and verifier that remember nothing (a restarted operator)."""

        async def no_sleep(seconds: float) -> None:
            pass

        client = cast(client_.Client, self.api)
        return runner_.PlanRunner(
            client=client,
            recorder=cast(events_.Recorder, FakeRecorder()),
            executors={Executor.SIMULATED: self.executor},
            clock=self.clock,
            sleep=no_sleep,
            verifier=verifier.Verifier(
                client=client, query=self.source, clock=self.clock, retry=Backoff(first=2, cap=60)
            ),
        )

    def current(self) -> ExecutionPlan:
        return self.api.plan(NS, NAME)

    async def start(self) -> ExecutionPlan:
        await self.runner.start(self.current(), dependencies=(True, ""))
        return self.current()

    async def drive(self, *, until: Any = lambda plan: False) -> PlanPhase:
        async def wake(seconds: float) -> None:
            self.wakes += 1
            self.clock.now += timedelta(seconds=max(seconds, 1.0))

        return await self.runner.drive(
            self.current(),
            latest=functools.partial(self.api.plan, NS, NAME),
            dependencies=lambda: (True, ""),
            stopped=lambda: self.wakes > 40 or until(self.current()),
            wake=wake,
        )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def _measurements(plan: ExecutionPlan, name: str = METRIC) -> list[Any]:
    assert plan.status is not None
    assert plan.status.verification is not None
    found = [m.measurements for m in plan.status.verification.metrics if m.name == name]
    return found[0] if found else []


# --- the baseline -----------------------------------------------------------------------------


def test_the_baseline_is_recorded_before_the_first_step_runs() -> None:
    setup = Setup(Source(baseline=0.2))
    plan = run(setup.start())
    assert plan.status is not None
    assert plan.status.verification is not None
    assert plan.status_phase is PlanPhase.RUNNING
    assert plan.status.verification.baseline == {METRIC: 0.2}
    assert plan.status.verification.templates == ["latency"]
    assert plan.status.steps[0].phase is StepPhase.RUNNING
    assert setup.executor.executed == []  # recorded in the same write that starts the plan
    assert setup.source.asked == ['avg_over_time((latency{deployment="workers"})[30m:30s])']


def test_a_plan_without_its_baseline_waits_pending_naming_the_metric_and_retries_later() -> None:
    setup = Setup(Source(baseline=None))
    plan = run(setup.start())
    assert plan.status is not None
    assert plan.status_phase is PlanPhase.PENDING
    assert plan.status.verification is None
    assert f"baseline of metric {METRIC}: no data over 30m" in (plan.status.message or "")
    ready = next(c for c in plan.status.conditions if c.type == "Ready")
    assert (ready.status.value, ready.reason) == ("Unknown", "Pending")
    assert METRIC in ready.message
    first = setup.runner.verifier.retry_at(plan)
    assert first == setup.clock.now + timedelta(seconds=2)
    run(setup.start())  # an event before the retry: no query, no write
    assert setup.source.baselines == 1
    setup.clock.now = first
    run(setup.start())  # the retry: asked again, still nothing; the pause doubles
    assert setup.source.baselines == 2
    assert setup.runner.verifier.retry_at(plan) == first + timedelta(seconds=4)
    setup.source.baseline = 0.3
    setup.clock.now += timedelta(seconds=4)
    plan = run(setup.start())
    assert plan.status_phase is PlanPhase.RUNNING
    assert plan.status is not None
    assert plan.status.verification is not None
    assert plan.status.verification.baseline == {METRIC: 0.3}
    assert setup.runner.verifier.retry_at(plan) is None


def test_a_person_starts_a_plan_without_its_baseline() -> None:
    setup = Setup(Source(baseline=None), annotations={SKIP_BASELINE_ANNOTATION: "alice"})
    plan = run(setup.start())
    assert plan.status_phase is PlanPhase.RUNNING
    assert plan.status is not None
    assert plan.status.verification is not None
    assert plan.status.verification.baseline_skipped_by == "alice"
    assert plan.status.verification.baseline == {}
    assert setup.source.asked == []


def test_a_plan_no_template_selects_runs_unverified() -> None:
    setup = Setup(Source(baseline=0.2))
    del setup.api.objects[(TEMPLATES, NS, "latency")]
    assert run(setup.drive()) is PlanPhase.SUCCEEDED
    plan = setup.current()
    assert plan.status is not None
    assert plan.status.verification is None
    assert setup.source.asked == []


# --- the verification -------------------------------------------------------------------------


def test_a_change_whose_metric_holds_succeeds_with_its_measurements() -> None:
    setup = Setup(Source(baseline=0.2, after=[0.2, 0.21, 0.19]))
    assert run(setup.drive()) is PlanPhase.SUCCEEDED
    plan = setup.current()
    measured = _measurements(plan)
    assert [m.value for m in measured] == [0.2, 0.21, 0.19]
    assert [m.phase for m in measured] == [MeasurementPhase.SUCCESSFUL] * 3
    gaps = [(b.at - a.at).total_seconds() for a, b in itertools.pairwise(measured)]
    assert gaps == [INTERVAL, INTERVAL]
    assert plan.status is not None
    assert plan.status.verification is not None
    assert plan.status.verification.phase is VerificationPhase.SUCCESSFUL
    assert "verified" in (plan.status.message or "")
    assert setup.executor.undone == []


def test_a_regression_rolls_the_steps_back_saying_metric_value_baseline_and_condition() -> None:
    setup = Setup(Source(baseline=0.2, after=[0.5]))
    assert run(setup.drive()) is PlanPhase.ROLLED_BACK
    plan = setup.current()
    assert setup.executor.undone == ["b", "a"]  # reverse order
    message = plan.status.message if plan.status else ""
    for part in (METRIC, "result 0.5", "baseline 0.2", "result > baseline * 1.25"):
        assert part in (message or ""), (part, message)
    assert len(_measurements(plan)) == 1  # failureLimit 0: the first failure decides


def test_no_data_asks_a_person_who_keeps_the_change() -> None:
    setup = Setup(Source(baseline=0.2, after=[None]))

    def asked(plan: ExecutionPlan) -> bool:
        return (APPROVALS, NS, f"{NAME}-verify") in setup.api.objects

    assert run(setup.drive(until=asked)) is PlanPhase.VERIFYING
    approval = setup.api.objects[(APPROVALS, NS, f"{NAME}-verify")]
    assert [o["uid"] for o in approval["metadata"]["ownerReferences"]] == [UID]
    assert approval["spec"]["decision"] == "Pending"
    assert approval["spec"]["recommendation"] == NAME
    message = approval["status"]["message"]
    assert f"{METRIC}: [error, error, error] baseline 0.2 -> Inconclusive" in message
    assert len(_measurements(setup.current())) == 3
    approval["spec"]["decision"] = "Approved"
    setup.api.bump((APPROVALS, NS, f"{NAME}-verify"))
    setup.wakes = 0
    assert run(setup.drive()) is PlanPhase.SUCCEEDED
    assert setup.executor.undone == []
    assert "kept by decision" in (setup.current().status.message or "")  # type: ignore[union-attr]
    assert setup.api.objects[(APPROVALS, NS, f"{NAME}-verify")]["status"]["phase"] == "Approved"


def test_an_inconclusive_verification_nobody_decides_rolls_back_at_expiry() -> None:
    setup = Setup(Source(baseline=0.2, after=[None]))
    key = (APPROVALS, NS, f"{NAME}-verify")
    run(setup.drive(until=lambda plan: key in setup.api.objects))
    expires = datetime.fromisoformat(setup.api.objects[key]["spec"]["expiresAt"])
    setup.clock.now = expires + timedelta(seconds=1)
    setup.wakes = 0
    assert run(setup.drive()) is PlanPhase.ROLLED_BACK
    assert setup.executor.undone == ["b", "a"]
    assert setup.api.objects[key]["status"]["phase"] == "Expired"


def test_a_dry_run_metric_is_measured_and_never_decides() -> None:
    metrics = [
        builders.metric(interval=f"{INTERVAL}s", count=2),
        builders.metric(
            "errors", interval=f"{INTERVAL}s", count=2, dryRun=True, failureCondition="result > 0"
        ),
    ]
    setup = Setup(Source(baseline=0.2, after=[0.2]), metrics=metrics)
    assert run(setup.drive()) is PlanPhase.SUCCEEDED
    plan = setup.current()
    errors = _measurements(plan, "latency/errors")
    assert [m.phase for m in errors] == [MeasurementPhase.FAILED]  # it failed: measured no more
    assert [m.phase for m in _measurements(plan)] == [MeasurementPhase.SUCCESSFUL] * 2
    assert plan.status is not None
    assert plan.status.verification is not None
    assert plan.status.verification.message == "all 1 metrics successful (1 dry-run)"


def test_a_restarted_operator_resumes_the_schedule_from_status() -> None:
    setup = Setup(Source(baseline=0.2, after=[0.2]))

    def two_taken(plan: ExecutionPlan) -> bool:
        return plan.status_phase is PlanPhase.VERIFYING and len(_measurements(plan)) == 2

    assert run(setup.drive(until=two_taken)) is PlanPhase.VERIFYING
    setup.clock.now += timedelta(seconds=3)  # the restart takes a while
    setup.runner, setup.wakes = setup.new_runner(), 0
    assert run(setup.drive()) is PlanPhase.SUCCEEDED
    measured = _measurements(setup.current())
    times = [m.at for m in measured]
    assert len(times) == 3 == len(set(times))
    assert (times[2] - times[1]).total_seconds() >= INTERVAL
    assert setup.executor.executed == ["a", "b"]


# --- the rights and the person's start --------------------------------------------------------


def test_the_operator_checks_at_start_that_it_may_list_verification_templates() -> None:
    wanted = access.needs(namespaces=(NS,), webhooks=False, lease=None)
    assert any((n.verb, n.resource, n.namespace) == ("list", TEMPLATES, NS) for n in wanted)


def test_start_skip_baseline_names_the_caller_in_the_plan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeCaller().install(monkeypatch)
    fake.add(PLANS, builders.plan("p-1", status={"phase": "Pending"}, suspend=False))
    usecases.start(object(), CALLER_NS, "p-1", skip_baseline=True)
    assert [body for _, _, body in fake.patches] == [
        {"metadata": {"annotations": {SKIP_BASELINE_ANNOTATION: "approver"}}}
    ]
    fake.add(PLANS, builders.plan("p-2", status={"phase": "Running"}, suspend=False))
    with pytest.raises(usecases.RefusedError, match="already started"):
        usecases.start(object(), CALLER_NS, "p-2", skip_baseline=True)


def test_the_plugin_passes_skip_baseline_to_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCaller().install(monkeypatch)
    fake.add(PLANS, builders.plan("p-1", status={"phase": "Pending"}, suspend=True))
    session = object.__new__(plugin.Session)
    session.api, session.namespace, session.all_namespaces = object(), CALLER_NS, False
    assert plugin._parse(["start", "p-1", "--skip-baseline"]).skip_baseline is True
    said = plugin._plan_switch(session, "p-1", start=True, skip_baseline=True)
    assert said == "executionplan p-1 started without its verification baseline"
    assert [body for _, _, body in fake.patches] == [
        {
            "metadata": {"annotations": {SKIP_BASELINE_ANNOTATION: "approver"}},
            "spec": {"suspend": False},
        }
    ]


def test_a_short_baseline_window_is_averaged_at_one_second_points() -> None:
    """Without a resolution the subquery takes Prometheus's evaluation interval (1m):
    a 10s window would then have no point at all."""
    assert over_window("q", "10s") == "avg_over_time((q)[10s:1s])"
    assert over_window("q", "2h") == "avg_over_time((q)[2h:120s])"


def test_a_verifying_plan_is_driven_and_counted_as_in_flight() -> None:
    """Fails before: a plan restarted while Verifying had no daemon, and stayed so."""
    assert PlanPhase.VERIFYING.value in daemons.STARTED
    assert PlanPhase.VERIFYING.value in plangate._IN_FLIGHT


# --- savings ----------------------------------------------------------------------------------

COST = 'cost_per_hour{deployment="{{target.name}}"}'


class Costs(Source):
    """Source, with the cost per hour answering `before` until the last step ran and
    `after` from then on (None: no data)."""

    def __init__(self, before: float | None, after: float | None, steps: Steps) -> None:
        super().__init__(baseline=0.2, after=[0.2])
        self.costs = (before, after)
        self.steps = steps
        self.costed: list[str] = []

    async def __call__(
        self, provider: PrometheusProvider, query: str, namespace: str, template: str
    ) -> Reading:
        if "cost_per_hour" not in query:
            return await super().__call__(provider, query, namespace, template)
        self.costed.append(query)
        return Reading(value=self.costs[len(self.steps.executed) == 2])


def savings_setup(before: float | None, after: float | None) -> tuple[Setup, Costs]:
    setup = Setup(Source(0.2), savings={"query": COST, "window": "30m"}, estimated=100.0)
    costs = Costs(before, after, setup.executor)
    setup.source = costs
    setup.runner = setup.new_runner()
    return setup, costs


def test_a_change_that_holds_records_the_savings_it_realised() -> None:
    setup, costs = savings_setup(before=0.5, after=0.4)
    assert run(setup.drive()) is PlanPhase.SUCCEEDED
    verification = setup.current().status.verification  # type: ignore[union-attr]
    assert verification is not None
    assert verification.savings is not None
    savings = verification.savings
    assert (savings.before_hourly, savings.after_hourly) == (0.5, 0.4)
    assert (savings.realised_monthly, savings.ratio) == (73.0, 0.73)  # (0.5 - 0.4) x 730 / 100
    assert len(costs.costed) == 2  # once before, once after: never again
    assert all(q.startswith("avg_over_time((cost_per_hour{") for q in costs.costed)
    exported = metrics.REGISTRY.get_sample_value(  # the registry /metrics serves
        "optiinfra_realised_savings_usd", {"customer": "customer-1", "agent": "cost-agent-1"}
    )
    assert exported == 73.0
    ratio = metrics.REGISTRY.get_sample_value(
        "optiinfra_savings_realisation_ratio", {"agent": "cost-agent-1"}
    )
    assert ratio == 0.73


def test_without_the_cost_before_the_change_the_plan_waits_as_for_a_baseline() -> None:
    """A realised figure needs both sides: no cost data before the first step is a missing
    baseline (retried; --skip-baseline starts it without), never a made-up figure."""
    setup, costs = savings_setup(before=None, after=0.4)
    plan = run(setup.start())
    assert plan.status is not None
    assert plan.status_phase is PlanPhase.PENDING
    assert "baseline of metric latency/savings: no data over 30m" in (plan.status.message or "")
    assert setup.executor.executed == []
    costs.costs = (0.5, 0.4)
    setup.clock.now = setup.runner.verifier.retry_at(plan) or setup.clock.now
    assert run(setup.drive()) is PlanPhase.SUCCEEDED
    verification = setup.current().status.verification  # type: ignore[union-attr]
    assert verification is not None
    assert verification.savings is not None
    assert verification.savings.realised_monthly == 73.0


def test_the_plan_message_names_the_savings_it_realised() -> None:
    setup, _ = savings_setup(before=0.5, after=0.4)
    assert run(setup.drive()) is PlanPhase.SUCCEEDED
    message = setup.current().status.message  # type: ignore[union-attr]
    assert "realised savings 73.00 USD/month of 100.00 estimated (ratio 0.73)" in (message or "")


def test_no_cost_data_after_the_change_says_so() -> None:
    setup, costs = savings_setup(before=0.5, after=None)
    assert run(setup.drive()) is PlanPhase.SUCCEEDED
    status = setup.current().status
    assert status is not None
    assert status.verification is not None
    assert status.verification.savings is not None
    assert status.verification.savings.realised_monthly is None
    assert "no data after the change" in (status.message or "")
    assert len(costs.costed) == 2


def test_a_change_a_person_keeps_records_its_savings_once() -> None:
    setup, costs = savings_setup(before=0.5, after=0.45)
    costs.after = [None]  # the latency metric has no data: a person decides
    key = (APPROVALS, NS, f"{NAME}-verify")
    assert run(setup.drive(until=lambda plan: key in setup.api.objects)) is PlanPhase.VERIFYING
    assert len(costs.costed) == 1  # before only: an Inconclusive one is not measured yet
    setup.api.objects[key]["spec"]["decision"] = "Approved"
    setup.api.bump(key)
    setup.wakes = 0
    assert run(setup.drive()) is PlanPhase.SUCCEEDED
    status = setup.current().status
    assert status is not None
    assert status.verification is not None
    savings = status.verification.savings
    assert savings is not None
    assert (savings.realised_monthly, savings.ratio) == (36.5, 0.365)  # 0.05 x 730 / 100
    assert "kept by decision" in (status.message or "")
    assert "realised savings 36.50 USD/month" in (status.message or "")
    assert len(costs.costed) == 2  # once before, once after the decision
