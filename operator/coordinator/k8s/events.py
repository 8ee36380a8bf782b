"""Kubernetes Events, posted in the background: a reconcile never waits for them.

Events are what `kubectl describe` shows under "Events". Posting is best effort:
a failed post is logged and dropped, never retried in a loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Final

from coordinator.k8s.client import ApiException, Client, namespace_gone

COMPONENT: Final = "optiinfra-coordinator"
QUEUE_LIMIT: Final = 10_000
YIELD_SECONDS: Final = 1.0
"""The longest an event waits for `Recorder.yield_to`."""

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class ObjectRef:
    """The object an event is about."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str | None

    @classmethod
    def of(cls, body: dict[str, Any]) -> ObjectRef:
        meta = body["metadata"]
        return cls(
            body["apiVersion"], body["kind"], meta["namespace"], meta["name"], meta.get("uid")
        )


class Recorder:
    """A queue of events and the task that posts them."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_LIMIT)
        self._task: asyncio.Task[None] | None = None
        self.yield_to: Callable[[], Awaitable[object]] | None = None
        """Awaited (up to YIELD_SECONDS) before each post: the writes that matter more."""

    def start(self) -> None:
        self._task = asyncio.create_task(self._post_forever(), name="event-poster")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def record(self, ref: ObjectRef, *, reason: str, message: str, type_: str = "Normal") -> None:
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{ref.name}.{uuid.uuid4().hex[:16]}", "namespace": ref.namespace},
            "involvedObject": {
                "apiVersion": ref.api_version,
                "kind": ref.kind,
                "namespace": ref.namespace,
                "name": ref.name,
                "uid": ref.uid,
            },
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": COMPONENT,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self._queue.put_nowait(body)
        except asyncio.QueueFull:
            logger.warning("event queue full; dropped %s on %s/%s", reason, ref.kind, ref.name)

    async def _post_forever(self) -> None:
        while True:
            body = await self._queue.get()
            if self.yield_to is not None:  # state first: an event can wait a moment
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.yield_to(), YIELD_SECONDS)
            try:
                await self._client.create_event(body["metadata"]["namespace"], body)
            except ApiException as exc:
                if not namespace_gone(exc):
                    logger.warning("could not post event %s: %s", body["reason"], exc.reason)
            except Exception as exc:  # best effort: an event is never worth a crash
                logger.warning("could not post event %s: %s", body["reason"], exc)
