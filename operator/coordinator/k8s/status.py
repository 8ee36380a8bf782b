"""The one status writer, for every kind: diff, one merge patch, no-ops skipped.

The status to write is computed by the core (``observedGeneration`` included); the
writer turns old → new into one merge patch of the keys that changed, writes nothing
when none did, and returns the object the API server answered. The caller puts that
answer in the Store (the resourceVersion of the operator's own write is what it knows
from then on, and older watch events are ignored): the reconciler through its context
(``workqueue.Reconciling.written``), with the returned value; the runner, which writes
through a writer of its own, by the `written` it is built with (``coordinator.outbox``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from coordinator.k8s import client as client_

Written = Callable[[str, Mapping[str, Any]], object]
"""(plural, the object as written)."""


class StatusWriter:
    def __init__(self, client: client_.Client, written: Written = lambda *_: None) -> None:
        self.client = client
        self.written = written

    async def write(
        self,
        plural: str,
        namespace: str,
        name: str,
        old: Mapping[str, Any] | None,
        new: Mapping[str, Any],
        *,
        resource_version: str | None = None,
        missing_ok: bool = False,
    ) -> dict[str, Any] | None:
        """Write `new` over `old`; the object as written (also handed to `written`), or
        None when nothing changed (or it is gone and `missing_ok`). With
        `resource_version`, only if the object is still at that version (else the 409
        ApiException)."""
        patch = client_.status_patch(old, new)
        if patch is None:
            return None
        try:
            raw = await self.client.patch_status(
                plural, namespace, name, patch, resource_version=resource_version
            )
        except client_.ApiException as exc:
            if missing_ok and exc.status == 404:  # deleted meanwhile: nothing to record
                return None
            raise
        self.written(plural, raw)
        return raw

    async def create(
        self,
        plural: str,
        namespace: str,
        body: Mapping[str, Any],
        status: Mapping[str, Any] | None,
    ) -> list[dict[str, Any]]:
        """Create an object and write its first status (the status subresource ignores
        status in a create); the answers, in order (the create's, then the status
        write's): the last is the object as written."""
        answers = [await self.client.create(plural, namespace, body)]
        self.written(plural, answers[0])
        if status:
            name = body["metadata"]["name"]
            answers.append(await self.client.patch_status(plural, namespace, name, status))
            self.written(plural, answers[-1])
        return answers
