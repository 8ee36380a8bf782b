"""Fixtures for the end-to-end tests: the CRDs, a running operator, a fresh namespace set up
as an admin sets one up, objects read back. What they are made of is in tests/support."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import flux as localflux
import kubernetes
import localcluster
import localproc
import prometheus as localprometheus
import pytest

from tests.support.cluster import (
    E2E_LABEL,
    E2E_PREFIX,
    REPO,
    SHORT_EXPIRY,
    bind_users,
    opt_in,
    register_agents,
    release_plans,
)
from tests.support.gateway import GatewayProcess, gateway
from tests.support.kube import Kubectl, Objects, wait_for
from tests.support.processes import AgentProcess, OperatorProcess


@pytest.fixture(scope="session")
def crds(kubectl: Kubectl) -> None:
    kubectl("apply", "-f", str(REPO / "crds"))
    kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    plurals = ("recommendations", "approvals", "executionplans", "agentendpoints")
    for plural in (*plurals, "approvalpolicies", "verificationtemplates"):
        wait_for(
            lambda p=plural: kubectl("get", p, "-A", check=False).returncode == 0,
            what=f"{plural} to be served",
        )


@pytest.fixture(scope="session")
def flux(cluster: localcluster.Cluster) -> Iterator[localflux.Flux]:
    """Flux (source-controller, kustomize-controller) and a Git server on 127.0.0.1, built
    and started on demand (hack/cluster/flux.py), stopped at the end if this run started it."""
    already = localflux.running()
    started = already or localflux.up(cluster)
    yield started
    if already is None and not os.environ.get("OPTIINFRA_KEEP_CLUSTER"):
        localflux.down(quiet=True)


@pytest.fixture(scope="session")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[localprometheus.Prometheus, localprometheus.MetricsFixture]]:
    """A real Prometheus (built on demand, hack/cluster/prometheus.py) scraping a metrics
    fixture on 127.0.0.1 every second, whose gauges the tests set; stopped by PID at the end."""
    with localprometheus.serving(tmp_path_factory.mktemp("prometheus")) as pair:
        yield pair


@pytest.fixture(scope="session")
def operator_kubeconfig(
    cluster: localcluster.Cluster, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A kubeconfig that authenticates as the operator's ServiceAccount (a token from
    `kubectl create token`), with exactly the rights manifests/ gives it: the tests prove
    the ClusterRole by running the operator under it, not by reading it."""
    return localproc.operator_kubeconfig(
        admin=cluster.kubeconfig,
        kubectl=cluster.bin_dir / "kubectl",
        manifests=REPO / "manifests",
        out=tmp_path_factory.mktemp("operator-identity") / "kubeconfig",
    )


@pytest.fixture(scope="session")
def operator(
    cluster: localcluster.Cluster,
    crds: None,
    operator_kubeconfig: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    """The operator, watching the e2e-* namespaces, as `coordinator run` starts it, as the
    ServiceAccount of manifests/."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    process = OperatorProcess(
        kubeconfig=operator_kubeconfig,
        log=log,
        args=[
            f"--namespace={E2E_PREFIX}*",
            f"--expiry-critical={SHORT_EXPIRY}",
            f"--webhook-namespace-labels={E2E_LABEL}=true",
        ],
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def user_roles(kubectl: Kubectl) -> None:
    """The user roles from manifests/ (agent, approver, viewer)."""
    kubectl("apply", "-f", str(REPO / "manifests" / "user-roles.yaml"))


@pytest.fixture(scope="session")
def reference_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    """One reference agent for the session, behind every e2e namespace's endpoints."""
    process = AgentProcess(tmp_path_factory.mktemp("agent"))
    yield process
    process.stop()


@contextlib.contextmanager
def _e2e_namespace(
    request: pytest.FixtureRequest,
    api: kubernetes.client.ApiClient,
    kubectl: Kubectl,
    operator: OperatorProcess,
    agent: AgentProcess,
    *,
    executor: bool,
) -> Iterator[str]:
    stem = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:36].strip("-")
    name = f"{E2E_PREFIX}{stem}-{uuid.uuid4().hex[:5]}"
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": name, "labels": {E2E_LABEL: "true"}}})
    bind_users(api, name)
    if request.node.get_closest_marker("no_endpoints") is None:
        register_agents(kubectl, name, agent.url)
    if executor:
        opt_in(kubectl, name)
    yield name
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(f"--- the operator's log ---\n{operator.tail(80)}")
    core.delete_namespace(name)


@pytest.fixture
def e2e_namespace(  # noqa: PLR0917 - fixtures are positional
    request: pytest.FixtureRequest,
    api: kubernetes.client.ApiClient,
    kubectl: Kubectl,
    operator: OperatorProcess,
    reference_agent: AgentProcess,
    user_roles: None,
) -> Iterator[str]:
    """A fresh namespace that the shared operator watches, users bound to their roles, the
    agents' endpoints registered (the session's reference agent behind them) unless the
    test is marked no_endpoints, opted in to the kubernetes executor."""
    with _e2e_namespace(request, api, kubectl, operator, reference_agent, executor=True) as name:
        yield name


@pytest.fixture
def e2e_namespace_without_executor(  # noqa: PLR0917 - fixtures are positional
    request: pytest.FixtureRequest,
    api: kubernetes.client.ApiClient,
    kubectl: Kubectl,
    operator: OperatorProcess,
    reference_agent: AgentProcess,
    user_roles: None,
) -> Iterator[str]:
    """As e2e_namespace, but the namespace did not opt in to the kubernetes executor."""
    with _e2e_namespace(request, api, kubectl, operator, reference_agent, executor=False) as name:
        yield name


@pytest.fixture
def own_namespace(api: kubernetes.client.ApiClient, crds: None) -> Iterator[str]:
    """A namespace that only the test's own operator watches (not the shared one)."""
    name = f"own-{uuid.uuid4().hex[:6]}"
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)
    release_plans(api, name)


@pytest.fixture
def own_operator(
    operator_kubeconfig: Path, own_namespace: str, tmp_path: Path
) -> Iterator[Callable[..., OperatorProcess]]:
    """Start `coordinator run` processes that watch `own_namespace` only, as the operator's
    ServiceAccount (the log is tmp_path/NAME.log); each is stopped after the test."""
    started: list[OperatorProcess] = []

    def start(name: str, *args: str) -> OperatorProcess:
        process = OperatorProcess(
            kubeconfig=operator_kubeconfig,
            log=tmp_path / f"{name}.log",
            args=[f"--namespace={own_namespace}", *args],
        )
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def objects(api: kubernetes.client.ApiClient, e2e_namespace: str) -> Objects:
    return Objects(api, e2e_namespace)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]


@pytest.fixture
def served(
    cluster: localcluster.Cluster, e2e_namespace: str, tmp_path: Path
) -> Iterator[GatewayProcess]:
    """A `coordinator gateway` for the test's namespace (the gateway and dashboard tests)."""
    with gateway(cluster.kubeconfig, e2e_namespace, tmp_path / "gateway.log") as process:
        yield process


@pytest.fixture
def plugin_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where `pip install` put kubectl-optiinfra, first on PATH (kubectl finds it there)."""
    venv_bin = Path(sys.executable).parent
    assert (venv_bin / "kubectl-optiinfra").exists()
    monkeypatch.setenv("PATH", f"{venv_bin}{os.pathsep}{os.environ['PATH']}")
