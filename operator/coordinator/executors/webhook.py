"""The webhook executor: a step carried out outside the cluster by the agent that proposed it.

A ``webhook`` step names an AgentEndpoint of its namespace in ``params.endpoint``; the
other params go to the agent as they are. For each execute or undo the executor reads
the endpoint (from the operator's Store, or one GET when the Store does not hold it yet)
and its HMAC key (a Secret the operator was granted, see
manifests/endpoint-secrets-role.yaml), then POSTs the signed request of
``coordinator.core.webhook`` until the agent gives a final answer:

- 200 ``{"result": {...}}``: done, the result is the step's result;
- 202, 5xx, or no answer (refused, reset, no answer within the endpoint's
  ``timeoutSeconds``): the same request (same idempotency key, fresh timestamp and
  signature) again after 0.5 s, doubling up to 5 s (``api.defaults.AGENT_RETRY``);
- 4xx ``{"error": "..."}``: the step failed with the agent's message (and any other
  status: redirects are not followed);
- a body longer than ``MAX_ANSWER_BYTES`` (64 KiB; a ``Content-Length`` above it, or
  more bytes than that arriving): the step failed, naming the endpoint and the limit. The
  rest is never read, so an agent cannot exhaust the operator's memory, and the step is
  not sent again.

Before anything is sent, the URL's host is resolved (the event loop's getaddrinfo) and
every address judged by ``core.addresses.Policy`` (link-local, metadata, loopback unless
allowed, ``--deny-cidr``, ...); the connection goes only to the addresses judged, so a
DNS answer that changes between the check and the connect is not followed. A refused
address fails the step at once, naming the endpoint, the host, the address and its
class (``AddressRefused``), never asked again.

The whole step is limited by ``params.timeoutSeconds`` (default 300 s). The key is
derived from the plan's uid, the step and the operation, so a step re-run after an
operator restart sends the key the agent has seen: an agent that applies each key once
applies the change once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Protocol

import aiohttp
import aiohttp.abc
import pydantic
import yarl

from coordinator.api import defaults
from coordinator.api.common import ENDPOINTS
from coordinator.api.endpoint import AgentEndpoint
from coordinator.api.plan import Step
from coordinator.core import addresses
from coordinator.core import webhook as protocol
from coordinator.core.plan import Outcome
from coordinator.executors import StepContext
from coordinator.k8s.client import ApiException, Client, transient

logger = logging.getLogger(__name__)

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


class NoAnswerError(Exception):
    """The request got no HTTP answer (refused, reset, timed out)."""


class AddressRefused(Exception):  # noqa: N818 - a refusal, not a failure to retry
    """The endpoint's host is, or resolves to, an address the operator may not call."""

    def __init__(self, endpoint: str, host: str, address: str, why: str) -> None:
        where = f"host {host}" if host == address else f"host {host} resolves to {address}"
        super().__init__(
            f"AgentEndpoint {endpoint}: {where} ({why}): refused, the operator does not call "
            "such addresses (see coordinator run --allow-loopback-endpoints, --deny-cidr)"
        )
        self.endpoint, self.host, self.address, self.why = endpoint, host, address, why


class CheckingResolver(aiohttp.abc.AbstractResolver):
    """The event loop's getaddrinfo (aiohttp's ThreadedResolver), then every address
    judged by `policy`: one refused address refuses the host. aiohttp connects to the
    addresses returned here, never resolving again."""

    def __init__(self, endpoint: str, policy: addresses.Policy) -> None:
        self._endpoint = endpoint
        self._policy = policy
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        for entry in found:
            why = self._policy.refusal(entry["host"])
            if why is not None:
                raise AddressRefused(self._endpoint, host, entry["host"], why)
        return found

    async def close(self) -> None:
        await self._inner.close()


