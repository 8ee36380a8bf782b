"""API calls tried again through transient errors, until they succeed or the caller stops.

The plan runner's reads and writes go through `retrying`: a transient error (see
``client.transient``; 5xx, 429, a refused or reset connection, a timeout) and a 403 are
tried again after the pauses of ``api.defaults.API_RETRY`` (exponential, with jitter),
until the call succeeds, fails otherwise, runs out of attempts, or the caller stops
(`StoppedError`).
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

from coordinator.api import defaults
from coordinator.k8s import client as client_

logger = logging.getLogger(__name__)

T = TypeVar("T")

STOP_POLL_SECONDS: Final = 0.1
"""How often a pause checks whether the caller is stopping."""


class StoppedError(Exception):
    """The caller stopped while an API call was being retried."""


@dataclasses.dataclass(frozen=True, slots=True)
class Control:
    """How API calls are retried: until `stopped()`, or `attempts` tries; `sleep` waits."""

    stopped: Callable[[], bool]
    sleep: Callable[[float], Awaitable[None]]
    attempts: int | None = None


async def pause(
    seconds: float, stopped: Callable[[], bool], sleep: Callable[[float], Awaitable[None]]
) -> None:
    """Sleep `seconds`, or less when `stopped()` becomes true."""
    left = seconds
    while left > 0 and not stopped():
        await sleep(min(STOP_POLL_SECONDS, left))
        left -= STOP_POLL_SECONDS


async def retrying(call: Callable[[], Awaitable[T]], control: Control, what: str) -> T:
    """`call()`, tried again after transient API errors (see the module), until it
    succeeds, fails otherwise, or the caller stops (`StoppedError`).

    A 403 counts as transient here: the operator checked at start that it may read and
    write its plans (``k8s.access``), so a refusal now is an API server that restarted
    and has not loaded its RBAC roles yet (measured by ``make chaos``: for about a
    second, with no other sign), or a role being changed. The plan waits, logging why,
    rather than leave its state unrecorded or stall behind kopf's 60 s daemon backoff.
    """
    pauses = defaults.API_RETRY.delays(random.random)
    attempt = 0
    while True:
        try:
            return await call()
        except Exception as exc:
            attempt += 1
            forbidden = isinstance(exc, client_.ApiException) and exc.status == 403
            if not (client_.transient(exc) or forbidden):
                raise
            if control.attempts is not None and attempt >= control.attempts:
                raise
            if control.stopped():
                raise StoppedError from exc
            delay = next(pauses)
            logger.warning(
                "%s: %s (attempt %d); trying again in %.1fs", what, describe(exc), attempt, delay
            )
            await control.sleep(delay)
            if control.stopped():
                raise StoppedError from exc


def describe(exc: BaseException) -> str:
    """An API error as its status and reason; any other error as its type and message."""
    if isinstance(exc, client_.ApiException):
        return f"({exc.status}) {exc.reason}"
    return f"{type(exc).__name__}: {exc}"
