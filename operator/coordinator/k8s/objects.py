"""Any object by apiVersion and kind: what the kubernetes executor reads and writes.

Built on the kubernetes client's ``DynamicClient``: the kind is looked up in the API
server's discovery (cached in memory and in a file of this process's own, looked up again
when a kind is not found, e.g. a CRD installed since). Every call runs in the client's
thread pool (``Client._call``), so the event loop never waits on the network. Errors are
``ApiException`` (the dynamic client's own subclasses of it), or ``UnknownKindError``.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import kubernetes
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from coordinator.core.steps import Target

FIELD_MANAGER: Final = "optiinfra-coordinator"
MERGE_PATCH: Final = "application/merge-patch+json"
STRATEGIC_PATCH: Final = "application/strategic-merge-patch+json"

Call = Callable[..., Awaitable[Any]]


class UnknownKindError(ValueError):
    """The API server serves no such kind (or not namespaced, where a namespace is needed)."""


def describe(exc: BaseException) -> str:
    """What the API server said: the message of its Status (which names the user, verb and
    resource of a 403), else the HTTP reason."""
    if isinstance(exc, kubernetes.client.ApiException):
        try:
            message = json.loads(exc.body or "{}").get("message")
        except (ValueError, AttributeError):
            message = None
        return str(message or f"{exc.status} {exc.reason}")
    return str(exc)


class Objects:
    def __init__(self, api: kubernetes.client.ApiClient, call: Call) -> None:
        self._api = api
        self._call = call
        self._dynamic: Any = None  # a DynamicClient (untyped), made on first use
        self._lock = threading.Lock()
        self._cache_dir = tempfile.mkdtemp(prefix="optiinfra-discovery-")

    def close(self) -> None:
        cache = os.path.join(self._cache_dir, "discovery.json")
        if os.path.exists(cache):
            os.remove(cache)
        os.rmdir(self._cache_dir)

    # Runs in the thread pool.
    def _resource(self, target: Target) -> Any:
        with self._lock:  # discovery mutates its cache: one lookup at a time
            if self._dynamic is None:
                cache = os.path.join(self._cache_dir, "discovery.json")
                self._dynamic = DynamicClient(  # type: ignore[no-untyped-call]
                    self._api, cache_file=cache
                )
            try:
                resource = self._dynamic.resources.get(
                    api_version=target.api_version, kind=target.kind
                )
            except ResourceNotFoundError:
                raise UnknownKindError(
                    f"the API server serves no kind {target.kind} in {target.api_version}"
                ) from None
        if not resource.namespaced:
            raise UnknownKindError(
                f"{target.kind} ({target.api_version}) is cluster-scoped: the kubernetes "
                "executor acts only in the recommendation's namespace"
            )
        return resource

    def _client(self) -> Any:
        assert self._dynamic is not None
        return self._dynamic

    async def get(self, target: Target, namespace: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""

        def get() -> dict[str, Any] | None:
            resource = self._resource(target)
            try:
                found = self._client().get(resource, name=target.name, namespace=namespace)
            except kubernetes.client.ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            return dict(found.to_dict())

        result: dict[str, Any] | None = await self._call(get)
        return result

    async def patch(
        self,
        target: Target,
        namespace: str,
        body: Mapping[str, Any],
        *,
        strategic: bool = False,
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        """A merge (or strategic-merge) patch; with `resource_version`, only if the object is
        still at that version (409 Conflict otherwise)."""
        patch = dict(body)
        if resource_version is not None:
            metadata = dict(patch.get("metadata") or {})
            metadata["resourceVersion"] = resource_version
            patch["metadata"] = metadata

        def write() -> dict[str, Any]:
            resource = self._resource(target)
            done = self._client().patch(
                resource,
                body=patch,
                name=target.name,
                namespace=namespace,
                content_type=STRATEGIC_PATCH if strategic else MERGE_PATCH,
                field_manager=FIELD_MANAGER,
            )
            return dict(done.to_dict())

        result: dict[str, Any] = await self._call(write)
        return result

    async def apply(self, manifest: Mapping[str, Any], namespace: str) -> dict[str, Any]:
        """Server-side apply of `manifest` in `namespace`, as field manager
        optiinfra-coordinator, never forcing conflicts."""
        target = Target(manifest["apiVersion"], manifest["kind"], manifest["metadata"]["name"])

        def write() -> dict[str, Any]:
            resource = self._resource(target)
            done = self._client().server_side_apply(
                resource,
                body=dict(manifest),
                name=target.name,
                namespace=namespace,
                field_manager=FIELD_MANAGER,
                force_conflicts=False,
            )
            return dict(done.to_dict())

        result: dict[str, Any] = await self._call(write)
        return result

    async def delete(self, target: Target, namespace: str, *, uid: str) -> bool:
        """Delete the object if it is still the one with `uid`: True when it was deleted,
        False when it is gone already or another object now has its name."""
        body = {"preconditions": {"uid": uid}}

        def delete() -> bool:
            resource = self._resource(target)
            try:
                self._client().delete(resource, name=target.name, namespace=namespace, body=body)
            except kubernetes.client.ApiException as exc:
                if exc.status in (404, 409):
                    return False
                raise
            return True

        result: bool = await self._call(delete)
        return result

    async def get_scale(self, target: Target, namespace: str) -> dict[str, Any]:
        """The object's /scale subresource (autoscaling/v1 Scale)."""

        def get() -> dict[str, Any]:
            scale = self._resource(target).subresources.get("scale")
            if scale is None:
                raise UnknownKindError(f"{target.kind} has no /scale subresource")
            found = self._client().get(scale, name=target.name, namespace=namespace)
            return dict(found.to_dict())

        result: dict[str, Any] = await self._call(get)
        return result

    async def patch_scale(
        self, target: Target, namespace: str, replicas: int, *, resource_version: str | None
    ) -> dict[str, Any]:
        """Set the replicas through /scale (only at `resource_version`, when given)."""
        body: dict[str, Any] = {"spec": {"replicas": replicas}}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}

        def write() -> dict[str, Any]:
            scale = self._resource(target).subresources.get("scale")
            if scale is None:
                raise UnknownKindError(f"{target.kind} has no /scale subresource")
            done = self._client().patch(
                scale,
                body=body,
                name=target.name,
                namespace=namespace,
                content_type=MERGE_PATCH,
                field_manager=FIELD_MANAGER,
            )
            return dict(done.to_dict())

        result: dict[str, Any] = await self._call(write)
        return result
