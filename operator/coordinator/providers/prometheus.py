"""The Prometheus provider: one instant query (``GET /api/v1/query``) -> one Reading.

A VerificationTemplate's ``spec.provider.prometheus`` says where (``address``), how to
trust it (``caBundle``: PEM, https only; the system's trust store without it), how long a
query may take (``timeoutSeconds``: the client's bound, and sent to Prometheus as the
query's ``timeout``) and, optionally, a bearer token: a key of a Secret of the template's
namespace (``secretRef``). The Secret is read as narrowly as an AgentEndpoint's: the
operator's ClusterRole reads no Secrets; the namespace's admin names it in the Role
``optiinfra-endpoint-secrets`` (``get``, ``resourceNames``; see
manifests/endpoint-secrets-role.yaml), and it is read at each query (a rotated token is
used at once).

The answer is judged as the webhook executor judges an agent's: the address first
(``core.addresses.Policy``: no link-local, metadata or, unless allowed, loopback; the
connection goes only to the addresses judged), redirects not followed, the body read up
to ``MAX_ANSWER_BYTES`` (64 KiB) and never inflated, its nesting bounded (``MAX_DEPTH``)
before it is parsed. The Reading, for ``core.verification.record``:

- a value: a vector of exactly one sample, or a scalar (``NaN`` stays NaN: the machine
  counts it as no data);
- no data: a vector of no sample (the series does not exist, or not yet);
- an error, naming what went wrong: no answer within the timeout, an HTTP error (with
  Prometheus's ``errorType`` and ``error``), a body too large, not JSON or nested too
  deeply, a vector of several samples (a verification query must say one number:
  aggregate it), a range vector or a string, the token's Secret unreadable. Never a
  success: an error counts towards ``consecutiveErrorLimit``.

An API server that cannot be reached while the Secret is read is not a measurement: that
error (``k8s.client.transient``) is raised, for the caller to try again.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import aiohttp
import yarl

from coordinator.api.verification import PrometheusProvider
from coordinator.core import addresses, text
from coordinator.core import webhook as protocol
from coordinator.core.verification import Reading
from coordinator.executors import endpoints, post
from coordinator.k8s.admission import deeper_than
from coordinator.k8s.client import ApiException, transient

MAX_ANSWER_BYTES: Final = protocol.MAX_ANSWER_BYTES
"""The most of an answer read (64 KiB, as of an agent's): an instant query's one number
needs far less; a larger answer is an error, never read further."""
MAX_DEPTH: Final = 16
"""How deeply an answer may nest (Prometheus's deepest is 5: data.result[].value[])."""
QUERY_PATH: Final = "/api/v1/query"

SecretReader = Callable[[str, str, str], Awaitable[bytes | None]]
"""(namespace, name, key) -> the key's decoded value, None when the Secret lacks it;
``ApiException`` 403/404 as ``k8s.client.Client.read_secret_key`` raises them."""


@dataclasses.dataclass(frozen=True)
class Request:
    """One query, resolved: where to send it, with which headers, trusting what."""

    name: str
    """What the messages call the server (the template and its address)."""
    url: str
    query: str
    headers: Mapping[str, str] = dataclasses.field(repr=False, default_factory=dict)
    ca_pem: str | None = None
    timeout_seconds: float = 10.0


Get = Callable[[Request, addresses.Policy], Awaitable[tuple[int, bytes]]]
"""Send one request -> (status, body); post.NoAnswerError, post.AddressRefused,
post.AnswerTooLargeError."""


async def aiohttp_get(request: Request, policy: addresses.Policy) -> tuple[int, bytes]:
    """One GET with aiohttp, only to addresses `policy` allows, redirects not followed,
    the answer read up to ``MAX_ANSWER_BYTES`` uncompressed (the webhook executor's rules,
    its helpers)."""
    target = endpoints.Target(name=request.name, url=request.url, key=b"", ca_pem=request.ca_pem)
    post.check_literal(target, policy)
    params = {"query": request.query, "timeout": f"{request.timeout_seconds:g}s"}
    try:
        connector = aiohttp.TCPConnector(
            ssl=post.ssl_context(target) or False,
            resolver=post.CheckingResolver(request.name, policy),
            use_dns_cache=False,
        )
        async with (
            aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=request.timeout_seconds),
                auto_decompress=False,
            ) as session,
            session.get(
                yarl.URL(request.url).with_query(params),
                headers={
                    "Accept-Encoding": "identity",
                    "Accept": "application/json",
                    **request.headers,
                },
                allow_redirects=False,
            ) as response,
        ):
            try:
                return response.status, await post.read_bounded(response, MAX_ANSWER_BYTES)
            except post.AnswerTooLargeError:
                response.close()
                raise
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        if isinstance(exc.__cause__, post.AddressRefused):
            raise exc.__cause__ from None
        raise post.NoAnswerError(f"{type(exc).__name__}: {exc}".rstrip(": ")) from exc


