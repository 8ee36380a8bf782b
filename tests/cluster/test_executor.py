"""The kubernetes executor on the real local control plane: patch, apply, wait and scale,
and their rollbacks, run by the shared operator as the ServiceAccount of manifests/ (a
missing right in the ClusterRole shows up here as a 403).

There is no scheduler here: pods never run, so `wait` is tested on fields that change
without them (a Deployment's .status.observedGeneration), and the readiness test skips
unless a Ready node exists.
"""

from __future__ import annotations

import json
from typing import Any

import kubernetes
import pytest

from tests.support import Kubectl, wait_for
from tests.support.builders import deployment, recommendation
from tests.support.kube import PLANS, Objects, apply

FAIL = {
    "name": "verify",
    "action": "verify",
    "executor": "simulated",
    "params": {"durationMs": 50, "fail": "p99 too high"},
}
DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment"}


def k8s(name: str, action: str, **params: Any) -> dict[str, Any]:
    return {"name": name, "action": action, "executor": "kubernetes", "params": params}


def run(kubectl: Kubectl, namespace: str, name: str, *steps: dict[str, Any]) -> None:
    """A low-risk recommendation that runs `steps` at once."""
    rec = recommendation(name, riskLevel="low", executeNow=True, steps=list(steps))
    apply(kubectl, namespace, rec)


def get(kubectl: Kubectl, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    proc = kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    if proc.returncode != 0:
        assert "NotFound" in proc.stderr, proc.stderr
        return None
    found: dict[str, Any] = json.loads(proc.stdout)
    return found


def merge_patch(kubectl: Kubectl, namespace: str, kind: str, name: str, body: Any) -> None:
    patch = ("patch", kind, name, "-n", namespace, "--type", "merge", "-p", json.dumps(body))
    kubectl(*patch)


def configmap(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def hpa(name: str, target: str) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name},
        "spec": {
            "scaleTargetRef": {**DEPLOYMENT, "name": target},
            "minReplicas": 1,
            "maxReplicas": 4,
        },
    }


# -- patch --------------------------------------------------------------------------------


def test_patched_fields_are_restored_exactly_when_a_later_step_fails(
    kubectl: Kubectl, e2e_namespace: str, objects: Objects
) -> None:
    apply(kubectl, e2e_namespace, deployment("web", 2))
    before = get(kubectl, e2e_namespace, "deployment", "web")
    assert before is not None
    patch = {
        "metadata": {"labels": {"tier": "front"}},
        "spec": {"revisionHistoryLimit": 3, "minReadySeconds": 7},
    }
    run(
        kubectl,
        e2e_namespace,
        "rec-patch",
        k8s("tune", "patch", target={**DEPLOYMENT, "name": "web"}, patch=patch),
        {"name": "soak", "action": "soak", "executor": "simulated", "params": {"durationMs": 1500}},
        FAIL,
    )
    changed = wait_for(
        lambda: (
            (d := get(kubectl, e2e_namespace, "deployment", "web"))
            and d["spec"].get("minReadySeconds") == 7
            and d
        ),
        what="web patched",
    )
    key = "optiinfra.io/before.rec-patch.tune"
    record = json.loads(changed["metadata"]["annotations"][key])
    assert {f["field"]: f.get("before") for f in record["fields"]} == {
        "metadata.labels": None,  # it had no labels: the whole map is new
        "spec.revisionHistoryLimit": 10,
        "spec.minReadySeconds": None,
    }
    plan = objects.wait_phase(PLANS, "rec-patch", "RolledBack")
    tune = plan["status"]["steps"][0]
    assert tune["phase"] == "RolledBack"
    assert {f["field"]: f.get("after") for f in tune["result"]["fields"]} == {
        "metadata.labels": {"tier": "front"},
        "spec.revisionHistoryLimit": 3,
        "spec.minReadySeconds": 7,
    }
    after = get(kubectl, e2e_namespace, "deployment", "web")
    assert after is not None
    assert after["metadata"].get("labels") == before["metadata"].get("labels")
    assert key not in (after["metadata"].get("annotations") or {})
    assert after["spec"] == before["spec"]


def test_a_field_changed_by_someone_else_is_kept_and_the_plan_fails(
    kubectl: Kubectl, e2e_namespace: str, objects: Objects
) -> None:
    apply(kubectl, e2e_namespace, configmap("settings", mode="a", level="1"))
    run(
        kubectl,
        e2e_namespace,
        "rec-drift",
        k8s(
            "tune",
            "patch",
            target={"apiVersion": "v1", "kind": "ConfigMap", "name": "settings"},
            patch={"data": {"mode": "b", "level": "2"}},
        ),
        {"name": "soak", "action": "soak", "executor": "simulated", "params": {"durationMs": 6000}},
        FAIL,
    )
    wait_for(
        lambda: (get(kubectl, e2e_namespace, "configmap", "settings") or {})["data"]["mode"] == "b",
        what="settings patched",
    )
    merge_patch(kubectl, e2e_namespace, "configmap", "settings", {"data": {"mode": "c"}})
    plan = objects.wait_phase(PLANS, "rec-drift", "Failed", timeout=60)
    tune = plan["status"]["steps"][0]
    assert tune["phase"] == "RollbackFailed"
    message = f"{tune.get('error')} {tune.get('message')}"
    assert 'data.mode: expected "b" (what this step wrote), found "c"' in message, tune
    settings = get(kubectl, e2e_namespace, "configmap", "settings")
    assert settings is not None
    assert settings["data"] == {"mode": "c", "level": "2"}  # nothing written by the undo


