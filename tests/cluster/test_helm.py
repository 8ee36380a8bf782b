"""The Helm chart on the real local control plane: `helm lint`, `helm template | kubectl apply
--dry-run=server`, and an install, an upgrade with changed values and an uninstall.

helm is built from its Go module on demand (hack/cluster/build-helm.sh, cached). The release
shares the session's cluster with the other tests, so everything it makes is named by a
prefix of its own (namePrefix), lives in the test's namespace, and its admission webhooks
(failurePolicy Fail) select that namespace only; the uninstall is checked to leave no
cluster-scoped object behind. kwok runs the Deployment's pods as fakes: what is checked is
that the API server accepts the objects, and that the RBAC and webhook configuration are right.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import localcluster
import pytest
import yaml
from cryptography import x509
from hack import chartgen

from tests.support import Kubectl, wait_for

REPO = Path(__file__).parents[2]
CHART = REPO / "charts" / "optiinfra-coordinator"
# helm is built on first use (about 20 minutes of a cold, shared machine): the module's bound.
pytestmark = pytest.mark.timeout(2400)

Helm = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def helm(cluster: localcluster.Cluster, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    built = subprocess.run(
        ["bash", str(REPO / "hack" / "cluster" / "build-helm.sh")],
        capture_output=True,
        text=True,
        check=True,
        timeout=2100,
    )
    binary = str(Path(built.stdout.strip()) / "helm")
    home = tmp_path_factory.mktemp("helm-home")
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }

    def run(
        *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [binary, *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stderr}{proc.stdout}")
        return proc

    return run


def test_helm_lint_passes_with_every_toggle(helm: Helm) -> None:
    helm("lint", "--strict", str(CHART))
    helm(
        "lint", "--strict", str(CHART),
        "--set", "webhookCerts.mode=cert-manager,metrics.serviceMonitor.enabled=true",
        "--set", "networkPolicy.enabled=false,replicas=1,executor.namespaces={team-a}",
        "--set", "watchNamespaces={team-*},expiry.critical=30m",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("mode=shards,shards=0", "shards"),
        ("mode=sharded", "mode"),
        ("webhookCerts.mode=none", "webhookCerts"),
    ],
)
def test_a_bad_value_is_refused_with_a_message_naming_it(
    helm: Helm, setting: str, named: str
) -> None:
    proc = helm("template", "x", str(CHART), "--set", setting, check=False)
    assert proc.returncode != 0
    assert named in proc.stderr, proc.stderr


def test_the_rendered_chart_is_accepted_by_the_api_server(
    helm: Helm, kubectl: Kubectl, namespace: str, crds: None
) -> None:
    prefix = f"dry-{uuid.uuid4().hex[:6]}"
    rendered = helm(
        "template", prefix, str(CHART), "--namespace", namespace, "--include-crds",
        "--set", f"namePrefix={prefix},executor.namespaces={{{namespace}}}",
        "--set", "metrics.serviceMonitor.enabled=false",
    ).stdout  # fmt: skip
    kinds = {d["kind"] for d in yaml.safe_load_all(rendered) if d}
    expected = {"Deployment", "ClusterRole", "ValidatingWebhookConfiguration", "Secret"}
    assert expected <= kinds, kinds
    applied = kubectl("apply", "--dry-run=server", "-f", "-", stdin=rendered).stdout
    assert f"deployment.apps/{prefix}-coordinator created (server dry run)" in applied, applied


HELM_LABELS = ("app.kubernetes.io/instance", "app.kubernetes.io/managed-by", "helm.sh/chart")


def _comparable(doc: dict[str, Any]) -> dict[str, Any]:
    """An object without what only one of the two ways of installing writes: Helm's labels,
    and the webhooks' CA (the chart puts in its own; cert-manager injects the kustomize one)."""
    doc = json.loads(json.dumps(doc))
    for key in HELM_LABELS:
        doc["metadata"].get("labels", {}).pop(key, None)
    if doc["kind"].endswith("WebhookConfiguration"):
        doc["metadata"].pop("annotations", None)
        for hook in doc["webhooks"]:
            hook["clientConfig"].pop("caBundle", None)
            if hook.get("namespaceSelector") == {}:
                del hook["namespaceSelector"]
    return doc


@pytest.mark.parametrize(
    ("values", "manifests"),
    [("mode=activeStandby", "manifests"), ("mode=shards", "manifests-shards")],
)
def test_the_chart_with_its_defaults_installs_what_manifests_installs(
    helm: Helm, kubectl: Kubectl, values: str, manifests: str
) -> None:
    """The chart is generated from manifests/: with the default values it renders the same
    objects as `kubectl kustomize manifests/` (less the Namespace, which `helm install
    --create-namespace` makes, plus the certificate Secret the chart makes); with
    mode=shards, the same as `kubectl kustomize manifests-shards/`."""
    chart = helm(
        "template", "optiinfra", str(CHART), "--namespace", "optiinfra-system", "--set", values
    ).stdout
    kustomized = kubectl("kustomize", str(REPO / manifests)).stdout
    rendered = {
        (d["kind"], d["metadata"]["name"]): _comparable(d) for d in yaml.safe_load_all(chart) if d
    }
    expected = {
        (d["kind"], d["metadata"]["name"]): _comparable(d)
        for d in yaml.safe_load_all(kustomized)
        if d and d["kind"] != "Namespace"
    }
    assert set(rendered) - set(expected) == {("Secret", "optiinfra-coordinator-webhook-tls")}
    assert set(expected) - set(rendered) == set()
    for key, doc in expected.items():
        assert rendered[key] == doc, key


