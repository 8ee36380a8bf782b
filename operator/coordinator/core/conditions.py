"""Standard Kubernetes conditions (metav1.Condition), computed the same way for every kind.

``lastTransitionTime`` moves only when the condition's status changes (as Kubernetes
defines it): a new reason or message with the same status keeps the time it became so.

Pure: no clock (``now`` is always passed in), no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from coordinator.api.common import Condition, ConditionStatus

READY = "Ready"


def condition(
    old: Sequence[Condition],
    type_: str,
    status: ConditionStatus | bool,
    *,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
) -> Condition:
    """Condition `type_` as it should be now, given the conditions `old` it had."""
    if isinstance(status, bool):
        status = ConditionStatus.TRUE if status else ConditionStatus.FALSE
    previous = next((c for c in old if c.type == type_), None)
    since = (
        previous.last_transition_time
        if previous is not None and previous.status is status and previous.last_transition_time
        else now
    )
    return Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )


def merged(old: Sequence[Condition], *new: Condition) -> list[Condition]:
    """`old` with each of `new` in place of the condition of its type (others kept)."""
    replaced = {c.type: c for c in new}
    kept = [replaced.pop(c.type, c) for c in old]
    return [*kept, *replaced.values()]
