"""The kubernetes executor: real changes to real objects in the recommendation's namespace.

``scale_workload`` (params ``kind``: Deployment or StatefulSet, ``name``, ``replicas``)
sets the replica count and records the previous one, both in the step's result and in
annotations on the workload, written in the same patch as the change. A step re-run
after a crash finds its own annotation and keeps the original count, so the rollback
always restores what was there before the plan touched it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from coordinator.api.plan import Step
from coordinator.core.plan import Outcome
from coordinator.executors import StepContext
from coordinator.k8s.client import ApiException, Client

SCALED_BY: Final = "optiinfra.io/scaled-by"
PREVIOUS_REPLICAS: Final = "optiinfra.io/previous-replicas"
KINDS: Final = ("Deployment", "StatefulSet")


class ParamsError(ValueError):
    pass


def _target(step: Step) -> tuple[str, str]:
    kind = step.params.get("kind", "Deployment")
    name = step.params.get("name")
    if kind not in KINDS:
        raise ParamsError(f"params.kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if not isinstance(name, str) or not name:
        raise ParamsError("params.name must name the workload to scale")
    return kind, name


def _replicas(step: Step) -> int:
    replicas = step.params.get("replicas")
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise ParamsError("params.replicas must be a whole number >= 0")
    return replicas


class KubernetesExecutor:
    def __init__(self, client: Client) -> None:
        self._client = client

    async def execute(self, step: Step, *, context: StepContext) -> Outcome:
        if step.action != "scale_workload":
            return Outcome(ok=False, error=f"the kubernetes executor cannot {step.action!r}")
        try:
            kind, name = _target(step)
            replicas = _replicas(step)
            workload = await self._client.read_workload(kind, context.namespace, name)
        except ParamsError as exc:
            return Outcome(ok=False, error=str(exc))
        except ApiException as exc:
            return Outcome(ok=False, error=f"cannot read {kind} {name}: {exc.reason}")
        marker = f"{context.plan}/{step.name}/{context.uid}"
        annotations = workload.metadata.annotations or {}
        if annotations.get(SCALED_BY) == marker:
            previous = int(annotations[PREVIOUS_REPLICAS])
        else:
            previous = int(workload.spec.replicas or 0)
        patch = {
            "metadata": {"annotations": {SCALED_BY: marker, PREVIOUS_REPLICAS: str(previous)}},
            "spec": {"replicas": replicas},
        }
        try:
            await self._client.patch_workload(kind, context.namespace, name, patch)
        except ApiException as exc:
            return Outcome(ok=False, error=f"cannot scale {kind} {name}: {exc.reason}")
        result = {"kind": kind, "name": name, "previousReplicas": previous, "replicas": replicas}
        return Outcome(ok=True, result=result)

    async def undo(
        self, step: Step, *, result: Mapping[str, Any] | None, context: StepContext
    ) -> Outcome:
        try:
            kind, name = _target(step)
            workload = await self._client.read_workload(kind, context.namespace, name)
        except ParamsError as exc:
            return Outcome(ok=False, error=str(exc))
        except ApiException as exc:
            return Outcome(ok=False, error=f"cannot read {kind} {name}: {exc.reason}")
        annotations = workload.metadata.annotations or {}
        recorded = (result or {}).get("previousReplicas", annotations.get(PREVIOUS_REPLICAS))
        if recorded is None:
            return Outcome(ok=False, error=f"no previous replica count recorded on {kind} {name}")
        previous = int(recorded)
        patch = {
            "metadata": {"annotations": {SCALED_BY: None, PREVIOUS_REPLICAS: None}},
            "spec": {"replicas": previous},
        }
        try:
            await self._client.patch_workload(kind, context.namespace, name, patch)
        except ApiException as exc:
            return Outcome(ok=False, error=f"cannot restore {kind} {name}: {exc.reason}")
        return Outcome(ok=True, result={"kind": kind, "name": name, "restoredReplicas": previous})
