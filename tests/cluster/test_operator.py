"""The operator end to end: real API server, real controller-manager, `coordinator run`.

Users' paths only: manifests applied with kubectl, decisions made with kubectl patch,
state read back from the API. Every wait polls with a deadline.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import kubernetes
import prometheus as localprometheus
import yaml

from tests.support import Kubectl, wait_for
from tests.support.builders import deployment, fast_steps, recommendation, scale_step
from tests.support.cluster import reach_example_outcomes
from tests.support.kube import APPROVALS, PLANS, RECS, Objects, apply, replicas
from tests.support.processes import OperatorProcess


def ready(obj: dict[str, Any]) -> tuple[str, str]:
    """The (status, reason) of the object's Ready condition."""
    (condition,) = [c for c in obj["status"]["conditions"] if c["type"] == "Ready"]
    assert condition["lastTransitionTime"]
    return condition["status"], condition["reason"]


def decide(kubectl: Kubectl, namespace: str, name: str, decision: str, reason: str = "") -> None:
    spec: dict[str, Any] = {"decision": decision}
    if reason:
        spec["reason"] = reason
    kubectl(
        "patch", "approval", name, "-n", namespace, "--type", "merge",
        "-p", json.dumps({"spec": spec}), user="approver",
    )  # fmt: skip


def test_conflict_is_resolved_and_the_winner_asks_for_approval(
    kubectl: Kubectl, e2e_namespace: str, objects: Objects
) -> None:
    apply(
        kubectl,
        e2e_namespace,
        recommendation(
            "rec-003",
            priority=10,
            estimatedSavings=2000,
            affectedResources=["i-101", "i-102", "i-103"],
        ),
        recommendation(
            "rec-004",
            action="scale_down",
            priority=8,
            estimatedSavings=1500,
            affectedResources=["i-102", "i-103", "i-104"],
        ),
    )
    objects.wait_phase(RECS, "rec-003", "AwaitingApproval")
    loser = objects.wait_phase(RECS, "rec-004", "Superseded")
    assert loser["status"]["supersededBy"] == "rec-003"
    (conflict,) = loser["status"]["conflicts"]
    assert conflict["description"] == "Both recommendations affect resources: [i-102 i-103]"
    assert conflict["resolution"] == (
        "Kept recommendation rec-003 (priority: 10, savings: 2000.00), discarded rec-004"
    )
    approval = objects.get(APPROVALS, "rec-003")
    assert approval is not None
    assert approval["spec"]["decision"] == "Pending"
    assert approval["metadata"]["ownerReferences"][0]["name"] == "rec-003"
    assert objects.get(APPROVALS, "rec-004") is None


def test_approve_with_kubectl_patch_creates_a_suspended_plan_that_starts_on_request(
    kubectl: Kubectl, e2e_namespace: str, objects: Objects
) -> None:
    apply(kubectl, e2e_namespace, recommendation("rec-a", steps=fast_steps()))
    objects.wait_phase(APPROVALS, "rec-a", "Pending")
    decide(kubectl, e2e_namespace, "rec-a", "Approved")
    objects.wait_phase(RECS, "rec-a", "Approved")
    approval = objects.wait_phase(APPROVALS, "rec-a", "Approved")
    assert approval["status"]["decidedAt"]
    assert ready(approval) == ("True", "Approved")
    plan = wait_for(lambda: objects.get(PLANS, "rec-a"), what="the plan to be created")
    assert plan["spec"]["suspend"] is True
    kubectl(
        "patch", "executionplan", "rec-a", "-n", e2e_namespace, "--type", "merge",
        "-p", '{"spec":{"suspend":false}}', user="approver",
    )  # fmt: skip
    done = objects.wait_phase(PLANS, "rec-a", "Succeeded")
    assert [s["phase"] for s in done["status"]["steps"]] == ["Succeeded"] * 3
    assert ready(done) == ("True", "Succeeded")
    objects.wait_phase(RECS, "rec-a", "Succeeded")


