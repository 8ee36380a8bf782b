"""The two ways of running the operator, as manifests: manifests/ (active/standby, a
Deployment behind the Lease, --lease) and manifests-shards/ (an overlay of it: a StatefulSet
of shards, --shard, with the Role for the shards' Leases), and the chart's two modes
generated from them. Read from the files (kustomize and helm render them in
tests/cluster/test_api_surface.py and test_helm.py)."""

from __future__ import annotations

from typing import Any

import yaml
from hack import chartgen

Doc = dict[str, Any]
MANIFESTS = chartgen.MANIFESTS
SHARDS = chartgen.SHARDS


def docs(path: str) -> list[Doc]:
    return [d for d in yaml.safe_load_all((chartgen.ROOT / path).read_text()) if d]


def one(path: str, kind: str) -> Doc:
    [found] = [d for d in docs(path) if d["kind"] == kind]
    return found


def container(workload: Doc) -> Doc:
    found: Doc = workload["spec"]["template"]["spec"]["containers"][0]
    return found


def test_active_standby_is_unchanged_and_binds_no_shard_role() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    assert "deployment.yaml" in kustomization["resources"]
    assert not [r for r in kustomization["resources"] if "shard" in r]
    args = container(one("manifests/deployment.yaml", "Deployment"))["args"]
    assert "--lease=optiinfra-coordinator" in args
    assert not [a for a in args if a.startswith(("--shard", "--ring"))]


def test_the_shards_overlay_replaces_the_deployment_by_a_statefulset() -> None:
    kustomization = yaml.safe_load((SHARDS / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["../manifests", "statefulset.yaml", "shard-role.yaml"]
    [patch] = [yaml.safe_load(p["patch"]) for p in kustomization["patches"]]
    deployment = one("manifests/deployment.yaml", "Deployment")
    assert patch == {
        "$patch": "delete",
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {k: deployment["metadata"][k] for k in ("name", "namespace")},
    }


def test_each_shard_runs_with_the_shard_flags_and_its_pods_name() -> None:
    shards = one("manifests-shards/statefulset.yaml", "StatefulSet")
    service = one("manifests/service.yaml", "Service")
    assert shards["spec"]["replicas"] == 3
    assert shards["spec"]["serviceName"] == service["metadata"]["name"]
    assert shards["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    args = container(shards)["args"]
    assert args[:3] == ["run", "--shard", "--ring=optiinfra"]
    assert not [a for a in args if a.startswith("--lease")]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container(shards)["env"]}
    assert env == {"POD_NAMESPACE": "metadata.namespace", "COORDINATOR_IDENTITY": "metadata.name"}


def test_the_two_pod_templates_differ_only_in_the_mode() -> None:
    """Everything else (image, probes, hardening, volumes, webhook flags) is the same."""

    def alike(workload: Doc) -> Doc:
        template: Doc = yaml.safe_load(yaml.safe_dump(workload["spec"]["template"]))
        main = template["spec"]["containers"][0]
        main["args"] = [
            a for a in main["args"] if not a.startswith(("--lease", "--shard", "--ring"))
        ]
        main["env"] = [e for e in main["env"] if e["name"] != "COORDINATOR_IDENTITY"]
        return template

    deployment = one("manifests/deployment.yaml", "Deployment")
    shards = one("manifests-shards/statefulset.yaml", "StatefulSet")
    assert alike(shards) == alike(deployment)
    assert shards["metadata"] == deployment["metadata"]


def test_the_shards_may_create_and_list_leases_in_their_namespace_only() -> None:
    role = one("manifests-shards/shard-role.yaml", "Role")
    binding = one("manifests-shards/shard-role.yaml", "RoleBinding")
    account = one("manifests/serviceaccount.yaml", "ServiceAccount")
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "list", "watch", "create", "update", "delete"],
        }
    ]
    assert role["metadata"]["namespace"] == account["metadata"]["namespace"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", **{k: account["metadata"][k] for k in ("name", "namespace")}}
    ]


def test_the_chart_renders_one_mode_or_the_other() -> None:
    rendered = chartgen.render()
    deployment, shards = (
        rendered["templates/deployment.yaml"],
        rendered["templates/shards-statefulset.yaml"],
    )
    assert '{{- if ne .Values.mode "shards" }}' in deployment
    assert '{{- if eq .Values.mode "shards" }}' in shards
    assert '{{- if eq .Values.mode "shards" }}' in rendered["templates/shards-shard-role.yaml"]
    assert "replicas: {{ .Values.shards }}" in shards
    assert "- --ring={{ .Values.namePrefix }}" in shards
    assert "--shard" not in deployment
    values = yaml.safe_load((chartgen.CHART / "values.yaml").read_text())
    assert (values["mode"], values["replicas"], values["shards"]) == ("activeStandby", 2, 3)
    pdb = rendered["templates/poddisruptionbudget.yaml"]
    assert 'gt (int (include "optiinfra.replicas" .)) 1' in pdb
