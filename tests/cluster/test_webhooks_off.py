"""`--webhooks=off`: an operator the API server cannot reach still coordinates.

Without webhooks nothing stamps who decided, so decisions are recorded as made by
``unknown`` and the operator says so when it starts; everything else works.
"""

from __future__ import annotations

from collections.abc import Callable

import kubernetes

from tests.support import Kubectl
from tests.support.builders import fast_steps, recommendation
from tests.support.kube import Objects, apply
from tests.support.processes import OperatorProcess


def test_the_operator_runs_without_webhooks_and_says_what_that_costs(
    api: kubernetes.client.ApiClient,
    kubectl: Kubectl,
    own_namespace: str,
    own_operator: Callable[..., OperatorProcess],
) -> None:
    objects = Objects(api, own_namespace)
    process = own_operator("operator", "--webhooks=off")
    assert "admission webhooks are off" in process.log.read_text()
    admission = kubernetes.client.AdmissionregistrationV1Api(api)
    registered = [
        c.metadata.name
        for c in admission.list_validating_webhook_configuration().items
        + admission.list_mutating_webhook_configuration().items
    ]
    assert not [name for name in registered if own_namespace in name], registered

    apply(
        kubectl,
        own_namespace,
        *(
            recommendation(
                name,
                riskLevel=name,
                action="scale_down",
                executeNow=True,
                steps=fast_steps(names=("one",)),
            )
            for name in ("low", "medium")
        ),
    )
    objects.wait_phase("executionplans", "low", "Succeeded")
    objects.wait_phase("approvals", "medium", "Pending")
    kubectl(
        "patch", "approval", "medium", "-n", own_namespace, "--type=merge",
        "-p", '{"spec":{"decision":"Approved"}}',
    )  # fmt: skip
    approved = objects.wait_phase("approvals", "medium", "Approved")
    assert approved["status"]["decidedBy"] == "unknown"
    objects.wait_phase("executionplans", "medium", "Succeeded")
    process.stop()  # a clean exit, too
    assert process.proc is not None
    assert process.proc.returncode == 0, process.tail()
