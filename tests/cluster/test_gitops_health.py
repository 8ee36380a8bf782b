"""The health GitOps tools read from the statuses the operator really writes.

The examples are taken to their outcomes on the local control plane (as
test_operator does); then every Recommendation, Approval and ExecutionPlan read back from
the API server is judged by kstatus (tests/health_support.py, what Flux computes) and by
the Argo CD Lua health checks of docs/argocd/health/, which must agree.
"""

from __future__ import annotations

from typing import Any

import kubernetes
import prometheus as localprometheus

from coordinator.core import lifecycle
from tests.support import Kubectl
from tests.support.cluster import reach_example_outcomes
from tests.support.health import GITOPS_FAMILY, argocd_health, kstatus
from tests.support.kube import Objects

APPROVALS = {"Pending": "InProgress", "Approved": "Current", "Rejected": "Failed",
             "Expired": "Failed", "Withdrawn": "Failed"}  # fmt: skip
PLANS = {"Pending": "InProgress", "Running": "InProgress", "RollingBack": "InProgress",
         "Succeeded": "Current", "Failed": "Failed", "RolledBack": "Failed"}  # fmt: skip
EXPECTED = {
    "Recommendation": {phase.value: p.value for phase, p in lifecycle.PROGRESS.items()},
    "Approval": APPROVALS,
    "ExecutionPlan": PLANS,
}


def _listed(api: kubernetes.client.ApiClient, namespace: str, plural: str) -> list[dict[str, Any]]:
    custom = kubernetes.client.CustomObjectsApi(api)
    items: list[dict[str, Any]] = custom.list_namespaced_custom_object(
        "optiinfra.io", "v1alpha1", namespace, plural
    )["items"]
    return items


def test_the_examples_real_statuses_read_the_same_to_kstatus_and_argocd(
    api: kubernetes.client.ApiClient,
    kubectl: Kubectl,
    e2e_namespace: str,
    objects: Objects,
    prometheus: tuple[localprometheus.Prometheus, localprometheus.MetricsFixture],
) -> None:
    reach_example_outcomes(kubectl, e2e_namespace, objects, prometheus, api)
    seen: dict[str, set[tuple[str, str]]] = {}
    for plural in ("recommendations", "approvals", "executionplans"):
        for obj in _listed(api, e2e_namespace, plural):
            kind, name = obj["kind"], obj["metadata"]["name"]
            phase = obj["status"]["phase"]
            if obj["status"].get("observedGeneration") != obj["metadata"]["generation"]:
                continue  # being written right now: judged as such by both, checked in units
            status, _ = kstatus(obj)
            health, message = argocd_health(obj)
            assert status == EXPECTED[kind][phase], f"{kind}/{name} {phase}: {status}"
            assert GITOPS_FAMILY[health] == status, f"{kind}/{name} {phase}: {health}"
            assert message.startswith(phase), message
            seen.setdefault(kind, set()).add((phase, health))
    # The examples reach these; each is judged on a status the operator wrote.
    assert {
        ("Succeeded", "Healthy"),
        ("AwaitingApproval", "Suspended"),
        ("Approved", "Suspended"),
        ("Superseded", "Progressing"),
        ("Rejected", "Degraded"),
        ("RolledBack", "Degraded"),
        ("Blocked", "Degraded"),
    } <= seen["Recommendation"]
    assert {("Pending", "Suspended"), ("Approved", "Healthy"), ("Rejected", "Degraded")} <= seen[
        "Approval"
    ]
    assert {("Pending", "Suspended"), ("Succeeded", "Healthy"), ("RolledBack", "Degraded")} <= (
        seen["ExecutionPlan"]
    )
