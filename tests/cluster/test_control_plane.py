"""The local control plane is real: versions, RBAC, the controller-manager, the scheduler and
kwok's fake node at work."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubernetes
import localcluster
import pytest

from tests.support import Kubectl, wait_for
from tests.support.builders import deployment

GO_MOD = Path(__file__).parents[2] / "hack" / "cluster" / "go.mod"


def pinned_kubernetes_version() -> str:
    match = re.search(r"^\s*k8s\.io/kubernetes (v\S+)$", GO_MOD.read_text(), re.MULTILINE)
    assert match, "k8s.io/kubernetes is not pinned in hack/cluster/go.mod"
    return match.group(1)


def test_kubectl_and_server_report_the_pinned_version(kubectl: Kubectl) -> None:
    versions = json.loads(kubectl("version", "-o", "json").stdout)
    pinned = pinned_kubernetes_version()
    assert versions["serverVersion"]["gitVersion"] == pinned
    assert versions["clientVersion"]["gitVersion"] == pinned


def test_deleting_a_namespace_removes_what_it_holds(api: kubernetes.client.ApiClient) -> None:
    core = kubernetes.client.CoreV1Api(api)
    name = "gc-check-ns"
    core.create_namespace({"metadata": {"name": name}})
    core.create_namespaced_config_map(name, {"metadata": {"name": "settings"}, "data": {"a": "1"}})
    core.delete_namespace(name)

    def gone() -> bool:
        try:
            core.read_namespace(name)
        except kubernetes.client.ApiException as exc:
            return exc.status == 404
        return False

    wait_for(gone, what=f"namespace {name} to be removed by the namespace controller", timeout=60)
    with pytest.raises(kubernetes.client.ApiException) as err:
        core.read_namespaced_config_map("settings", name)
    assert err.value.status == 404


def test_garbage_collector_removes_owned_objects(
    api: kubernetes.client.ApiClient, namespace: str
) -> None:
    core = kubernetes.client.CoreV1Api(api)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "owned", "ownerReferences": [ref]}}
    )
    core.delete_namespaced_config_map("owner", namespace)

    def owned_gone() -> bool:
        names = {cm.metadata.name for cm in core.list_namespaced_config_map(namespace).items}
        return "owned" not in names

    wait_for(owned_gone, what="the garbage collector to delete the owned ConfigMap", timeout=60)


def test_viewer_without_a_binding_cannot_create_a_configmap(
    kubectl: Kubectl, namespace: str
) -> None:
    proc = kubectl(
        "create",
        "configmap",
        "nope",
        "-n",
        namespace,
        "--from-literal=a=1",
        user="viewer",
        check=False,
    )
    assert proc.returncode != 0
    assert 'User "viewer" cannot create resource "configmaps"' in proc.stderr
    assert kubectl("get", "configmap", "nope", "-n", namespace, check=False).returncode != 0


def test_users_are_authenticated_by_their_certificates(kubectl: Kubectl) -> None:
    for user in ("agent", "approver", "viewer"):
        who = json.loads(kubectl("auth", "whoami", "-o", "json", user=user).stdout)
        assert who["status"]["userInfo"]["username"] == user
    admin = json.loads(kubectl("auth", "whoami", "-o", "json").stdout)
    assert "system:masters" in admin["status"]["userInfo"]["groups"]


def test_every_component_runs_from_the_state_it_recorded(
    cluster: localcluster.Cluster,
) -> None:
    state = json.loads((cluster.directory / "state.json").read_text())
    if state.get("mode") != "local":
        pytest.skip("not the local control plane")
    assert set(state["pids"]) == set(localcluster.COMPONENTS)
    assert {"kube-scheduler", "kwok"} <= set(localcluster.COMPONENTS)
    for component, pid in state["pids"].items():
        assert localcluster._alive(pid, component), f"{component} (pid {pid}) is not running"


def test_the_kwok_node_is_ready_untainted_and_roomy(api: kubernetes.client.ApiClient) -> None:
    core = kubernetes.client.CoreV1Api(api)

    def ready() -> Any:
        node = core.read_node(localcluster.KWOK_NODE)
        conditions = {c.type: c.status for c in node.status.conditions or []}
        return node if conditions.get("Ready") == "True" else None

    node = wait_for(ready, what=f"node {localcluster.KWOK_NODE} Ready", timeout=30)
    assert node.metadata.labels["type"] == "kwok"
    assert node.metadata.annotations["kwok.x-k8s.io/node"] == "fake"
    assert not node.spec.taints
    assert node.status.allocatable == {"cpu": "32", "memory": "256Gi", "pods": "110"}
    assert node.status.node_info.kubelet_version.startswith("kwok-")


def _ready_replicas(apps: kubernetes.client.AppsV1Api, namespace: str, name: str) -> int:
    status = apps.read_namespaced_deployment_status(name, namespace).status
    return int(status.ready_replicas or 0)


def test_deployment_pods_are_scheduled_on_the_kwok_node_and_become_ready(
    api: kubernetes.client.ApiClient, namespace: str
) -> None:
    apps = kubernetes.client.AppsV1Api(api)
    core = kubernetes.client.CoreV1Api(api)
    apps.create_namespaced_deployment(namespace, deployment("pause", 3))
    wait_for(
        lambda: _ready_replicas(apps, namespace, "pause") == 3,
        what="deployment pause 3/3 Ready",
        timeout=20,
    )
    pods = core.list_namespaced_pod(namespace, label_selector="app=pause").items
    assert len(pods) == 3
    for pod in pods:
        assert pod.spec.node_name == localcluster.KWOK_NODE
        assert pod.status.phase == "Running"
        assert pod.status.pod_ip

    apps.patch_namespaced_deployment_scale("pause", namespace, {"spec": {"replicas": 5}})
    wait_for(
        lambda: _ready_replicas(apps, namespace, "pause") == 5,
        what="deployment pause scaled to 5/5 Ready",
        timeout=20,
    )

    apps.patch_namespaced_deployment_scale("pause", namespace, {"spec": {"replicas": 1}})

    def scaled_down() -> bool:
        pods = core.list_namespaced_pod(namespace, label_selector="app=pause").items
        return len(pods) == 1 and _ready_replicas(apps, namespace, "pause") == 1

    wait_for(scaled_down, what="deployment pause scaled down to 1 pod (kwok deletes the rest)")