def check_literal(target: Target, policy: addresses.Policy) -> None:
    """Refuse a URL whose host is an IP address `policy` refuses (aiohttp connects to an
    IP address without asking the resolver), or an IPv4 address in a legacy numeric form."""
    try:
        host = yarl.URL(target.url).host or ""
    except ValueError:
        return  # not a URL: aiohttp says so (no answer)
    address = addresses.parse(host)
    if address is not None:
        why = policy.refusal(address)
        if why is not None:
            raise AddressRefused(target.name, host, host, why)
        return
    try:  # 2130706433, 127.1, 0x7f.1: what getaddrinfo would take for an address
        meant = socket.inet_aton(host)
    except OSError:
        return
    raise AddressRefused(
        target.name, host, socket.inet_ntoa(meant), "IPv4 address not written as a.b.c.d"
    )


class AnswerTooLargeError(Exception):
    """The answer's body is longer than the limit: it was not read (beyond the limit)."""

    def __init__(self, status: int, limit: int) -> None:
        super().__init__(f"answered {status} with a body larger than {limit} bytes")
        self.status = status
        self.limit = limit


Post = Callable[[Target, bytes, Mapping[str, str], float], Awaitable[tuple[int, bytes]]]
"""Send one request: (target, body, headers, timeout) -> (status, body); NoAnswerError,
AddressRefused, AnswerTooLargeError."""


def ssl_context(target: Target) -> ssl.SSLContext | None:
    if not target.url.startswith("https:"):
        return None
    if target.ca_pem:
        return ssl.create_default_context(cadata=target.ca_pem)
    return ssl.create_default_context()


async def read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body of `response`, or AnswerTooLargeError as soon as it is known to be longer
    than `limit` bytes (its Content-Length, or the bytes received): at most `limit` + 1
    bytes are ever held."""
    if response.content_length is not None and response.content_length > limit:
        raise AnswerTooLargeError(response.status, limit)
    body = bytearray()
    while len(body) <= limit:
        chunk = await response.content.read(limit + 1 - len(body))
        if not chunk:
            return bytes(body)
        body += chunk
    raise AnswerTooLargeError(response.status, limit)


async def aiohttp_post(
    target: Target,
    payload: bytes,
    headers: Mapping[str, str],
    seconds: float,
    *,
    policy: addresses.Policy = addresses.STRICT,
) -> tuple[int, bytes]:
    """One POST with aiohttp, only to addresses `policy` allows (`AddressRefused`);
    redirects are not followed (a 3xx is an answer, not done). The answer is read up to
    ``MAX_ANSWER_BYTES``, uncompressed (asked for as identity, and never inflated here: a
    small compressed body cannot become a large one)."""
    check_literal(target, policy)
    try:
        connector = aiohttp.TCPConnector(
            ssl=ssl_context(target) or False,
            resolver=CheckingResolver(target.name, policy),
            use_dns_cache=False,
        )
        async with (
            aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=seconds),
                auto_decompress=False,
            ) as session,
            session.post(
                target.url,
                data=payload,
                headers={"Accept-Encoding": "identity", **headers},
                allow_redirects=False,
            ) as response,
        ):
            try:
                return response.status, await read_bounded(response, protocol.MAX_ANSWER_BYTES)
            except AnswerTooLargeError:
                response.close()  # the connection goes, with whatever is left unread
                raise
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        if isinstance(exc.__cause__, AddressRefused):
            raise exc.__cause__ from None
        raise NoAnswerError(f"{type(exc).__name__}: {exc}".rstrip(": ")) from exc


def checked_post(policy: addresses.Policy) -> Post:
    """`aiohttp_post` with the operator's address policy (``coordinator run`` flags)."""
    return functools.partial(aiohttp_post, policy=policy)


