"""The admission webhooks: set up, served, registered with the API server, kept
registered, and taken out at the stop.

Built from the Config (`mode`: local against a control plane on 127.0.0.1, service in
a cluster, or off); at start the HTTPS server (``k8s.admission``) listens first, then the
configurations are registered (``k8s.webhooks``) and the start waits until the API
server applies them (a dry-run probe); a local operator checks every
WEBHOOK_CHECK_SECONDS that they are still there. The hooks themselves are
``coordinator.handlers``'s.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any, Final

import kubernetes

from coordinator.api import defaults
from coordinator.api.common import API_VERSION, APPROVALS, DECIDED_BY_ANNOTATION
from coordinator.core import namespaces as namespaces_
from coordinator.k8s import admission as admission_
from coordinator.k8s import certificates
from coordinator.k8s import client as client_
from coordinator.k8s import registrar as registrar_
from coordinator.k8s import webhooks as webhooks_
from coordinator.parts import CLEANUP_SECONDS
from coordinator.parts.config import Config

HOOKS: Final = webhooks_.HOOKS
"""The admission webhooks; each id names its hook in ``coordinator.handlers.admission``."""
WEBHOOK_CHECK_SECONDS: Final = 10.0
"""How often a local operator checks that its webhooks are still registered."""
ADMISSION_PROBE_SECONDS: Final = 60.0
"""How long the start waits for the API server to apply the webhooks it registered."""

logger = logging.getLogger(__name__)


class WebhooksNotInForceError(Exception):
    """The API server did not apply the registered webhooks: the message says what was tried."""


def mode(config: Config, api_host: str) -> str:
    """auto: local against a control plane on 127.0.0.1, service in a cluster, else off."""
    if config.webhooks != "auto":
        return config.webhooks
    host = urllib.parse.urlsplit(api_host).hostname or ""
    if host in ("127.0.0.1", "localhost", "::1"):
        return "local"
    if os.environ.get("KUBERNETES_SERVICE_HOST") and config.webhook_cert_dir:
        return "service"
    return "off"


class Webhooks:
    """Keeps the admission webhooks registered (nothing when they are off); its server is
    a part of its own (`serve`, `close`), started before and stopped after the rest."""

    name = "webhook registration"
    stop_seconds = CLEANUP_SECONDS + 1

    def __init__(
        self, config: Config, api: kubernetes.client.ApiClient, client: client_.Client
    ) -> None:
        self.config = config
        self.api = api
        self.client = client
        self.mode = mode(config, api.configuration.host)
        self.hooks: dict[str, admission_.Hook] = {}
        """The admission hooks by id (``coordinator.handlers.admission``), served once the
        operator starts, when the webhooks are on."""
        self._server: admission_.Server | None = None
        self._configurations: tuple[dict[str, Any], dict[str, Any]] | None = None
        self._url = ""
        self._scope = ""
        self._keeper: asyncio.Task[None] | None = None

    def configure(self) -> None:
        """Certificates, the configurations and the server (before the start)."""
        if self.mode == "off":
            logger.warning(
                "admission webhooks are off: decisions are recorded as decided by 'unknown', "
                "self-approval is not prevented, and every plan with kubernetes or webhook "
                "steps needs a person's approval (see --webhooks)"
            )
            return
        config = self.config
        if self.mode == "local":
            port = config.webhook_port or certificates.free_port()
            directory = config.webhook_cert_dir or Path(
                tempfile.mkdtemp(prefix="optiinfra-webhook-")
            )
            certs = certificates.generate(directory, hosts=["127.0.0.1", "localhost"])
            endpoint = webhooks_.Endpoint(
                ca_pem=certs.ca.read_bytes(), url=f"https://127.0.0.1:{port}"
            )
            addr = "127.0.0.1"
            selector = webhooks_.namespace_selector(
                config.namespaces, config.webhook_namespace_labels
            )
            self._scope = webhooks_.local_scope(config.namespaces, selector)
            self._url = endpoint.url or ""
        else:
            assert config.webhook_cert_dir is not None, "--webhook-cert-dir is required"
            port = config.webhook_port or 9443
            certs = certificates.Certificates(config.webhook_cert_dir)
            target, _, service_port = config.webhook_service.partition(":")
            namespace, _, name = target.partition("/")
            endpoint = webhooks_.Endpoint(
                ca_pem=certs.ca.read_bytes(), service=(namespace, name, int(service_port or 443))
            )
            addr = "0.0.0.0"
            selector = webhooks_.namespace_selector((), config.webhook_namespace_labels)
        self._configurations = webhooks_.configurations(
            hooks=HOOKS,
            endpoint=endpoint,
            selector=selector,
            scope=self._scope,
            name=config.webhook_configuration,
        )
        self._server = admission_.Server(
            self.hooks, addr=addr, port=port, certfile=certs.cert, keyfile=certs.key
        )

    async def serve(self) -> None:
        """Listen (before anything is registered: the API server is sent where we answer)."""
        if self._server is not None:
            await self._server.start()

    async def close(self) -> None:
        """Stop serving (after everything else that acts has stopped)."""
        if self._server is not None:
            await self._server.stop()

    async def start(self) -> None:
        """Register, and wait until the API server applies the registration."""
        if self._configurations is None:
            return
        validating, mutating = self._configurations
        registrar = registrar_.Registrar(
            self.api, create=self.mode == "local", name=self.config.webhook_configuration
        )
        await asyncio.to_thread(registrar.apply, validating, mutating)
        in_force = await self._in_force()
        logger.info(
            "admission webhooks registered in %s (%s%s)%s",
            registrar.name,
            self.mode,
            f", scope {self._scope}" if self._scope else "",
            in_force,
        )
        if self.mode == "local":
            self._keeper = asyncio.create_task(self._keep(), name="webhooks")

    async def stop(self) -> None:
        """Take local webhooks out (within CLEANUP_SECONDS: a failure is logged, never
        waited on)."""
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
        if self.mode == "local" and self._configurations is not None:
            registrar = registrar_.Registrar(
                self.api, timeout=CLEANUP_SECONDS, name=self.config.webhook_configuration
            )
            names = registrar_.names(*self._configurations)
            remove = asyncio.to_thread(registrar.remove, names, url_prefix=self._url)
            try:
                await asyncio.wait_for(remove, CLEANUP_SECONDS)
            except Exception as exc:  # never block the exit
                logger.warning(
                    "could not take the admission webhooks out at exit: %s",
                    exc or type(exc).__name__,
                )

    async def _in_force(self) -> str:
        """Wait until the API server applies the webhooks just registered: it reads webhook
        configurations through its own watch, so for a moment after the write it may admit
        objects without them (unstamped recommendations were seen for seconds after a
        start). A server-side dry-run create of an Approval that claims a decider must come
        back without the claim (the mutating webhook strips it). Returns how long it took,
        for the log; raises WebhooksNotInForceError after ADMISSION_PROBE_SECONDS."""
        namespaces = namespaces_.plain(self.config.namespaces)
        if self.config.webhook_namespace_labels:
            return " (not probed: the webhooks select namespaces by label)"
        probe = _admission_probe()
        began = time.monotonic()
        pauses, attempts, last = defaults.ADMISSION_PROBE.delays(), 0, ""
        while time.monotonic() - began < ADMISSION_PROBE_SECONDS:
            missing = 0
            for namespace in namespaces or ["default"]:
                attempts += 1
                try:
                    answer = await self.client.create(APPROVALS, namespace, probe, dry_run=True)
                except client_.ApiException as exc:
                    last = f"({exc.status}) {exc.reason}"
                    missing += exc.status == 404  # the namespace does not exist (yet)
                    continue
                annotations = (answer.get("metadata") or {}).get("annotations") or {}
                if DECIDED_BY_ANNOTATION not in annotations:
                    took = time.monotonic() - began
                    return f"; in force after {took * 1000:.0f} ms ({attempts} dry-run probes)"
                last = "a dry-run create came back unstamped"
            if missing == len(namespaces or ["default"]):
                return " (not probed: no watched namespace exists yet)"
            await asyncio.sleep(next(pauses))
        raise WebhooksNotInForceError(
            f"the API server did not apply the admission webhooks within "
            f"{ADMISSION_PROBE_SECONDS:.0f} s (probed with dry-run creates of an Approval in "
            f"{', '.join(namespaces or ['default'])}; last: {last})"
        )

    async def _keep(self) -> None:
        """Local webhooks: put ours back if they went missing (another local process of the
        same scope stopped and took them out, or somebody deleted them)."""
        assert self._configurations is not None
        validating, mutating = self._configurations
        registrar = registrar_.Registrar(self.api, name=self.config.webhook_configuration)
        while True:
            await asyncio.sleep(WEBHOOK_CHECK_SECONDS)
            try:
                gone = await asyncio.to_thread(
                    registrar.missing, validating, mutating, url_prefix=self._url
                )
                if gone:
                    await asyncio.to_thread(registrar.apply, validating, mutating)
                    logger.warning("admission webhooks were missing; registered them again")
            except Exception as exc:  # the next round tries again
                logger.warning("could not check the admission webhooks: %s", exc)


def _admission_probe() -> dict[str, Any]:
    """A valid Approval that claims a decider: the mutating webhook strips the claim."""
    return {
        "apiVersion": API_VERSION,
        "kind": "Approval",
        "metadata": {
            "name": "optiinfra-admission-probe",
            "annotations": {DECIDED_BY_ANNOTATION: "admission-probe"},
        },
        "spec": {
            "recommendation": "optiinfra-admission-probe",
            "recommendationGeneration": 1,
            "customerId": "admission-probe",
            "riskLevel": "low",
            "expiresAt": "2099-01-01T00:00:00Z",
        },
    }
