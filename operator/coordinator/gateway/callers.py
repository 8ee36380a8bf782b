"""Who is calling the gateway: the bearer token of a request, and the API client and
identity of each token, in bounded caches kept under the token's hash (never the token)."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any, Final, TypeVar

from aiohttp import web

from coordinator.k8s import caller

T = TypeVar("T")

CLIENTS: Final = 256
"""API clients kept (one per token, least recently used dropped)."""
IDENTITIES: Final = 1024
"""Identities kept (one per token, least recently used dropped)."""
WHO_SECONDS: Final = 30.0


def _token(request: web.Request) -> str:
    """The request's bearer token (401 without one)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": "Authorization: Bearer <token> required"}),
            content_type="application/json",
        )
    return token.strip()


def _key(token: str) -> str:
    """What a token is cached under: its hash, never the token itself."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


class Lru(collections.OrderedDict[str, T]):
    """A mapping that keeps its `size` most recently used entries."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def use(self, key: str) -> T | None:
        if key not in self:
            return None
        self.move_to_end(key)
        return self[key]

    def keep(self, key: str, value: T) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


class Gateway:
    """What the handlers share: where the API server is, the default namespace, and
    bounded caches of API clients and identities per token (by its hash)."""

    def __init__(self, *, base: Any, namespace: str, settle_timeout: float) -> None:
        self.base = base
        self.namespace = namespace
        self.settle_timeout = settle_timeout
        self._clients: Lru[Any] = Lru(CLIENTS)
        self._who: Lru[tuple[float, str]] = Lru(IDENTITIES)
        self.anonymous = caller.client(base, token="")

    def client(self, request: web.Request) -> Any:
        token = _token(request)
        key = _key(token)
        api = self._clients.use(key) or caller.client(self.base, token)
        self._clients.keep(key, api)
        return api

    async def who(self, request: web.Request, api: Any) -> str:
        key = _key(_token(request))
        cached = self._who.use(key)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        user, _ = await call(caller.whoami, api)
        self._who.keep(key, (time.monotonic() + WHO_SECONDS, user))
        return user

    def namespace_of(self, request: web.Request) -> str:
        return request.query.get("namespace") or self.namespace


async def call(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`function` (a synchronous call to the API server) in a thread."""
    return await asyncio.to_thread(function, *args, **kwargs)


GATEWAY: Final = web.AppKey("gateway", Gateway)
