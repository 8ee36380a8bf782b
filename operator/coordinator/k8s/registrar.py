"""The registration of this process's admission webhooks in the two shared configurations
(validating and mutating) named ``--webhook-configuration``: put in, taken out, and
whether they went missing. Which webhooks, and their bodies, are ``k8s.webhooks``'."""

from __future__ import annotations

import socket
import urllib.parse
from collections.abc import Mapping
from typing import Any, Final

import kubernetes

from coordinator.k8s import webhooks as webhooks_


def _url(entry: Mapping[str, Any]) -> str | None:
    url: str | None = (entry.get("clientConfig") or {}).get("url")
    return url


def answers(url: str, *, timeout: float = 1.0) -> bool:
    """Whether something listens at the host and port of `url` (a local webhook's)."""
    parts = urllib.parse.urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "", parts.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


class MissingConfigurationError(RuntimeError):
    """A webhook configuration that must be installed with the manifests is not there."""


class Registrar:
    """Keeps this process's webhooks in the two shared configurations named ``NAME``.

    One name for every operator: the ClusterRole can then grant get/update on exactly that
    name (RBAC cannot grant by prefix). Each operator owns the webhooks named for its scope
    (``hook_name``) and writes only those, with the resourceVersion it read (a concurrent
    writer makes it read again). It never needs delete: leaving takes its webhooks out.
    """

    KINDS: Final = ("validating", "mutating")

    def __init__(
        self,
        api: kubernetes.client.ApiClient,
        *,
        timeout: float = 5.0,
        create: bool = True,
        name: str = webhooks_.NAME,
    ) -> None:
        self._api: Any = kubernetes.client.AdmissionregistrationV1Api(api)
        self.name = name
        """The two configurations' name (``--webhook-configuration``; a Helm release with
        its own namePrefix names them after it)."""
        self._timeout = timeout
        self._create = create
        """Whether a missing configuration is created (local) or an error (in a cluster:
        manifests/webhooks.yaml ships them and the operator may not create one)."""

    def _calls(self, kind: str) -> tuple[Any, Any, Any]:
        api = self._api
        return (
            getattr(api, f"read_{kind}_webhook_configuration"),
            getattr(api, f"create_{kind}_webhook_configuration"),
            getattr(api, f"replace_{kind}_webhook_configuration"),
        )

    def _update(self, kind: str, change: Any, *, create: dict[str, Any] | None) -> None:
        """Apply `change` (the stored webhooks -> the new list, or None: nothing to do) to
        configuration `kind`, creating it from `create` when it does not exist."""
        read, create_, replace = self._calls(kind)
        timeout = self._timeout
        for _ in range(10):
            try:
                stored = read(self.name, _request_timeout=timeout)
            except kubernetes.client.ApiException as exc:
                if exc.status != 404:
                    raise
                if create is None:
                    return
                if not self._create:
                    raise MissingConfigurationError(
                        f"the {kind} webhook configuration {self.name} does not exist: apply "
                        "manifests/webhooks.yaml (kubectl apply -k manifests/), or run with "
                        "--webhooks=off"
                    ) from None
                try:
                    create_(create, _request_timeout=timeout)
                    return
                except kubernetes.client.ApiException as created:
                    if created.status != 409:
                        raise
                    continue
            body = self._api.api_client.sanitize_for_serialization(stored)
            webhooks = change(body.get("webhooks") or [])
            if webhooks is None:
                return
            body["webhooks"] = webhooks
            try:
                replace(self.name, body, _request_timeout=timeout)
                return
            except kubernetes.client.ApiException as exc:
                if exc.status != 409:  # somebody else wrote it meanwhile: read again
                    raise
        raise RuntimeError(f"webhook configuration {self.name} kept changing; gave up")

    def apply(self, validating: dict[str, Any], mutating: dict[str, Any]) -> None:
        """Put our webhooks in (replacing any of the same names: a dead process's)."""
        for kind, body in zip(self.KINDS, (validating, mutating), strict=True):
            ours = body["webhooks"]
            names = {w["name"] for w in ours}

            def merge(stored: list[dict[str, Any]], ours: Any = ours, names: Any = names) -> Any:
                kept = [w for w in stored if w.get("name") not in names]
                return sorted([*kept, *ours], key=lambda w: str(w["name"]))

            self._update(kind, merge, create=body)

    def remove(self, names: set[str], *, url_prefix: str | None = None) -> None:
        """Take our webhooks out — only those still pointing at `url_prefix` (when given):
        another process of the same scope may have replaced them since."""
        for kind in self.KINDS:

            def drop(stored: list[dict[str, Any]]) -> Any:
                def ours(w: dict[str, Any]) -> bool:
                    url = _url(w) or ""
                    return w.get("name") in names and (
                        url_prefix is None or url.startswith(url_prefix)
                    )

                kept = [w for w in stored if not ours(w)]
                return kept if len(kept) != len(stored) else None

            self._update(kind, drop, create=None)

    def missing(
        self, validating: dict[str, Any], mutating: dict[str, Any], *, url_prefix: str
    ) -> bool:
        """Whether any of our webhooks is absent, or points at a local address where nobody
        answers (a process that stopped took it out, or died): then it must be put back."""
        for kind, body in zip(self.KINDS, (validating, mutating), strict=True):
            read, _, _ = self._calls(kind)
            try:
                stored = read(self.name, _request_timeout=self._timeout)
            except kubernetes.client.ApiException as exc:
                if exc.status == 404:
                    return True
                raise
            present = {w.name: w.client_config.url or "" for w in stored.webhooks or ()}
            for ours in body["webhooks"]:
                url = present.get(ours["name"])
                if url is None or (not url.startswith(url_prefix) and not answers(url)):
                    return True
        return False


def names(validating: Mapping[str, Any], mutating: Mapping[str, Any]) -> set[str]:
    """The names of the webhooks in the two configuration bodies."""
    return {w["name"] for body in (validating, mutating) for w in body["webhooks"]}
