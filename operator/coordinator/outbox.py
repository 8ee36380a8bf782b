"""The changes the operator makes outside a reconcile, on their way to dispatch.

The runner's writes (through its ``k8s.status.StatusWriter``) and the plan daemons'
finalizer patches are put in the Store at once (`own_write`: what the runner reads
next is its own last write) and their changes wait here, in order, until dispatch
takes them (``parts.dispatch.Dispatch``, `get`): a plain call down into the Store and
a queue, never a call up into the parts. The reconcile's own writes do not come here:
they go back to dispatch with the reconcile's `Result` (``workqueue.Reconciling``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from coordinator import store as store_
from coordinator.core.origin import Origin


class Outbox:
    def __init__(self, store: store_.Store) -> None:
        self._store = store
        self._changes: asyncio.Queue[store_.Change] = asyncio.Queue()

    def own_write(self, plural: str, raw: Mapping[str, Any]) -> None:
        """The API server's answer to a write of the runner or a daemon."""
        self._put(self._store.own_write(plural, raw))

    def read(self, plural: str, raw: Mapping[str, Any]) -> None:
        """An object read again (after a conflict): a change like a watched one."""
        self._put(self._store.apply(plural, raw, origin=Origin.WATCHED))

    def _put(self, change: store_.Change | None) -> None:
        if change is not None:
            self._changes.put_nowait(change)

    async def get(self) -> store_.Change:
        """The next change, in the order they were made."""
        return await self._changes.get()
