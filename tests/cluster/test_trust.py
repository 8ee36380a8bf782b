"""Who may approve is decided and recorded by the API server, not by the client.

Real users (client certificates of the local control plane) bound to the roles in
manifests/user-roles.yaml, real requests through their kubeconfigs, the operator's
admission webhooks registered by `coordinator run` itself.
"""

from __future__ import annotations

import json
from typing import Any

import kubernetes
import yaml

from tests.support import Kubectl, wait_for
from tests.support.builders import recommendation
from tests.support.kube import APPROVALS, APPROVE, PLANS, RECS, Objects, patch_approval, submit


def pending(objects: Objects, name: str) -> dict[str, Any]:
    return objects.wait_phase(APPROVALS, name, "Pending")


def approver_also_submits(
    kubectl: Kubectl, api: kubernetes.client.ApiClient, namespace: str
) -> None:
    """Bind the approver to the agent role too, and wait until it may submit."""
    rbac = kubernetes.client.RbacAuthorizationV1Api(api)
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "approver-also-agent"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "optiinfra-agent",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "approver"}
            ],
        },
    )
    wait_for(
        lambda: kubectl(
            "auth", "can-i", "create", "recommendations.optiinfra.io", "-n", namespace,
            user="approver", check=False,
        ).stdout.strip() == "yes",
        what="the extra binding to take effect",
    )  # fmt: skip


