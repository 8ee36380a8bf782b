"""Generate the Helm chart's templates from manifests/ (run by `make manifests`).

manifests/ (the kustomize install) is the one source of truth of what the operator installs.
This generator reads the files that manifests/kustomization.yaml lists, plus
manifests/cert-manager/ and the shards' own files of manifests-shards/ (the StatefulSet and
the Role, rendered instead of the Deployment with ``mode: shards``), and writes
charts/optiinfra-coordinator/templates/<file>.yaml with the few values of the chart put in
(names, namespace, image, replicas, flags, resources, certificates, toggles), Chart.yaml
with the version of pyproject.toml, and crds/ copied from crds/. values.yaml, _helpers.tpl
and the chart-only templates (the certificate Secret, the executor RoleBindings, the
ServiceMonitor) are written by hand. tests/unit/test_chart.py fails when the committed chart
differs from what this writes.

    python hack/chartgen.py            # writes charts/optiinfra-coordinator
"""

from __future__ import annotations

import re
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
SHARDS = ROOT / "manifests-shards"
"""The sharded mode: an overlay of manifests/ (kustomize), whose own files the chart renders
when ``mode: shards``."""
CRDS = ROOT / "crds"
CHART = ROOT / "charts" / "optiinfra-coordinator"
NAMESPACE = "optiinfra-system"
"""The namespace written in manifests/: the release's namespace in the chart."""
PREFIX = "optiinfra"
"""The prefix of every name in manifests/: .Values.namePrefix in the chart."""
SKIPPED = {
    "namespace.yaml": "helm install --namespace ... --create-namespace makes it",
}
APP_VERSION = "app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}"
HEADER = "# Generated from {source} by `make manifests` (hack/chartgen.py): do not edit.\n"


def version() -> str:
    """The version of the package, the chart, its appVersion and the image tag."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return str(data["project"]["version"])


class _Template:
    """One manifest file turned into a template: placeholders in the YAML, expressions out."""

    def __init__(self) -> None:
        self.blocks: list[str] = []

    def block(self, expression: str) -> str:
        """A placeholder for a block: its line becomes `{{- expression | nindent N }}`."""
        self.blocks.append(expression)
        return f"__BLOCK{len(self.blocks) - 1}__"

    def render(self, docs: list[dict[str, Any]]) -> str:
        text = yaml.safe_dump_all(docs, sort_keys=False, width=1000, explicit_start=True)
        lines = []
        for line in text.splitlines():
            match = re.fullmatch(r"( *)(- )?([\w-]+: )?'?__BLOCK(\d+)__'?(: '')?", line)
            if match is None:
                lines.append(line)
                continue
            indent, _dash, key, number, _ = match.groups()
            expression = self.blocks[int(number)]
            if key:  # key: <block>: the block's lines one level deeper
                lines.append(f"{indent}{key.rstrip()}")
                lines.append(f"{{{{- {expression} | nindent {len(indent) + 2} }}}}")
            else:  # a list item or a mapping entry replaced by the block's lines
                lines.append(f"{{{{- {expression} | nindent {len(indent)} }}}}")
        text = "\n".join(lines) + "\n"
        text = text.replace("__NS__", "{{ .Release.Namespace }}")
        return text.replace("__PREFIX__", "{{ .Values.namePrefix }}")


_NOT_RENAMED = {"labels", "matchLabels", "selector"}


def _rename(node: Any, parent: str = "") -> Any:
    """Every name in the objects: optiinfra-system -> the release's namespace, optiinfra-* ->
    <namePrefix>-* (labels and selectors keep theirs: they are not names of objects)."""
    if isinstance(node, dict):
        if parent in _NOT_RENAMED:
            return node
        return {key: _rename(value, key) for key, value in node.items()}
    if isinstance(node, list):
        return [_rename(item, parent) for item in node]
    if isinstance(node, str):
        node = re.sub(rf"\b{NAMESPACE}\b", "__NS__", node)
        return re.sub(rf"(?<![\w.-]){PREFIX}-(?=[a-z])", "__PREFIX__-", node)
    return node


def _labels(t: _Template, doc: dict[str, Any]) -> None:
    labels = doc["metadata"].setdefault("labels", {})
    labels[t.block('include "optiinfra.labels" .')] = ""


def _deployment(t: _Template, doc: dict[str, Any], release: str) -> None:
    """The Deployment (active/standby) or the StatefulSet (shards): their values put in."""
    doc["metadata"]["labels"]["app.kubernetes.io/version"] = release
    doc["spec"]["replicas"] = "__SHARDS__" if doc["kind"] == "StatefulSet" else "__REPLICAS__"
    container = doc["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"optiinfra/coordinator:{release}", container["image"]
    container["image"] = "__IMAGE__"
    container["imagePullPolicy"] = "__PULL__"
    container["args"].append(t.block('include "optiinfra.args" . | trim'))
    container["resources"] = t.block("toYaml .Values.resources")


def _networkpolicy(t: _Template, doc: dict[str, Any]) -> None:
    ipblock = doc["spec"]["ingress"][0]["from"][0]["ipBlock"]
    ipblock["except"] = t.block("toYaml .Values.networkPolicy.podCIDRs")


def _webhooks(t: _Template, doc: dict[str, Any]) -> None:
    doc["metadata"].pop("annotations", None)
    doc["metadata"][t.block('include "optiinfra.webhookAnnotations" .')] = ""
    for hook in doc["webhooks"]:
        hook["clientConfig"][t.block('include "optiinfra.caBundle" .')] = ""
        hook["namespaceSelector"] = t.block('include "optiinfra.namespaceSelector" .')


SHARDED = 'eq .Values.mode "shards"'
CONDITIONS: dict[str, str] = {
    "deployment.yaml": 'ne .Values.mode "shards"',
    "../manifests-shards/statefulset.yaml": SHARDED,
    "../manifests-shards/shard-role.yaml": SHARDED,
    "networkpolicy.yaml": ".Values.networkPolicy.enabled",
    "poddisruptionbudget.yaml": 'gt (int (include "optiinfra.replicas" .)) 1',
    "cert-manager/certificate.yaml": 'eq .Values.webhookCerts.mode "cert-manager"',
}


def template(source: str, release: str) -> str:
    """The chart's template of manifests/<source>."""
    docs = [d for d in yaml.safe_load_all((MANIFESTS / source).read_text()) if d]
    t = _Template()
    special: dict[str, Callable[[_Template, dict[str, Any]], None]] = {
        "NetworkPolicy": _networkpolicy,
        "ValidatingWebhookConfiguration": _webhooks,
        "MutatingWebhookConfiguration": _webhooks,
    }
    out = []
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            _deployment(t, doc, release)
        elif doc["kind"] in special:
            special[doc["kind"]](t, doc)
        renamed = _rename(doc)
        _labels(t, renamed)
        out.append(renamed)
    text = t.render(out)
    values = {
        "image: __IMAGE__": 'image: "{{ .Values.image.repository }}:'
        '{{ .Values.image.tag | default .Chart.AppVersion }}"',
        "imagePullPolicy: __PULL__": "imagePullPolicy: {{ .Values.image.pullPolicy }}",
        "replicas: __REPLICAS__": "replicas: {{ .Values.replicas }}",
        "replicas: __SHARDS__": "replicas: {{ .Values.shards }}",
        "--ring=optiinfra\n": "--ring={{ .Values.namePrefix }}\n",
        f"app.kubernetes.io/version: {release}": APP_VERSION,
        f"app.kubernetes.io/version: '{release}'": APP_VERSION,
    }
    for placeholder, expression in values.items():
        text = text.replace(placeholder, expression)
    if source in CONDITIONS:
        text = f"{{{{- if {CONDITIONS[source]} }}}}\n{text}{{{{- end }}}}\n"
    return HEADER.format(source=(MANIFESTS / source).resolve().relative_to(ROOT)) + text


