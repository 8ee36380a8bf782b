"""`--webhooks=off`: an operator the API server cannot reach still coordinates.

Without webhooks nothing stamps who decided, so decisions are recorded as made by
``unknown`` and the operator says so when it starts; everything else works.
"""

from __future__ import annotations

from pathlib import Path

import kubernetes
import localcluster
import yaml

from tests.cluster.conftest import Objects
from tests.operator_process import OperatorProcess
from tests.support import Kubectl


def recommendation(name: str, *, risk: str) -> dict[str, object]:
    return {
        "apiVersion": "optiinfra.io/v1alpha1",
        "kind": "Recommendation",
        "metadata": {"name": name},
        "spec": {
            "customerId": "c",
            "agentId": "a",
            "agentType": "cost",
            "title": f"{risk} risk without webhooks",
            "action": "scale_down",
            "riskLevel": risk,
            "executeNow": True,
            "affectedResources": [f"deployment/{name}"],
            "steps": [{"name": "one", "action": "one", "params": {"durationMs": 50}}],
        },
    }


def test_the_operator_runs_without_webhooks_and_says_what_that_costs(
    cluster: localcluster.Cluster,
    api: kubernetes.client.ApiClient,
    kubectl: Kubectl,
    own_namespace: str,
    tmp_path: Path,
) -> None:
    objects = Objects(api, own_namespace)
    process = OperatorProcess(
        kubeconfig=cluster.kubeconfig,
        log=tmp_path / "operator.log",
        args=[f"--namespace={own_namespace}", "--webhooks=off"],
    ).start()
    try:
        assert "admission webhooks are off" in process.log.read_text()
        admission = kubernetes.client.AdmissionregistrationV1Api(api)
        registered = [
            c.metadata.name
            for c in admission.list_validating_webhook_configuration().items
            + admission.list_mutating_webhook_configuration().items
        ]
        assert not [name for name in registered if own_namespace in name], registered

        for rec in (recommendation("low", risk="low"), recommendation("medium", risk="medium")):
            kubectl("apply", "-n", own_namespace, "-f", "-", stdin=yaml.safe_dump(rec))
        objects.wait_phase("executionplans", "low", "Succeeded")
        objects.wait_phase("approvals", "medium", "Pending")
        kubectl(
            "patch", "approval", "medium", "-n", own_namespace, "--type=merge",
            "-p", '{"spec":{"decision":"Approved"}}',
        )  # fmt: skip
        approved = objects.wait_phase("approvals", "medium", "Approved")
        assert approved["status"]["decidedBy"] == "unknown"
        objects.wait_phase("executionplans", "medium", "Succeeded")
    finally:
        process.stop()
    assert process.proc is not None
    assert process.proc.returncode == 0, process.tail()
