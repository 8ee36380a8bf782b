"""AgentEndpoint: where the webhook executor reaches the agent that carries a step out.

Created by approvers and admins, never by agents (RBAC): a recommendation names an
endpoint (``params.endpoint`` of a ``webhook`` step), never a URL. The HMAC key that
signs every request lives in a Secret of the same namespace (``secretRef``), which the
operator may read only where an admin granted it (see manifests/endpoint-secrets-role.yaml).

The URL rule is enforced twice, the same way: by a CEL rule in the CRD (the API server
refuses the object) and by the model (the executor refuses an endpoint stored before the
rule existed), with the same two regular expressions. https anywhere; plain http only to
loopback (127.0.0.0/8, [::1], localhost).

A second rule, the same way (one regular expression, in the CRD and in the model),
refuses a host that is an IP address, written plainly, that nobody's agent has:
link-local (169.254.0.0/16, fe80::/10: cloud metadata), unspecified, multicast,
broadcast, the cloud metadata addresses, IPv4-mapped IPv6 and IPv6 zones. Loopback
passes here (the API server does not know how the operator was started). When it calls,
the operator resolves the host and judges every address (``coordinator.core.addresses``):
the same classes whatever the spelling or the name, loopback unless started with
``--allow-loopback-endpoints``, and its ``--deny-cidr`` ranges.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from typing import Final, Literal

import pydantic

from coordinator.api.common import API_VERSION, Model, rules
from coordinator.api.meta import ObjectMeta

DEFAULT_TIMEOUT_SECONDS: Final = 30

_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_REST = "([/?#].*)?"
HTTPS_PATTERN: Final = r"^https://[^/?#@\s]+" + _REST + "$"
LOOPBACK_HTTP_PATTERN: Final = (
    rf"^http://(localhost|127(\.{_OCTET}){{3}}|\[::1\])(:[0-9]{{1,5}})?" + _REST + "$"
)
URL_RULE: Final = (
    f"self.matches('{HTTPS_PATTERN}') || self.matches('{LOOPBACK_HTTP_PATTERN}')".replace(
        "\\", "\\\\"
    )
)
"""The CEL rule: the two patterns (RE2; the same in Python's re), backslashes escaped."""
URL_MESSAGE: Final = (
    "url must be https://..., or http:// only to loopback (127.0.0.0/8, [::1], localhost)"
)


_N = "[0-9]{1,3}"
_V4_REFUSED = (
    rf"169\.254\.{_N}\.{_N}|0\.{_N}\.{_N}\.{_N}|(22[4-9]|2[3-5][0-9])\.{_N}\.{_N}\.{_N}"
    r"|100\.100\.100\.200"
)
"""Link-local (cloud metadata), "this network", multicast/reserved/broadcast, Alibaba's
metadata address."""
_V6_REFUSED = (
    r"(?i:fe[89ab][0-9a-f]:[^\]]*|ff[0-9a-f]{2}:[^\]]*|[0:]*:ffff:[^\]]*|[0:]*"
    r"|fd00:ec2::254|[^\]]*%[^\]]*)"
)
"""Link-local, multicast, IPv4-mapped, unspecified, AWS's metadata address, any zone."""
ADDRESS_PATTERN: Final = rf"^https?://({_V4_REFUSED}|\[{_V6_REFUSED}\])(:[0-9]*)?" + _REST + "$"
ADDRESS_RULE: Final = f"!self.matches('{ADDRESS_PATTERN}')".replace("\\", "\\\\")
"""The CEL rule (RE2; the same in Python's re), backslashes escaped: the host must not
be an IP address written as one of the refused classes."""
ADDRESS_MESSAGE: Final = (
    "url must not name a link-local (169.254.0.0/16, fe80::/10: cloud metadata), "
    "unspecified, multicast, broadcast or cloud metadata address, an IPv4-mapped IPv6 "
    "address or an IPv6 zone"
)


def url_problem(url: str) -> str | None:
    """Why `url` is not an allowed endpoint URL (the CRD's CEL rules, in Python), or None."""
    if not (re.fullmatch(HTTPS_PATTERN, url) or re.fullmatch(LOOPBACK_HTTP_PATTERN, url)):
        return URL_MESSAGE
    return address_problem(url)


def address_problem(url: str) -> str | None:
    """Why the host of `url` is an IP address the operator never calls (the CRD's
    address rule, in Python), or None."""
    return ADDRESS_MESSAGE if re.fullmatch(ADDRESS_PATTERN, url) else None


class SecretKeyRef(Model):
    """A key of a Secret in the endpoint's namespace."""

    name: str = pydantic.Field(
        min_length=1, max_length=253, description="Name of the Secret (same namespace)."
    )
    key: str = pydantic.Field(
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="Key in the Secret's data whose value is the HMAC-SHA256 key.",
    )


class ServiceAccountRef(Model):
    """A ServiceAccount, as the API server authenticates it
    (``system:serviceaccount:<namespace>:<name>``)."""

    name: str = pydantic.Field(min_length=1, max_length=253, description="Its name.")
    namespace: str = pydantic.Field(min_length=1, max_length=63, description="Its namespace.")


class Submitter(Model):
    """Whose recommendations may send steps to an endpoint: a user, a group or a
    ServiceAccount, exactly one."""

    model_config = pydantic.ConfigDict(
        json_schema_extra=rules(
            (
                "(has(self.user) ? 1 : 0) + (has(self.group) ? 1 : 0) + "
                "(has(self.serviceAccount) ? 1 : 0) == 1",
                "a submitter is exactly one of user, group or serviceAccount",
            )
        )
    )

    user: str | None = pydantic.Field(
        default=None, min_length=1, max_length=253, description="A user name."
    )
    group: str | None = pydantic.Field(
        default=None, min_length=1, max_length=253, description="A group name."
    )
    service_account: ServiceAccountRef | None = pydantic.Field(
        default=None, description="A ServiceAccount (the agent's identity in the cluster)."
    )

    @pydantic.model_validator(mode="after")
    def _one(self) -> Submitter:
        given = [self.user, self.group, self.service_account]
        if sum(value is not None for value in given) != 1:
            raise ValueError("a submitter is exactly one of user, group or serviceAccount")
        return self

    def admits(self, user: str, groups: Sequence[str]) -> bool:
        """Whether a request by `user` in `groups` is this submitter."""
        if self.user is not None:
            return user == self.user
        if self.group is not None:
            return self.group in groups
        sa = self.service_account
        assert sa is not None
        return user == f"system:serviceaccount:{sa.namespace}:{sa.name}"

    def text(self) -> str:
        if self.user is not None:
            return f"user {self.user}"
        if self.group is not None:
            return f"group {self.group}"
        sa = self.service_account
        assert sa is not None
        return f"serviceAccount {sa.namespace}/{sa.name}"


class AgentEndpointSpec(Model):
    """How to reach an agent and how to sign the requests sent to it."""

    url: str = pydantic.Field(
        min_length=1,
        max_length=2048,
        description="Where the operator POSTs each webhook step: https://..., or http:// "
        "only to loopback (127.0.0.0/8, ::1, localhost).",
        json_schema_extra=rules((URL_RULE, URL_MESSAGE), (ADDRESS_RULE, ADDRESS_MESSAGE)),
    )
    ca_bundle: str | None = pydantic.Field(
        default=None,
        max_length=65536,
        description="Base64 of the PEM certificate(s) that sign the agent's TLS certificate; "
        "without it the system's trusted CAs are used.",
    )
    secret_ref: SecretKeyRef = pydantic.Field(
        description="The Secret key holding the HMAC key: every request carries "
        "X-Optiinfra-Signature: sha256=HMAC-SHA256(key, '<timestamp>.<body>'). The operator "
        "must be granted get on this Secret (Role optiinfra-endpoint-secrets)."
    )
    timeout_seconds: int = pydantic.Field(
        default=DEFAULT_TIMEOUT_SECONDS,
        ge=1,
        le=600,
        description="How long one request may take before it counts as unanswered (and is "
        "sent again, within the step's timeout).",
    )
    submitters: list[Submitter] | None = pydantic.Field(
        default=None,
        max_length=256,
        description="Whose recommendations may send steps to this endpoint (users, groups, "
        "ServiceAccounts, as the API server authenticated the submitter). A recommendation "
        "whose submitter is none of them is refused at admission, naming the endpoint. "
        "Without submitters the endpoint takes only plans a person approved, never ones "
        "approved by policy.",
    )

    def admits(self, user: str | None, groups: Sequence[str]) -> bool | None:
        """Whether the endpoint takes steps of recommendations submitted by `user` (in
        `groups`): True or False by its submitters; None when it lists none (a person
        must approve)."""
        if self.submitters is None:
            return None
        return user is not None and any(s.admits(user, groups) for s in self.submitters)

    def submitters_text(self) -> str:
        return ", ".join(s.text() for s in self.submitters or ()) or "nobody"

    @pydantic.field_validator("url")
    @classmethod
    def _allowed_url(cls, value: str) -> str:
        problem = url_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @pydantic.field_validator("ca_bundle")
    @classmethod
    def _base64_pem(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            pem = base64.b64decode(value, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"caBundle is not base64: {exc}") from None
        if b"-----BEGIN CERTIFICATE-----" not in pem:
            raise ValueError("caBundle is not base64 of PEM certificates")
        return value

    def ca_pem(self) -> str | None:
        """The decoded CA bundle (PEM), or None."""
        return base64.b64decode(self.ca_bundle).decode() if self.ca_bundle else None


class AgentEndpoint(Model):
    api_version: Literal["optiinfra.io/v1alpha1"] = API_VERSION
    kind: Literal["AgentEndpoint"] = "AgentEndpoint"
    metadata: ObjectMeta
    spec: AgentEndpointSpec
