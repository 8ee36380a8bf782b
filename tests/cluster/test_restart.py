"""The operator killed with SIGKILL continues from status: plans, decisions, expiries."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import kubernetes
import yaml

from tests.support import Kubectl, builders, wait_for
from tests.support.kube import Objects
from tests.support.processes import OperatorProcess

PLANS = "executionplans"


def test_sigkill_mid_plan_then_restart_completes_without_repeating_a_step(
    api: kubernetes.client.ApiClient,
    kubectl: Kubectl,
    own_namespace: str,
    own_operator: Callable[..., OperatorProcess],
) -> None:
    objects = Objects(api, own_namespace)
    process = own_operator("operator")
    steps = builders.fast_steps(names=("first", "second", "third"), duration_ms=200)
    steps[1]["params"]["durationMs"] = 4000  # long enough to be killed in
    rec = builders.recommendation("rec-kill", riskLevel="low", executeNow=True, steps=steps)
    kubectl("apply", "-n", own_namespace, "-f", "-", stdin=yaml.safe_dump(rec))

    def second_running() -> dict[str, object] | None:
        status = objects.status(PLANS, "rec-kill")
        entries = status.get("steps") or []
        return status if len(entries) == 3 and entries[1]["phase"] == "Running" else None

    before = wait_for(second_running, what="the second step to run", timeout=30)
    process.kill()
    assert objects.status(PLANS, "rec-kill")["steps"][1]["phase"] == "Running"
    own_operator("operator-restarted")
    done = objects.wait_phase(PLANS, "rec-kill", "Succeeded", timeout=60)
    first_before = before["steps"][0]  # type: ignore[index]
    first_after = done["status"]["steps"][0]
    assert first_after["phase"] == "Succeeded"
    assert (first_after["startedAt"], first_after["finishedAt"]) == (
        first_before["startedAt"],
        first_before["finishedAt"],
    )
    assert [s["phase"] for s in done["status"]["steps"]] == ["Succeeded"] * 3

    def plan_events() -> list[dict[str, Any]]:
        return list(
            json.loads(
                kubectl(
                    "get", "events", "-n", own_namespace, "-o", "json",
                    "--field-selector",
                    "involvedObject.name=rec-kill,involvedObject.kind=ExecutionPlan",
                ).stdout
            )["items"]
        )  # fmt: skip

    # Events are posted in the background after the status write: wait for the last one.
    events = wait_for(
        lambda: (found := plan_events()) and "Succeeded" in [e["reason"] for e in found] and found,
        what="the plan's Succeeded event",
        timeout=30,
    )
    # Exactly once: the first step's event was posted before the kill or, if the kill
    # lost it, by the restarted runner's replay of the stored status; never both.
    first_done = [e for e in events if e["reason"] == "StepSucceeded" and "first" in e["message"]]
    assert len(first_done) == 1, [e["message"] for e in events]
    for step in ("second", "third"):
        done = [e for e in events if e["reason"] == "StepSucceeded" and step in e["message"]]
        assert len(done) == 1, [e["message"] for e in events]
    for reason in ("PlanStarted", "Succeeded"):
        assert [e["reason"] for e in events].count(reason) == 1, [e["reason"] for e in events]


def test_a_runner_does_not_overwrite_a_status_another_writer_changed(
    api: kubernetes.client.ApiClient,
    kubectl: Kubectl,
    own_namespace: str,
    own_operator: Callable[..., OperatorProcess],
) -> None:
    objects = Objects(api, own_namespace)
    process = own_operator("operator")
    slow_first = builders.fast_steps(names=("first", "second"), duration_ms=200)
    slow_first[0]["params"]["durationMs"] = 3000  # still at work when the other writer moves it
    rec = builders.recommendation("rec-stale", riskLevel="low", executeNow=True, steps=slow_first)
    kubectl("apply", "-n", own_namespace, "-f", "-", stdin=yaml.safe_dump(rec))

    def first_running() -> dict[str, object] | None:
        status = objects.status(PLANS, "rec-stale")
        entries = status.get("steps") or []
        return status if entries and entries[0]["phase"] == "Running" else None

    status = wait_for(first_running, what="the first step to run", timeout=30)
    # Another writer (a replica that took over) restarts the first step behind the
    # runner's back, while the runner's executor is still at work on it.
    steps = [dict(s) for s in status["steps"]]  # type: ignore[attr-defined]
    steps[0]["startedAt"] = "2030-01-01T00:00:00Z"
    steps[0]["message"] = "taken over"
    kubectl(
        "patch", PLANS, "rec-stale", "-n", own_namespace, "--subresource=status",
        "--type=merge", "-p", json.dumps({"status": {"steps": steps}}),
    )  # fmt: skip
    wait_for(
        lambda: "leaving it to that writer" in process.log.read_text(errors="replace"),
        what="the runner to see that another writer moved the plan",
        timeout=30,
    )
    after = objects.status(PLANS, "rec-stale")
    assert after["steps"][0]["startedAt"] == "2030-01-01T00:00:00Z"
    assert after["steps"][0]["phase"] == "Running"  # the stale outcome was not written
    assert after["steps"][1]["phase"] == "Pending"


def test_an_expiry_that_passes_while_the_operator_is_down_is_not_missed(
    api: kubernetes.client.ApiClient,
    kubectl: Kubectl,
    own_namespace: str,
    own_operator: Callable[..., OperatorProcess],
) -> None:
    objects = Objects(api, own_namespace)
    first = own_operator("first", "--expiry-critical=4s")
    rec = builders.recommendation(
        "rec-late",
        customerId="c",
        agentId="a",
        title="decided too late",
        action="migrate_database",
        riskLevel="critical",
        steps=[{"name": "switch", "action": "switch", "executor": "simulated"}],
    )
    kubectl("apply", "-n", own_namespace, "-f", "-", stdin=yaml.safe_dump(rec))
    approval = objects.wait_phase("approvals", "rec-late", "Pending")
    # The approval is created before the recommendation's status is written (two writes):
    # kill only once both are there, or the precondition below races the kill.
    objects.wait_phase("recommendations", "rec-late", "AwaitingApproval")
    first.kill()
    expires_at = approval["spec"]["expiresAt"]
    wait_for(
        lambda: (
            objects.get("approvals", "rec-late") is not None
            and datetime.now(UTC) > datetime.fromisoformat(expires_at.replace("Z", "+00:00"))
        ),
        what="the expiry to pass while the operator is down",
        timeout=30,
    )
    assert objects.phase("recommendations", "rec-late") == "AwaitingApproval"
    own_operator("second", "--expiry-critical=4s")
    objects.wait_phase("recommendations", "rec-late", "Expired", timeout=30)
    objects.wait_phase("approvals", "rec-late", "Expired")
