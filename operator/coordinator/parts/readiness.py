"""Readiness: GET /readyz answers whether this process acts on the cluster (200) or
why not (503): started, the initial listing of every kind in the Store, and acting — or
standing by while another replica holds the Lease and renews it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from coordinator.k8s import lease as lease_
from coordinator.parts import CLEANUP_SECONDS


def ready(
    *, started: bool, listed: bool, leading: bool, elector: lease_.Elector | None
) -> tuple[bool, str]:
    """Whether the operator is ready, and why (a standby serves the admission webhooks
    from the same watched view, and a rolling update needs the new replica ready before
    the old one goes)."""
    if not started or not listed:
        return False, "starting: listing and indexing the objects"
    if elector is None or leading:
        return True, "acting"
    lease = f"lease {elector.namespace}/{elector.name}"
    if elector.held():
        return True, f"standing by: {lease} is held by {elector.holder}"
    return False, f"nobody acts: {lease} is neither held by another replica nor taken yet"


class Readiness:
    """Serves GET /readyz on `host`:`port` (nothing when the port is 0)."""

    name = "readiness"
    stop_seconds = CLEANUP_SECONDS

    def __init__(self, host: str, port: int, ready: Callable[[], tuple[bool, str]]) -> None:
        self.host = host
        self.port = port
        self._ready = ready
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.port:
            self._task = asyncio.create_task(self._serve(), name="readiness")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _serve(self) -> None:
        from aiohttp import web  # noqa: PLC0415 - kopf's dependency, needed only here

        async def readyz(_: web.Request) -> web.Response:
            ready, why = self._ready()
            return web.Response(status=200 if ready else 503, text=why + "\n")

        app = web.Application()
        app.router.add_get("/readyz", readyz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()
