"""The one status writer, for every kind: diff, one merge patch, no-ops skipped.

The status to write is computed by the core (``observedGeneration`` included); the
writer turns old → new into one merge patch of the keys that changed, writes nothing
when none did, and hands the object the API server answered to `written` (the Store:
the resourceVersion of the operator's own write is what it knows from then on, and
older watch events are ignored).
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
        written: Written | None = None,
    ) -> dict[str, Any] | None:
        """Write `new` over `old`; the object as written, or None when nothing changed (or
        it is gone and `missing_ok`). With `resource_version`, only if the object is still
        at that version (else the 409 ApiException). `written`: where this write's answer
        goes, instead of the writer's own."""
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
        (written or self.written)(plural, raw)
        return raw

    async def create(
        self,
        plural: str,
        namespace: str,
        body: Mapping[str, Any],
        status: Mapping[str, Any] | None,
        *,
        written: Written | None = None,
    ) -> dict[str, Any]:
        """Create an object and write its first status (the status subresource ignores
        status in a create); the object as written. `written` as for `write`."""
        written = written or self.written
        raw = await self.client.create(plural, namespace, body)
        written(plural, raw)  # before the watch shows it: the create's own event is old
        if status:
            raw = await self.client.patch_status(
                plural, namespace, body["metadata"]["name"], status
            )
            written(plural, raw)
        return raw
