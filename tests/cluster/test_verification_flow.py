"""Plans verified against a real Prometheus (built from its Go module, scraping a metrics
fixture whose gauge the tests set), by an operator of the test's own namespace: the
baseline before the first step, measurements every second after the last, and what each
verdict does. Each test has its own namespace, so its own series (the gauge's
``namespace`` label)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import kubernetes
import prometheus as localprometheus
import pytest

from tests.support import Kubectl, wait_for
from tests.support.builders import metric, recommendation, template
from tests.support.cluster import bind_users
from tests.support.kube import APPROVALS, PLANS, RECS, Objects, apply, optiinfra
from tests.support.processes import OperatorProcess

Local = tuple[localprometheus.Prometheus, localprometheus.MetricsFixture]
GAUGE = "optiinfra_test_latency_seconds"
COST = "optiinfra_test_cost_usd_per_hour"
METRIC = "latency/p99"
COUNT = 4

pytestmark = pytest.mark.usefixtures("plugin_on_path", "user_roles")


def setup(
    kubectl: Kubectl,
    namespace: str,
    prometheus: Local,
    *,
    step_ms: int = 200,
    savings: dict[str, Any] | None = None,
    more: tuple[dict[str, Any], ...] = (),
    **fields: Any,
) -> None:
    """A template measuring the gauge of Deployment workers every second (and, given
    `savings`, its cost), then a low-risk scale_down of workers estimated to save 100 a
    month that runs at once (two simulated steps of `step_ms`)."""
    server, _ = prometheus
    query = f'max({GAUGE}{{namespace="{{{{namespace}}}}",deployment="{{{{target.name}}}}"}})'
    body = template(
        "latency",
        provider={"prometheus": {"address": server.url, "timeoutSeconds": 5}},
        selector={"actions": ["scale_down"]},
        baseline={"window": "10s"},
        metrics=[
            metric("p99", query=query, **({"interval": "1s", "count": COUNT} | fields)),
            *more,
        ],
        savings=savings,
    )
    steps = [
        {"name": n, "action": n, "executor": "simulated", "params": {"durationMs": step_ms}}
        for n in ("first", "second")
    ]
    apply(kubectl, namespace, body)
    apply(
        kubectl,
        namespace,
        recommendation(
            "rec-v",
            action="scale_down",
            riskLevel="low",
            executeNow=True,
            target={"apiVersion": "apps/v1", "kind": "Deployment", "name": "workers"},
            affectedResources=None,
            steps=steps,
            estimatedSavings=100.0,
        ),
    )


def verification(objects: Objects) -> dict[str, Any]:
    return objects.status(PLANS, "rec-v").get("verification") or {}


def measurements(objects: Objects) -> list[dict[str, Any]]:
    metrics = verification(objects).get("metrics") or []
    return next((m["measurements"] for m in metrics if m["name"] == METRIC), [])


@dataclasses.dataclass
class Scene:
    """The test's namespace (its users bound), its operator, Prometheus and the gauges."""

    kubectl: Kubectl
    namespace: str
    objects: Objects
    prometheus: Local
    start_operator: Callable[..., OperatorProcess]
    operator: OperatorProcess | None = None

    def set(self, value: float) -> None:
        """The latency of Deployment workers in this namespace, from now on."""
        self.prometheus[1].set(GAUGE, value, namespace=self.namespace, deployment="workers")

    def submit(self, **fields: Any) -> None:
        setup(self.kubectl, self.namespace, self.prometheus, **fields)

    def cost(self, value: float) -> None:
        """The cost per hour (USD) of Deployment workers in this namespace, from now on."""
        self.prometheus[1].set(COST, value, namespace=self.namespace, deployment="workers")


@pytest.fixture
def scene(
    kubectl: Kubectl,
    api: kubernetes.client.ApiClient,
    own_namespace: str,
    prometheus: Local,
    own_operator: Callable[..., OperatorProcess],
) -> Scene:
    bind_users(api, own_namespace)
    found = Scene(kubectl, own_namespace, Objects(api, own_namespace), prometheus, own_operator)
    found.operator = own_operator("operator")
    return found