def test_reject_ends_it_and_the_superseded_one_comes_back(
    kubectl: Kubectl, e2e_namespace: str, objects: Objects
) -> None:
    apply(
        kubectl,
        e2e_namespace,
        recommendation("rec-007", riskLevel="high", priority=15, affectedResources=["db-prod"]),
        recommendation("rec-009", priority=5, affectedResources=["db-prod"]),
    )
    objects.wait_phase(RECS, "rec-009", "Superseded")
    objects.wait_phase(APPROVALS, "rec-007", "Pending")
    decide(kubectl, e2e_namespace, "rec-007", "Rejected", "Too risky during peak hours")
    rejected = objects.wait_phase(RECS, "rec-007", "Rejected")
    assert "Too risky during peak hours" in rejected["status"]["message"]
    approval = objects.wait_phase(APPROVALS, "rec-007", "Rejected")
    assert approval["status"]["reason"] == "Too risky during peak hours"
    revived = objects.wait_phase(RECS, "rec-009", "AwaitingApproval")
    assert "supersededBy" not in revived["status"]
    objects.wait_phase(APPROVALS, "rec-009", "Pending")


def test_an_undecided_approval_expires(
    kubectl: Kubectl, e2e_namespace: str, objects: Objects
) -> None:
    apply(kubectl, e2e_namespace, recommendation("rec-crit", riskLevel="critical"))
    objects.wait_phase(APPROVALS, "rec-crit", "Pending")
    objects.wait_phase(RECS, "rec-crit", "Expired", timeout=30)
    approval = objects.wait_phase(APPROVALS, "rec-crit", "Expired")
    assert approval["status"]["expiresAt"] == approval["spec"]["expiresAt"]


def test_a_failing_critical_step_rolls_back_in_reverse_order(
    kubectl: Kubectl, e2e_namespace: str, objects: Objects
) -> None:
    steps = fast_steps("four", names=("one", "two", "three", "four", "five"))
    steps[2]["reversible"] = False
    apply(
        kubectl,
        e2e_namespace,
        recommendation("rec-fail", riskLevel="low", executeNow=True, steps=steps),
    )
    plan = objects.wait_phase(PLANS, "rec-fail", "RolledBack")
    by_name = {s["name"]: s for s in plan["status"]["steps"]}
    assert [by_name[n]["phase"] for n in ("one", "two", "three", "four", "five")] == [
        "RolledBack",
        "RolledBack",
        "Succeeded",
        "Failed",
        "Skipped",
    ]
    assert by_name["four"]["error"] == "four broke"
    assert "not reversible" in by_name["three"]["message"]
    assert by_name["two"]["rolledBackAt"] >= by_name["four"]["finishedAt"]
    assert by_name["one"]["rolledBackAt"] >= by_name["two"]["rolledBackAt"]
    assert ready(plan) == ("False", "RolledBack")
    assert ready(objects.wait_phase(APPROVALS, "rec-fail", "Approved")) == ("True", "Approved")
    objects.wait_phase(RECS, "rec-fail", "RolledBack")


def test_reapplying_the_same_manifests_changes_nothing(
    kubectl: Kubectl, e2e_namespace: str, objects: Objects
) -> None:
    docs = [
        recommendation("rec-g1", priority=3, affectedResources=["node-x"]),
        recommendation("rec-g2", riskLevel="low", affectedResources=["node-x", "node-y"]),
    ]
    manifest = yaml.safe_dump_all(docs)
    kubectl("apply", "-n", e2e_namespace, "-f", "-", stdin=manifest)
    objects.wait_phase(RECS, "rec-g1", "AwaitingApproval")
    objects.wait_phase(RECS, "rec-g2", "Superseded")
    before = {n: objects.get(RECS, n) for n in ("rec-g1", "rec-g2")}
    for extra in ([], ["--server-side"]):
        out = kubectl("apply", "-n", e2e_namespace, "-f", "-", *extra, stdin=manifest).stdout
        assert out.count("unchanged") == 2 or extra, out
    diff = kubectl("diff", "-n", e2e_namespace, "-f", "-", stdin=manifest, check=False)
    assert diff.returncode == 0, diff.stdout + diff.stderr
    for name, old in before.items():
        new = objects.get(RECS, name)
        assert new is not None
        assert old is not None
        assert new["metadata"]["generation"] == old["metadata"]["generation"]
        assert new["spec"] == old["spec"]