def test_only_the_approver_role_can_decide(
    kubectl: Kubectl, e2e_namespace: str, objects: Objects
) -> None:
    submit(kubectl, e2e_namespace, recommendation("rec-t1"))
    pending(objects, "rec-t1")
    for user in ("agent", "viewer"):
        proc = patch_approval(kubectl, e2e_namespace, "rec-t1", APPROVE, user=user)
        assert proc.returncode != 0
        assert f'User "{user}" cannot patch resource "approvals"' in proc.stderr
    forged = {"status": {"phase": "Approved", "decidedBy": "ceo"}}
    proc = kubectl(
        "patch", "approval", "rec-t1", "-n", e2e_namespace, "--type", "merge",
        "--subresource=status", "-p", json.dumps(forged), user="approver", check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert 'cannot patch resource "approvals/status"' in proc.stderr
    assert objects.phase(APPROVALS, "rec-t1") == "Pending"


def test_the_decider_is_who_the_api_server_authenticated(
    kubectl: Kubectl, e2e_namespace: str, objects: Objects
) -> None:
    submit(kubectl, e2e_namespace, recommendation("rec-t2"))
    pending(objects, "rec-t2")
    claim = {
        "metadata": {
            "annotations": {
                "optiinfra.io/decided-by": "ceo",
                "optiinfra.io/decided-at": "2020-01-01T00:00:00Z",
            }
        },
        "spec": {"decision": "Approved", "reason": "looks good"},
        "status": {"decidedBy": "ceo"},
    }
    proc = patch_approval(kubectl, e2e_namespace, "rec-t2", claim, user="approver")
    assert proc.returncode == 0, proc.stderr
    approval = objects.wait_phase(APPROVALS, "rec-t2", "Approved")
    assert approval["status"]["decidedBy"] == "approver"
    assert approval["metadata"]["annotations"]["optiinfra.io/decided-by"] == "approver"
    assert approval["status"]["decidedAt"] != "2020-01-01T00:00:00Z"
    rec = objects.wait_phase(RECS, "rec-t2", "Approved")
    assert "approver" in rec["status"]["message"]
    # Afterwards nobody can rewrite the record either.
    later = {"metadata": {"annotations": {"optiinfra.io/decided-by": "ceo"}}}
    assert patch_approval(kubectl, e2e_namespace, "rec-t2", later, user="approver").returncode == 0
    again = objects.get(APPROVALS, "rec-t2")
    assert again is not None
    assert again["metadata"]["annotations"]["optiinfra.io/decided-by"] == "approver"


def test_the_submitter_cannot_approve_their_own_recommendation(
    kubectl: Kubectl, api: kubernetes.client.ApiClient, e2e_namespace: str, objects: Objects
) -> None:
    approver_also_submits(kubectl, api, e2e_namespace)
    submit(kubectl, e2e_namespace, recommendation("rec-t3"), user="approver")
    pending(objects, "rec-t3")
    proc = patch_approval(kubectl, e2e_namespace, "rec-t3", APPROVE, user="approver")
    assert proc.returncode != 0
    assert "approver submitted or last changed recommendation rec-t3" in proc.stderr
    assert "another person must" in proc.stderr
    assert objects.phase(APPROVALS, "rec-t3") == "Pending"


def test_a_decided_approval_cannot_flip(
    kubectl: Kubectl, e2e_namespace: str, objects: Objects
) -> None:
    submit(kubectl, e2e_namespace, recommendation("rec-t4"))
    pending(objects, "rec-t4")
    assert (
        patch_approval(kubectl, e2e_namespace, "rec-t4", APPROVE, user="approver").returncode == 0
    )
    flip = {"spec": {"decision": "Rejected"}}
    proc = patch_approval(kubectl, e2e_namespace, "rec-t4", flip, user="approver")
    assert proc.returncode != 0
    assert "the decision is final: a decided approval cannot change" in proc.stderr


def test_an_expired_approval_cannot_be_decided(
    kubectl: Kubectl, e2e_namespace: str, objects: Objects
) -> None:
    submit(kubectl, e2e_namespace, recommendation("rec-t5", riskLevel="critical"))
    approval = pending(objects, "rec-t5")
    expires_at = approval["spec"]["expiresAt"]
    objects.wait_phase(APPROVALS, "rec-t5", "Expired", timeout=30)
    proc = patch_approval(kubectl, e2e_namespace, "rec-t5", APPROVE, user="approver")
    assert proc.returncode != 0
    assert f"approval rec-t5 expired at {expires_at} and can no longer be decided" in proc.stderr


def test_a_withdrawn_approval_cannot_be_decided(
    kubectl: Kubectl, e2e_namespace: str, objects: Objects
) -> None:
    submit(kubectl, e2e_namespace, recommendation("rec-t6", priority=1, affectedResources=["db"]))
    pending(objects, "rec-t6")
    submit(kubectl, e2e_namespace, recommendation("rec-t7", priority=9, affectedResources=["db"]))
    objects.wait_phase(APPROVALS, "rec-t6", "Withdrawn")
    proc = patch_approval(kubectl, e2e_namespace, "rec-t6", APPROVE, user="approver")
    assert proc.returncode != 0
    assert "approval rec-t6 was withdrawn" in proc.stderr


def test_a_spec_change_after_approval_needs_a_new_decision(
    kubectl: Kubectl, e2e_namespace: str, objects: Objects
) -> None:
    submit(kubectl, e2e_namespace, recommendation("rec-t8"))
    pending(objects, "rec-t8")
    assert (
        patch_approval(kubectl, e2e_namespace, "rec-t8", APPROVE, user="approver").returncode == 0
    )
    objects.wait_phase(RECS, "rec-t8", "Approved")
    wait_for(lambda: objects.get(PLANS, "rec-t8"), what="the plan")
    submit(kubectl, e2e_namespace, recommendation("rec-t8", estimatedSavings=999))
    renewed = wait_for(
        lambda: (
            (a := objects.get(APPROVALS, "rec-t8"))
            and a["spec"]["recommendationGeneration"] == 2
            and (a.get("status") or {}).get("phase") == "Pending"
            and a
        ),
        what="a new approval for generation 2",
    )
    assert renewed["spec"]["decision"] == "Pending"
    # Who decided generation 1 is kept in the new approval's history.
    (record,) = renewed["status"]["history"]
    assert (record["generation"], record["phase"], record["decidedBy"]) == (
        1,
        "Approved",
        "approver",
    )
    assert {"decidedAt", "requestedAt", "expiresAt"} <= record.keys()
    objects.wait_phase(RECS, "rec-t8", "AwaitingApproval")
    wait_for(lambda: objects.get(PLANS, "rec-t8") is None, what="the unstarted plan to go")


def test_a_spec_change_during_execution_is_refused(
    kubectl: Kubectl, e2e_namespace: str, objects: Objects
) -> None:
    steps = [
        {
            "name": "long",
            "action": "long",
            "executor": "simulated",
            "params": {"durationMs": 10_000},
        }
    ]  # room
    submit(
        kubectl,
        e2e_namespace,
        recommendation("rec-t9", riskLevel="low", executeNow=True, steps=steps),
    )
    objects.wait_phase(RECS, "rec-t9", "Executing")
    proc = kubectl(
        "apply", "-n", e2e_namespace, "-f", "-", user="agent", check=False,
        stdin=yaml.safe_dump(recommendation("rec-t9", riskLevel="low", executeNow=True,
                                            steps=steps, priority=7)),
    )  # fmt: skip
    assert proc.returncode != 0
    assert "recommendation rec-t9 is executing its plan; its spec cannot change" in proc.stderr
    objects.wait_phase(RECS, "rec-t9", "Succeeded")


def test_a_missing_dependency_is_accepted_with_a_warning(
    kubectl: Kubectl, e2e_namespace: str, objects: Objects
) -> None:
    warnings = submit(kubectl, e2e_namespace, recommendation("rec-t10", dependsOn=["rec-later"]))
    assert "recommendation rec-later does not exist" in warnings
    objects.wait_phase(RECS, "rec-t10", "Blocked")


def test_a_recommendation_created_with_generate_name_is_stamped_and_checked(
    kubectl: Kubectl, api: kubernetes.client.ApiClient, e2e_namespace: str, objects: Objects
) -> None:
    """Without a name (metadata.generateName), the mutating webhook sees the object before
    the API server names it: it is stamped all the same, so its submitter still cannot
    approve it."""
    approver_also_submits(kubectl, api, e2e_namespace)
    rec = recommendation("unused")
    rec["metadata"] = {"generateName": "rec-gen-"}
    proc = kubectl(
        "create", "-n", e2e_namespace, "-f", "-", "-o", "json", stdin=json.dumps(rec),
        user="approver",
    )  # fmt: skip
    created = json.loads(proc.stdout)
    name = created["metadata"]["name"]
    assert name.startswith("rec-gen-")
    annotations = created["metadata"]["annotations"]
    assert annotations["optiinfra.io/submitted-by"] == "approver"
    assert json.loads(annotations["optiinfra.io/submitted-by-groups"]) == ["system:authenticated"]
    pending(objects, name)
    proc = patch_approval(kubectl, e2e_namespace, name, APPROVE, user="approver")
    assert proc.returncode != 0
    assert f"approver submitted or last changed recommendation {name}" in proc.stderr
    assert objects.phase(APPROVALS, name) == "Pending"
