"""AgentEndpoints resolved for the webhook executor and the notifier: the URL to send to,
the HMAC key to sign with (from a Secret the operator was granted, see
manifests/endpoint-secrets-role.yaml), how to trust its TLS, its timeout."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Final, Protocol

import pydantic

from coordinator.api.common import ENDPOINTS
from coordinator.api.endpoint import AgentEndpoint
from coordinator.k8s.client import ApiException, Client

SECRETS_ROLE: Final = "optiinfra-endpoint-secrets"
"""The namespaced Role an admin creates to let the operator read endpoint Secrets."""


@dataclasses.dataclass(frozen=True)
class Target:
    """An AgentEndpoint resolved: where to send, the key to sign with, how to trust TLS."""

    name: str
    url: str
    key: bytes = dataclasses.field(repr=False)
    ca_pem: str | None = None
    timeout_seconds: float = 30.0


class EndpointError(Exception):
    """The endpoint cannot be used: the step fails with this message."""


class Resolver(Protocol):
    async def resolve(self, namespace: str, name: str) -> Target: ...


Cached = Callable[[str, str], AgentEndpoint | None]
"""(namespace, name) -> the AgentEndpoint as the operator's watch holds it, or None."""


class ClientResolver:
    """Reads AgentEndpoints (from `cached`, the Store, when given and it holds the name;
    else one GET: an endpoint applied a moment ago may not have reached the watch yet)
    and their Secrets (always a GET) with the operator's client."""

    def __init__(self, client: Client, cached: Cached | None = None) -> None:
        self._client = client
        self._cached = cached

    async def endpoint(self, namespace: str, name: str) -> AgentEndpoint | None:
        """AgentEndpoint `name` of `namespace`, or None when it does not exist."""
        if self._cached is not None:
            found = self._cached(namespace, name)
            if found is not None:
                return found
        raw = await self._client.get(ENDPOINTS, namespace, name)
        if raw is None:
            return None
        try:
            return AgentEndpoint.model_validate(raw)
        except pydantic.ValidationError as exc:
            raise EndpointError(f"AgentEndpoint {namespace}/{name} is invalid: {exc}") from None

    async def resolve(self, namespace: str, name: str) -> Target:
        endpoint = await self.endpoint(namespace, name)
        if endpoint is None:
            raise EndpointError(f"AgentEndpoint {name} does not exist in namespace {namespace}")
        ref = endpoint.spec.secret_ref
        try:
            key = await self._client.read_secret_key(namespace, ref.name, ref.key)
        except ApiException as exc:
            if exc.status == 403:
                raise EndpointError(
                    f"the operator may not read Secret {namespace}/{ref.name} (the HMAC key of "
                    f"AgentEndpoint {name}): create the Role {SECRETS_ROLE} in namespace "
                    f"{namespace} granting get on secrets with resourceNames [{ref.name}], "
                    "bound to the operator's ServiceAccount "
                    "(see manifests/endpoint-secrets-role.yaml)"
                ) from None
            if exc.status == 404:
                raise EndpointError(
                    f"Secret {namespace}/{ref.name} (the HMAC key of AgentEndpoint {name}) "
                    "does not exist"
                ) from None
            raise
        if not key:
            raise EndpointError(
                f"Secret {namespace}/{ref.name} has no key {ref.key!r} (or it is empty): "
                f"AgentEndpoint {name} signs with it"
            )
        return Target(
            name=name,
            url=endpoint.spec.url,
            key=key,
            ca_pem=endpoint.spec.ca_pem(),
            timeout_seconds=float(endpoint.spec.timeout_seconds),
        )