@pytest.mark.timeout(120)
def test_a_metric_that_holds_ends_succeeded_with_its_measurements(scene: Scene) -> None:
    scene.set(0.2)
    objects = scene.objects
    scene.submit()
    done = objects.wait_phase(PLANS, "rec-v", "Succeeded", timeout=60)
    status = done["status"]["verification"]
    assert status["baseline"][METRIC] == pytest.approx(0.2)
    assert status["phase"] == "Successful"
    taken = measurements(objects)
    assert [m["value"] for m in taken] == [pytest.approx(0.2)] * COUNT
    assert len({m["at"] for m in taken}) == COUNT
    assert "verified" in done["status"]["message"]


@pytest.mark.timeout(120)
def test_a_change_that_holds_records_the_savings_it_realised(scene: Scene) -> None:
    """The workers cost 0.50 an hour before the change and 0.40 after it: 73 a month
    realised of the 100 estimated, in the plan's and the recommendation's status."""
    scene.set(0.2)
    scene.cost(0.5)
    objects = scene.objects
    query = f'max({COST}{{namespace="{{{{namespace}}}}",deployment="{{{{target.name}}}}"}})'
    scene.submit(count=12, savings={"query": query, "window": "8s"})
    objects.wait_phase(PLANS, "rec-v", "Verifying", timeout=60)
    scene.cost(0.4)  # the change saved money
    done = objects.wait_phase(PLANS, "rec-v", "Succeeded", timeout=90)
    savings = done["status"]["verification"]["savings"]
    assert savings["beforeHourly"] == pytest.approx(0.5)
    assert savings["afterHourly"] == pytest.approx(0.4)
    assert savings["realisedMonthly"] == pytest.approx(73.0)
    assert savings["ratio"] == pytest.approx(0.73)
    assert "realised savings 73.00 USD/month of 100.00 estimated" in done["status"]["message"]
    copied = wait_for(
        lambda: objects.status(RECS, "rec-v").get("realisedSavings"),
        what="the realised savings copied to the recommendation",
    )
    assert copied == savings
    why = optiinfra(scene.kubectl, scene.namespace, "why", "rec-v")
    assert why.returncode == 0, why.stderr
    assert "Realised savings 73.00 a month." in why.stdout


@pytest.mark.timeout(120)
def test_a_regression_rolls_back_and_says_why(scene: Scene) -> None:
    scene.set(0.2)
    objects = scene.objects
    scene.submit(step_ms=3000)
    wait_for(
        lambda: verification(objects).get("baseline"), what="the baseline recorded", timeout=30
    )
    scene.set(0.5)  # the change hurts
    done = objects.wait_phase(PLANS, "rec-v", "RolledBack", timeout=60)
    message = done["status"]["message"]
    for part in (METRIC, "result 0.5", "baseline 0.2", "result > baseline * 1.25"):
        assert part in message, (part, message)
    steps = done["status"]["steps"]
    assert [s["phase"] for s in steps] == ["RolledBack", "RolledBack"]
    assert steps[1]["rolledBackAt"] <= steps[0]["rolledBackAt"]  # in reverse order
    # kubectl optiinfra plan: the verification window with its baseline and measurements.
    shown = optiinfra(scene.kubectl, scene.namespace, "plan", "rec-v", user="viewer")
    assert shown.returncode == 0, shown.stderr
    verify = next(line for line in shown.stdout.splitlines() if line.lstrip().startswith("verify"))
    assert "x" in verify.split("|")[1]  # the failed measurement on the bar
    assert "| Failed (" in verify
    assert f"{METRIC}: Failed, baseline 0.2" in shown.stdout
    assert " 0.5 Failed " in shown.stdout


@pytest.mark.timeout(150)
def test_no_data_waits_for_a_baseline_then_asks_a_person_who_keeps_it(scene: Scene) -> None:
    objects = scene.objects  # no series for this namespace: no data at all
    scene.submit()

    def waiting() -> dict[str, Any] | None:
        status = objects.status(PLANS, "rec-v")
        return status if METRIC in (status.get("message") or "") else None

    pending = wait_for(waiting, what="the plan to wait for its baseline", timeout=30)
    assert pending["phase"] == "Pending"
    assert f"baseline of metric {METRIC}: no data over 10s" in pending["message"]
    ready = next(c for c in pending["conditions"] if c["type"] == "Ready")
    assert METRIC in ready["message"]
    started = optiinfra(scene.kubectl, scene.namespace, "start", "rec-v", "--skip-baseline")
    assert started.returncode == 0, started.stderr
    approval = objects.wait_phase(APPROVALS, "rec-v-verify", "Pending", timeout=60)
    assert verification(objects)["baselineSkippedBy"] == "approver"
    assert objects.status(PLANS, "rec-v")["phase"] == "Verifying"
    assert [o["kind"] for o in approval["metadata"]["ownerReferences"]] == ["ExecutionPlan"]
    assert f"{METRIC}: [error, error, error, error] no baseline" in approval["status"]["message"]
    kept = optiinfra(scene.kubectl, scene.namespace, "approve", "rec-v-verify", user="approver")
    assert kept.returncode == 0, kept.stderr
    done = objects.wait_phase(PLANS, "rec-v", "Succeeded", timeout=30)
    assert "kept by decision" in done["status"]["message"]
    assert verification(objects)["decision"] == "Keep"


