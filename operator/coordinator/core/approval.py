"""The approval policy (RULES 4): who must approve, for how long a request stands.

An approval is needed unless the risk is ``low`` and ``autoApprove`` is true. A request
expires after a time that depends on the risk (critical 4h, high 24h, medium 48h,
low 72h by default; ``ApprovalPolicy`` changes them). An approval is bound to the
generation of the recommendation it was made for, and an expired one cannot be decided.

Pure: no clock (``now`` is always passed in), no I/O, no cluster. ``parse_duration`` and
``format_duration`` read and write the durations of the command-line flags.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime, timedelta
from typing import Final

from coordinator.api.approval import ApprovalSpec
from coordinator.api.common import RiskLevel
from coordinator.api.recommendation import RecommendationSpec


@dataclasses.dataclass(frozen=True, slots=True)
class ApprovalPolicy:
    """How long an approval request stands before it expires, by risk."""

    critical: timedelta = timedelta(hours=4)
    high: timedelta = timedelta(hours=24)
    medium: timedelta = timedelta(hours=48)
    low: timedelta = timedelta(hours=72)

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            if getattr(self, field.name) <= timedelta(0):
                raise ValueError(f"the expiry for {field.name} risk must be positive")


DEFAULT_POLICY: Final = ApprovalPolicy()


def needs_approval(spec: RecommendationSpec) -> bool:
    """Whether a person must approve: always, unless low risk with ``autoApprove``."""
    return not (spec.risk_level is RiskLevel.LOW and spec.auto_approve)


def expires_after(risk: RiskLevel, *, policy: ApprovalPolicy) -> timedelta:
    """How long after the request an approval for a change of ``risk`` expires."""
    match risk:
        case RiskLevel.CRITICAL:
            return policy.critical
        case RiskLevel.HIGH:
            return policy.high
        case RiskLevel.MEDIUM:
            return policy.medium
        case RiskLevel.LOW:
            return policy.low


def expires_at(requested_at: datetime, risk: RiskLevel, *, policy: ApprovalPolicy) -> datetime:
    """When an approval requested at ``requested_at`` expires."""
    return requested_at + expires_after(risk, policy=policy)


def is_expired(expires_at: datetime, *, now: datetime) -> bool:
    """Whether the time to decide is over (from ``expires_at`` on, inclusive)."""
    return now >= expires_at


def is_bound_to(approval: ApprovalSpec, *, generation: int) -> bool:
    """Whether ``approval`` was asked for this generation of the recommendation's spec.

    A decision on another generation is void: the spec changed after it was asked for.
    """
    return approval.recommendation_generation == generation


_DURATION: Final = re.compile(r"(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?")
_UNITS: Final = (timedelta(days=1), timedelta(hours=1), timedelta(minutes=1), timedelta(seconds=1))
"""The value of one of each unit, in the order of the groups of ``_DURATION``."""


def parse_duration(text: str) -> timedelta:
    """A duration such as ``90s``, ``30m``, ``4h``, ``1h30m`` or ``2d``.

    Whole numbers with the units d, h, m, s, each at most once and in that order.
    ValueError, saying what is accepted, for anything else.
    """
    match = _DURATION.fullmatch(text)
    if not text or match is None:
        raise ValueError(
            f"invalid duration {text!r}: expected whole numbers with units d, h, m, s "
            "in that order, such as 90s, 30m, 4h, 1h30m or 2d"
        )
    return sum(
        (
            int(amount) * unit
            for amount, unit in zip(match.groups(), _UNITS, strict=True)
            if amount is not None
        ),
        timedelta(0),
    )


def format_duration(duration: timedelta) -> str:
    """A duration of whole seconds as ``parse_duration`` reads it, in h, m and s.

    ``48h``, ``1h30m``, ``1m30s``: days are written as hours (``2d`` -> ``48h``).
    """
    seconds = int(duration.total_seconds())
    if seconds == 0:
        return "0s"
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return "".join(
        f"{amount}{unit}"
        for amount, unit in ((hours, "h"), (minutes, "m"), (seconds, "s"))
        if amount
    )
