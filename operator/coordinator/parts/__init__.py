"""The parts of the running operator: each starts, runs and stops one thing.

A part is a small object with ``async start()`` and ``async stop()`` (as
controller-runtime's manager runs its Runnables): ``start`` returns once the part is in
place (a long-running part runs as its own task), ``stop`` lets it go within its
``stop_seconds``. ``coordinator.app.Operator`` builds the parts, starts them in order
and, on the one stop event (``parts.signals``), stops them in reverse order. Each
module of this package is one part; none of them knows of the others' order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

CLEANUP_SECONDS: Final = 3.0
"""The longest a part's clean-up at exit waits for the API server (webhooks, Lease)."""


class Part(Protocol):
    """One thing the operator starts and stops."""

    name: str
    stop_seconds: float
    """The bound of `stop`: the Operator moves on to the next part after it."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Task:
    """A part that is one coroutine run as a task: started, then cancelled at the stop
    (and `close` called, if given: what the coroutine holds outside the loop)."""

    stop_seconds = CLEANUP_SECONDS

    def __init__(
        self,
        name: str,
        run: Callable[[], Awaitable[None]],
        *,
        close: Callable[[], object] | None = None,
    ) -> None:
        self.name = name
        self._run = run
        self._close = close
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())
        self._task.set_name(self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._close is not None:
            self._close()


class Calls:
    """A part made of an object's own start and stop calls (sync or async)."""

    stop_seconds = CLEANUP_SECONDS

    def __init__(
        self,
        name: str,
        *,
        start: Callable[[], object] | None = None,
        stop: Callable[[], object] | None = None,
    ) -> None:
        self.name = name
        self._start = start
        self._stop = stop

    async def start(self) -> None:
        await _call(self._start)

    async def stop(self) -> None:
        await _call(self._stop)


async def _call(call: Callable[[], object] | None) -> None:
    if call is None:
        return
    result = call()
    if isinstance(result, Awaitable):
        await result


class Background:
    """Tasks started and not waited for (plan starts, finalizers): kept until done, a
    failure logged."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._logger.error("plan start failed", exc_info=task.exception())


async def first(*waits: Any) -> bool:
    """Wait until the first of `waits` is done; whether it was the first one given. The
    waits given as coroutines are cancelled; futures given are left running."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait, task in zip(waits, tasks, strict=True):
            if task is not wait and not task.done():
                task.cancel()
    return tasks[0] in done