# -- apply --------------------------------------------------------------------------------


def test_an_applied_hpa_is_deleted_on_rollback(
    kubectl: Kubectl, e2e_namespace: str, objects: Objects
) -> None:
    apply(kubectl, e2e_namespace, deployment("web", 2))
    run(
        kubectl,
        e2e_namespace,
        "rec-hpa",
        k8s("autoscale", "apply", manifest=hpa("web", "web")),
        {"name": "soak", "action": "soak", "executor": "simulated", "params": {"durationMs": 1500}},
        FAIL,
    )
    created = wait_for(
        lambda: get(kubectl, e2e_namespace, "hpa", "web"), what="the HPA to be created"
    )
    assert created["metadata"]["labels"]["optiinfra.io/plan"] == "rec-hpa"
    assert created["metadata"]["annotations"]["optiinfra.io/created-by"].startswith(
        "rec-hpa/autoscale/"
    )
    show = ("get", "hpa", "web", "-n", e2e_namespace, "-o", "json", "--show-managed-fields")
    fields = json.loads(kubectl(*show).stdout)["metadata"]["managedFields"]
    assert ("optiinfra-coordinator", "Apply") in {(f["manager"], f["operation"]) for f in fields}
    plan = objects.wait_phase(PLANS, "rec-hpa", "RolledBack")
    assert plan["status"]["steps"][0]["result"]["uid"] == created["metadata"]["uid"]
    wait_for(
        lambda: get(kubectl, e2e_namespace, "hpa", "web") is None, what="the HPA to be deleted"
    )


def test_apply_of_an_existing_object_fails_and_leaves_it(
    kubectl: Kubectl, e2e_namespace: str, objects: Objects
) -> None:
    apply(kubectl, e2e_namespace, deployment("web", 2), hpa("web", "web"))
    theirs = get(kubectl, e2e_namespace, "hpa", "web")
    assert theirs is not None
    mine = hpa("web", "web")
    mine["spec"]["maxReplicas"] = 9
    run(kubectl, e2e_namespace, "rec-taken", k8s("autoscale", "apply", manifest=mine))
    plan = objects.wait_phase(PLANS, "rec-taken", "RolledBack")
    step = plan["status"]["steps"][0]
    assert step["phase"] == "Failed"
    assert "HorizontalPodAutoscaler web already exists" in step["error"]
    assert "nothing was changed" in step["error"]
    still = get(kubectl, e2e_namespace, "hpa", "web")
    assert still is not None
    assert still["metadata"]["uid"] == theirs["metadata"]["uid"]
    assert still["metadata"]["resourceVersion"] == theirs["metadata"]["resourceVersion"]
    assert still["spec"]["maxReplicas"] == 4


# -- wait and scale -------------------------------------------------------------------------


def replicaset(name: str, replicas: int) -> dict[str, Any]:
    doc = deployment(name, replicas)
    doc["kind"] = "ReplicaSet"
    return doc


def test_a_wait_that_times_out_rolls_back_the_scale_before_it(
    kubectl: Kubectl, e2e_namespace: str, objects: Objects
) -> None:
    apply(kubectl, e2e_namespace, replicaset("workers", 2))
    target = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "workers"}
    run(
        kubectl,
        e2e_namespace,
        "rec-wait",
        k8s("scale", "scale", target=target, replicas=1),
        k8s(
            "settle",
            "wait",
            target=target,
            condition={"type": "Impossible", "status": "True"},
            timeoutSeconds=2,
        ),
    )
    plan = objects.wait_phase(PLANS, "rec-wait", "RolledBack", timeout=60)
    scale, settle = plan["status"]["steps"]
    assert settle["phase"] == "Failed"
    assert settle["error"] == (
        "timed out after 2s waiting for ReplicaSet workers to have condition Impossible=True; "
        "last seen: no condition Impossible"
    )
    assert scale["phase"] == "RolledBack"
    assert scale["result"]["previousReplicas"] == 2
    workers = get(kubectl, e2e_namespace, "replicaset", "workers")
    assert workers is not None
    assert workers["spec"]["replicas"] == 2
    assert "optiinfra.io/scaled-by" not in (workers["metadata"].get("annotations") or {})


def test_wait_for_the_observed_generation_after_a_scale(
    kubectl: Kubectl, e2e_namespace: str, objects: Objects
) -> None:
    apply(kubectl, e2e_namespace, deployment("web", 1))
    target = {**DEPLOYMENT, "name": "web"}
    run(
        kubectl,
        e2e_namespace,
        "rec-gen",
        k8s("scale", "scale", target=target, replicas=3),
        k8s("settle", "wait", target=target, jsonPath="{.status.observedGeneration}", value=2),
    )
    plan = objects.wait_phase(PLANS, "rec-gen", "Succeeded", timeout=60)
    assert plan["status"]["steps"][1]["result"]["seen"] == "{.status.observedGeneration}=2"