def test_deleting_a_recommendation_removes_what_it_owns(
    kubectl: Kubectl, e2e_namespace: str, objects: Objects
) -> None:
    apply(kubectl, e2e_namespace, recommendation("rec-del", riskLevel="low"))
    wait_for(lambda: objects.get(PLANS, "rec-del"), what="the plan")
    assert objects.get(APPROVALS, "rec-del") is not None
    kubectl("delete", "recommendation", "rec-del", "-n", e2e_namespace)
    wait_for(
        lambda: objects.get(PLANS, "rec-del") is None and objects.get(APPROVALS, "rec-del") is None,
        what="the garbage collector to remove the approval and the plan",
        timeout=60,
    )


def test_a_kubernetes_scale_is_restored_when_a_later_critical_step_fails(
    kubectl: Kubectl, e2e_namespace: str, objects: Objects
) -> None:
    apply(kubectl, e2e_namespace, deployment("web", 2))
    steps = [
        scale_step("web", 5),
        {"name": "soak", "action": "soak", "executor": "simulated", "params": {"durationMs": 1500}},
        {
            "name": "verify",
            "action": "verify",
            "executor": "simulated",
            "params": {"durationMs": 50, "fail": "p99 too high"},
        },
    ]
    apply(
        kubectl,
        e2e_namespace,
        recommendation("rec-scale", riskLevel="low", executeNow=True, steps=steps),
    )
    wait_for(lambda: replicas(kubectl, e2e_namespace, "web") == 5, what="web scaled to 5")
    plan = objects.wait_phase(PLANS, "rec-scale", "RolledBack")
    scale = plan["status"]["steps"][0]
    assert scale["phase"] == "RolledBack"
    assert scale["result"]["previousReplicas"] == 2
    assert plan["status"]["steps"][2]["error"] == "p99 too high"
    assert replicas(kubectl, e2e_namespace, "web") == 2


def test_a_plan_waits_for_the_recommendations_it_depends_on(
    kubectl: Kubectl, e2e_namespace: str, objects: Objects
) -> None:
    slow = fast_steps()
    slow[1]["params"]["durationMs"] = 5000  # room to see it Running on a busy machine
    apply(
        kubectl,
        e2e_namespace,
        recommendation(
            "rec-first", riskLevel="low", executeNow=True, steps=slow, affectedResources=["a"]
        ),
        recommendation(
            "rec-second",
            riskLevel="low",
            executeNow=True,
            dependsOn=["rec-first"],
            steps=fast_steps(),
            affectedResources=["b"],
        ),
    )
    objects.wait_phase(PLANS, "rec-first", "Running")
    waiting = objects.status(PLANS, "rec-second")
    assert waiting.get("phase", "Pending") == "Pending"
    first = objects.wait_phase(PLANS, "rec-first", "Succeeded")
    second = objects.wait_phase(PLANS, "rec-second", "Succeeded")
    assert second["status"]["startedAt"] >= first["status"]["finishedAt"]


def test_a_dependency_that_does_not_exist_blocks(
    kubectl: Kubectl, e2e_namespace: str, objects: Objects
) -> None:
    apply(kubectl, e2e_namespace, recommendation("rec-orphan", dependsOn=["rec-missing"]))
    blocked = objects.wait_phase(RECS, "rec-orphan", "Blocked")
    assert "rec-missing" in blocked["status"]["message"]
    assert objects.get(APPROVALS, "rec-orphan") is None


def test_deleting_a_recommendation_rolls_its_running_plan_back_first(
    kubectl: Kubectl, e2e_namespace: str, objects: Objects
) -> None:
    apply(kubectl, e2e_namespace, deployment("api", 3))
    steps = [
        scale_step("api", 1),
        # Long enough that the garbage collector deletes the plan while this step runs.
        {
            "name": "wait",
            "action": "wait",
            "executor": "simulated",
            "params": {"durationMs": 10000},
        },
    ]
    apply(
        kubectl,
        e2e_namespace,
        recommendation("rec-gone", riskLevel="low", executeNow=True, steps=steps),
    )
    wait_for(lambda: replicas(kubectl, e2e_namespace, "api") == 1, what="api scaled to 1")
    kubectl("delete", "recommendation", "rec-gone", "-n", e2e_namespace, "--wait=false")
    wait_for(lambda: objects.get(PLANS, "rec-gone") is None, what="the plan to go", timeout=60)
    assert replicas(kubectl, e2e_namespace, "api") == 3


