"""The shared cluster of the end-to-end tests: who is who (the operator's ServiceAccount,
the users' roles) and what an admin does to a tenant namespace (bind users, register the
agents' endpoints, opt in to the kubernetes executor); the fixtures of
tests/cluster/conftest.py are made of these."""

from __future__ import annotations

import base64
import contextlib
import functools
import tempfile
from pathlib import Path
from typing import Any

import examplemetrics
import kubernetes
import localproc
import yaml

from coordinator.api.common import GROUP, PLANS, VERSION
from tests.support import builders, examples
from tests.support.examples import load
from tests.support.kube import APPROVALS, RECS, Kubectl, Objects, replicas, wait_for
from tests.support.processes import KEY

REPO = Path(__file__).parents[2]
E2E_PREFIX = "e2e-"
E2E_LABEL = "optiinfra.io/e2e"
"""Namespaces of the shared operator carry it; its admission webhooks apply only there."""
SHORT_EXPIRY = "8s"
"""--expiry-critical of the shared operator: critical approvals expire quickly in tests."""


OPERATOR_SA = localproc.OPERATOR_SA
"""The operator's ServiceAccount in manifests/: every operator of the tests runs as it."""


ROLES = {"agent": "optiinfra-agent", "approver": "optiinfra-approver", "viewer": "optiinfra-viewer"}


def bind_users(api: kubernetes.client.ApiClient, namespace: str) -> None:
    """Bind the users agent, approver and viewer to their roles in `namespace`."""
    rbac: Any = kubernetes.client.RbacAuthorizationV1Api(api)  # dict bodies
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
            functools.partial(allowed, kubectl, ask),
            what=f"the operator to be allowed to read Secret {namespace}/{secret}",
        )


def allowed(kubectl: Kubectl, ask: tuple[str, ...]) -> bool:
    """kubectl auth can-i `ask` answers yes."""
    return kubectl(*ask, check=False).stdout.strip() == "yes"


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


AGENTS = examples.agents()
"""The agents of the examples (the tests' own recommendations use them too): each e2e
namespace registers an AgentEndpoint for each, so that their default plans (webhook steps)
are admitted and carried out."""
AGENT_SECRET = "agents-hmac"


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
        builders.endpoint(
            agent,
            namespace=namespace,
            url=url,
            secretRef={"name": AGENT_SECRET, "key": "hmac"},
            submitters=SUBMITTERS if submitters is None else submitters,
        )
        for agent in AGENTS
    ]
    template = (REPO / "manifests" / "endpoint-secrets-role.yaml").read_text()
    role = [d for d in yaml.safe_load_all(template.replace("TENANT-NAMESPACE", namespace)) if d]
    for doc in role:
        if doc["kind"] == "Role":
            doc["rules"][0]["resourceNames"] = [AGENT_SECRET]
    # The endpoints last: a plan waiting for one starts as soon as it exists.
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all([secret, *role, *endpoints]))


def has_replicas(kubectl: Kubectl, namespace: str, deployment: str, count: str) -> bool:
    """Deployment `deployment` has `count` replicas."""
    return replicas(kubectl, namespace, deployment) == int(count)


def release_plans(api: kubernetes.client.ApiClient, namespace: str) -> None:
    """A plan left Running holds the operator's finalizer, and its operator is stopped by
    now: let it go, or it (and its namespace) stays Terminating for the cluster's life."""
    custom: Any = kubernetes.client.CustomObjectsApi(api)  # dict bodies
    for plan in custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLANS)["items"]:
        if plan["metadata"].get("finalizers"):
            with contextlib.suppress(kubernetes.client.ApiException):
                custom.patch_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLANS, plan["metadata"]["name"],
                    {"metadata": {"finalizers": None}},
                )  # fmt: skip


def realised(objects: Objects, name: str, monthly: float) -> bool:
    """Whether recommendation `name` records `monthly` realised savings (to the cent)."""
    found = ((objects.get(RECS, name) or {}).get("status") or {}).get("realisedSavings") or {}
    value = found.get("realisedMonthly")
    return value is not None and abs(float(value) - monthly) < 0.01


def reach_example_outcomes(
    kubectl: Kubectl,
    e2e_namespace: str,
    objects: Objects,
    prometheus: tuple[examplemetrics.Server, examplemetrics.Fixture],
    api: kubernetes.client.ApiClient,
) -> None:
    """Apply examples/ (their Prometheus address: `prometheus`'s, the gauges they ask for
    played into its metrics fixture: ``examplemetrics``), run each one's `then` commands
    as the approver, and wait until every outcome its comments state is reached."""
    server, fixture = prometheus
    examples = load()
    wanted = [g for e in examples for g in examplemetrics.gauges(e.path.read_text())]
    apps = kubernetes.client.AppsV1Api(api)

    def asked(name: str) -> int | None:
        try:
            found: int | None = apps.read_namespaced_deployment(name, e2e_namespace).spec.replicas
        except kubernetes.client.ApiException:
            return None
        return found

    with (
        examplemetrics.feeding(fixture, wanted, namespace=e2e_namespace, replicas=asked),
        tempfile.TemporaryDirectory() as copies,
    ):
        for example in examples:
            copy = Path(copies) / example.path.name
            copy.write_text(examplemetrics.with_address(example.path.read_text(), server.url))
        kubectl("apply", "-n", e2e_namespace, "-f", copies)
        _reach(kubectl, e2e_namespace, objects, examples)


def _reach(
    kubectl: Kubectl, e2e_namespace: str, objects: Objects, examples: list[examples.Example]
) -> None:
    for example in examples:
        for command in example.then:
            assert command[0] == "kubectl"
            name = command[3]
            wait_for(functools.partial(objects.get, APPROVALS, name), what=f"approval {name}")
            kubectl(*command[1:], "-n", e2e_namespace, user="approver")
    for example in examples:
        for name, what, value in example.outcomes:
            if name.startswith("deployment/") and what == "replicas":
                deployment_name = name.split("/", 1)[1]
                wait_for(
                    functools.partial(has_replicas, kubectl, e2e_namespace, deployment_name, value),
                    what=f"{name} to have {value} replicas ({example.path.name})",
                )
            elif name.startswith("deployment/") and what == "memory-limit":
                path = "{.spec.template.spec.containers[0].resources.limits.memory}"
                found = kubectl("get", name, "-n", e2e_namespace, "-o", f"jsonpath={path}")
                assert (found.stdout.strip() or "none") == value, example.path.name
            elif what == "exists":
                kubectl("get", name, "-n", e2e_namespace)
            elif what == "realised-savings":
                wait_for(
                    functools.partial(realised, objects, name, float(value)),
                    what=f"{name} to realise {value} a month ({example.path.name})",
                    timeout=90,
                )
            else:
                objects.wait_phase(RECS, name, what, timeout=90)
