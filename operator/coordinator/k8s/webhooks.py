"""The admission webhooks' certificates and their registration with the API server.

Two ways to be reached:

- ``local`` (the default when the API server is on 127.0.0.1, as with ``make cluster``):
  serve HTTPS on 127.0.0.1 with a CA and serving certificate generated here (with the
  ``cryptography`` package) and register ``https://127.0.0.1:PORT/...`` URLs. The
  configurations are named after the namespaces this process watches, so several
  local operators do not overwrite each other, and they are removed when it stops.
- ``service`` (in a cluster): serve on 0.0.0.0 with the certificate mounted from a
  Secret shared by every replica, and register the Service (the CA is the Secret's
  ``ca.crt``). The configurations are shared and stay in place.

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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, cast

import kubernetes
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from coordinator.api import common

NAME: Final = "optiinfra-coordinator"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Hook:
    """One webhook: the kopf handler id it reaches, and what it intercepts."""

    id: str
    plural: str
    mutating: bool
    operations: tuple[str, ...] = ("CREATE", "UPDATE")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Endpoint:
    """Where the API server reaches this process, and the CA it trusts for it."""

    ca_pem: bytes
    url: str | None = None  # local: https://127.0.0.1:PORT
    service: tuple[str, str, int] | None = None  # (namespace, name, port)

    def client_config(self, hook_id: str) -> dict[str, Any]:
        config: dict[str, Any] = {"caBundle": base64.b64encode(self.ca_pem).decode()}
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


def local_name(namespaces: Sequence[str], selector: Mapping[str, Any] | None) -> str:
    """The configurations' name for a local operator: one per watched scope."""
    scope = ",".join(sorted(namespaces)) + repr(sorted((selector or {}).items()))
    return f"{NAME}-local-{hashlib.sha256(scope.encode()).hexdigest()[:10]}"


def namespace_selector(
    namespaces: Sequence[str], labels: Mapping[str, str] | None
) -> dict[str, Any] | None:
    """Which namespaces the webhooks apply to: given labels, else the plain names watched.

    Glob patterns cannot be expressed as a selector: without labels, they get none (all
    namespaces), which is safe — the checks do not depend on the namespace being watched.
    """
    if labels:
        return {"matchLabels": dict(labels)}
    if namespaces and not any(ch in ns for ns in namespaces for ch in "*?["):
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
    *, name: str, hooks: Sequence[Hook], endpoint: Endpoint, selector: Mapping[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ValidatingWebhookConfiguration and MutatingWebhookConfiguration bodies."""

    def webhook(hook: Hook) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": f"{hook.id}.{common.GROUP}",
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


class Registrar:
    """Creates or replaces the two configurations, and removes them when asked."""

    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self._api = kubernetes.client.AdmissionregistrationV1Api(api)

    def apply(self, validating: dict[str, Any], mutating: dict[str, Any]) -> None:
        api = self._api
        for body, create, patch in (
            (
                validating,
                api.create_validating_webhook_configuration,
                api.patch_validating_webhook_configuration,
            ),
            (
                mutating,
                api.create_mutating_webhook_configuration,
                api.patch_mutating_webhook_configuration,
            ),
        ):
            try:
                create(cast(Any, body))
            except kubernetes.client.ApiException as exc:
                if exc.status != 409:
                    raise
                # A merge patch replaces the list of webhooks as a whole.
                patch(
                    body["metadata"]["name"],
                    cast(Any, {"webhooks": body["webhooks"]}),
                    _content_type="application/merge-patch+json",
                )

    def remove(self, name: str) -> None:
        for delete in (
            self._api.delete_validating_webhook_configuration,
            self._api.delete_mutating_webhook_configuration,
        ):
            try:
                delete(name)
            except kubernetes.client.ApiException as exc:
                if exc.status != 404:
                    raise
