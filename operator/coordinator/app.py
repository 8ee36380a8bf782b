"""The running operator: its configuration and the parts it wires together.

``coordinator run`` builds an ``Operator`` from its flags and hands it to kopf as the
memo; the handlers reach everything through it. It owns the API client, the event
recorder, the reconciler and the plan runner, and the per-plan wake-ups.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import tempfile
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Final

import kopf
import kubernetes

from coordinator import metrics
from coordinator import reconciler as reconciler_
from coordinator import runner as runner_
from coordinator.api.plan import ExecutionPlan, Executor, PlanPhase
from coordinator.core import admission
from coordinator.core import approval as policy_
from coordinator.executors.kubernetes import KubernetesExecutor
from coordinator.executors.simulated import SimulatedExecutor
from coordinator.k8s import client as client_
from coordinator.k8s import events as events_
from coordinator.k8s import webhooks as webhooks_

HOOKS: Final = (
    webhooks_.Hook(id="approval-stamp", plural="approvals", mutating=True),
    webhooks_.Hook(id="approval-check", plural="approvals", mutating=False, operations=("UPDATE",)),
    webhooks_.Hook(id="recommendation-stamp", plural="recommendations", mutating=True),
    webhooks_.Hook(id="recommendation-check", plural="recommendations", mutating=False),
)
"""The admission webhooks; each id is the id of its kopf handler in coordinator.handlers."""
FINALIZER: Final = "optiinfra.io/coordinator"
ANNOTATIONS_PREFIX: Final = "coordinator.optiinfra.io"
LIST_PAGE: Final = 500
WORKER_IDLE_SECONDS: Final = 0.5

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """What `coordinator run` was told (flags or COORDINATOR_* environment variables)."""

    policy: policy_.ApprovalPolicy = dataclasses.field(default_factory=policy_.ApprovalPolicy)
    workers: int = 16
    metrics_port: int = 0
    namespaces: tuple[str, ...] = ()
    webhooks: str = "auto"  # auto | local | service | off
    webhook_port: int = 0  # 0: a free port (local) or 9443 (service)
    webhook_cert_dir: Path | None = None  # tls.crt, tls.key, ca.crt; generated when local
    webhook_service: str = "optiinfra-system/optiinfra-coordinator:443"
    webhook_namespace_labels: Mapping[str, str] = dataclasses.field(default_factory=dict)


def api_client(connections: int, *, config_file: str | None = None) -> kubernetes.client.ApiClient:
    """A client for the cluster of `config_file` (default: the in-cluster config, else the
    current KUBECONFIG) that keeps up to `connections` connections open."""
    configuration = kubernetes.client.Configuration()
    loaded = False
    if config_file is None:
        try:
            kubernetes.config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
            loaded = True
        except kubernetes.config.ConfigException:
            pass
    if not loaded:
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=config_file, client_configuration=configuration
        )
    configuration.connection_pool_maxsize = connections
    return kubernetes.client.ApiClient(configuration)


class RegisteringServer(kopf.WebhookServer):
    """kopf's webhook server, which registers the webhook configurations once it listens:
    the API server is never sent to a port where nobody answers yet (with 10 000 objects
    to list, kopf starts its server seconds after the operator starts)."""

    def __init__(self, *, register: Callable[[], Awaitable[None]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._register = register

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        async for client_config in super().__call__(fn):
            await self._register()
            yield client_config


class Operator:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.api = api_client(config.workers)
        self.client = client_.Client(self.api, workers=config.workers)
        self.recorder = events_.Recorder(self.client)
        self.reconciler = reconciler_.Reconciler(
            client=self.client, recorder=self.recorder, policy=config.policy, workers=config.workers
        )
        self.reconciler.plan_created = self.start_plan
        self.recorder.yield_to = self.reconciler.queue.idle
        self.runner = runner_.PlanRunner(
            client=self.client,
            recorder=self.recorder,
            executors={
                Executor.SIMULATED: SimulatedExecutor(),
                Executor.KUBERNETES: KubernetesExecutor(self.client),
            },
        )
        self._wakers: dict[tuple[str, str], asyncio.Event] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._task: asyncio.Task[None] | None = None
        self._webhook_name = ""
        self._webhooks_local = False

    def configure(self, settings: kopf.OperatorSettings) -> None:
        settings.posting.enabled = False  # our own Events, not kopf's log lines
        settings.persistence.finalizer = FINALIZER
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
            prefix=ANNOTATIONS_PREFIX
        )
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=ANNOTATIONS_PREFIX, key="last-handled-configuration"
        )
        settings.watching.server_timeout = 300
        # Memory with many objects: list them in pages, not in one response of all, and let
        # an object's kopf worker (its task and last body) go soon after its last event.
        settings.watching.chunk_size = LIST_PAGE
        settings.queueing.idle_timeout = WORKER_IDLE_SECONDS
        self._setup_webhooks(settings)

    def webhooks_mode(self) -> str:
        """auto: local against a control plane on 127.0.0.1, service in a cluster, else off."""
        mode = self.config.webhooks
        if mode != "auto":
            return mode
        host = urllib.parse.urlsplit(self.api.configuration.host).hostname or ""
        if host in ("127.0.0.1", "localhost", "::1"):
            return "local"
        if os.environ.get("KUBERNETES_SERVICE_HOST") and self.config.webhook_cert_dir:
            return "service"
        return "off"

    def _setup_webhooks(self, settings: kopf.OperatorSettings) -> None:
        mode = self.webhooks_mode()
        if mode == "off":
            logger.warning(
                "admission webhooks are off: decisions are recorded as decided by 'unknown' "
                "and self-approval is not prevented (see --webhooks)"
            )
            return
        config = self.config
        if mode == "local":
            port = config.webhook_port or webhooks_.free_port()
            directory = config.webhook_cert_dir or Path(
                tempfile.mkdtemp(prefix="optiinfra-webhook-")
            )
            certs = webhooks_.generate(directory, hosts=["127.0.0.1", "localhost"])
            endpoint = webhooks_.Endpoint(
                ca_pem=certs.ca.read_bytes(), url=f"https://127.0.0.1:{port}"
            )
            addr = "127.0.0.1"
            selector = webhooks_.namespace_selector(
                config.namespaces, config.webhook_namespace_labels
            )
            self._webhook_name = webhooks_.local_name(config.namespaces, selector)
        else:
            assert config.webhook_cert_dir is not None, "--webhook-cert-dir is required"
            port = config.webhook_port or 9443
            certs = webhooks_.Certificates(config.webhook_cert_dir)
            target, _, service_port = config.webhook_service.partition(":")
            namespace, _, name = target.partition("/")
            endpoint = webhooks_.Endpoint(
                ca_pem=certs.ca.read_bytes(), service=(namespace, name, int(service_port or 443))
            )
            addr = "0.0.0.0"
            selector = webhooks_.namespace_selector((), config.webhook_namespace_labels)
            self._webhook_name = webhooks_.NAME
        validating, mutating = webhooks_.configurations(
            name=self._webhook_name, hooks=HOOKS, endpoint=endpoint, selector=selector
        )

        async def register() -> None:
            await asyncio.to_thread(webhooks_.Registrar(self.api).apply, validating, mutating)
            logger.info("admission webhooks registered as %s (%s)", self._webhook_name, mode)

        settings.admission.server = RegisteringServer(
            register=register,
            addr=addr,
            port=port,
            certfile=str(certs.cert),
            pkeyfile=str(certs.key),
            cafile=str(certs.ca),
        )
        settings.admission.managed = None  # registered by the server, with a namespace selector
        self._webhooks_local = mode == "local"

    async def start(self, indexes: reconciler_.Indexes) -> None:
        self.reconciler.indexes = indexes
        if self.config.metrics_port:
            metrics.serve(
                self.config.metrics_port,
                lambda: [rec for recs in list(indexes.namespaces.values()) for rec in recs],
            )
        self.recorder.start()
        self._task = asyncio.create_task(self.reconciler.run(), name="reconciler")

    async def stop(self) -> None:
        if self._webhooks_local:  # nobody else answers at this process's address
            await asyncio.to_thread(webhooks_.Registrar(self.api).remove, self._webhook_name)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.recorder.stop()
        self.client.close()

    def waker(self, key: tuple[str, str]) -> asyncio.Event:
        return self._wakers.setdefault(key, asyncio.Event())

    def forget_waker(self, key: tuple[str, str]) -> None:
        self._wakers.pop(key, None)

    def wake_plans(self, key: tuple[str, str]) -> None:
        """Something changed for the running plan `key` (suspend, abort)."""
        waker = self._wakers.get(key)
        if waker is not None:
            waker.set()

    async def start_plan(self, plan: ExecutionPlan) -> None:
        """Start `plan` if it is pending and may start; its daemon takes it from there."""
        key = (plan.metadata.namespace, plan.metadata.name)
        if plan.status_phase.ended:  # a crash right after its last write lost no event
            self.runner.replay_if_recent(plan)
        if plan.status_phase is not PlanPhase.PENDING:
            return
        async with self._locks.setdefault(key, asyncio.Lock()):
            latest = self.reconciler.overlay.latest(reconciler_.PLANS, plan)
            await self.runner.start(
                latest,
                dependencies=self.reconciler.dependencies_succeeded(key),
                on_write=self.plan_written,
            )

    async def start_waiting_plans(self, succeeded: tuple[str, str]) -> None:
        """Recommendation `succeeded` did: the pending plans that waited for it may start."""
        assert self.reconciler.indexes is not None
        for key in self.reconciler.dependents(succeeded):
            for plan in self.reconciler.indexes.plans.get(key) or ():
                if plan.status_phase is PlanPhase.PENDING:
                    await self.start_plan(plan)

    def plan_deleted(self, key: tuple[str, str]) -> None:
        self._locks.pop(key, None)

    async def submitter(self, namespace: str, name: str) -> str | None:
        """Who submitted (or last changed) recommendation `name`, as recorded at admission."""
        rec = self.reconciler.find((namespace, name))
        if rec is not None:
            return rec.metadata.annotations.get(admission.SUBMITTED_BY_ANNOTATION)
        raw = await self.client.get(reconciler_.RECOMMENDATIONS, namespace, name)
        annotations = (raw or {}).get("metadata", {}).get("annotations") or {}
        submitter: str | None = annotations.get(admission.SUBMITTED_BY_ANNOTATION)
        return submitter

    def names_in(self, namespace: str) -> set[str]:
        """The names of the recommendations of `namespace` this process knows of."""
        assert self.reconciler.indexes is not None
        return {rec.name for rec in self.reconciler.indexes.namespaces.get(namespace) or ()}

    def plan_written(self, plan: ExecutionPlan) -> None:
        self.reconciler.overlay.put(reconciler_.PLANS, plan)
