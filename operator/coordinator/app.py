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
from typing import Final

import kopf
import kubernetes

from coordinator import reconciler as reconciler_
from coordinator import runner as runner_
from coordinator.api.plan import ExecutionPlan, Executor, PlanPhase
from coordinator.core import approval as policy_
from coordinator.executors.kubernetes import KubernetesExecutor
from coordinator.executors.simulated import SimulatedExecutor
from coordinator.k8s import client as client_
from coordinator.k8s import events as events_

FINALIZER: Final = "optiinfra.io/coordinator"
ANNOTATIONS_PREFIX: Final = "coordinator.optiinfra.io"

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """What `coordinator run` was told (flags or COORDINATOR_* environment variables)."""

    policy: policy_.ApprovalPolicy = dataclasses.field(default_factory=policy_.ApprovalPolicy)
    workers: int = 4
    metrics_port: int = 0


def api_client() -> kubernetes.client.ApiClient:
    """A client for the cluster of the current KUBECONFIG, or the in-cluster config."""
    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
        return kubernetes.client.ApiClient()
    except kubernetes.config.ConfigException:
        client: kubernetes.client.ApiClient
        client = kubernetes.config.new_client_from_config()  # type: ignore[no-untyped-call]
        return client


class Operator:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.client = client_.Client(api_client())
        self.recorder = events_.Recorder(self.client)
        self.reconciler = reconciler_.Reconciler(
            client=self.client, recorder=self.recorder, policy=config.policy, workers=config.workers
        )
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

    @staticmethod
    def configure(settings: kopf.OperatorSettings) -> None:
        settings.posting.enabled = False  # our own Events, not kopf's log lines
        settings.persistence.finalizer = FINALIZER
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
            prefix=ANNOTATIONS_PREFIX
        )
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=ANNOTATIONS_PREFIX, key="last-handled-configuration"
        )
        settings.watching.server_timeout = 300

    async def start(self, indexes: reconciler_.Indexes) -> None:
        self.reconciler.indexes = indexes
        self.recorder.start()
        self._task = asyncio.create_task(self.reconciler.run(), name="reconciler")

    async def stop(self) -> None:
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
        if plan.status_phase is not PlanPhase.PENDING:
            return
        async with self._locks.setdefault(key, asyncio.Lock()):
            latest = self.reconciler.overlay.latest(reconciler_.PLANS, plan)
            await self.runner.start(
                latest,
                dependencies=self.reconciler.dependencies_succeeded(key),
                on_write=self.plan_written,
            )

    async def start_waiting_plans(self, namespace: str) -> None:
        """A recommendation succeeded: pending plans of its namespace may start now."""
        assert self.reconciler.indexes is not None
        for (ns, _), plans in list(self.reconciler.indexes.plans.items()):
            for plan in plans:
                if ns == namespace and plan.status_phase is PlanPhase.PENDING:
                    await self.start_plan(plan)

    def plan_written(self, plan: ExecutionPlan) -> None:
        self.reconciler.overlay.put(reconciler_.PLANS, plan)
