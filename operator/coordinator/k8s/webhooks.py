"""The admission webhooks' certificates and their registration with the API server.

Two ways to be reached:

- ``local`` (the default when the API server is on 127.0.0.1, as with ``make cluster``):
  serve HTTPS on 127.0.0.1 with a CA and serving certificate generated here (with the
  ``cryptography`` package) and register ``https://127.0.0.1:PORT/...`` URLs. Each
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
import datetime
import hashlib
import ipaddress
import socket
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import kubernetes
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

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


@dataclasses.dataclass(frozen=True)
class Certificates:
    directory: Path

    @property
    def cert(self) -> Path:
        return self.directory / "tls.crt"

    @property
    def key(self) -> Path:
        return self.directory / "tls.key"

    @property
    def ca(self) -> Path:
        return self.directory / "ca.crt"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def generate(directory: Path, *, hosts: Sequence[str]) -> Certificates:
    """A CA and a serving certificate for `hosts` (DNS names or IPs), valid for a year."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{NAME}-webhook-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    certs = Certificates(directory)
    certs.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    certs.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    certs.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    certs.key.chmod(0o600)
    return certs


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


def _url(entry: Mapping[str, Any]) -> str | None:
    url: str | None = (entry.get("clientConfig") or {}).get("url")
    return url


def answers(url: str, *, timeout: float = 1.0) -> bool:
    """Whether something listens at the host and port of `url` (a local webhook's)."""
    parts = urllib.parse.urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "", parts.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


class MissingConfigurationError(RuntimeError):
    """A webhook configuration that must be installed with the manifests is not there."""


class Registrar:
    """Keeps this process's webhooks in the two shared configurations named ``NAME``.

    One name for every operator: the ClusterRole can then grant get/update on exactly that
    name (RBAC cannot grant by prefix). Each operator owns the webhooks named for its scope
    (``hook_name``) and writes only those, with the resourceVersion it read (a concurrent
    writer makes it read again). It never needs delete: leaving takes its webhooks out.
    """

    KINDS: Final = ("validating", "mutating")

    def __init__(
        self,
        api: kubernetes.client.ApiClient,
        *,
        timeout: float = 5.0,
        create: bool = True,
        name: str = NAME,
    ) -> None:
        self._api: Any = kubernetes.client.AdmissionregistrationV1Api(api)
        self.name = name
        """The two configurations' name (``--webhook-configuration``; a Helm release with
        its own namePrefix names them after it)."""
        self._timeout = timeout
        self._create = create
        """Whether a missing configuration is created (local) or an error (in a cluster:
        manifests/webhooks.yaml ships them and the operator may not create one)."""

    def _calls(self, kind: str) -> tuple[Any, Any, Any]:
        api = self._api
        return (
            getattr(api, f"read_{kind}_webhook_configuration"),
            getattr(api, f"create_{kind}_webhook_configuration"),
            getattr(api, f"replace_{kind}_webhook_configuration"),
        )

    def _update(self, kind: str, change: Any, *, create: dict[str, Any] | None) -> None:
        """Apply `change` (the stored webhooks -> the new list, or None: nothing to do) to
        configuration `kind`, creating it from `create` when it does not exist."""
        read, create_, replace = self._calls(kind)
        timeout = self._timeout
        for _ in range(10):
            try:
                stored = read(self.name, _request_timeout=timeout)
            except kubernetes.client.ApiException as exc:
                if exc.status != 404:
                    raise
                if create is None:
                    return
                if not self._create:
                    raise MissingConfigurationError(
                        f"the {kind} webhook configuration {self.name} does not exist: apply "
                        "manifests/webhooks.yaml (kubectl apply -k manifests/), or run with "
                        "--webhooks=off"
                    ) from None
                try:
                    create_(create, _request_timeout=timeout)
                    return
                except kubernetes.client.ApiException as created:
                    if created.status != 409:
                        raise
                    continue
            body = self._api.api_client.sanitize_for_serialization(stored)
            webhooks = change(body.get("webhooks") or [])
            if webhooks is None:
                return
            body["webhooks"] = webhooks
            try:
                replace(self.name, body, _request_timeout=timeout)
                return
            except kubernetes.client.ApiException as exc:
                if exc.status != 409:  # somebody else wrote it meanwhile: read again
                    raise
        raise RuntimeError(f"webhook configuration {self.name} kept changing; gave up")

    def apply(self, validating: dict[str, Any], mutating: dict[str, Any]) -> None:
        """Put our webhooks in (replacing any of the same names: a dead process's)."""
        for kind, body in zip(self.KINDS, (validating, mutating), strict=True):
            ours = body["webhooks"]
            names = {w["name"] for w in ours}

            def merge(stored: list[dict[str, Any]], ours: Any = ours, names: Any = names) -> Any:
                kept = [w for w in stored if w.get("name") not in names]
                return sorted([*kept, *ours], key=lambda w: str(w["name"]))

            self._update(kind, merge, create=body)

    def remove(self, names: set[str], *, url_prefix: str | None = None) -> None:
        """Take our webhooks out — only those still pointing at `url_prefix` (when given):
        another process of the same scope may have replaced them since."""
        for kind in self.KINDS:

            def drop(stored: list[dict[str, Any]]) -> Any:
                def ours(w: dict[str, Any]) -> bool:
                    url = _url(w) or ""
                    return w.get("name") in names and (
                        url_prefix is None or url.startswith(url_prefix)
                    )

                kept = [w for w in stored if not ours(w)]
                return kept if len(kept) != len(stored) else None

            self._update(kind, drop, create=None)

    def missing(
        self, validating: dict[str, Any], mutating: dict[str, Any], *, url_prefix: str
    ) -> bool:
        """Whether any of our webhooks is absent, or points at a local address where nobody
        answers (a process that stopped took it out, or died): then it must be put back."""
        for kind, body in zip(self.KINDS, (validating, mutating), strict=True):
            read, _, _ = self._calls(kind)
            try:
                stored = read(self.name, _request_timeout=self._timeout)
            except kubernetes.client.ApiException as exc:
                if exc.status == 404:
                    return True
                raise
            present = {w.name: w.client_config.url or "" for w in stored.webhooks or ()}
            for ours in body["webhooks"]:
                url = present.get(ours["name"])
                if url is None or (not url.startswith(url_prefix) and not answers(url)):
                    return True
        return False


def names(validating: Mapping[str, Any], mutating: Mapping[str, Any]) -> set[str]:
    """The names of the webhooks in the two configuration bodies."""
    return {w["name"] for body in (validating, mutating) for w in body["webhooks"]}


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
