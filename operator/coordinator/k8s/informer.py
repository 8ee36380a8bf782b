"""A lean list/watch of the coordinator's kinds, into the Store.

kopf keeps, per watched object, a worker holding the object's raw watch event (and, for
indexed kinds, holds every worker until all are indexed at start-up): with 10 000
recommendations present that was the operator's peak memory. The kinds the Store needs
are listed and watched here instead, the way client-go's informers do it: a list in
pages of `PAGE`, then a watch from the list's resourceVersion, again from the last
version seen when a watch ends, a fresh listing after 410 Gone. One thread per kind and
namespace (the kubernetes client is synchronous) reads the stream, and after an error
lists or watches again after a pause (``api.defaults.API_RETRY``); each object is handed
to the event loop, where the sink's `deliver` (``parts.dispatch``: the Store) keeps what
it needs and drops the rest, told whether it was listed or watched (``core.origin``). A
page is handed over whole and the thread waits until it is taken, and at most
`IN_FLIGHT` watch events wait for the loop: a busy loop never piles up raw objects (the
API server waits on the connection instead).

`listed` is set once every kind has been listed once and put in the Store: the
operator's readiness (see ``coordinator.parts.readiness``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Protocol

import kubernetes

from coordinator.api import defaults
from coordinator.api.common import GROUP, VERSION
from coordinator.core import namespaces as namespaces_
from coordinator.core.origin import Origin

logger = logging.getLogger(__name__)

PAGE: Final = 500
IN_FLIGHT: Final = 64
"""Watch events handed to the event loop and not yet stored, at most: a watch thread
waits beyond this (the API server then waits on the connection), so a busy loop never
queues up raw objects."""
WATCH_SECONDS: Final = 300


class Sink(Protocol):
    """Where an event source hands each object (``parts.dispatch.Dispatch``, which puts
    it in the Store and dispatches the change: nothing comes back here)."""

    def deliver(
        self, plural: str, raw: Mapping[str, Any], *, deleted: bool, origin: Origin
    ) -> None: ...

    def unlisted(
        self, plural: str, namespaces: Callable[[str], bool], seen: set[tuple[str, str]]
    ) -> None:
        """A fresh listing of `plural` in `namespaces` ended: the keys it showed."""


class _GoneError(Exception):
    """410: the resourceVersion is too old to watch from; list again."""


def scopes(values: Sequence[str]) -> tuple[list[str | None], Callable[[str], bool]]:
    """What to watch for the operator's --namespace values: each namespace when all are
    plain names, else the whole cluster (None) filtered as kopf matches its patterns."""
    wanted = namespaces_.selector(values)
    if values and not any(namespaces_.is_pattern(v) for v in values):
        return list(values), wanted
    return [None], wanted


class Informer:
    def __init__(
        self,
        api: kubernetes.client.ApiClient,
        *,
        plurals: Sequence[str],
        namespaces: Sequence[str],
        sink: Sink,
        listed: asyncio.Event,
    ) -> None:
        # Watches hold their connections: a client of their own, beside the operator's pool.
        self._api = kubernetes.client.ApiClient(api.configuration)
        self._custom = kubernetes.client.CustomObjectsApi(self._api)
        self._plurals = tuple(plurals)
        self._scopes, self._wanted = scopes(namespaces)
        self._sink = sink
        self._stopping = threading.Event()
        self._in_flight = threading.BoundedSemaphore(IN_FLIGHT)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending = 0
        self.listed = listed
        """Set once every kind was listed and stored."""

    async def run(self) -> None:
        """List and watch until cancelled."""
        self._loop = asyncio.get_running_loop()
        self._pending = len(self._plurals) * len(self._scopes)
        threads = [
            threading.Thread(
                target=self._follow,
                args=(plural, namespace),
                name=f"watch-{plural}-{namespace or 'all'}",
                daemon=True,
            )
            for plural in self._plurals
            for namespace in self._scopes
        ]
        for thread in threads:
            thread.start()
        try:
            await asyncio.Event().wait()
        finally:
            self._stopping.set()

    # --- in the threads -----------------------------------------------------------------

    def _follow(self, plural: str, namespace: str | None) -> None:
        first = True
        failures = 0
        version: str | None = None
        while not self._stopping.is_set():
            try:
                if version is None:
                    version = self._list(plural, namespace)
                    if first:
                        first = False
                        self._call(self._one_listed)
                version = self._watch(plural, namespace, version)
                failures = 0
            except _GoneError:
                version = None
            except Exception as exc:  # the API server restarting, a network error...
                if self._stopping.is_set():
                    return
                delay = defaults.API_RETRY.delay(failures, rand=random.random())
                failures += 1
                logger.warning(
                    "watch of %s%s: %s; again in %.1fs",
                    plural,
                    f" in {namespace}" if namespace else "",
                    _describe(exc),
                    delay,
                )
                time.sleep(delay)

    def _request(self, plural: str, namespace: str | None, **kwargs: Any) -> Any:
        if namespace is None:
            return self._custom.list_cluster_custom_object(
                GROUP, VERSION, plural, _preload_content=False, **kwargs
            )
        return self._custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, _preload_content=False, **kwargs
        )

    def _list(self, plural: str, namespace: str | None) -> str:
        """List everything (in pages), store it; the list's resourceVersion."""
        token: str | None = None
        seen: set[tuple[str, str]] = set()
        while True:
            kwargs: dict[str, Any] = {"limit": PAGE}
            if token:
                kwargs["_continue"] = token
            response = self._request(plural, namespace, **kwargs)
            page = json.loads(response.data)
            items = [item for item in page.get("items") or () if self._keep(item)]
            for item in items:
                meta = item.get("metadata") or {}
                seen.add((meta.get("namespace") or "", meta.get("name") or ""))
            self._call(self._deliver_page, plural, items)
            del items
            meta = page.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                version = str(meta.get("resourceVersion") or "")
                wanted = self._wanted if namespace is None else (lambda ns: ns == namespace)
                self._call(self._sink.unlisted, plural, wanted, seen)
                return version

    def _watch(self, plural: str, namespace: str | None, version: str) -> str:
        """Watch from `version` until the server ends the watch; the last version seen."""
        response = self._request(
            plural,
            namespace,
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_SECONDS,
        )
        loop = self._loop
        assert loop is not None
        try:
            for line in kubernetes.watch.watch.iter_resp_lines(response):  # type: ignore[no-untyped-call]
                if self._stopping.is_set():
                    break
                event = json.loads(line)
                kind = event.get("type")
                obj = event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _GoneError
                    raise RuntimeError(f"watch error: {obj.get('message') or obj}")
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                if kind in ("ADDED", "MODIFIED", "DELETED") and self._keep(obj):
                    while not self._in_flight.acquire(timeout=1.0):
                        if self._stopping.is_set():
                            return version
                    loop.call_soon_threadsafe(self._take, plural, obj, kind == "DELETED")
                del event, obj
        finally:
            response.release_conn()
        return version

    def _keep(self, obj: Mapping[str, Any]) -> bool:
        return self._wanted((obj.get("metadata") or {}).get("namespace") or "")

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(*args)` on the event loop and wait for it (a page is taken before the
        next is read)."""
        assert self._loop is not None

        async def call() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result()

    # --- on the event loop --------------------------------------------------------------

    def _take(self, plural: str, obj: Mapping[str, Any], deleted: bool) -> None:
        try:
            self._sink.deliver(plural, obj, deleted=deleted, origin=Origin.WATCHED)
        finally:
            self._in_flight.release()

    def _deliver_page(self, plural: str, items: list[Mapping[str, Any]]) -> None:
        for item in items:
            self._sink.deliver(plural, item, deleted=False, origin=Origin.LISTED)

    def _one_listed(self) -> None:
        self._pending -= 1
        if self._pending <= 0:
            self.listed.set()

    def close(self) -> None:
        self._stopping.set()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, kubernetes.client.ApiException):
        return f"({exc.status}) {exc.reason}"
    return f"{type(exc).__name__}: {exc}"
