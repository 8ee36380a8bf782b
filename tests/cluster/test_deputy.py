"""No confused deputy: the operator does nothing for a submitter that they may not do
themselves, and a drastic change labelled low is not approved by policy.

The operator acts with its own rights. At admission it asks the API server (a
SubjectAccessReview per cluster change of the plan) whether the submitter may make each
change; if not, a person must approve, whatever riskLevel says, and the status says why.
"""

from __future__ import annotations

from typing import Any

import kubernetes

from tests.support import wait_for
from tests.support.builders import recommendation
from tests.support.kube import APPROVALS, RECS, Objects, submit

WEB = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}


def scale(name: str, replicas: int) -> dict[str, Any]:
    return recommendation(
        name,
        action="scale_down",
        riskLevel="low",
        target=WEB,
        parameters={"replicas": replicas},
    )


def grant_scaling(api: kubernetes.client.ApiClient, namespace: str, user: str) -> None:
    """What `kubectl scale` and a readiness wait need: get deployments, patch their scale."""
    rbac = kubernetes.client.RbacAuthorizationV1Api(api)
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "scaler"},
            "rules": [
                {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]},
                {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["patch"]},
            ],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": f"scaler-{user}"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "scaler"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        },
    )


def test_an_agent_that_may_not_scale_cannot_have_a_scale_approved_by_policy(
    kubectl: Any, e2e_namespace: str, objects: Objects
) -> None:
    submit(kubectl, e2e_namespace, scale("rec-deputy", 3), user="agent")
    rec = objects.wait_phase(RECS, "rec-deputy", "AwaitingApproval")
    why = "a person must approve: the submitter agent may not patch Deployment web (scale)"
    assert why in rec["status"]["message"], rec["status"]["message"]
    approval = objects.wait_phase(APPROVALS, "rec-deputy", "Pending")
    assert approval["spec"]["riskLevel"] == "low"
    assert why in approval["status"]["message"]
    # The issue's case: a low-risk scale to zero by an agent without the right.
    submit(kubectl, e2e_namespace, scale("rec-deputy-zero", 0), user="agent")
    zero = objects.wait_phase(RECS, "rec-deputy-zero", "AwaitingApproval")
    assert why in zero["status"]["message"]
    assert "risk raised from low to high" in zero["status"]["message"]


def test_with_the_right_a_small_scale_is_approved_by_policy_but_zero_is_not(
    api: kubernetes.client.ApiClient, kubectl: Any, e2e_namespace: str, objects: Objects
) -> None:
    grant_scaling(api, e2e_namespace, "agent")
    submit(kubectl, e2e_namespace, scale("rec-small", 2), user="agent")
    objects.wait_phase(APPROVALS, "rec-small", "Approved")
    # The operator writes the Approval (and the plan) before the recommendation's status.
    wait_for(
        lambda: (
            objects.phase(RECS, "rec-small") in ("Approved", "Executing", "Succeeded", "Failed")
        ),
        what="rec-small to be approved by policy",
    )
    submit(kubectl, e2e_namespace, scale("rec-zero", 0), user="agent")
    rec = objects.wait_phase(RECS, "rec-zero", "AwaitingApproval")
    assert "risk raised from low to high: step scale scales web to zero" in rec["status"]["message"]
    approval = objects.wait_phase(APPROVALS, "rec-zero", "Pending")
    assert approval["spec"]["riskLevel"] == "high"


def test_the_submitter_cannot_forge_or_remove_the_record_of_what_they_may_not_do(
    kubectl: Any, e2e_namespace: str, objects: Objects
) -> None:
    submit(kubectl, e2e_namespace, scale("rec-forge", 3), user="agent")
    objects.wait_phase(RECS, "rec-forge", "AwaitingApproval")
    kubectl(
        "annotate", "recommendation", "rec-forge", "-n", e2e_namespace,
        "optiinfra.io/submitter-may-not-", user="agent",
    )  # fmt: skip
    stored = objects.get(RECS, "rec-forge")
    assert stored is not None
    assert "optiinfra.io/submitter-may-not" in stored["metadata"]["annotations"]
