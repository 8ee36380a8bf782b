"""The local control plane is real: versions, RBAC, and the controller-manager at work."""

from __future__ import annotations

import json
import re
from pathlib import Path

import kubernetes
import pytest

from tests.support import Kubectl, wait_for

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