class Prometheus:
    """Asks the Prometheus servers of VerificationTemplates; reads tokens with `read_secret`."""

    def __init__(
        self,
        read_secret: SecretReader,
        *,
        policy: addresses.Policy = addresses.STRICT,
        get: Get = aiohttp_get,
    ) -> None:
        self._read_secret = read_secret
        self._policy = policy
        self._get = get

    async def query(
        self, provider: PrometheusProvider, query: str, *, namespace: str, template: str
    ) -> Reading:
        """The Reading of one instant query (filled in by ``core.verification``) against
        the Prometheus of VerificationTemplate `template` of `namespace`."""
        name = f"VerificationTemplate {namespace}/{template}: Prometheus {provider.address}"
        headers: dict[str, str] = {}
        if provider.secret_ref is not None:
            token = await self._token(provider, namespace=namespace, template=template)
            if isinstance(token, Reading):
                return token
            headers["Authorization"] = f"Bearer {token}"
        request = Request(
            name=name,
            url=provider.address.rstrip("/") + QUERY_PATH,
            query=query,
            headers=headers,
            ca_pem=provider.ca_bundle,
            timeout_seconds=float(provider.timeout_seconds),
        )
        try:
            status, body = await self._get(request, self._policy)
        except post.NoAnswerError as exc:
            timed_out = isinstance(exc.__cause__, TimeoutError)
            why = f"within {provider.timeout_seconds} s" if timed_out else f"({exc})"
            return Reading(error=f"{name}: no answer {why}")
        except post.AddressRefused as exc:
            return Reading(
                error=f"{name}: host {exc.host} ({exc.address}: {exc.why}): refused, the "
                "operator does not call such addresses (see coordinator run "
                "--allow-loopback-endpoints, --deny-cidr)"
            )
        except post.AnswerTooLargeError as exc:
            return Reading(
                error=f"{name} {exc} (the most the operator reads of an answer: "
                f"{exc.limit // 1024} KiB)"
            )
        return reading(status, body, name=name)

    async def _token(
        self, provider: PrometheusProvider, *, namespace: str, template: str
    ) -> str | Reading:
        ref = provider.secret_ref
        assert ref is not None
        what = (
            f"Secret {namespace}/{ref.name} (the Prometheus token of VerificationTemplate "
            f"{template})"
        )
        try:
            value = await self._read_secret(namespace, ref.name, ref.key)
        except ApiException as exc:
            if transient(exc):
                raise
            if exc.status == 403:
                return Reading(
                    error=f"the operator may not read {what}: add {ref.name} to the "
                    f"resourceNames of the Role {endpoints.SECRETS_ROLE} in namespace "
                    f"{namespace} (get on secrets, bound to the operator's ServiceAccount; "
                    "see manifests/endpoint-secrets-role.yaml)"
                )
            if exc.status == 404:
                return Reading(error=f"{what} does not exist")
            return Reading(error=f"reading {what}: {exc.status} {exc.reason}")
        token = (value or b"").decode("utf-8", errors="replace").strip()
        if not token:
            return Reading(error=f"{what} has no key {ref.key!r} (or it is empty)")
        if not token.isprintable() or " " in token:
            return Reading(
                error=f"{what}: key {ref.key!r} is not a bearer token (one line, no spaces)"
            )
        return token


def reading(status: int, body: bytes, *, name: str) -> Reading:
    """What an answer of ``/api/v1/query`` says, for the measurement machine."""
    if deeper_than(body, MAX_DEPTH):
        return Reading(
            error=f"{name} answered {status} with JSON nested deeper than {MAX_DEPTH} levels"
        )
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):
        answer = None
    if not isinstance(answer, Mapping):
        excerpt = text.clean(body[:200].decode("utf-8", errors="replace"))
        return Reading(error=f"{name} answered {status} without a JSON object: {excerpt!r}")
    if answer.get("status") != "success" or status != 200:
        error_type = text.clean(str(answer.get("errorType") or "error"))[:64]
        message = text.clean(str(answer.get("error") or "no message"))[:300]
        return Reading(error=f"{name} answered {status}: {error_type}: {message}")
    data = answer.get("data")
    if not isinstance(data, Mapping):
        return Reading(error=f"{name} answered without data")
    kind: Any = data.get("resultType")
    result: Any = data.get("result")
    if kind == "scalar":
        return _sample(result, name=name)
    if kind == "vector" and isinstance(result, list):
        if not result:
            return Reading()  # no data: never a success
        if len(result) > 1:
            return Reading(
                error=f"{name}: the query returned {len(result)} series, a verification "
                "query must return one (aggregate it: sum(...), max(...))"
            )
        sample = result[0]
        if not isinstance(sample, Mapping) or "value" not in sample:
            return Reading(error=f"{name}: the query's sample has no number (a histogram?)")
        return _sample(sample["value"], name=name)
    return Reading(
        error=f"{name}: the query returned a {text.clean(str(kind))[:32]}, not one number "
        "(an instant vector of one series, or a scalar)"
    )


def _sample(value: Any, *, name: str) -> Reading:
    """A [timestamp, "number"] pair as Prometheus writes it."""
    if isinstance(value, list) and len(value) == 2 and isinstance(value[1], str):
        try:
            number = float(value[1])
        except ValueError:
            pass
        else:
            return Reading(value=number)  # NaN stays NaN: no data to the machine
    return Reading(
        error=f'{name}: the sample is not [time, "number"]: {text.clean(str(value))[:100]}'
    )
