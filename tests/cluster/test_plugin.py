"""`kubectl optiinfra`: the plugin as a person uses it, found by the pinned kubectl on PATH,
run as the local users (agent, approver, viewer, admin) against the shared operator."""

from __future__ import annotations

import re

import pytest

from tests.support import Kubectl
from tests.support.builders import fast_steps, recommendation
from tests.support.kube import APPROVALS, PLANS, RECS, Objects, apply, optiinfra

pytestmark = pytest.mark.usefixtures("plugin_on_path")


def test_kubectl_finds_the_plugin(kubectl: Kubectl) -> None:
    listed = kubectl("plugin", "list", check=False)
    assert "kubectl-optiinfra" in listed.stdout


def test_approve_as_approver_refuses_the_submitter_and_others(
    kubectl: Kubectl, e2e_namespace: str, objects: Objects
) -> None:
    apply(kubectl, e2e_namespace, recommendation("rec-p1"))  # submitted by admin
    objects.wait_phase(APPROVALS, "rec-p1", "Pending")

    agent = optiinfra(kubectl, e2e_namespace, "approve", "rec-p1", user="agent")
    assert agent.returncode == 1
    assert agent.stderr.count("\n") == 1, agent.stderr  # one line
    assert 'User "agent" cannot patch resource "approvals"' in agent.stderr

    submitter = optiinfra(kubectl, e2e_namespace, "approve", "rec-p1", user="admin")
    assert submitter.returncode == 1
    assert submitter.stderr.count("\n") == 1, submitter.stderr
    assert "cannot decide its approval" in submitter.stderr

    approver = optiinfra(kubectl, e2e_namespace, "approve", "rec-p1", "--reason", "fine")
    assert approver.returncode == 0, approver.stderr
    assert "approval rec-p1 Approved by approver" in approver.stdout
    status = objects.wait_phase(APPROVALS, "rec-p1", "Approved")["status"]
    assert status["decidedBy"] == "approver"
    assert status["reason"] == "fine"

    again = optiinfra(kubectl, e2e_namespace, "reject", "rec-p1", "--reason", "no")
    assert again.returncode == 1
    assert "approval rec-p1 was already Approved by approver at " in again.stderr

    missing = optiinfra(kubectl, e2e_namespace, "approve", "rec-nope")
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        f"error: approval rec-nope not found in namespace {e2e_namespace}"
    )


def test_why_explains_superseded_and_blocked(
    kubectl: Kubectl, e2e_namespace: str, objects: Objects
) -> None:
    apply(
        kubectl,
        e2e_namespace,
        recommendation(
            "rec-w3", priority=10, estimatedSavings=2000, affectedResources=["i-1", "i-2"]
        ),
        recommendation(
            "rec-w4",
            action="scale_down",
            priority=8,
            estimatedSavings=1500,
            affectedResources=["i-2", "i-3"],
        ),
        recommendation("rec-w5", dependsOn=["rec-ghost"]),
    )
    objects.wait_phase(RECS, "rec-w4", "Superseded")
    objects.wait_phase(RECS, "rec-w5", "Blocked")

    why = optiinfra(kubectl, e2e_namespace, "why", "rec-w4", user="viewer")
    assert why.returncode == 0, why.stderr
    text = why.stdout
    assert text.startswith("rec-w4 is Superseded: scale_down for customer customer-1")
    assert "Lost to rec-w3, kept by higher priority (10 > 8)." in text
    assert (
        "resource conflict with rec-w3 (medium): Both recommendations affect resources: [i-2]"
        in text
    )
    assert (
        "-> Kept recommendation rec-w3 (priority: 10, savings: 2000.00), discarded rec-w4" in text
    )

    blocked = optiinfra(kubectl, e2e_namespace, "why", "rec-w5", user="viewer")
    assert blocked.returncode == 0, blocked.stderr
    assert blocked.stdout.startswith("rec-w5 is Blocked")
    assert "Blocked by rec-ghost: it does not exist." in blocked.stdout

    waiting = optiinfra(kubectl, e2e_namespace, "why", "rec-w3", user="viewer")
    expected = "Waits for a person (not its submitter) to decide approval rec-w3 until "
    assert expected in waiting.stdout
    assert re.search(r"\(in 1d23h\)", waiting.stdout), waiting.stdout