class WebhookExecutor:
    def __init__(
        self,
        resolver: Resolver,
        *,
        post: Post = aiohttp_post,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._resolver = resolver
        self._post = post
        self._sleep = sleep
        self._clock = clock
        self._monotonic = monotonic

    async def execute(self, step: Step, *, context: StepContext) -> Outcome:
        return await self._call(protocol.EXECUTE, step, context, None)

    async def undo(
        self, step: Step, *, result: Mapping[str, Any] | None, context: StepContext
    ) -> Outcome:
        return await self._call(protocol.UNDO, step, context, result)

    async def _call(
        self,
        operation: str,
        step: Step,
        context: StepContext,
        previous: Mapping[str, Any] | None,
    ) -> Outcome:
        began = self._monotonic()
        deadline = began + protocol.step_timeout(step.params)
        name = step.params.get("endpoint")
        if not isinstance(name, str) or not name:
            return self._outcome(
                began,
                error=f"step {step.name}: params.endpoint must name an AgentEndpoint of the "
                "namespace",
            )
        key = protocol.idempotency_key(context.uid, step.name, operation)
        payload = protocol.body(
            operation=operation,
            key=key,
            namespace=context.namespace,
            recommendation=context.recommendation,
            customer_id=context.customer_id,
            plan=context.plan,
            step={"name": step.name, "action": step.action, "params": step.params},
            previous_result=previous,
            submitter=context.submitter,
            groups=context.groups,
        )
        pauses = defaults.AGENT_RETRY.delays()
        attempts = 0
        last = "nothing sent yet"
        while True:
            left = deadline - self._monotonic()
            if left <= 0:
                return self._outcome(
                    began,
                    error=f"agent endpoint {name}: no final answer to {operation} of step "
                    f"{step.name} within {protocol.step_timeout(step.params):g} s "
                    f"({attempts} requests; last: {last})",
                )
            try:
                target = await self._resolver.resolve(context.namespace, name)
            except EndpointError as exc:
                return self._outcome(began, error=str(exc))
            except Exception as exc:
                if not transient(exc):
                    raise
                last = f"reading AgentEndpoint {name}: {exc}"
            else:
                attempts += 1
                timestamp = int(self._clock())
                headers = protocol.headers(target.key, timestamp, payload)
                try:
                    status: int | None
                    status, answer = await self._post(
                        target, payload, headers, min(target.timeout_seconds, left)
                    )
                except NoAnswerError as exc:
                    status, answer = None, b""
                    last = f"no answer ({exc})"
                except AddressRefused as exc:
                    return self._outcome(began, error=str(exc))
                except AnswerTooLargeError as exc:
                    return self._outcome(
                        began,
                        error=f"agent endpoint {name} {exc} (the most the operator reads "
                        f"of an answer: {exc.limit // 1024} KiB); not asked again",
                    )
                verdict = protocol.classify(status)
                if verdict is protocol.Answer.DONE:
                    result = protocol.result_of(answer)
                    if result is None:
                        return self._outcome(
                            began,
                            error=f"agent endpoint {name} answered 200 without a JSON "
                            '{"result": {...}}',
                        )
                    return self._outcome(began, result=result)
                if verdict is protocol.Answer.FAILED:
                    assert status is not None
                    message = protocol.error_text(status, answer)
                    return self._outcome(
                        began, error=f"agent endpoint {name} refused ({status}): {message}"
                    )
                if status is not None:
                    last = "202 accepted" if status == 202 else f"{status}"
                logger.info(
                    "%s/%s step %s: %s of key %s: %s; asking again",
                    context.namespace,
                    context.plan,
                    step.name,
                    operation,
                    key[:12],
                    last,
                )
            await self._sleep(min(next(pauses), max(deadline - self._monotonic(), 0)))

    def _outcome(
        self, began: float, *, result: Mapping[str, Any] | None = None, error: str | None = None
    ) -> Outcome:
        duration = int((self._monotonic() - began) * 1000)
        if error is not None:
            return Outcome(ok=False, error=error, duration_ms=duration)
        return Outcome(ok=True, result=dict(result or {}), duration_ms=duration)
