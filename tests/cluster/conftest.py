"""Fixtures for the end-to-end tests: the CRDs, a running operator, helpers to read objects."""

from __future__ import annotations

import base64
import contextlib
import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import flux as localflux
import kubernetes
import localcluster
import pytest
import yaml

from coordinator.api.common import GROUP, PLANS, VERSION
from tests import examples_support
from tests.agent_process import KEY, AgentProcess
from tests.gateway_support import GatewayProcess, gateway
from tests.operator_process import OperatorProcess
from tests.support import Kubectl, wait_for

REPO = Path(__file__).parents[2]
E2E_PREFIX = "e2e-"
E2E_LABEL = "optiinfra.io/e2e"
"""Namespaces of the shared operator carry it; its admission webhooks apply only there."""
SHORT_EXPIRY = "8s"
"""--expiry-critical of the shared operator: critical approvals expire quickly in tests."""


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


OPERATOR_SA = ("optiinfra-system", "optiinfra-coordinator")
"""The operator's ServiceAccount in manifests/: every operator of the tests runs as it."""


@pytest.fixture(scope="session")
def operator_kubeconfig(
    cluster: localcluster.Cluster, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A kubeconfig that authenticates as the operator's ServiceAccount (a token from
    `kubectl create token`), with exactly the rights manifests/ gives it: the tests prove
    the ClusterRole by running the operator under it, not by reading it."""
    manifests = REPO / "manifests"
    # The operators of the tests run outside the cluster (local webhooks): they are also
    # granted local-webhooks-role.yaml. The executor's rights are per namespace (opt_in).
    names = ("namespace.yaml", "serviceaccount.yaml", "operator-rbac.yaml", "executor-role.yaml")
    for name in (*names, "local-webhooks-role.yaml"):
        kubectl("apply", "-f", str(manifests / name))
    namespace, account = OPERATOR_SA
    token = kubectl("create", "token", account, "-n", namespace, "--duration=24h").stdout.strip()
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    user = f"system:serviceaccount:{namespace}:{account}"
    config["users"] = [{"name": user, "user": {"token": token}}]
    for context in config["contexts"]:
        context["context"]["user"] = user
    path = tmp_path_factory.mktemp("operator-identity") / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


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


ROLES = {"agent": "optiinfra-agent", "approver": "optiinfra-approver", "viewer": "optiinfra-viewer"}


@pytest.fixture(scope="session")
def user_roles(kubectl: Kubectl) -> None:
    """The user roles from manifests/ (agent, approver, viewer)."""
    kubectl("apply", "-f", str(REPO / "manifests" / "user-roles.yaml"))


def bind_users(api: kubernetes.client.ApiClient, namespace: str) -> None:
    """Bind the users agent, approver and viewer to their roles in `namespace`."""
    rbac = kubernetes.client.RbacAuthorizationV1Api(api)
    for user, role in ROLES.items():
        rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": f"{user}-binding"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": role,
                },
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}
                ],
            },
        )


def grant_endpoint_secrets(
    kubectl: Kubectl, api: kubernetes.client.ApiClient, namespace: str, secrets: list[str]
) -> None:
    """What an admin does for webhook steps: manifests/endpoint-secrets-role.yaml in
    `namespace`, naming exactly `secrets`; waits until the operator may read them."""
    template = (REPO / "manifests" / "endpoint-secrets-role.yaml").read_text()
    docs = [d for d in yaml.safe_load_all(template.replace("TENANT-NAMESPACE", namespace)) if d]
    for doc in docs:
        if doc["kind"] == "Role":
            doc["rules"][0]["resourceNames"] = list(secrets)
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(docs))
    account = "system:serviceaccount:{}:{}".format(*OPERATOR_SA)
    for secret in secrets:
        ask = ("auth", "can-i", "get", f"secret/{secret}", "-n", namespace, f"--as={account}")
        wait_for(
            lambda ask=ask: kubectl(*ask, check=False).stdout.strip() == "yes",
            what=f"the operator to be allowed to read Secret {namespace}/{secret}",
        )


def opt_in(kubectl: Kubectl, namespace: str) -> None:
    """What a namespace does to let plans change its workloads: bind optiinfra-executor
    (manifests/executor-role.yaml) to the operator there; waits until it may."""
    account = "{}:{}".format(*OPERATOR_SA)
    kubectl(
        "create", "rolebinding", "optiinfra-executor", "-n", namespace,
        "--clusterrole=optiinfra-executor", f"--serviceaccount={account}",
    )  # fmt: skip
    ask = ("auth", "can-i", "patch", "deployments.apps", "-n", namespace)
    wait_for(
        lambda: (
            kubectl(*ask, f"--as=system:serviceaccount:{account}", check=False).stdout.strip()
            == "yes"
        ),
        what=f"the operator to be allowed to change workloads in {namespace}",
    )


AGENTS = examples_support.agents()
"""The agents of the examples (the tests' own recommendations use them too): each e2e
namespace registers an AgentEndpoint for each, so that their default plans (webhook steps)
are admitted and carried out."""
AGENT_SECRET = "agents-hmac"


@pytest.fixture(scope="session")
def reference_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    """One reference agent for the session, behind every e2e namespace's endpoints."""
    process = AgentProcess(tmp_path_factory.mktemp("agent"))
    yield process
    process.stop()


SUBMITTERS: list[dict[str, Any]] = [{"group": "system:authenticated"}]
"""Whose recommendations the tests' AgentEndpoints take: any authenticated user (the tests
submit as agent, admin, alice, ...); the tests of `submitters` register their own."""


def register_agents(
    kubectl: Kubectl,
    namespace: str,
    url: str,
    submitters: list[dict[str, Any]] | None = None,
) -> None:
    """An admin's part, in one apply: the HMAC Secret, the Role that lets the operator read
    exactly that Secret, and one AgentEndpoint per agent (taking the steps of
    `submitters`, by default SUBMITTERS)."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": AGENT_SECRET, "namespace": namespace},
        "data": {"hmac": base64.b64encode(KEY).decode()},
    }
    endpoints = [
        {
            "apiVersion": "optiinfra.io/v1alpha1",
            "kind": "AgentEndpoint",
            "metadata": {"name": agent, "namespace": namespace},
            "spec": {
                "url": url,
                "secretRef": {"name": AGENT_SECRET, "key": "hmac"},
                "submitters": SUBMITTERS if submitters is None else submitters,
            },
        }
        for agent in AGENTS
    ]
    template = (REPO / "manifests" / "endpoint-secrets-role.yaml").read_text()
    role = [d for d in yaml.safe_load_all(template.replace("TENANT-NAMESPACE", namespace)) if d]
    for doc in role:
        if doc["kind"] == "Role":
            doc["rules"][0]["resourceNames"] = [AGENT_SECRET]
    # The endpoints last: a plan waiting for one starts as soon as it exists.
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all([secret, *role, *endpoints]))


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


def release_plans(api: kubernetes.client.ApiClient, namespace: str) -> None:
    """A plan left Running holds the operator's finalizer, and its operator is stopped by
    now: let it go, or it (and its namespace) stays Terminating for the cluster's life."""
    custom = kubernetes.client.CustomObjectsApi(api)
    for plan in custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLANS)["items"]:
        if plan["metadata"].get("finalizers"):
            with contextlib.suppress(kubernetes.client.ApiException):
                custom.patch_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLANS, plan["metadata"]["name"],
                    {"metadata": {"finalizers": None}},
                )  # fmt: skip


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


class Objects:
    """Read optiinfra.io objects of one namespace through the admin client."""

    def __init__(self, api: kubernetes.client.ApiClient, namespace: str) -> None:
        self._custom = kubernetes.client.CustomObjectsApi(api)
        self.namespace = namespace

    def get(self, plural: str, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self._custom.get_namespaced_custom_object(
                "optiinfra.io", "v1alpha1", self.namespace, plural, name
            )
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return found

    def status(self, plural: str, name: str) -> dict[str, Any]:
        obj = self.get(plural, name)
        return (obj or {}).get("status") or {}

    def phase(self, plural: str, name: str) -> str | None:
        phase: str | None = self.status(plural, name).get("phase")
        return phase

    def wait_phase(
        self, plural: str, name: str, phase: str, *, timeout: float = 30
    ) -> dict[str, Any]:
        """Wait until `name` has `phase`; returns the object."""

        def reached() -> dict[str, Any] | None:
            obj = self.get(plural, name)
            return obj if obj and (obj.get("status") or {}).get("phase") == phase else None

        return wait_for(
            reached,
            what=f"{plural}/{name} in {self.namespace} to be {phase} "
            f"(it is {self.phase(plural, name)})",
            timeout=timeout,
        )


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