def _deployment(api: kubernetes.client.ApiClient, namespace: str, name: str) -> Any:
    return kubernetes.client.AppsV1Api(api).read_namespaced_deployment(name, namespace)


def _webhook_configurations(api: kubernetes.client.ApiClient, name: str) -> list[Any]:
    admission = kubernetes.client.AdmissionregistrationV1Api(api)
    found = []
    for read in (
        admission.read_validating_webhook_configuration,
        admission.read_mutating_webhook_configuration,
    ):
        try:
            found.append(read(name))
        except kubernetes.client.ApiException as exc:
            if exc.status != 404:
                raise
    return found


def _cluster_scoped_left(api: kubernetes.client.ApiClient, prefix: str) -> list[str]:
    rbac = kubernetes.client.RbacAuthorizationV1Api(api)
    left = [f"webhook configuration {c.metadata.name}" for c in _webhook_configurations(
        api, f"{prefix}-coordinator"
    )]  # fmt: skip
    left += [
        f"ClusterRole {r.metadata.name}"
        for r in rbac.list_cluster_role().items
        if r.metadata.name.startswith(f"{prefix}-")
    ]
    left += [
        f"ClusterRoleBinding {r.metadata.name}"
        for r in rbac.list_cluster_role_binding().items
        if r.metadata.name.startswith(f"{prefix}-")
    ]
    return left


@pytest.fixture
def release(
    helm: Helm, api: kubernetes.client.ApiClient, namespace: str, crds: None
) -> Iterator[tuple[str, str]]:
    """A release name and namePrefix no other test uses; uninstalled afterwards, and its
    webhook configurations deleted even if the uninstall failed (they fail closed)."""
    suffix = uuid.uuid4().hex[:6]
    name, prefix = f"optiinfra-it-{suffix}", f"it-{suffix}"
    yield name, prefix
    helm("uninstall", name, "--namespace", namespace, check=False)
    admission = kubernetes.client.AdmissionregistrationV1Api(api)
    for delete in (
        admission.delete_validating_webhook_configuration,
        admission.delete_mutating_webhook_configuration,
    ):
        try:
            delete(f"{prefix}-coordinator")
        except kubernetes.client.ApiException as exc:
            if exc.status != 404:
                raise


def _args(api: kubernetes.client.ApiClient, namespace: str, prefix: str) -> list[str]:
    deployment = _deployment(api, namespace, f"{prefix}-coordinator")
    return list(deployment.spec.template.spec.containers[0].args)


def _ready(api: kubernetes.client.ApiClient, namespace: str, prefix: str, replicas: int) -> bool:
    deployment = _deployment(api, namespace, f"{prefix}-coordinator")
    status = deployment.status
    return bool(
        deployment.spec.replicas == replicas
        and status.observed_generation == deployment.metadata.generation
        and (status.ready_replicas or 0) == replicas
        and (status.updated_replicas or 0) == replicas
    )


def _can(kubectl: Kubectl, account: str, *args: str) -> bool:
    proc = kubectl("auth", "can-i", f"--as={account}", *args, check=False)
    return proc.stdout.strip() == "yes"


