"""The operator's frequent calls to the API server, made from the event loop with aiohttp.

The generated kubernetes client is synchronous: each call went to a thread of a pool,
through the client's recursive sanitising of the body and urllib3, and back to the event
loop. For the calls made for every recommendation (create, get, status patch, delete, an
Event) that hand-off was most of the operator's CPU in the client (profiled at 20
recommendations/s). They are made here instead, with the client's own configuration: the
same server, CA, client certificate or bearer token (asked of the configuration at each
call, so a token the configuration refreshes — in-cluster, exec plugins — is refreshed
here too). Errors are the client's `ApiException` (status, reason, body), so callers
tell them apart as before. The other calls (list/watch, access reviews, the Lease, the
webhook configurations, the kubernetes executor's objects of any kind) stay on the
client.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Mapping
from typing import Any, Final

import aiohttp
import kubernetes

TIMEOUT: Final = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
"""A connection that cannot be made, or an answer that stops coming, is a transient
error. No limit on the whole call: under a burst a call may wait its turn for one of the
`connections` for a long time (aiohttp's `connect` and `total` would count that wait)."""


def ssl_context(configuration: kubernetes.client.Configuration) -> ssl.SSLContext:
    """The TLS settings of the client's configuration."""
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file or None)
    return context


class Http:
    """JSON requests to the API server of `configuration`, at most `connections` at once."""

    def __init__(self, configuration: kubernetes.client.Configuration, *, connections: int) -> None:
        self._configuration = configuration
        self._base = configuration.host.rstrip("/")
        self._ssl = ssl_context(configuration) if self._base.startswith("https") else None
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _open(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            connector = aiohttp.TCPConnector(
                limit=self._connections, ssl=self._ssl if self._ssl is not None else False
            )
            self._session = aiohttp.ClientSession(connector=connector, timeout=TIMEOUT)
            self._loop = loop
        return self._session

    def _headers(self, content_type: str) -> dict[str, str]:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        authorization = self._configuration.get_api_key_with_prefix(
            "BearerToken", alias="authorization"
        )  # as the client asks it (its auth_settings)
        if authorization:
            headers["Authorization"] = authorization
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """The JSON the API server answered; `ApiException` for a status of 400 or more."""
        session = self._open()
        data = json.dumps(body) if body is not None else None
        async with session.request(
            method,
            self._base + path,
            data=data,
            params=params,
            headers=self._headers(content_type),
        ) as response:
            text = await response.text()
            if response.status >= 400:
                exc = kubernetes.client.ApiException(status=response.status, reason=response.reason)
                exc.body = text
                exc.headers = response.headers
                raise exc
        answer: dict[str, Any] = json.loads(text) if text else {}
        return answer

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
