"""The kubernetes executor's ``wait`` step: an object polled until its condition, or the
value at a JSON path, is what the step asks for, with backoff (``api.defaults.WAIT_POLL``),
within the step's timeout. A timeout fails the step naming the target, the condition and
the last value seen (a scalar, cut short; of an object or list only its size)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from coordinator.api import defaults
from coordinator.api.plan import Step
from coordinator.core import steps
from coordinator.core.steps import Target
from coordinator.executors import StepError
from coordinator.k8s.client import ApiException, transient
from coordinator.k8s.objects import Objects, describe


async def until(
    objects: Objects,
    step: Step,
    namespace: str,
    target: Target,
    *,
    sleep: Callable[[float], Awaitable[None]],
    clock: Callable[[], float],
) -> dict[str, Any]:
    """Poll `target` in `namespace` until it is as `step` waits for; the step's result
    (what was seen), or StepError when the timeout passes first."""
    timeout = steps.timeout_seconds(step)
    params = step.params
    condition = params.get("condition")
    if condition is not None:
        wanted = f"condition {condition['type']}={condition['status']}"
    else:
        path = steps.json_path(params["jsonPath"])
        wanted = f"{params['jsonPath']}={steps.text(params['value'])}"
    deadline = clock() + timeout
    pauses = defaults.WAIT_POLL.delays()
    while True:
        seen: str
        try:
            obj = await objects.get(target, namespace)
        except ApiException as exc:
            if not transient(exc):
                raise
            obj, seen = None, describe(exc)
        else:
            seen = "not found"
        if obj is not None:
            if condition is not None:
                status = steps.condition_seen(obj, condition["type"])
                seen = (
                    f"no condition {condition['type']}"
                    if status is None
                    else f"{condition['type']}={steps.seen(status)}"
                )
                if status == condition["status"]:
                    return {"target": target.to_wire(), "seen": seen}
            else:
                value = steps.lookup(obj, path)
                seen = f"{params['jsonPath']}={steps.seen(value)}"
                if value is not steps.ABSENT and steps.text(value) == steps.text(params["value"]):
                    return {"target": target.to_wire(), "seen": seen}
        left = deadline - clock()
        if left <= 0:
            raise StepError(
                f"timed out after {timeout}s waiting for {target} to have {wanted}; "
                f"last seen: {seen}"
            )
        await sleep(min(next(pauses), left))
