"""Store dispatch: what an event source (the list/watch) delivers goes into the Store
(`deliver`, with its origin), and each change in the Store becomes queue keys (through
the reconciler's one `enqueue`), plan starts (``parts.starts``) and daemons
(``parts.daemons``) here, nowhere else. The reconciler acts once every kind is
listed, and on taking the lead everything is looked at afresh (`resync`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from coordinator import reconciler as reconciler_
from coordinator import store as store_
from coordinator.api.common import ENDPOINTS, PLANS, RECOMMENDATIONS
from coordinator.core.origin import Origin
from coordinator.parts import CLEANUP_SECONDS, Background
from coordinator.parts.daemons import STARTED, Daemons
from coordinator.parts.starts import Starts

logger = logging.getLogger(__name__)


class Dispatch:
    """From the Store to the work queue and the plans; runs the reconciler."""

    name = "reconciler"
    stop_seconds = CLEANUP_SECONDS

    def __init__(
        self,
        *,
        store: store_.Store,
        reconciler: reconciler_.Reconciler,
        daemons: Daemons,
        starts: Starts,
        leading: asyncio.Event,
        listed: asyncio.Event,
        background: Background,
    ) -> None:
        self._store = store
        self._reconciler = reconciler
        self._daemons = daemons
        self._starts = starts
        self._leading = leading
        self._listed = listed
        self._background = background
        self._task: asyncio.Task[None] | None = None
        store.listeners.append(self.changed)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._act_once_listed(), name="reconciler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def deliver(
        self, plural: str, raw: Mapping[str, Any], *, deleted: bool, origin: Origin
    ) -> None:
        """An event source's delivery of an object (listed or watched): into the Store,
        whose change comes back to `changed` with the same origin."""
        self._store.apply(plural, raw, deleted=deleted, origin=origin)

    def changed(self, plural: str, record: store_.Record, deleted: bool, origin: Origin) -> None:
        """A change in the Store: the groups to reconcile, the plans to start, wake, hold
        or let go."""
        self._reconciler.enqueue(plural, record, deleted, origin)
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
        await self._reconciler.run(self._starts.start_plan)

    async def resync(self) -> None:
        """Taking over: every group is reconciled, every pending plan considered, every
        ended plan's finalizer taken off."""
        await self._listed.wait()
        for record in self._store.plans():
            self._daemons.supervise(record, False)
        for key in self._store.groups():
            self._reconciler.queue.add(key, backlog=True)
        await self._starts.start_pending()
