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
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Final

from coordinator.api.common import (
    SUBMITTED_BY_ANNOTATION,
    SUBMITTER_MAY_NOT_ANNOTATION,
    RiskLevel,
)
from coordinator.api.plan import Executor, Step
from coordinator.api.recommendation import RecommendationSpec

DRASTIC_ACTION: Final = re.compile(r"^(delete|remove|terminate|destroy|drop|purge)(_|$)")


@dataclasses.dataclass(frozen=True, slots=True)
class ApprovalPolicy:
    """How long an approval request stands before it expires, by risk; and the least risk
    an action is taken to have, whatever the agent labels it (``min_risk``)."""

    critical: timedelta = timedelta(hours=4)
    high: timedelta = timedelta(hours=24)
    medium: timedelta = timedelta(hours=48)
    low: timedelta = timedelta(hours=72)
    min_risk: tuple[tuple[str, RiskLevel], ...] = ()
    """(action, level) pairs: `coordinator run --min-risk ACTION=LEVEL`."""
    admission: bool | None = None
    """Whether the admission webhooks stamp every recommendation (the operator's): True,
    an unstamped one is not trusted (no decision by policy); False (webhooks off), a plan
    that changes the cluster or calls an agent needs a person; None (``coordinator
    check``, tests of the rules): no stamps are expected."""
    calibrate_savings: bool = False
    """Rank conflicts on estimatedSavings x the agent's measured realisation ratio
    (``coordinator run --calibrate-savings``; ``core.verification.calibrated_rank``)."""
    shard: str | None = None
    """With shards (``coordinator run --shard``): this replica's identity, written in the
    status of every recommendation it decides; None with one active replica."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, timedelta) and value <= timedelta(0):
                raise ValueError(f"the expiry for {field.name} risk must be positive")


DEFAULT_POLICY: Final = ApprovalPolicy()


def needs_approval(spec: RecommendationSpec) -> bool:
    """Whether a person must approve: always, unless low risk with ``autoApprove``."""
    return not (spec.risk_level is RiskLevel.LOW and spec.auto_approve)


@dataclasses.dataclass(frozen=True, slots=True)
class Assessment:
    """The risk a recommendation is treated as having, and whether a person must decide."""

    risk: RiskLevel
    needs_person: bool
    reasons: tuple[str, ...] = ()
    """Why the risk was raised or a person must decide although the spec says otherwise."""

    @property
    def why(self) -> str:
        return "; ".join(self.reasons)


def assess(
    spec: RecommendationSpec,
    steps: Sequence[Step],
    *,
    annotations: Mapping[str, str],
    policy: ApprovalPolicy,
    auto_approves: Callable[[RiskLevel], bool] | None = None,
) -> Assessment:
    """RULES 4 with two guards against an agent that labels a drastic change ``low``:

    - a floor per action: scaling to zero and deleting (delete_*, remove_*, ...) are at
      least ``high``; ``policy.min_risk`` adds floors for named actions;
    - no confused deputy: when admission found that the submitter may not make one of the
      plan's cluster changes themselves, a person must approve.
    """
    risk = spec.risk_level
    reasons = []
    for level, why in _floors(spec, steps, policy):
        if level.rank > risk.rank:
            reasons.append(f"risk raised from {risk.value} to {level.value}: {why}")
            risk = level
    allowed = auto_approves(risk) if auto_approves is not None else risk is RiskLevel.LOW
    needs_person = not (allowed and spec.auto_approve)
    denied = annotations.get(SUBMITTER_MAY_NOT_ANNOTATION)
    if denied:
        needs_person = True
        reasons.append(f"a person must approve: the submitter {denied}")
    unchecked = unchecked_reason(annotations, steps, admission=policy.admission)
    if unchecked:  # fail closed: what admission did not check is not approved by policy
        needs_person = True
        reasons.append(unchecked)
    return Assessment(risk=risk, needs_person=needs_person, reasons=tuple(reasons))


def resubmit_hint(name: str) -> str:
    """How an unstamped recommendation gets its stamp: any update stamps it, but a
    `kubectl apply` of the same file sends nothing, so the hint names a change that does."""
    return (
        "its submitter re-applies it (kubectl apply with any change, or kubectl annotate "
        f"recommendation {name} optiinfra.io/resubmitted=1 --overwrite), which stamps it"
    )


def not_admitted(name: str) -> str:
    """Why recommendation `name`, not stamped by admission, is not trusted, and the remedy."""
    return (
        "the admission webhooks did not stamp it (who submitted it is unknown): "
        f"{resubmit_hint(name)}; until then no policy decides it and no person's decision "
        "on it is accepted"
    )


def stamped(annotations: Mapping[str, str]) -> bool:
    """Whether the admission webhooks stamped the recommendation with its submitter."""
    return bool(annotations.get(SUBMITTED_BY_ANNOTATION))


def unchecked_reason(
    annotations: Mapping[str, str], steps: Sequence[Step], *, admission: bool | None
) -> str | None:
    """Why a person must approve because admission did not check the recommendation, or
    None: with the webhooks on, an unstamped one is not trusted at all; with them off,
    nothing was checked, so a plan that changes the cluster or calls an agent (with the
    operator's rights) needs a person."""
    if admission is None or stamped(annotations):
        return None
    if admission:
        return f"a person must approve: {not_admitted('<name>')}"
    acting = sorted({s.executor.value for s in steps if s.executor is not Executor.SIMULATED})
    if not acting:
        return None
    return (
        "a person must approve: the admission webhooks are off, so nobody checked what the "
        f"submitter may do, and the plan has {' and '.join(acting)} steps"
    )


def _floors(
    spec: RecommendationSpec, steps: Sequence[Step], policy: ApprovalPolicy
) -> list[tuple[RiskLevel, str]]:
    floors = [
        (level, f"the policy's minimum for {spec.action}")
        for action, level in policy.min_risk
        if action == spec.action
    ]
    if DRASTIC_ACTION.match(spec.action):
        floors.append((RiskLevel.HIGH, f"{spec.action} deletes"))
    for step in steps:
        if step.action in ("scale", "scale_workload") and step.params.get("replicas") == 0:
            target = step.params.get("target") or {}
            name = target.get("name") if isinstance(target, dict) else None
            name = name or step.params.get("name") or "the workload"
            floors.append((RiskLevel.HIGH, f"step {step.name} scales {name} to zero"))
    return floors


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
