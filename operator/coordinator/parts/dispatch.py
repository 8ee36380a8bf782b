"""Store dispatch: the one place a change of the Store is dispatched, in one pass.

Where each thing goes: what an event source (the list/watch, ``k8s.informer``, or any
other calling the same `deliver`) delivers goes into the Store (`Store.apply`, with its
origin), whose answer — the change, or None — comes back as a return value; `changed`
then makes it queue keys (the reconciler's one `enqueue`), plan starts
(``parts.starts``) and daemons (``parts.daemons``), here, nowhere else. The deletions a
fresh listing finds come the same way (`unlisted`).

The workers run here too: each takes a group from the queue and hands it to
`Reconciler.work`, whose `Result` brings back the changes its own writes made in the
Store (dispatched like any other) and the plans to start (started here), then tells
the queue it is `done`. The runner's and daemons' own writes wait in the
``coordinator.outbox``, which a task of this part empties through `changed`. The Store
and the reconciler call nobody up here.

The reconciler acts once every kind is listed, and on taking the lead everything is
looked at afresh (`resync`)."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from coordinator import metrics
from coordinator import outbox as outbox_
from coordinator import reconciler as reconciler_
from coordinator import store as store_
from coordinator.api.common import ENDPOINTS, PLANS, RECOMMENDATIONS
from coordinator.core.origin import Origin
from coordinator.parts import CLEANUP_SECONDS, Background
from coordinator.parts.daemons import STARTED, Daemons
from coordinator.parts.starts import Starts

logger = logging.getLogger(__name__)

GONE: Final = 4096
"""Deletions remembered (uids): a listing slower than the watch cannot bring one back."""


class Dispatch:
    """From the event sources, the Store and the reconcile's results to the work queue
    and the plans; runs the reconciler's workers."""

    name = "reconciler"
    stop_seconds = CLEANUP_SECONDS

    def __init__(
        self,
        *,
        store: store_.Store,
        outbox: outbox_.Outbox,
        reconciler: reconciler_.Reconciler,
        daemons: Daemons,
        starts: Starts,
        leading: asyncio.Event,
        listed: asyncio.Event,
        background: Background,
    ) -> None:
        self._store = store
        self._outbox = outbox
        self._reconciler = reconciler
        self._daemons = daemons
        self._starts = starts
        self._leading = leading
        self._listed = listed
        self._background = background
        self._tasks: list[asyncio.Task[None]] = []
        self._gone: collections.OrderedDict[str, None] = collections.OrderedDict()
        """The uids of the latest deletions seen: never taken in again."""

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._act_once_listed(), name="reconciler"),
            asyncio.create_task(self._take_outbox(), name="outbox"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def deliver(
        self, plural: str, raw: Mapping[str, Any], *, deleted: bool, origin: Origin
    ) -> None:
        """An event source's delivery of an object (listed or watched): into the Store;
        the change it answers, if any, is dispatched (`changed`)."""
        uid = (raw.get("metadata") or {}).get("uid")
        if uid and deleted:
            self._gone[uid] = None
            if len(self._gone) > GONE:
                self._gone.popitem(last=False)
        elif uid in self._gone:
            return  # a listing read before its deletion was delivered (``parts.shards``)
        change = self._store.apply(plural, raw, deleted=deleted, origin=origin)
        if change is not None:
            self.changed(change)

    def unlisted(
        self, plural: str, namespaces: Callable[[str], bool], seen: set[tuple[str, str]]
    ) -> None:
        """A fresh listing of `plural` ended (``k8s.informer``): what it did not show is
        gone from the Store (`Store.resync`), and each deletion dispatched."""
        for change in self._store.resync(plural, namespaces, seen):
            self.changed(change)

    def changed(self, change: store_.Change) -> None:
        """A change in the Store: the groups to reconcile, the plans to start, wake, hold
        or let go."""
        self._reconciler.queue.enqueue(change, self._store)
        plural, record, deleted = change.plural, change.record, change.deleted
        if plural == PLANS:
            self._daemons.supervise(record, deleted)
        if not self._listed.is_set():  # see _act_once_listed
            return
        key = record.key
        if plural == RECOMMENDATIONS:
            if record.phase == "Succeeded" and not deleted:  # plans may wait for it
                self._background.spawn(self._starts.start_waiting_plans(key))
        elif plural == ENDPOINTS:
            if not deleted:  # registered or changed: the plans that waited for it may start
                self._background.spawn(self._starts.start_pending_plans(record.namespace))
        elif plural == PLANS:
            self._daemons.wake(key)
            if not deleted and record.phase not in STARTED and self._leading.is_set():
                self._background.spawn(self._starts.start_recorded(key))

    async def _act_once_listed(self) -> None:
        """Reconcile once every kind is listed (a decision from half a listing would
        create approvals that exist, or say a plan waits for a dependency not yet seen):
        the groups queued meanwhile, and the pending plans, then every change."""
        began = time.monotonic()
        await self._listed.wait()
        logger.info(
            "listed %d objects in %.1f s; acting", len(self._store), time.monotonic() - began
        )
        if self._leading.is_set():  # beside the reconciles, not before them
            self._background.spawn(self._starts.start_pending())
        workers = [
            asyncio.create_task(self._work(), name=f"reconciler-{i}")
            for i in range(self._reconciler.workers)
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()
            self._reconciler.queue.close()

    async def _work(self) -> None:
        """One worker: a group from the queue, its reconcile (`Reconciler.work`), then what
        the reconcile gave back — its writes' changes dispatched, its plans started
        (before their watch event does the same: an approved change does not wait) —
        and the queue told it is done (after the changes: its own writes to the group do
        not run it again)."""
        queue = self._reconciler.queue
        while True:
            key = await queue.get()
            result = reconciler_.Result()
            try:
                result = await self._reconciler.work(key)
                for change in result.changes:
                    self.changed(change)
                for plan in result.to_start:
                    await self._starts.start_plan(plan)
            except Exception:
                metrics.RECONCILE_ERRORS.inc()
                delay = queue.retry(key)
                logger.exception("starting the plans of %s/%s failed; again in %.1fs", *key, delay)
            finally:
                queue.done(key, result.writes)

    async def _take_outbox(self) -> None:
        """The runner's and daemons' own writes (``coordinator.outbox``), dispatched."""
        while True:
            self.changed(await self._outbox.get())

    async def resync(self) -> None:
        """Taking over: every group is reconciled, every pending plan considered, every
        ended plan's finalizer taken off."""
        await self._listed.wait()
        for record in self._store.plans():
            self._daemons.supervise(record, False)
        for key in self._store.groups():
            self._reconciler.queue.add(key, backlog=True)
        await self._starts.start_pending()
