"""Helpers of the API-surface tests: the repository's CRDs and manifests on the local cluster.

The cluster is shared by everyone running tests at the same time, so cluster-scoped objects
(CRDs, ClusterRoles, the optiinfra-system namespace) are only ever applied from the files in
the repository, which are identical for everyone, and never deleted. Everything else lives in
a namespace of the test module's own.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kubernetes
import yaml

from tests.support.kube import Kubectl, wait_for

REPO = Path(__file__).parents[2]
CRDS = REPO / "crds"
MANIFESTS = REPO / "manifests"
EXAMPLES = REPO / "examples"

Doc = dict[str, Any]


def load_documents(text: str) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def render_manifests(kubectl: Kubectl) -> list[Doc]:
    """The objects `kubectl apply -k manifests/` sends, rendered by the pinned kubectl."""
    return load_documents(kubectl("kustomize", str(MANIFESTS)).stdout)


def crd_files() -> list[Path]:
    return sorted(CRDS.glob("*.yaml"))


def _established(api: kubernetes.client.ApiClient, name: str) -> bool:
    ext = kubernetes.client.ApiextensionsV1Api(api)
    try:
        crd = ext.read_custom_resource_definition(name)
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return False
        raise
    conditions = (crd.status and crd.status.conditions) or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


def apply_crds(kubectl: Kubectl, api: kubernetes.client.ApiClient, docs: list[Doc]) -> None:
    """Apply CRDs for real (idempotent: the same files for everyone) and wait until served."""
    if not docs:
        return
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(docs))
    names = [doc["metadata"]["name"] for doc in docs]
    wait_for(
        lambda: all(_established(api, name) for name in names),
        what=f"CRDs {names} to be Established",
    )


def install_crds(kubectl: Kubectl, api: kubernetes.client.ApiClient) -> None:
    """The product's CRDs from crds/, installed and Established."""
    docs = [doc for path in crd_files() for doc in load_documents(path.read_text())]
    apply_crds(kubectl, api, docs)


@contextmanager
def module_namespace(api: kubernetes.client.ApiClient, stem: str) -> Iterator[str]:
    """A namespace for a whole test module (for cases that do not interfere), then deleted."""
    name = f"{re.sub(r'[^a-z0-9-]+', '-', stem.lower())[:40]}-{uuid.uuid4().hex[:6]}"
    core = kubernetes.client.CoreV1Api(api)
    meta = kubernetes.client.V1ObjectMeta(name=name, labels={"optiinfra.io/test": "true"})
    core.create_namespace(kubernetes.client.V1Namespace(metadata=meta))
    try:
        yield name
    finally:
        try:
            core.delete_namespace(name)
        except kubernetes.client.ApiException as exc:
            if exc.status != 404:
                raise


def object_exists(kubectl: Kubectl, kind: str, name: str, namespace: str) -> bool:
    """Whether the admin sees the object (any error other than NotFound fails the test)."""
    proc = kubectl("get", kind, name, "-n", namespace, "-o", "name", check=False)
    if proc.returncode == 0:
        return True
    assert "NotFound" in proc.stderr, proc.stderr
    return False