def test_install_upgrade_uninstall(
    helm: Helm,
    api: kubernetes.client.ApiClient,
    kubectl: Kubectl,
    namespace: str,
    release: tuple[str, str],
) -> None:
    name, prefix = release
    version = chartgen.version()
    only_here = json.dumps({"kubernetes.io/metadata.name": namespace})
    helm(
        "install", name, str(CHART), "--namespace", namespace,
        "--set", f"namePrefix={prefix},replicas=1,watchNamespaces={{{namespace}}}",
        "--set", f"executor.namespaces={{{namespace}}}",
        "--set-json", f"webhooks.namespaceLabels={only_here}",
        timeout=180,
    )  # fmt: skip

    # The Deployment, with the image of the package version and the flags of the values;
    # kwok runs its pod.
    deployment = _deployment(api, namespace, f"{prefix}-coordinator")
    container = deployment.spec.template.spec.containers[0]
    assert container.image == f"optiinfra/coordinator:{version}"
    assert deployment.metadata.labels["app.kubernetes.io/version"] == version
    assert f"--namespace={namespace}" in container.args
    assert f"--lease={prefix}-coordinator" in container.args
    assert f"--webhook-service={namespace}/{prefix}-coordinator:443" in container.args
    assert f"--webhook-configuration={prefix}-coordinator" in container.args
    assert f"--webhook-namespace-labels=kubernetes.io/metadata.name={namespace}" in container.args
    assert not [a for a in container.args if a.startswith("--expiry-")]
    wait_for(lambda: _ready(api, namespace, prefix, 1), what="1 replica ready", timeout=90)

    # RBAC: the ClusterRole is manifests/operator-rbac.yaml's, with the release's names, and
    # the ServiceAccount has what it grants, workloads only where the executor was opted in.
    rbac = kubernetes.client.RbacAuthorizationV1Api(api)
    role = api.sanitize_for_serialization(rbac.read_cluster_role(f"{prefix}-coordinator"))
    manifest = next(yaml.safe_load_all((REPO / "manifests" / "operator-rbac.yaml").read_text()))
    expected_rules = json.loads(
        json.dumps(manifest["rules"]).replace('"optiinfra-coordinator"', f'"{prefix}-coordinator"')
    )
    assert role["rules"] == expected_rules
    account = f"system:serviceaccount:{namespace}:{prefix}-coordinator"
    assert _can(kubectl, account, "list", "recommendations.optiinfra.io", "-A")
    assert _can(
        kubectl, account, "patch", "recommendations.optiinfra.io", "--subresource=status", "-A"
    )
    assert _can(kubectl, account, "patch", "deployments.apps", "-n", namespace)
    assert not _can(kubectl, account, "patch", "deployments.apps", "-n", "default")
    assert not _can(kubectl, account, "get", "secrets", "-n", namespace)
    assert _can(kubectl, account, "update", f"leases/{prefix}-coordinator", "-n", namespace)
    assert _can(kubectl, account, "update", f"validatingwebhookconfigurations/{prefix}-coordinator")
    assert not _can(kubectl, account, "update", "validatingwebhookconfigurations/other")

    # The webhook configurations: the release's Service, the CA of the Secret the pods mount
    # (which signed a serving certificate for that Service), this namespace only.
    secret = kubernetes.client.CoreV1Api(api).read_namespaced_secret(
        f"{prefix}-coordinator-webhook-tls", namespace
    )
    ca_bundle = secret.data["ca.crt"]
    served = x509.load_pem_x509_certificate(base64.b64decode(secret.data["tls.crt"]))
    ca = x509.load_pem_x509_certificate(base64.b64decode(ca_bundle))
    served.verify_directly_issued_by(ca)
    names = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"{prefix}-coordinator.{namespace}.svc" in names.get_values_for_type(x509.DNSName)
    configurations = _webhook_configurations(api, f"{prefix}-coordinator")
    assert len(configurations) == 2
    validating, mutating = configurations
    assert len(validating.webhooks) == 3  # recommendation-check, approval-check, template-check
    assert len(mutating.webhooks) == 2  # the stamps
    for configuration in configurations:
        for hook in configuration.webhooks:
            service = hook.client_config.service
            assert (service.namespace, service.name, service.port) == (
                namespace, f"{prefix}-coordinator", 443,
            )  # fmt: skip
            assert hook.failure_policy == "Fail"
            assert hook.client_config.ca_bundle == ca_bundle
            assert hook.namespace_selector.match_labels == {
                "kubernetes.io/metadata.name": namespace
            }
    policy = json.loads(
        kubectl(
            "get", "networkpolicy", f"{prefix}-coordinator", "-n", namespace, "-o", "json"
        ).stdout
    )
    assert policy["spec"]["ingress"][0]["from"][0]["ipBlock"]["except"] == ["10.244.0.0/16"]

    # Upgrade: two replicas (and so a PodDisruptionBudget), another watched namespace, an
    # expiry default. The certificate is kept.
    helm(
        "upgrade", name, str(CHART), "--namespace", namespace, "--reuse-values",
        "--set", f"replicas=2,watchNamespaces={{{namespace},team-x}},expiry.critical=45m",
        timeout=180,
    )  # fmt: skip
    args = _args(api, namespace, prefix)
    assert f"--namespace={namespace}" in args
    assert "--namespace=team-x" in args
    assert "--expiry-critical=45m" in args
    wait_for(lambda: _ready(api, namespace, prefix, 2), what="2 replicas ready", timeout=120)
    budget = kubernetes.client.PolicyV1Api(api).read_namespaced_pod_disruption_budget(
        f"{prefix}-coordinator", namespace
    )
    assert budget.spec.min_available == 1
    kept = kubernetes.client.CoreV1Api(api).read_namespaced_secret(
        f"{prefix}-coordinator-webhook-tls", namespace
    )
    assert kept.data["ca.crt"] == ca_bundle, "the upgrade replaced the webhook certificate"
    for configuration in _webhook_configurations(api, f"{prefix}-coordinator"):
        for hook in configuration.webhooks:
            assert hook.client_config.ca_bundle == ca_bundle

    # Uninstall: nothing cluster-scoped of the release stays (above all no webhook
    # configuration that fails closed pointing at a Service that is gone).
    helm("uninstall", name, "--namespace", namespace, "--wait", timeout=180)
    wait_for(
        lambda: not _cluster_scoped_left(api, prefix) or None,
        what="the release's cluster-scoped objects to go",
        timeout=60,
    )
