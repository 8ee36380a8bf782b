"""Kubernetes Events, posted in the background: a reconcile never waits for them.

Events are what `kubectl describe` shows under "Events". Each one is named after the
transition it reports (`event_name`): the same transition always gets the same name, so
posting it twice (a retry, a replay after a restart, two replicas) creates it once —
the second create is answered 409 AlreadyExists and counts as posted. Posting is best
effort: a failed post is logged and dropped, never retried in a loop; what a crash or a
failed post loses, a replay of the transitions (see ``coordinator.runner``) posts again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from coordinator.core import text
from coordinator.k8s.client import ApiException, Client, conflict, namespace_gone

COMPONENT: Final = "optiinfra-coordinator"
QUEUE_LIMIT: Final = 10_000
KNOWN_MEMORY: Final = 10_000
"""How many names of events queued or posted the recorder remembers, to skip them."""
NAME_LIMIT: Final = 253
HASH_CHARS: Final = 16
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


def event_name(object_name: str, uid: str | None, reason: str, key: str) -> str:
    """The name of the event that reports one transition of one object.

    ``<object name>.<16 hex digits of sha256(uid|reason|key)>``: `key` tells apart the
    transitions of the object with the same reason (a step's name and phase, a phase, the
    version of the object the transition was computed from...). The uid keeps a new
    object of the same name from inheriting the events of an old one. The object name is
    cut so that the whole is a DNS subdomain of at most 253 characters.
    """
    digest = hashlib.sha256(f"{uid or ''}|{reason}|{key}".encode()).hexdigest()[:HASH_CHARS]
    prefix = object_name[: NAME_LIMIT - HASH_CHARS - 1].rstrip(".-")
    return f"{prefix}.{digest}" if prefix else digest


_Pending = tuple[str, ObjectRef, str, str, str, str]
"""An event waiting to be posted: name, object, reason, message, type, time."""


def _body(pending: _Pending) -> dict[str, Any]:
    name, ref, reason, message, type_, now = pending
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": ref.namespace},
        "involvedObject": {
            "apiVersion": ref.api_version,
            "kind": ref.kind,
            "namespace": ref.namespace,
            "name": ref.name,
            "uid": ref.uid,
        },
        "reason": reason,
        "message": message,
        "type": type_,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": COMPONENT,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


class Recorder:
    """A queue of events and the task that posts them."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(QUEUE_LIMIT)
        self._task: asyncio.Task[None] | None = None
        self._known: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()
        """Events queued or posted (or found there) by this recorder, the newest last."""
        self.yield_to: Callable[[], Awaitable[object]] | None = None
        """Awaited (up to YIELD_SECONDS) before each post: the writes that matter more."""

    def start(self) -> None:
        self._task = asyncio.create_task(self._post_forever(), name="event-poster")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def record(
        self, ref: ObjectRef, *, reason: str, message: str, key: str, type_: str = "Normal"
    ) -> None:
        """Post (soon) the event of one transition; `key` names it (see `event_name`).

        An event this recorder already queued or posted (or found there) is skipped. The
        message is shown on terminals (``kubectl describe``, ``get events``): it is cleaned
        of control characters and escape sequences (``core.text``), one line.
        """
        name = event_name(ref.name, ref.uid, reason, key)
        if (ref.namespace, name) in self._known:
            return
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        # Queued compact (a tuple of strings), made into a body when posted: thousands may wait.
        pending = (name, ref, reason, text.clean(message)[:1024], type_, now)
        self._known[(ref.namespace, name)] = None
        if len(self._known) > KNOWN_MEMORY:
            self._known.popitem(last=False)
        try:
            self._queue.put_nowait(pending)
        except asyncio.QueueFull:
            self._known.pop((ref.namespace, name), None)
            logger.warning("event queue full; dropped %s on %s/%s", reason, ref.kind, ref.name)

    async def _post_forever(self) -> None:
        while True:
            body = _body(await self._queue.get())
            if self.yield_to is not None:  # state first: an event can wait a moment
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.yield_to(), YIELD_SECONDS)
            key = (body["metadata"]["namespace"], body["metadata"]["name"])
            try:
                await self._client.create_event(key[0], body)
            except ApiException as exc:
                if conflict(exc):  # AlreadyExists: posted before (a replay, another replica)
                    continue
                self._known.pop(key, None)  # a later replay may post it
                if not namespace_gone(exc):
                    logger.warning("could not post event %s: %s", body["reason"], exc.reason)
            except Exception as exc:  # best effort: an event is never worth a crash
                self._known.pop(key, None)
                logger.warning("could not post event %s: %s", body["reason"], exc)
