"""Notifications of ApprovalPolicies: a signed POST to an AgentEndpoint, never in the way.

The body is ``core.policy.notification`` (with a Slack-compatible ``text`` and an
``eventId`` that is the same for every retry: receivers de-duplicate by it), signed
with the endpoint's key as a step is (``X-Optiinfra-Timestamp``,
``X-Optiinfra-Signature``: HMAC-SHA256) but for its own purpose: the signed bytes are
``"notify.<timestamp>.<body>"`` (a step's are ``"<timestamp>.<body>"``), so a captured
notification can never be replayed to an agent as a step request. ``Notifier.send`` only
puts the notification on a bounded queue and returns: a decision or a plan never waits
for a receiver. A worker sends each one, trying at most ``ATTEMPTS`` times (0.5 s, then
1 s apart: ``api.defaults.AGENT_RETRY``) on no answer, a 5xx or an endpoint that cannot
be read; any answer below 300 counts as delivered; a 4xx, an address the operator may not call
(``executors.post.AddressRefused``) and an answer longer than ``MAX_ANSWER_BYTES``
(64 KiB: the rest is not read) fail at once. Every outcome is counted in
``optiinfra_notifications_total{event, outcome}`` (sent, failed, dropped: the queue was
full).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

from coordinator import metrics
from coordinator.api import defaults
from coordinator.core import webhook as protocol
from coordinator.executors import endpoints as endpoints_
from coordinator.executors import post as post_

logger = logging.getLogger(__name__)

ATTEMPTS: Final = 3
QUEUE_SIZE: Final = 1000
REQUEST_TIMEOUT_SECONDS: Final = 10.0


@dataclasses.dataclass(frozen=True, slots=True)
class Notification:
    namespace: str
    endpoint: str
    event: str
    body: bytes


class Notifier:
    def __init__(
        self,
        resolver: endpoints_.Resolver,
        *,
        post: post_.Post = post_.aiohttp_post,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        workers: int = 2,
    ) -> None:
        self._resolver = resolver
        self._post = post
        self._sleep = sleep
        self._clock = clock
        self._workers = workers
        self._queue: asyncio.Queue[Notification] = asyncio.Queue(QUEUE_SIZE)
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._work(), name=f"notify-{i}") for i in range(self._workers)
            ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def send(self, namespace: str, endpoints: list[str], event: str, body: bytes) -> None:
        """Queue `body` for each endpoint; never waits (a full queue drops and counts)."""
        for endpoint in endpoints:
            try:
                self._queue.put_nowait(Notification(namespace, endpoint, event, body))
            except asyncio.QueueFull:
                metrics.NOTIFICATIONS.labels(event, "dropped").inc()
                logger.warning("notification %s to %s/%s dropped: queue full", event, namespace,
                               endpoint)  # fmt: skip

    async def _work(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                outcome = await self.deliver(item)
            except Exception as exc:  # a notification never stops the worker
                logger.warning("notification %s to %s failed: %s", item.event, item.endpoint, exc)
                outcome = "failed"
            metrics.NOTIFICATIONS.labels(item.event, outcome).inc()
            self._queue.task_done()

    async def deliver(self, item: Notification) -> str:
        """Send one notification, retried a bounded number of times: sent or failed."""
        last = ""
        for attempt in range(ATTEMPTS):
            if attempt:
                await self._sleep(defaults.AGENT_RETRY.delay(attempt - 1))
            try:
                target = await self._resolver.resolve(item.namespace, item.endpoint)
                status, _ = await post_.signed(
                    self._post,
                    target,
                    item.body,
                    timestamp=int(self._clock()),
                    seconds=REQUEST_TIMEOUT_SECONDS,
                    purpose=protocol.NOTIFY,
                )
            except (endpoints_.EndpointError, post_.NoAnswerError) as exc:
                last = str(exc)
                continue
            except post_.AddressRefused as exc:  # asking again reaches the same address
                last = str(exc)
                break
            except post_.AnswerTooLargeError as exc:
                last = exc.explained()
                break
            if status < 300:
                return "sent"
            last = f"answered {status}"
            if status < 500:
                break
        logger.warning(
            "notification %s to AgentEndpoint %s/%s not delivered: %s",
            item.event,
            item.namespace,
            item.endpoint,
            last,
        )
        return "failed"