def test_transitions_are_recorded_as_events(
    kubectl: Kubectl, e2e_namespace: str, objects: Objects
) -> None:
    apply(
        kubectl,
        e2e_namespace,
        recommendation("rec-ev", riskLevel="low", executeNow=True, steps=fast_steps("two")),
    )
    objects.wait_phase(RECS, "rec-ev", "RolledBack")

    def reasons(kind: str) -> set[str]:
        out = kubectl(
            "get", "events", "-n", e2e_namespace, "-o", "json",
            "--field-selector", f"involvedObject.name=rec-ev,involvedObject.kind={kind}",
        )  # fmt: skip
        return {e["reason"] for e in json.loads(out.stdout)["items"]}

    wait_for(
        lambda: {"Approved", "PlanStarted", "RolledBack"} <= reasons("Recommendation"),
        what="the recommendation's events",
    )
    wait_for(
        lambda: (
            {"PlanStarted", "StepSucceeded", "StepFailed", "RolledBack"} <= reasons("ExecutionPlan")
        ),
        what="the plan's events",
    )
    described = kubectl("describe", "recommendation", "rec-ev", "-n", e2e_namespace).stdout
    assert "RolledBack" in described


def test_every_example_reaches_the_outcome_its_comment_states(
    kubectl: Kubectl,
    e2e_namespace: str,
    objects: Objects,
    prometheus: tuple[localprometheus.Prometheus, localprometheus.MetricsFixture],
    api: kubernetes.client.ApiClient,
) -> None:
    reach_example_outcomes(kubectl, e2e_namespace, objects, prometheus, api)


def test_prometheus_metrics_are_served(
    kubectl: Kubectl, e2e_namespace: str, objects: Objects, operator: OperatorProcess
) -> None:
    apply(
        kubectl,
        e2e_namespace,
        recommendation("rec-m1", riskLevel="low", executeNow=True, steps=fast_steps()),
        recommendation("rec-m2", affectedResources=["shared"], priority=2),
        recommendation("rec-m3", affectedResources=["shared"], priority=1),
    )
    objects.wait_phase(RECS, "rec-m1", "Succeeded")
    objects.wait_phase(RECS, "rec-m3", "Superseded")
    decide(kubectl, e2e_namespace, "rec-m2", "Approved")
    objects.wait_phase(APPROVALS, "rec-m2", "Approved")

    def scrape() -> dict[str, float]:
        url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line and not line.startswith("#")
        }

    def served() -> dict[str, float] | None:
        values = scrape()
        wanted = 'optiinfra_approval_wait_seconds_count{decision="Approved"}'
        return values if values.get(wanted, 0) >= 1 else None

    values = wait_for(served, what="the approval wait to be observed")
    assert values['optiinfra_recommendations{phase="Succeeded"}'] >= 1
    assert values['optiinfra_recommendations{phase="Superseded"}'] >= 1
    assert values['optiinfra_conflicts{type="resource"}'] >= 2
    assert values['optiinfra_plan_duration_seconds_count{phase="Succeeded"}'] >= 1
    assert values['optiinfra_step_duration_seconds_count{action="do_one",phase="Succeeded"}'] >= 1
    assert values["optiinfra_reconciles_total"] >= 1
    assert "optiinfra_reconcile_errors_total" in values
    assert values['optiinfra_store_objects{held="true",kind="recommendations"}'] >= 3

    def evicted() -> dict[str, float] | None:  # rec-m1 ended: its plan leaves memory
        values = scrape()
        stubs = values.get('optiinfra_store_objects{held="false",kind="executionplans"}', 0)
        return values if stubs >= 1 else None

    wait_for(evicted, what="the ended recommendation's plan to leave memory")
