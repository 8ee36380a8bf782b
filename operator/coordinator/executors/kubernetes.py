"""The kubernetes executor: real changes to real objects, always in the plan's namespace.

Every action records what its undo needs before (or in the same write as) the change, in
the step's result and on the object, so that a crash between the change and the status
write loses nothing: the step runs again, finds its own mark and keeps the original
before-image. Undo never overwrites a change made by someone else since: it fails instead,
naming the field and both values, and writes nothing (the plan then ends Failed).

``scale`` (alias ``scale_workload``): params ``target`` (any kind with a /scale
    subresource) or ``kind``/``name`` (Deployment, StatefulSet, ReplicaSet), ``replicas``.
    The /scale subresource carries no annotations, so for the built-in apps/v1 kinds the
    replica count is patched on the object itself together with the annotations
    ``optiinfra.io/scaled-by`` and ``optiinfra.io/previous-replicas`` (one write). For any
    other kind the annotations are written first, then the count through /scale (the
    before-image is on the object before anything changes). Undo restores the previous
    count only while the replicas are still what the step set.
``patch``: params ``target``, ``patch`` (an object), ``type``: ``merge`` (default) or
    ``strategic``. The before-image of the fields the patch sets (see
    ``coordinator.core.steps.before_image``; lists whole) is written in the same patch, in
    the annotation ``optiinfra.io/before.<plan>.<step>`` (JSON), with a resourceVersion
    precondition. Undo puts back exactly those fields (removing those that did not exist)
    with a JSON merge patch, and the annotation goes in the same write.
``apply``: params ``manifest``, one object, its namespace forced to the plan's. Created with
    server-side apply (field manager ``optiinfra-coordinator``), labelled
    ``optiinfra.io/plan=<plan>`` and annotated ``optiinfra.io/created-by=<plan>/<step>/<uid>``.
    An object of that name that this step did not create fails the step up front and is
    left alone. Undo deletes it only if the annotation says this step created it and the
    object's uid is the one the step recorded, with a uid precondition (no step may set the
    ``optiinfra.io/`` marks: admission refuses it). (Between the existence check and the
    apply there is a window of one request in which another writer could create the object;
    the apply then adds to it.)
``wait``: params ``target`` and ``condition: {type, status}`` or ``jsonPath`` + ``value``
    (compared as ``kubectl get -o jsonpath`` prints it); ``timeoutSeconds`` (params, else
    the step's, else 300). Polls with backoff (``executors.waiting``). Undo does nothing.

Only the kinds of the allowlist (``coordinator.core.steps.DEFAULT_KINDS``, ``--executor-kinds``)
are touched: admission refuses a step on any other, and so does the executor (a plan written
while admission was off, or under another allowlist). The operator holds no rights on
workloads cluster-wide: a namespace opts in by binding the ClusterRole ``optiinfra-executor``
(manifests/executor-role.yaml) to it. In a namespace that did not, the first kubernetes step
fails with the API server's 403 message (user, verb, resource) and the command that binds it.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from coordinator.api import defaults
from coordinator.api.plan import Step
from coordinator.core import steps
from coordinator.core.plan import Outcome
from coordinator.core.steps import Target
from coordinator.executors import StepContext, StepError, waiting
from coordinator.k8s.client import ApiException, Client, conflict
from coordinator.k8s.objects import UnknownKindError, describe

SCALED_BY: Final = "optiinfra.io/scaled-by"
PREVIOUS_REPLICAS: Final = "optiinfra.io/previous-replicas"
CREATED_BY: Final = "optiinfra.io/created-by"
PLAN_LABEL: Final = "optiinfra.io/plan"
BUILTIN_SCALE: Final = {("apps/v1", kind) for kind in ("Deployment", "StatefulSet", "ReplicaSet")}
ATTEMPTS: Final = 10
"""How often a write is tried when the object changed between the read and the write (its
resourceVersion; controllers update the status of a busy workload several times a second)."""
EXECUTOR_ROLE: Final = "optiinfra-executor"
"""The ClusterRole a namespace binds to the operator to let its plans change workloads."""
OPERATOR_ACCOUNT: Final = "optiinfra-system:optiinfra-coordinator"
_FORBIDDEN_USER: Final = re.compile(r'User "(?:system:serviceaccount:([^:"]+:[^:"]+)|([^"]+))"')


def opt_in(message: str, namespace: str) -> str:
    """What to run so that the operator (the user of a 403 `message`) may act in `namespace`."""
    found = _FORBIDDEN_USER.search(message)
    if found is None or found[1]:
        who = f"--serviceaccount={found[1] if found else OPERATOR_ACCOUNT}"
    else:
        who = f"--user={found[2]}"
    return (
        f"namespace {namespace} has not opted in to the kubernetes executor; to let plans "
        f"change workloads there: kubectl create rolebinding {EXECUTOR_ROLE} -n {namespace} "
        f"--clusterrole={EXECUTOR_ROLE} {who}"
    )


def _annotations(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def _version(obj: Mapping[str, Any]) -> str | None:
    version = (obj.get("metadata") or {}).get("resourceVersion")
    return str(version) if version else None


class KubernetesExecutor:
    def __init__(
        self,
        client: Client,
        *,
        kinds: frozenset[str] = steps.DEFAULT_KINDS,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._objects = client.objects
        self._kinds = kinds
        self._sleep = sleep
        self._clock = clock

    async def execute(self, step: Step, *, context: StepContext) -> Outcome:
        return await self._guarded(step, context, undo=False, result=None)

    async def undo(
        self, step: Step, *, result: Mapping[str, Any] | None, context: StepContext
    ) -> Outcome:
        return await self._guarded(step, context, undo=True, result=result)

    async def _guarded(
        self, step: Step, context: StepContext, *, undo: bool, result: Mapping[str, Any] | None
    ) -> Outcome:
        # Admission checks the params; plans written while it was off are checked here.
        problems = steps.problems(
            step, where=f"step {step.name}", namespace=context.namespace, kinds=self._kinds
        )
        if problems:
            return Outcome(ok=False, error="; ".join(problems))
        action = "scale" if step.action in steps.SCALE_ACTIONS else step.action
        target = (
            steps.target(step.params)
            if action != "apply"
            else Target(
                step.params["manifest"]["apiVersion"],
                step.params["manifest"]["kind"],
                step.params["manifest"]["metadata"]["name"],
            )
        )
        started = self._clock()
        try:
            if undo:
                done = await getattr(self, f"_undo_{action}")(step, context, target, result or {})
            else:
                done = await getattr(self, f"_{action}")(step, context, target)
        except StepError as exc:
            return Outcome(ok=False, error=str(exc), duration_ms=self._ms(started))
        except UnknownKindError as exc:
            return Outcome(ok=False, error=f"{target}: {exc}", duration_ms=self._ms(started))
        except ApiException as exc:
            what = f"undo {action} of" if undo else action
            error = f"cannot {what} {target}: {describe(exc)}"
            if exc.status == 403:
                error += f"; {opt_in(describe(exc), context.namespace)}"
            return Outcome(ok=False, error=error, duration_ms=self._ms(started))
        return Outcome(ok=True, result=done, duration_ms=self._ms(started))

    async def _retrying_conflicts(
        self, attempt: Callable[[], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        """`attempt()` (a read, then writes at the read's resourceVersion), tried again
        after a 409 Conflict (the object changed in between), at most ATTEMPTS times."""
        for tries in range(ATTEMPTS):
            try:
                return await attempt()
            except ApiException as exc:
                if not (conflict(exc) and tries + 1 < ATTEMPTS):
                    raise
            await self._sleep(defaults.CONFLICT_RETRY.delay(tries))
        raise AssertionError("unreachable")

    def _ms(self, started: float) -> int:
        return int((self._clock() - started) * 1000)

    async def _read(self, target: Target, context: StepContext) -> dict[str, Any]:
        obj = await self._objects.get(target, context.namespace)
        if obj is None:
            raise StepError(f"{target} not found in namespace {context.namespace}")
        return obj

    # -- scale ----------------------------------------------------------------------------

    async def _replicas(self, target: Target, obj: Mapping[str, Any], ns: str) -> tuple[int, str]:
        """The replica count now, and the resourceVersion to write it at."""
        if (target.api_version, target.kind) in BUILTIN_SCALE:
            return int((obj.get("spec") or {}).get("replicas") or 0), _version(obj) or ""
        scale = await self._objects.get_scale(target, ns)
        return int((scale.get("spec") or {}).get("replicas") or 0), _version(scale) or ""

    async def _scale(self, step: Step, context: StepContext, target: Target) -> dict[str, Any]:
        replicas = int(step.params["replicas"])
        marker = f"{context.plan}/{step.name}/{context.uid}"

        async def attempt() -> dict[str, Any]:
            obj = await self._read(target, context)
            annotations = _annotations(obj)
            current, _ = await self._replicas(target, obj, context.namespace)
            if annotations.get(SCALED_BY) == marker:  # a re-run: keep the original count
                previous = int(annotations[PREVIOUS_REPLICAS])
            else:
                previous = current
            mark = {
                "metadata": {"annotations": {SCALED_BY: marker, PREVIOUS_REPLICAS: str(previous)}}
            }
            if (target.api_version, target.kind) in BUILTIN_SCALE:
                body = steps.merge(mark, {"spec": {"replicas": replicas}})
                await self._objects.patch(
                    target, context.namespace, body, resource_version=_version(obj)
                )
            else:
                await self._objects.patch(
                    target, context.namespace, mark, resource_version=_version(obj)
                )
                await self._objects.patch_scale(
                    target, context.namespace, replicas, resource_version=None
                )
            return {
                "target": target.to_wire(),
                "kind": target.kind,
                "name": target.name,
                "previousReplicas": previous,
                "replicas": replicas,
            }

        return await self._retrying_conflicts(attempt)

    async def _undo_scale(
        self, step: Step, context: StepContext, target: Target, result: Mapping[str, Any]
    ) -> dict[str, Any]:
        marker = f"{context.plan}/{step.name}/{context.uid}"
        wrote = int(result.get("replicas", step.params["replicas"]))

        async def attempt() -> dict[str, Any]:
            obj = await self._read(target, context)
            annotations = _annotations(obj)
            ours = annotations.get(SCALED_BY) == marker
            recorded = result.get("previousReplicas")
            if recorded is None and ours:
                recorded = annotations.get(PREVIOUS_REPLICAS)
            if recorded is None:
                raise StepError(f"{target}: no previous replica count recorded; not restored")
            previous = int(recorded)
            current, version = await self._replicas(target, obj, context.namespace)
            if not ours and current == previous:  # undone already (the mark goes with it)
                return {"target": target.to_wire(), "restoredReplicas": previous}
            if current != wrote:
                raise StepError(
                    f"{target} was changed since step {step.name} scaled it; not restored to "
                    f"{previous}: spec.replicas: expected {wrote} (what this step set), "
                    f"found {current}"
                )
            unmark = {"metadata": {"annotations": {SCALED_BY: None, PREVIOUS_REPLICAS: None}}}
            if (target.api_version, target.kind) in BUILTIN_SCALE:
                body = steps.merge(unmark, {"spec": {"replicas": previous}})
                await self._objects.patch(target, context.namespace, body, resource_version=version)
            else:
                await self._objects.patch_scale(
                    target, context.namespace, previous, resource_version=version
                )
                await self._objects.patch(target, context.namespace, unmark)
            return {"target": target.to_wire(), "restoredReplicas": previous}

        return await self._retrying_conflicts(attempt)

    # -- patch ----------------------------------------------------------------------------

    @staticmethod
    def _recorded(
        annotations: Mapping[str, str], key: str, context: StepContext, step: Step
    ) -> list[steps.Field] | None:
        """The before-image this step wrote on the object, if it did."""
        try:
            value = json.loads(annotations[key])
            if value.get("uid") != context.uid or value.get("step") != step.name:
                return None
            return [steps.Field.from_wire(field) for field in value["fields"]]
        except (KeyError, ValueError, TypeError, AttributeError):
            return None

    async def _patch(self, step: Step, context: StepContext, target: Target) -> dict[str, Any]:
        patch: Mapping[str, Any] = step.params["patch"]
        kind = step.params.get("type", "merge")
        key = steps.before_annotation(context.plan, step.name)

        async def attempt() -> dict[str, Any]:
            obj = await self._read(target, context)
            fields = self._recorded(_annotations(obj), key, context, step)
            if fields is None:
                fields = steps.before_image(obj, patch)
            record = {
                "plan": context.plan,
                "uid": context.uid,
                "step": step.name,
                "fields": [field.to_wire(after=False) for field in fields],
            }
            mark = {"metadata": {"annotations": {key: json.dumps(record, sort_keys=True)}}}
            done = await self._objects.patch(
                target,
                context.namespace,
                steps.merge(patch, mark),
                strategic=kind == "strategic",
                resource_version=_version(obj),
            )
            return {
                "target": target.to_wire(),
                "type": kind,
                "annotation": key,
                "fields": [field.to_wire() for field in steps.written(fields, done)],
            }

        return await self._retrying_conflicts(attempt)

    async def _undo_patch(
        self, step: Step, context: StepContext, target: Target, result: Mapping[str, Any]
    ) -> dict[str, Any]:
        key = steps.before_annotation(context.plan, step.name)
        if not isinstance(result.get("fields"), list):
            raise StepError(f"{target}: the step's result records no fields; nothing restored")
        fields = [steps.Field.from_wire(field) for field in result["fields"]]
        names = [steps.field_name(field.path) for field in fields]

        async def attempt() -> dict[str, Any]:
            obj = await self._objects.get(target, context.namespace)
            if obj is None:
                raise StepError(
                    f"{target} is gone; cannot restore {', '.join(names)} in {context.namespace}"
                )
            ours = key in _annotations(obj)
            if not ours and steps.restored(obj, fields):  # undone already
                return {"target": target.to_wire(), "restored": names}
            changed = steps.drift(obj, fields)
            if changed:
                raise StepError(
                    f"{target} was changed since step {step.name} patched it; nothing restored: "
                    + "; ".join(str(change) for change in changed)
                )
            body = steps.merge(
                {"metadata": {"annotations": {key: None}}}, steps.restore_patch(fields)
            )
            await self._objects.patch(
                target, context.namespace, body, resource_version=_version(obj)
            )
            return {"target": target.to_wire(), "restored": names}

        return await self._retrying_conflicts(attempt)

    # -- apply ----------------------------------------------------------------------------

    async def _apply(self, step: Step, context: StepContext, target: Target) -> dict[str, Any]:
        marker = f"{context.plan}/{step.name}/{context.uid}"
        existing = await self._objects.get(target, context.namespace)
        if existing is not None:
            if _annotations(existing).get(CREATED_BY) != marker:
                raise StepError(
                    f"{target} already exists in namespace {context.namespace} and was not "
                    f"created by step {step.name} of plan {context.plan}; nothing was changed"
                )
            created = existing  # a re-run after a crash: this step created it
        else:
            manifest = copy.deepcopy(dict(step.params["manifest"]))
            metadata = manifest.setdefault("metadata", {})
            metadata["namespace"] = context.namespace
            metadata.setdefault("labels", {})[PLAN_LABEL] = steps.label_value(context.plan)
            metadata.setdefault("annotations", {})[CREATED_BY] = marker
            created = await self._objects.apply(manifest, context.namespace)
        return {"target": target.to_wire(), "uid": created["metadata"]["uid"], "created": True}

    async def _undo_apply(
        self, step: Step, context: StepContext, target: Target, result: Mapping[str, Any]
    ) -> dict[str, Any]:
        marker = f"{context.plan}/{step.name}/{context.uid}"
        existing = await self._objects.get(target, context.namespace)
        if existing is None:
            return {"target": target.to_wire(), "deleted": False, "note": "already gone"}
        uid = str(existing["metadata"]["uid"])
        recorded = result.get("uid")
        if _annotations(existing).get(CREATED_BY) != marker or (
            recorded is not None and recorded != uid
        ):
            return {
                "target": target.to_wire(),
                "deleted": False,
                "note": "the object of that name was not created by this step; left alone",
            }
        deleted = await self._objects.delete(target, context.namespace, uid=uid)
        return {"target": target.to_wire(), "deleted": deleted, "uid": uid}

    # -- wait ---------------------------------------------------------------------------

    async def _wait(self, step: Step, context: StepContext, target: Target) -> dict[str, Any]:
        return await waiting.until(
            self._objects, step, context.namespace, target, sleep=self._sleep, clock=self._clock
        )

    async def _undo_wait(
        self, step: Step, context: StepContext, target: Target, result: Mapping[str, Any]
    ) -> dict[str, Any]:
        return {"note": "a wait changes nothing; nothing to undo"}
