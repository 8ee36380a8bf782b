"""kopf's own watching of the coordinator's kinds, into the Store (``--watch=kopf``).

The alternative to ``k8s.informer``: kopf lists and watches (in chunks of
``informer.PAGE``, relisting after 410 Gone, in the namespaces of ``--namespace`` as it
reads them), and one ``@kopf.on.event`` handler per kind (``coordinator.handlers``)
hands each event to `KopfSource.take`, which delivers it to the same `informer.Sink` as
the informer (``Origin.LISTED`` or ``WATCHED``; a relist's end to `Sink.unlisted`). kopf has
no public "listed" hook, so at start one LIST per kind and scope counts the objects
(``limit=1``: the API server's ``remainingItemCount``), and ``core.listings`` tells when
each listing is over; `listed` is set once all are, as the informer's.

Only public kopf: the settings (`tune`); no indexes, no posting, and storages that keep
nothing: event handlers have no progress and compare no states, but kopf deep-copies each
object into a diff base and a progress essence per event all the same (a third of its
time per event, profiled).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final

import kopf

from coordinator.api.common import GROUP, VERSION
from coordinator.core import listings as listings_
from coordinator.core import namespaces as namespaces_
from coordinator.core.origin import Origin
from coordinator.k8s import informer as informer_
from coordinator.k8s.http import Http

logger = logging.getLogger(__name__)

IDLE_SECONDS: Final = 0.5
"""How long kopf keeps an object's worker (and the raw event it holds) after its last
event: kopf's default is 5 s, which holds every listed object's worker at start."""
STOP_SECONDS: Final = 3.0


def tune(settings: kopf.OperatorSettings) -> None:
    """kopf's settings for watching into the Store."""
    settings.queueing.idle_timeout = IDLE_SECONDS
    settings.watching.chunk_size = informer_.PAGE
    settings.watching.server_timeout = informer_.WATCH_SECONDS
    settings.watching.client_timeout = informer_.WATCH_SECONDS + 10
    settings.watching.connect_timeout = 10
    settings.posting.enabled = False
    settings.persistence.diffbase_storage = _NoDiffBase()
    settings.persistence.progress_storage = _NoProgress()


class _NoDiffBase(kopf.DiffBaseStorage):
    """No change-detecting handlers: no last-handled state to build, read or keep."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        pass


class _NoProgress(kopf.ProgressStorage):
    """Event handlers are not retried: no progress to read or write."""

    def fetch(self, *, key: kopf.HandlerId, body: kopf.Body) -> kopf.ProgressRecord | None:
        return None

    def store(
        self,
        *,
        key: kopf.HandlerId,
        record: kopf.ProgressRecord,
        body: kopf.Body,
        patch: kopf.Patch,
    ) -> None:
        pass

    def purge(self, *, key: kopf.HandlerId, body: kopf.Body, patch: kopf.Patch) -> None:
        pass

    def touch(self, *, body: kopf.Body, patch: kopf.Patch, value: str | None) -> None:
        pass

    def clear(self, *, essence: kopf.BodyEssence) -> kopf.BodyEssence:
        return essence


class KopfSource:
    """What kopf's event handlers deliver, into the Store; `listed` as the informer's."""

    name = "kopf source"
    stop_seconds = STOP_SECONDS

    def __init__(
        self,
        http: Http,
        *,
        plurals: Sequence[str],
        namespaces: Sequence[str],
        sink: informer_.Sink,
        listed: asyncio.Event,
    ) -> None:
        self._http = http
        self.plurals = tuple(plurals)
        self._namespaces = tuple(namespaces)
        self._wanted = namespaces_.selector(namespaces)
        self._sink = sink
        self._listings = listings_.Listings()
        self._counts: set[asyncio.Task[None]] = set()
        self.listed = listed
        """Set once every kind was listed and stored."""

    async def start(self) -> None:
        """Count what kopf is to list (kopf watches once the start-up handlers are done)."""
        scopes = await self._scopes()
        counted = await asyncio.gather(
            *(self._count(plural, scope) for plural in self.plurals for scope in scopes)
        )
        self._listings.wait_for(
            (plural, scope, count)
            for (plural, scope), count in zip(
                ((p, s) for p in self.plurals for s in scopes), counted, strict=True
            )
        )
        self._note()

    async def stop(self) -> None:
        for task in self._counts:
            task.cancel()
        await asyncio.gather(*self._counts, return_exceptions=True)

    def take(self, plural: str, kind: str | None, raw: Mapping[str, Any]) -> None:
        """One of kopf's events: `kind` None for a listed object."""
        meta = raw.get("metadata") or {}
        key = (meta.get("namespace") or "", meta.get("name") or "")
        scope = key[0] if self._namespaces else None
        origin = Origin.LISTED if kind is None else Origin.WATCHED
        self._sink.deliver(plural, raw, deleted=kind == "DELETED", origin=origin)
        if kind is None:
            step = self._listings.listed_object(plural, scope, key)
            if step.began:
                self._spawn(self._recount(plural, scope))
            ended = step.ended
        else:
            ended = self._listings.watched(plural, scope)
        self._end(ended)
        self._note()

    # ------------------------------------------------------------------------------------

    def _end(self, ended: listings_.Ended | None) -> None:
        if ended is None:
            return
        scope = ended.scope
        wanted = self._wanted if scope is None else (lambda ns: ns == scope)
        self._sink.unlisted(ended.plural, wanted, set(ended.keys))

    def _note(self) -> None:
        if self._listings.listed and not self.listed.is_set():
            self.listed.set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._counts.add(task)
        task.add_done_callback(self._counts.discard)

    async def _recount(self, plural: str, scope: listings_.Scope) -> None:
        try:
            count = await self._count(plural, scope)
        except Exception as exc:  # the watch event that follows ends the relist all the same
            logger.warning("could not count %s after a relist: %s", plural, exc)
            return
        self._end(self._listings.expect(plural, scope, count))

    async def _scopes(self) -> list[listings_.Scope]:
        """Where kopf watches: the cluster, the plain namespaces, or those matching."""
        if not self._namespaces:
            return [None]
        if not any(namespaces_.is_pattern(v) for v in self._namespaces):
            return list(self._namespaces)
        found = await self._http.request("GET", "/api/v1/namespaces")
        names = [(item.get("metadata") or {}).get("name") or "" for item in found["items"]]
        return [name for name in names if self._wanted(name)]

    async def _count(self, plural: str, scope: listings_.Scope) -> int:
        """The objects of `plural` in `scope`, from the list's remainingItemCount (pages
        of ``informer.PAGE`` counted when the server gives none)."""
        where = f"/namespaces/{scope}" if scope else ""
        path = f"/apis/{GROUP}/{VERSION}{where}/{plural}"
        count, params = 0, {"limit": "1"}
        while True:
            page = await self._http.request("GET", path, params=params)
            meta = page.get("metadata") or {}
            count += len(page.get("items") or ())
            remaining = meta.get("remainingItemCount")
            if remaining is not None:
                return count + int(remaining)
            if not meta.get("continue"):
                return count
            params = {"limit": str(informer_.PAGE), "continue": meta["continue"]}