def sources() -> list[str]:
    """The files the chart renders, relative to manifests/: the kustomization's,
    cert-manager's, and the shards' own (the files of their kustomization)."""
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    listed = [r for r in kustomization["resources"] if r not in SKIPPED]
    shards = yaml.safe_load((SHARDS / "kustomization.yaml").read_text())
    own = [f"../{SHARDS.name}/{r}" for r in shards["resources"] if (SHARDS / r).is_file()]
    return [*listed, "cert-manager/certificate.yaml", *own]


def chart_yaml(release: str) -> str:
    return (
        "# Generated by `make manifests` (hack/chartgen.py): version and appVersion are the\n"
        "# package's (pyproject.toml), the one place the version is written.\n"
        + yaml.safe_dump(
            {
                "apiVersion": "v2",
                "name": "optiinfra-coordinator",
                "description": "A Kubernetes operator that coordinates the changes optimisation "
                "agents propose: conflicts, approvals with expiry, step-by-step execution "
                "with rollback.",
                "type": "application",
                "version": release,
                "appVersion": release,
                "kubeVersion": ">=1.28.0-0",
                "keywords": ["operator", "gitops", "approval", "optimisation"],
            },
            sort_keys=False,
            width=1000,
        )
    )


def render() -> dict[str, str]:
    """Every generated file of the chart: path relative to the chart -> text."""
    release = version()
    files = {"Chart.yaml": chart_yaml(release)}
    for source in sources():
        name = source.replace("cert-manager/", "cert-manager-").replace("../manifests-", "")
        name = name.replace("/", "-")
        files[f"templates/{name}"] = template(source, release)
    for crd in sorted(CRDS.glob("*.yaml")):
        files[f"crds/{crd.name}"] = crd.read_text()
    return files


def main(argv: list[str] | None = None) -> int:
    target = Path((argv or sys.argv[1:] or [str(CHART)])[0])
    for relative, text in render().items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
