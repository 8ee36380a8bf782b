"""The one fake API server of the narrow shell unit tests (the Store, the work queue, the
reconciler's actions, the plan runner), and a fake Event recorder.

The fake keeps objects by (plural, namespace, name), bumps a resourceVersion on every
write, merges status patches (honouring the resourceVersion precondition), and honours
uid preconditions on delete. Every write is recorded, so a test can say exactly what was
written; every GET is counted; `failures` are raised by the next status writes.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import AsyncIterator, Mapping
from typing import Any

from coordinator.api.common import PLANS
from coordinator.api.plan import ExecutionPlan
from coordinator.k8s import client as client_
from coordinator.k8s import events as events_

Key = tuple[str, str, str]
"""(plural, namespace, name)."""


class FakeApi:
    """Just enough of an API server for the reconciler and the plan runner."""

    def __init__(self) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.writes: list[tuple[str, str, str, str]] = []  # (verb, plural, name, what)
        self.gets: list[tuple[str, str]] = []  # (plural, name)
        self.failures: list[BaseException] = []
        self.conflict_on_create: set[tuple[str, str]] = set()
        self._rv = itertools.count(100)
        self._uid = itertools.count(1)

    def bump(self, key: Key) -> None:
        """Someone else wrote the object: a new resourceVersion."""
        self.objects[key]["metadata"]["resourceVersion"] = str(next(self._rv))

    def put(self, plural: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Store `body` as the API server would have it (uid, generation, creation time)."""
        obj = copy.deepcopy(dict(body))
        meta = obj["metadata"]
        meta.setdefault("uid", f"uid-{next(self._uid)}")
        meta.setdefault("generation", 1)
        meta.setdefault("creationTimestamp", "2026-01-02T03:00:00Z")
        key = (plural, meta["namespace"], meta["name"])
        self.objects[key] = obj
        self.bump(key)
        return copy.deepcopy(obj)

    def plan(self, namespace: str, name: str) -> ExecutionPlan:
        """The ExecutionPlan as the fake holds it now."""
        return ExecutionPlan.model_validate(copy.deepcopy(self.objects[(PLANS, namespace, name)]))

    async def create(self, plural: str, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        if (plural, name) in self.conflict_on_create or (plural, namespace, name) in self.objects:
            self.conflict_on_create.discard((plural, name))
            raise client_.ApiException(status=409, reason="Conflict")
        self.writes.append(("create", plural, name, ""))
        return self.put(plural, {**body, "metadata": {**body["metadata"], "namespace": namespace}})

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.gets.append((plural, name))
        found = self.objects.get((plural, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    async def list(self, plural: str, namespace: str) -> list[dict[str, Any]]:
        self.gets.append((plural, ""))
        return [
            copy.deepcopy(obj)
            for (kind, ns, _), obj in sorted(self.objects.items())
            if (kind, ns) == (plural, namespace)
        ]

    async def pages(
        self, plural: str, namespace: str, *, limit: int = 500
    ) -> AsyncIterator[client_.Page]:
        found = await self.list(plural, namespace)
        for start in range(0, len(found), limit):
            yield found[start : start + limit]

    async def patch_status(
        self,
        plural: str,
        namespace: str,
        name: str,
        patch: Mapping[str, Any],
        *,
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        if self.failures:
            raise self.failures.pop(0)
        obj = self.objects.get((plural, namespace, name))
        if obj is None:
            raise client_.ApiException(status=404, reason="Not Found")
        if resource_version is not None and resource_version != obj["metadata"]["resourceVersion"]:
            raise client_.ApiException(status=409, reason="Conflict")
        status = dict(obj.get("status") or {})
        for key, value in patch.items():
            if value is None:
                status.pop(key, None)
            else:
                status[key] = copy.deepcopy(value)
        obj["status"] = status
        self.bump((plural, namespace, name))
        self.writes.append(("status", plural, name, ",".join(sorted(patch))))
        return copy.deepcopy(obj)

    async def delete(self, plural: str, namespace: str, name: str, *, uid: str | None) -> None:
        obj = self.objects.get((plural, namespace, name))
        if obj is not None and (uid is None or obj["metadata"]["uid"] == uid):
            del self.objects[(plural, namespace, name)]
            self.writes.append(("delete", plural, name, ""))


class FakeRecorder:
    """Records the Events the shell would send: (reason, key)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    @property
    def reasons(self) -> list[str]:
        return [reason for reason, _ in self.events]

    def record(self, ref: events_.ObjectRef, *, reason: str, key: str = "", **_: Any) -> None:
        self.events.append((reason, key))
