"""Standard Kubernetes conditions (metav1.Condition), computed the same way for every kind.

``lastTransitionTime`` moves only when the condition's status changes (as Kubernetes
defines it): a new reason or message with the same status keeps the time it became so.

Besides ``Ready``, every kind carries the two "abnormal-true" conditions that kstatus
(sigs.k8s.io/cli-utils/pkg/kstatus/status, which Flux's health checks use) reads before
anything else: ``Reconciling`` True while the object is on its way (kstatus:
InProgress) and ``Stalled`` True once it ended short of its goal and will not move
without a change (kstatus: Failed). As kstatus and Flux have it, each is present only
while True: its absence means False. See ``progressed``.

Pure: no clock (``now`` is always passed in), no I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import datetime
from typing import Final

from coordinator.api.common import Condition, ConditionStatus

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"


class Progress(enum.StrEnum):
    """Where an object stands, as kstatus names it."""

    CURRENT = "Current"
    """Reached what it is for (Ready True): neither Reconciling nor Stalled."""
    IN_PROGRESS = "InProgress"
    """On its way, or waiting for someone (a decision, a start): Reconciling True."""
    FAILED = "Failed"
    """Ended short of its goal, or cannot go on without a change: Stalled True."""


_ABNORMAL: Final = {Progress.IN_PROGRESS: RECONCILING, Progress.FAILED: STALLED}


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


def progressed(
    conditions: Sequence[Condition],
    progress: Progress,
    *,
    old: Sequence[Condition],
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
) -> list[Condition]:
    """`conditions` with the kstatus conditions of `progress`: Reconciling True while in
    progress, Stalled True once failed, neither when current; the one that does not
    apply is removed, every other condition kept in its place. `old` are the conditions
    the object had (they tell since when)."""
    type_ = _ABNORMAL.get(progress)
    kept = [c for c in conditions if c.type == type_ or c.type not in (RECONCILING, STALLED)]
    if type_ is None:
        return kept
    return merged(
        kept,
        condition(old, type_, True, reason=reason, message=message, generation=generation, now=now),
    )
