"""Async access to optiinfra.io objects, events, (``Client.objects``, see
``coordinator.k8s.objects``) any object the kubernetes executor acts on, and the Secret keys
the webhook executor signs with."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import functools
from collections.abc import Callable, Mapping
from typing import Any, Final

import kubernetes
import urllib3

from coordinator.api import common
from coordinator.k8s.objects import Objects

MERGE_PATCH: Final = "application/merge-patch+json"
FIELD_MANAGER: Final = "optiinfra-coordinator"

ApiException = kubernetes.client.ApiException


def namespace_gone(exc: ApiException) -> bool:
    """The namespace is being deleted (or is gone): nothing more can be written in it."""
    return exc.status == 404 or (exc.status == 403 and "NamespaceTerminating" in str(exc.body))


def conflict(exc: BaseException) -> bool:
    """409 Conflict: a precondition (resourceVersion) no longer holds, or the name is taken."""
    return isinstance(exc, ApiException) and exc.status == 409


def transient(exc: BaseException) -> bool:
    """Worth trying again shortly: the API server is restarting, overloaded or unreachable.

    HTTP 5xx and 429, and what urllib3 raises (through the kubernetes client) when the
    connection is refused, reset or times out. Never a 4xx other than 429 — those say the
    request itself is wrong, and trying it again gives the same answer — except the 403 of
    an API server that has just started and not yet loaded its RBAC roles (measured by
    `make chaos`: "RBAC: [clusterrole ... not found, ...]" for a second or two).
    """
    if isinstance(exc, ApiException):
        if exc.status == 403:
            body = str(exc.body or "")
            return "RBAC: [" in body and "not found" in body
        return exc.status is not None and (exc.status == 429 or exc.status >= 500)
    return isinstance(
        exc,
        urllib3.exceptions.MaxRetryError
        | urllib3.exceptions.ProtocolError
        | urllib3.exceptions.TimeoutError
        | urllib3.exceptions.NewConnectionError
        | ConnectionError
        | TimeoutError,
    )


def status_patch(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any] | None:
    """The merge patch that turns status `old` into `new`, or None when they are equal.

    Top-level keys only: lists and objects are replaced whole, removed keys become null.
    """
    old = old or {}
    patch = {key: new.get(key) for key in old.keys() | new.keys() if old.get(key) != new.get(key)}
    return patch or None


def owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    """A controller ownerReference to `owner` (a raw object): the child is deleted with it."""
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


class Client:
    """The API calls the operator makes. Every method returns the raw object the server sent."""

    def __init__(self, api: kubernetes.client.ApiClient, *, workers: int = 8) -> None:
        self._api = api
        self._custom = kubernetes.client.CustomObjectsApi(api)
        self._apps = kubernetes.client.AppsV1Api(api)
        self._core = kubernetes.client.CoreV1Api(api)
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="kube")
        self.objects = Objects(api, self._call)
        """Any object by apiVersion and kind (the kubernetes executor), in the same pool."""

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.objects.close()

    # --- optiinfra.io kinds -------------------------------------------------------------

    async def create(self, plural: str, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = await self._call(
            self._custom.create_namespaced_custom_object,
            common.GROUP,
            common.VERSION,
            namespace,
            plural,
            dict(body),
            field_manager=FIELD_MANAGER,
        )
        return created

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            found: dict[str, Any] = await self._call(
                self._custom.get_namespaced_custom_object,
                common.GROUP,
                common.VERSION,
                namespace,
                plural,
                name,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return found

    async def patch_status(
        self,
        plural: str,
        namespace: str,
        name: str,
        patch: Mapping[str, Any],
        *,
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        """Merge `patch` into the status. With `resource_version`, only if the object is
        still at that version: otherwise the API server answers 409 Conflict."""
        body: dict[str, Any] = {"status": dict(patch)}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        patched: dict[str, Any] = await self._call(
            self._custom.patch_namespaced_custom_object_status,
            common.GROUP,
            common.VERSION,
            namespace,
            plural,
            name,
            body,
            field_manager=FIELD_MANAGER,
            _content_type=MERGE_PATCH,
        )
        return patched

    async def delete(self, plural: str, namespace: str, name: str, *, uid: str | None) -> None:
        """Delete `name` if it is still the object with `uid`; gone already is fine."""
        options = {"preconditions": {"uid": uid}} if uid else {}
        try:
            await self._call(
                self._custom.delete_namespaced_custom_object,
                common.GROUP,
                common.VERSION,
                namespace,
                plural,
                name,
                body=options,
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    # --- secrets (the webhook executor's HMAC keys) ------------------------------------

    async def read_secret_key(self, namespace: str, name: str, key: str) -> bytes | None:
        """The decoded value of `key` in Secret `name`, or None when the Secret has no such
        key. Raises ApiException: 404 (no Secret), 403 (the operator was not granted it:
        the ClusterRole reads no Secrets, see manifests/endpoint-secrets-role.yaml)."""
        secret = await self._call(self._core.read_namespaced_secret, name, namespace)
        value = (secret.data or {}).get(key)
        return base64.b64decode(value) if value is not None else None

    # --- events -----------------------------------------------------------------------

    async def create_event(self, namespace: str, body: Mapping[str, Any]) -> None:
        await self._call(self._core.create_namespaced_event, namespace, dict(body))
