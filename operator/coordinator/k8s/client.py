"""Async access to optiinfra.io objects, events, (``Client.objects``, see
``coordinator.k8s.objects``) any object the kubernetes executor acts on, and the Secret keys
the webhook executor signs with."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import functools
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Final

import aiohttp
import kubernetes
import urllib3

from coordinator.api import common
from coordinator.k8s.http import Http
from coordinator.k8s.objects import Objects

MERGE_PATCH: Final = "application/merge-patch+json"
FIELD_MANAGER: Final = "optiinfra-coordinator"
_MANAGED: Final = {"fieldManager": FIELD_MANAGER}

ApiException = kubernetes.client.ApiException


def namespace_gone(exc: ApiException) -> bool:
    """The namespace is being deleted (or is gone): nothing more can be written in it."""
    return exc.status == 404 or (exc.status == 403 and "NamespaceTerminating" in str(exc.body))


def conflict(exc: BaseException) -> bool:
    """409 Conflict: a precondition (resourceVersion) no longer holds, or the name is taken."""
    return isinstance(exc, ApiException) and exc.status == 409


def transient(exc: BaseException) -> bool:
    """Worth trying again shortly: the API server is restarting, overloaded or unreachable.

    HTTP 5xx and 429, and what aiohttp or urllib3 (through the kubernetes client) raise when the
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
        aiohttp.ClientConnectionError
        | aiohttp.ClientPayloadError
        | urllib3.exceptions.MaxRetryError
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


Page = list[dict[str, Any]]
"""One page of a paged LIST."""


class Client:
    """The API calls the operator makes. Every method returns the raw object the server sent."""

    def __init__(self, api: kubernetes.client.ApiClient, *, workers: int = 8) -> None:
        self._api = api
        self.http = Http(api.configuration, connections=workers)
        """The calls made for every recommendation, from the event loop (``k8s.http``)."""
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

    async def aclose(self) -> None:
        """`close`, and the connections of the event loop's calls."""
        await self.http.close()
        self.close()

    # --- optiinfra.io kinds -------------------------------------------------------------

    @staticmethod
    def _path(plural: str, namespace: str, name: str = "", sub: str = "") -> str:
        path = f"/apis/{common.GROUP}/{common.VERSION}/namespaces/{namespace}/{plural}"
        return path + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")

    async def create(
        self, plural: str, namespace: str, body: Mapping[str, Any], *, dry_run: bool = False
    ) -> dict[str, Any]:
        """Create the object; with `dry_run`, the API server admits it (webhooks included)
        and answers what it would store, storing nothing."""
        params = {**_MANAGED, "dryRun": "All"} if dry_run else _MANAGED
        return await self.http.request(
            "POST", self._path(plural, namespace), body=body, params=params
        )

    async def list(self, plural: str, namespace: str) -> list[dict[str, Any]]:
        """Every object of `plural` in `namespace` (one LIST, for the few kinds not kept
        in the Store: the VerificationTemplates a plan is verified with)."""
        found = await self.http.request("GET", self._path(plural, namespace))
        return list(found.get("items") or [])

    async def pages(self, plural: str, namespace: str, *, limit: int = 500) -> AsyncIterator[Page]:
        """Every object of `plural` in `namespace`, `limit` at a time (a LIST with
        continue tokens: a shard taking customers in reads their namespace, parsing a
        page at a time)."""
        token = ""
        while True:
            params = {"limit": str(limit), **({"continue": token} if token else {})}
            found = await self.http.request("GET", self._path(plural, namespace), params=params)
            yield list(found.get("items") or [])
            token = (found.get("metadata") or {}).get("continue") or ""
            if not token:
                return

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return await self.http.request("GET", self._path(plural, namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

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
        return await self.http.request(
            "PATCH",
            self._path(plural, namespace, name, "status"),
            body=body,
            params=_MANAGED,
            content_type=MERGE_PATCH,
        )

    async def patch(
        self, plural: str, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Merge `patch` into the object (not its status): its finalizers, a person's edit."""
        return await self.http.request(
            "PATCH",
            self._path(plural, namespace, name),
            body=patch,
            params=_MANAGED,
            content_type=MERGE_PATCH,
        )

    async def delete(self, plural: str, namespace: str, name: str, *, uid: str | None) -> None:
        """Delete `name` if it is still the object with `uid`; gone already is fine."""
        options = {"preconditions": {"uid": uid}} if uid else {}
        try:
            await self.http.request("DELETE", self._path(plural, namespace, name), body=options)
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
        await self.http.request("POST", f"/api/v1/namespaces/{namespace}/events", body=body)
