"""The simulated executor: realistic results and timings, and failures on request.

Catalogue actions report what the origin design reported — take_snapshot
``{snapshot_id, size_gb}`` (500 ms), migrate_workload ``{migrated_instances, status}``
(2000 ms), validate_quality ``{quality_score, passed}`` (500 ms); any other action
``{status: completed}`` (500 ms). Parameters:

- ``durationMs``: how long the step takes;
- ``fail``: ``true`` or a message makes the step fail;
- ``failUndo``: ``true`` or a message makes its rollback fail;
- ``undoDurationMs``: how long the rollback takes (default 100 ms).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from typing import Any, Final

from coordinator.api.plan import Step
from coordinator.core.plan import Outcome
from coordinator.executors import StepContext

DURATIONS_MS: Final[Mapping[str, int]] = {
    "take_snapshot": 500,
    "migrate_workload": 2000,
    "validate_quality": 500,
}
DEFAULT_DURATION_MS: Final = 500
DEFAULT_UNDO_MS: Final = 100


def _failure(value: Any, what: str) -> str | None:
    if value is True:
        return f"{what} failed (simulated: params.fail)"
    if isinstance(value, str) and value:
        return value
    return None


def _ms(value: Any, default: int) -> int:
    return int(value) if isinstance(value, int | float) and value >= 0 else default


def result_for(step: Step, *, context: StepContext) -> dict[str, Any]:
    """The result a successful step reports; stable for the same plan and step."""
    digest = hashlib.sha256(f"{context.uid}/{step.name}".encode()).hexdigest()
    if step.action == "take_snapshot":
        return {"snapshot_id": f"snap-{digest[:8]}", "size_gb": 100}
    if step.action == "migrate_workload":
        return {"migrated_instances": int(step.params.get("instances", 3)), "status": "completed"}
    if step.action == "validate_quality":
        return {"quality_score": 0.95, "passed": True}
    return {"status": "completed"}


class SimulatedExecutor:
    async def execute(self, step: Step, *, context: StepContext) -> Outcome:
        duration = _ms(
            step.params.get("durationMs"), DURATIONS_MS.get(step.action, DEFAULT_DURATION_MS)
        )
        await asyncio.sleep(duration / 1000)
        error = _failure(step.params.get("fail"), step.name)
        if error:
            return Outcome(ok=False, error=error, duration_ms=duration)
        return Outcome(ok=True, result=result_for(step, context=context), duration_ms=duration)

    async def undo(
        self, step: Step, *, result: Mapping[str, Any] | None, context: StepContext
    ) -> Outcome:
        duration = _ms(step.params.get("undoDurationMs"), DEFAULT_UNDO_MS)
        await asyncio.sleep(duration / 1000)
        error = _failure(step.params.get("failUndo"), f"rollback of {step.name}")
        if error:
            return Outcome(ok=False, error=error, duration_ms=duration)
        return Outcome(ok=True, result={"restored": True}, duration_ms=duration)
