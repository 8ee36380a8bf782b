"""One request to an agent: a POST only to addresses the address policy allows, its answer
read within ``MAX_ANSWER_BYTES``.

Before anything is sent, the URL's host is resolved (the event loop's getaddrinfo) and
every address judged by ``core.addresses.Policy`` (link-local, metadata, loopback unless
allowed, ``--deny-cidr``, ...); the connection goes only to the addresses judged, so a
DNS answer that changes between the check and the connect is not followed. A refused
address is ``AddressRefused``, naming the endpoint, the host, the address and its class.
"""

from __future__ import annotations

import functools
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping

import aiohttp
import aiohttp.abc
import yarl

from coordinator.core import addresses
from coordinator.core import webhook as protocol
from coordinator.executors.endpoints import Target


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

    def explained(self) -> str:
        """The message with the limit in KiB, as a step's error or a notification's log says it."""
        return f"{self} (the most the operator reads of an answer: {self.limit // 1024} KiB)"


Post = Callable[[Target, bytes, Mapping[str, str], float], Awaitable[tuple[int, bytes]]]
"""Send one request: (target, body, headers, timeout) -> (status, body); NoAnswerError,
AddressRefused, AnswerTooLargeError."""


async def signed(
    post: Post, target: Target, body: bytes, *, timestamp: int, seconds: float, purpose: str
) -> tuple[int, bytes]:
    """`post` `body` to `target` signed with its key for `purpose` (``core.webhook``), within
    `seconds` or the endpoint's own timeout, whichever is shorter."""
    headers = protocol.headers(target.key, timestamp, body, purpose=purpose)
    return await post(target, body, headers, min(target.timeout_seconds, seconds))


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
