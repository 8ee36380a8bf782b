"""Fixtures. Tests under tests/cluster/ get a real local control plane (marker `cluster`).

The control plane is started once per run (hack/cluster/localcluster.py), or the one
already running from `make cluster` is used; a run that started it stops it at the end.
Each test that asks for `namespace` gets a fresh namespace, deleted afterwards.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import localcluster
import pytest

from tests.support import Kubectl

CLUSTER_TESTS = Path(__file__).parent / "cluster"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if CLUSTER_TESTS in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def cluster() -> Iterator[localcluster.Cluster]:
    already = localcluster.running()
    started = already or localcluster.up()
    os.environ["KUBECONFIG"] = str(started.kubeconfig)
    os.environ["PATH"] = f"{started.bin_dir}{os.pathsep}{os.environ['PATH']}"
    yield started
    if already is None and not os.environ.get("OPTIINFRA_KEEP_CLUSTER"):
        localcluster.down(quiet=True)


@pytest.fixture(scope="session")
def api(cluster: localcluster.Cluster) -> kubernetes.client.ApiClient:
    """An API client authenticated as the admin (system:masters)."""
    return kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig))


@pytest.fixture(scope="session")
def kubectl(cluster: localcluster.Cluster) -> Kubectl:
    users = {"admin": cluster.kubeconfig}
    users |= {u: cluster.user_kubeconfig(u) for u in localcluster.USERS}
    return Kubectl(bin_dir=cluster.bin_dir, kubeconfigs=users)


@pytest.fixture
def namespace(request: pytest.FixtureRequest, api: kubernetes.client.ApiClient) -> Iterator[str]:
    """A fresh namespace for one test, deleted (in the background) afterwards."""
    stem = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{stem}-{uuid.uuid4().hex[:6]}"
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": name, "labels": {"optiinfra.io/test": "true"}}})
    yield name
    try:
        core.delete_namespace(name)
    except kubernetes.client.ApiException as exc:
        if exc.status != 404:
            raise