@pytest.mark.timeout(180)
def test_a_sigkill_during_verifying_loses_no_measurement_and_takes_none_twice(
    scene: Scene,
) -> None:
    scene.set(0.2)
    objects = scene.objects
    scene.submit(count=8)  # 8 measurements, a second apart
    wait_for(lambda: len(measurements(objects)) >= 2, what="two measurements", timeout=60)
    assert objects.status(PLANS, "rec-v")["phase"] == "Verifying"
    assert scene.operator is not None
    scene.operator.kill()
    before = measurements(objects)
    scene.start_operator("operator-restarted")
    done = objects.wait_phase(PLANS, "rec-v", "Succeeded", timeout=90)
    taken = measurements(objects)
    assert len(taken) == 8
    assert taken[: len(before)] == before  # nothing taken before the kill was lost
    times = [m["at"] for m in taken]
    assert len(set(times)) == len(times) == 8  # none twice
    assert times == sorted(times)
    assert done["status"]["verification"]["metrics"][0]["successful"] == 8


@pytest.mark.timeout(180)
def test_no_data_nobody_decides_and_the_expiry_rolls_the_change_back(scene: Scene) -> None:
    """The latency goes missing after the change: Inconclusive, a person is asked
    (rec-v-verify, standing as long as the recommendation's own approval: --expiry-low),
    nobody answers, and the expiry rolls the steps back."""
    assert scene.operator is not None
    scene.operator.stop()
    scene.operator = scene.start_operator("short-expiry", "--expiry-low=15s")
    scene.set(0.2)
    objects = scene.objects
    scene.submit(step_ms=3000)  # the gauge goes before the first measurement
    wait_for(lambda: verification(objects).get("baseline"), what="the baseline", timeout=60)
    scene.prometheus[1].remove(GAUGE, namespace=scene.namespace, deployment="workers")
    asked = objects.wait_phase(APPROVALS, "rec-v-verify", "Pending", timeout=60)
    assert "expiry rolls it back" in asked["status"]["message"]
    done = objects.wait_phase(PLANS, "rec-v", "RolledBack", timeout=60)
    assert [s["phase"] for s in done["status"]["steps"]] == ["RolledBack", "RolledBack"]
    assert objects.status(APPROVALS, "rec-v-verify")["phase"] == "Expired"
    assert verification(objects)["phase"] == "Inconclusive"


@pytest.mark.timeout(120)
def test_a_dry_run_metric_is_measured_and_recorded_but_never_decides(scene: Scene) -> None:
    """A second metric in dryRun whose failure condition always holds: measured, recorded
    as Failed, and the change still succeeds on the metric that decides."""
    scene.set(0.2)
    objects = scene.objects
    query = f'max({GAUGE}{{namespace="{{{{namespace}}}}",deployment="{{{{target.name}}}}"}})'
    trial = metric(
        "trial",
        query=query,
        interval="1s",
        count=COUNT,
        successCondition="result < 0.0",
        failureCondition="result >= 0.0",
        dryRun=True,
    )
    scene.submit(more=(trial,))
    done = objects.wait_phase(PLANS, "rec-v", "Succeeded", timeout=60)
    metrics = {m["name"]: m for m in done["status"]["verification"]["metrics"]}
    trial_status = metrics["latency/trial"]
    assert trial_status["phase"] == "Failed"  # its own verdict, recorded (failureLimit 0)
    assert {m["phase"] for m in trial_status["measurements"]} == {"Failed"}
    assert metrics["latency/p99"]["successful"] == COUNT
    assert done["status"]["verification"]["phase"] == "Successful"
