"""Leadership: whether this replica may act, following the Lease (``k8s.lease``).

Two parts: `Lease` runs the elector and releases the Lease at the stop (started early,
so it is released only after the plans' daemons left their steps); `Leadership` sets
`leading` while the Lease is held (always, without election) and, on taking it, has
everything looked at afresh; its stop clears `leading` first of all, so nothing acts
while the rest stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from coordinator.k8s import lease as lease_
from coordinator.parts import CLEANUP_SECONDS

logger = logging.getLogger(__name__)


class Lease:
    """Runs the elector (when there is one); releases the Lease at the stop."""

    name = "lease"
    stop_seconds = CLEANUP_SECONDS + 1

    def __init__(self, elector: lease_.Elector | None) -> None:
        self.elector = elector
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.elector is not None:
            self._task = asyncio.create_task(self.elector.run(), name="lease")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.elector is None:
            return
        try:  # within CLEANUP_SECONDS whatever the API server answers
            await asyncio.wait_for(asyncio.to_thread(self.elector.release), CLEANUP_SECONDS)
        except Exception as exc:  # never block the exit
            logger.warning("could not release the lease at exit: %s", exc or type(exc).__name__)


class Leadership:
    """`leading` while this replica may act, `following` while it may not."""

    name = "leadership"
    stop_seconds = CLEANUP_SECONDS

    def __init__(
        self,
        elector: lease_.Elector | None,
        *,
        leading: asyncio.Event,
        following: asyncio.Event,
        taken: Callable[[], Awaitable[None]],
    ) -> None:
        self.elector = elector
        self.leading = leading
        """Set while this replica may act: it holds the Lease (always, without election)."""
        self.following = following
        """Set while it may not: the complement of `leading`, to wait for a loss."""
        self._taken = taken
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.elector is None:
            self.lead(True)
        else:
            self.lead(False)
            self._task = asyncio.create_task(self._follow(), name="leadership")

    async def stop(self) -> None:
        """Stop acting (the plans' daemons see `following` and leave their steps)."""
        self.lead(False)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def lead(self, leading: bool) -> None:
        (self.leading if leading else self.following).set()
        (self.following if leading else self.leading).clear()

    async def _follow(self) -> None:
        """Act while the Lease is held; on taking it, look at everything afresh."""
        assert self.elector is not None
        while True:
            await self.elector.changed.wait()
            self.elector.changed.clear()
            leading = self.elector.leading
            if leading == self.leading.is_set():
                continue
            self.lead(leading)
            if leading:
                await self._taken()
