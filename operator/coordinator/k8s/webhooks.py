"""The admission webhooks: which there are, their configurations and where they point
(certificates: ``k8s.certificates``; registration with the API server: ``k8s.registrar``).

Two ways to be reached:

- ``local`` (the default when the API server is on 127.0.0.1, as with ``make cluster``):
  serve HTTPS on 127.0.0.1 with a CA and serving certificate generated at start
  (``k8s.certificates``) and register ``https://127.0.0.1:PORT/...`` URLs. Each
  local operator's webhooks are named after the scope it watches (``local_scope``), so
  several local operators do not overwrite each other. A process takes its webhooks out
  when it stops (only while they still point at it), replaces those of its scope that a
  dead process left at start, and puts them back if they go missing while it runs.
- ``service`` (in a cluster): serve on 0.0.0.0 with the certificate mounted from a
  Secret shared by every replica, and register the Service (the CA is the Secret's
  ``ca.crt``). The webhooks are shared by the replicas and stay in place.

Both live in the two configurations named ``optiinfra-coordinator`` (validating and
mutating): the only names the operator's ClusterRole lets it read and update. In a cluster
they are shipped in manifests/webhooks.yaml (``manifest()``; ``make manifests`` writes it
and a test checks it is current): the operator only fills in its CA, and has no right to
create a webhook configuration. A local operator creates them when they are missing
(manifests/local-webhooks-role.yaml grants that, outside a cluster only).

Webhooks fail closed: while the operator is unreachable no Approval can be decided,
and no Recommendation written, unchecked.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import yaml

from coordinator.api import common, defaults
from coordinator.core import namespaces as namespaces_

NAME: Final = defaults.OPERATOR_NAME


@dataclasses.dataclass(frozen=True, kw_only=True)
class Hook:
    """One webhook: the kopf handler id it reaches, and what it intercepts."""

    id: str
    plural: str
    mutating: bool
    operations: tuple[str, ...] = ("CREATE", "UPDATE")


HOOKS: Final = (
    Hook(id="approval-stamp", plural=common.APPROVALS, mutating=True),
    Hook(id="approval-check", plural=common.APPROVALS, mutating=False, operations=("UPDATE",)),
    Hook(id="recommendation-stamp", plural=common.RECOMMENDATIONS, mutating=True),
    Hook(id="recommendation-check", plural=common.RECOMMENDATIONS, mutating=False),
    Hook(id="template-check", plural=common.TEMPLATES, mutating=False),
)
"""The admission webhooks; each id names its hook in ``coordinator.handlers.admission``."""
SERVICE: Final = (defaults.OPERATOR_NAMESPACE, NAME, defaults.WEBHOOK_SERVICE_PORT)
"""The Service of manifests/service.yaml (``coordinator run --webhook-service``'s default)."""
CERTIFICATE: Final = "optiinfra-system/optiinfra-coordinator-webhook"
"""The cert-manager Certificate of manifests/cert-manager/ (its CA is injected, if installed)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Endpoint:
    """Where the API server reaches this process, and the CA it trusts for it."""

    ca_pem: bytes
    url: str | None = None  # local: https://127.0.0.1:PORT
    service: tuple[str, str, int] | None = None  # (namespace, name, port)

    def client_config(self, hook_id: str) -> dict[str, Any]:
        config: dict[str, Any] = {}
        if self.ca_pem:  # none in the shipped manifest: the operator fills it in at start
            config["caBundle"] = base64.b64encode(self.ca_pem).decode()
        if self.url is not None:
            config["url"] = f"{self.url}/{hook_id}"
        else:
            assert self.service is not None
            namespace, name, port = self.service
            config["service"] = {
                "namespace": namespace,
                "name": name,
                "port": port,
                "path": f"/{hook_id}",
            }
        return config


def local_scope(namespaces: Sequence[str], selector: Mapping[str, Any] | None) -> str:
    """The scope of a local operator's webhooks: one per watched scope, in their names."""
    scope = ",".join(sorted(namespaces)) + repr(sorted((selector or {}).items()))
    return f"local-{hashlib.sha256(scope.encode()).hexdigest()[:10]}"


def hook_name(hook: Hook, scope: str) -> str:
    """The webhook's name in the shared configuration (a scope of its own per local operator)."""
    return f"{hook.id}.{scope}.{common.GROUP}" if scope else f"{hook.id}.{common.GROUP}"


def namespace_selector(
    namespaces: Sequence[str], labels: Mapping[str, str] | None
) -> dict[str, Any] | None:
    """Which namespaces the webhooks apply to: given labels, else the plain names watched.

    Glob patterns cannot be expressed as a selector: without labels, they get none (all
    namespaces), which is safe — the checks do not depend on the namespace being watched.
    """
    if labels:
        return {"matchLabels": dict(labels)}
    if namespaces and not any(namespaces_.is_pattern(ns) for ns in namespaces):
        return {
            "matchExpressions": [
                {
                    "key": "kubernetes.io/metadata.name",
                    "operator": "In",
                    "values": sorted(namespaces),
                }
            ]
        }
    return None


def configurations(
    *,
    hooks: Sequence[Hook],
    endpoint: Endpoint,
    selector: Mapping[str, Any] | None,
    scope: str = "",
    name: str = NAME,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ValidatingWebhookConfiguration and MutatingWebhookConfiguration bodies (named
    `name`) with this process's webhooks (named for `scope`)."""

    def webhook(hook: Hook) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": hook_name(hook, scope),
            "clientConfig": endpoint.client_config(hook.id),
            "rules": [
                {
                    "apiGroups": [common.GROUP],
                    "apiVersions": [common.VERSION],
                    "resources": [hook.plural],
                    "operations": list(hook.operations),
                    "scope": "Namespaced",
                }
            ],
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "matchPolicy": "Equivalent",
            "timeoutSeconds": 10,
            "admissionReviewVersions": ["v1"],
        }
        if selector:
            entry["namespaceSelector"] = dict(selector)
        if hook.mutating:
            entry["reinvocationPolicy"] = "IfNeeded"
        return entry

    def config(kind: str, mutating: bool) -> dict[str, Any]:
        return {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": kind,
            "metadata": {"name": name, "labels": {"app.kubernetes.io/name": NAME}},
            "webhooks": [webhook(h) for h in hooks if h.mutating is mutating],
        }

    return (
        config("ValidatingWebhookConfiguration", False),
        config("MutatingWebhookConfiguration", True),
    )


MANIFEST_HEADER: Final = (
    "# The admission webhooks of the operator in a cluster (--webhooks=service): the API server\n"
    "# calls the Service of service.yaml. Generated from coordinator/k8s/webhooks.py by\n"
    "# `make manifests`. Each replica fills in caBundle (the ca.crt of its certificate) at start;\n"
    "# it may read and update these two configurations only, never create one.\n"
)


def manifest() -> str:
    """manifests/webhooks.yaml: the two configurations as an in-cluster operator registers
    them (the default Service, all namespaces), without the CA."""
    validating, mutating = configurations(
        hooks=HOOKS, endpoint=Endpoint(ca_pem=b"", service=SERVICE), selector=None
    )
    for body in (validating, mutating):  # with cert-manager the CA is there before we start
        body["metadata"]["annotations"] = {"cert-manager.io/inject-ca-from": CERTIFICATE}
    return MANIFEST_HEADER + yaml.safe_dump_all([validating, mutating], sort_keys=False, width=100)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m coordinator.k8s.webhooks PATH``: write manifests/webhooks.yaml."""
    import sys  # noqa: PLC0415

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m coordinator.k8s.webhooks PATH", file=sys.stderr)
        return 2
    Path(args[0]).write_text(manifest())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