def ready_node(kubectl: Kubectl) -> bool:
    nodes = json.loads(kubectl("get", "nodes", "-o", "json").stdout)["items"]
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for node in nodes
        for c in (node.get("status") or {}).get("conditions") or ()
    )


def test_wait_for_a_deployment_to_become_available(
    kubectl: Kubectl, e2e_namespace: str, objects: Objects
) -> None:
    if not ready_node(kubectl):
        pytest.skip("no Ready node in this cluster (no scheduler/kubelet): pods never run")
    apply(kubectl, e2e_namespace, deployment("web", 1))
    target = {**DEPLOYMENT, "name": "web"}
    run(
        kubectl,
        e2e_namespace,
        "rec-avail",
        k8s("scale", "scale", target=target, replicas=2),
        k8s("up", "wait", target=target, condition={"type": "Available", "status": "True"}),
    )
    objects.wait_phase(PLANS, "rec-avail", "Succeeded", timeout=300)


# -- admission ----------------------------------------------------------------------------


def test_bad_params_are_refused_at_admission_naming_the_field(
    kubectl: Kubectl, e2e_namespace: str, objects: Objects
) -> None:
    steps = [
        k8s("scale", "scale", target={"apiVersion": "apps/v1", "name": "web"}, replicas=2),
        k8s("tune", "patch", target={**DEPLOYMENT, "name": "web"}, patch={"a": 1}, type="json"),
        k8s("boom", "explode"),
    ]
    rec = recommendation("rec-bad", riskLevel="low", steps=steps)
    proc = kubectl(
        "apply", "-n", e2e_namespace, "-f", "-", stdin=json.dumps(rec), user="agent", check=False
    )
    assert proc.returncode != 0
    assert "spec.steps[0].params.target.kind: required" in proc.stderr, proc.stderr
    assert "spec.steps[1].params.type: must be merge or strategic" in proc.stderr
    assert "spec.steps[2].action: the kubernetes executor has no action 'explode'" in proc.stderr
    assert "Forbidden" in proc.stderr or "denied the request" in proc.stderr
    assert objects.get("recommendations", "rec-bad") is None


def test_a_step_on_a_secret_or_on_the_operators_marks_is_refused_at_admission(
    kubectl: Kubectl, e2e_namespace: str, objects: Objects
) -> None:
    """A harmless-looking wait must not copy a Secret (an HMAC key) into plan status, and no
    patch may forge the mark that apply's undo deletes by (issue 22, items 3 and 11)."""
    secret = {"apiVersion": "v1", "kind": "Secret", "name": "agents-hmac"}
    forged = {"metadata": {"annotations": {"optiinfra.io/created-by": "p/s/u"}}}
    steps = [
        k8s("peek", "wait", target=secret, jsonPath=".data.hmac", value="x", timeoutSeconds=1),
        k8s("forge", "patch", target={**DEPLOYMENT, "name": "web"}, patch=forged),
    ]
    rec = recommendation("rec-peek", riskLevel="low", executeNow=True, steps=steps)
    proc = kubectl(
        "apply", "-n", e2e_namespace, "-f", "-", stdin=json.dumps(rec), user="agent", check=False
    )
    assert proc.returncode != 0
    assert (
        "spec.steps[0].params.target.kind: the kubernetes executor may not act on Secret"
        in proc.stderr
    ), proc.stderr
    assert (
        "spec.steps[1].params.patch.metadata.annotations['optiinfra.io/created-by']: cannot be "
        "set by a step" in proc.stderr
    ), proc.stderr
    assert objects.get("recommendations", "rec-peek") is None


def test_a_namespace_that_did_not_opt_in_fails_the_first_kubernetes_step_saying_what_to_bind(
    kubectl: Kubectl, api: kubernetes.client.ApiClient, e2e_namespace_without_executor: str
) -> None:
    """The operator holds no rights on workloads cluster-wide: a namespace binds
    optiinfra-executor to it, or its plans' kubernetes steps fail, saying how (item 5)."""
    namespace = e2e_namespace_without_executor
    apply(kubectl, namespace, deployment("web", 2))
    run(
        kubectl,
        namespace,
        "rec-scale",
        k8s("scale", "scale", target={**DEPLOYMENT, "name": "web"}, replicas=3),
    )
    plan = Objects(api, namespace).wait_phase(PLANS, "rec-scale", "RolledBack")
    step = plan["status"]["steps"][0]
    assert step["phase"] == "Failed"
    assert (
        f"namespace {namespace} has not opted in to the kubernetes executor; to let plans change "
        f"workloads there: kubectl create rolebinding optiinfra-executor -n {namespace} "
        "--clusterrole=optiinfra-executor --serviceaccount=optiinfra-system:optiinfra-coordinator"
    ) in step["error"], step["error"]
    web = get(kubectl, namespace, "deployment", "web")
    assert web is not None
    assert web["spec"]["replicas"] == 2