def test_queue_is_ordered_by_expiry(kubectl: Kubectl, e2e_namespace: str, objects: Objects) -> None:
    apply(
        kubectl,
        e2e_namespace,
        recommendation("rec-q-medium", riskLevel="medium"),
        recommendation("rec-q-high", riskLevel="high"),
        recommendation("rec-q-low", riskLevel="low", autoApprove=False),
    )
    for name in ("rec-q-medium", "rec-q-high", "rec-q-low"):
        objects.wait_phase(APPROVALS, name, "Pending")
    queue = optiinfra(kubectl, e2e_namespace, "queue", user="viewer")
    assert queue.returncode == 0, queue.stderr
    lines = queue.stdout.splitlines()
    assert lines[0].split()[:5] == ["NAME", "CUSTOMER", "RISK", "EXPIRES", "LEFT"]
    names = [line.split()[0] for line in lines[1:]]
    assert names == ["rec-q-high", "rec-q-medium", "rec-q-low"]  # 24h, 48h, 72h
    assert re.search(r"rec-q-high .* high .* 23h5\dm", lines[1]), lines[1]


def test_start_and_plan_timeline_with_rollback(
    kubectl: Kubectl, e2e_namespace: str, objects: Objects
) -> None:
    apply(kubectl, e2e_namespace, recommendation("rec-t", steps=fast_steps("three")))
    objects.wait_phase(APPROVALS, "rec-t", "Pending")
    assert optiinfra(kubectl, e2e_namespace, "approve", "rec-t").returncode == 0
    objects.wait_phase(PLANS, "rec-t", "Pending")
    suspended = optiinfra(kubectl, e2e_namespace, "plan", "rec-t", user="viewer")
    assert "plan rec-t: Pending 0/3 (suspended: kubectl optiinfra start rec-t)" in suspended.stdout

    started = optiinfra(kubectl, e2e_namespace, "start", "rec-t")
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == "executionplan rec-t started"
    objects.wait_phase(PLANS, "rec-t", "RolledBack")

    shown = optiinfra(kubectl, e2e_namespace, "plan", "rec-t", user="viewer")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("plan rec-t: RolledBack")
    rows = {line.split()[0]: line for line in lines[1:] if "|" in line}
    assert set(rows) == {"one", "two", "three"}
    assert "| RolledBack" in rows["one"]
    assert "| RolledBack" in rows["two"]
    assert "| Failed" in rows["three"]
    assert "error: three broke" in shown.stdout
    assert "<" in rows["one"].split("|")[1]  # the rollback drawn after the step

    ended = optiinfra(kubectl, e2e_namespace, "abort", "rec-t")
    assert ended.returncode == 1
    assert ended.stderr.strip() == "error: executionplan rec-t already ended: RolledBack"


def test_completion_of_names(kubectl: Kubectl, e2e_namespace: str, objects: Objects) -> None:
    apply(kubectl, e2e_namespace, recommendation("rec-c1"), recommendation("rec-c2"))
    for name in ("rec-c1", "rec-c2"):
        objects.wait_phase(APPROVALS, name, "Pending")
    commands = kubectl("__complete", "optiinfra", "", check=False).stdout.splitlines()
    assert {"approve", "why", "queue", "plan"} <= set(commands)
    ask = ("__complete", "optiinfra", "approve", "-n", e2e_namespace, "rec-c")
    names = kubectl(*ask, user="approver").stdout.splitlines()
    assert names[:2] == ["rec-c1", "rec-c2"]
    assert names[-1] == ":4"


def test_an_expired_approval_says_when(
    kubectl: Kubectl, e2e_namespace: str, objects: Objects
) -> None:
    apply(kubectl, e2e_namespace, recommendation("rec-x", riskLevel="critical"))
    expired = objects.wait_phase(APPROVALS, "rec-x", "Expired", timeout=60)
    late = optiinfra(kubectl, e2e_namespace, "approve", "rec-x")
    assert late.returncode == 1
    assert late.stderr == (
        f"error: approval rec-x expired at {expired['spec']['expiresAt']}; it cannot be decided\n"
    )
