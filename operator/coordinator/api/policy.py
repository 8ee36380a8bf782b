"""ApprovalPolicy: how a team decides the recommendations it selects.

Written by admins, namespaced. A policy selects recommendations (``selector``; empty
matches all in its namespace) and sets, for them: how many distinct eligible people
must approve and who is eligible (``approvals``), how long a request stands (``expiry``,
per risk), up to which risk a change is approved by policy (``autoApprove.maxRisk``),
when a plan may start (``windows``: Allow and Deny, a cron schedule, a duration and an
IANA time zone), how many plans of one customer may run at once
(``maxConcurrentPlans``) and whom to tell (``notify``). When several policies select one
recommendation, the most restrictive value wins field by field (see
``coordinator.core.policy.merge``).
"""

from __future__ import annotations

import enum
from typing import Literal

import pydantic

from coordinator.api.common import API_VERSION, Model, RiskLevel, rules
from coordinator.api.meta import ObjectMeta

DURATION_PATTERN = r"^([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?$"


class PolicySelector(Model):
    """Which recommendations of the namespace the policy governs: those that match every
    list given (an empty or missing list matches anything)."""

    customer_ids: list[str] = pydantic.Field(
        default_factory=list, max_length=256, description="spec.customerId is one of these."
    )
    actions: list[str] = pydantic.Field(
        default_factory=list, max_length=256, description="spec.action is one of these."
    )
    agent_types: list[str] = pydantic.Field(
        default_factory=list, max_length=256, description="spec.agentType is one of these."
    )
    risk_levels: list[RiskLevel] = pydantic.Field(
        default_factory=list,
        max_length=4,
        description="The risk (after the operator's floors) is one of these.",
    )


class Approver(Model):
    """One eligible approver: a user, or a group, as the API server authenticates them."""

    model_config = pydantic.ConfigDict(
        json_schema_extra=rules(
            (
                "has(self.user) != has(self.group)",
                "an approver is either a user or a group",
            )
        )
    )

    user: str | None = pydantic.Field(
        default=None, min_length=1, max_length=253, description="A user name."
    )
    group: str | None = pydantic.Field(
        default=None, min_length=1, max_length=253, description="A group name."
    )

    @pydantic.model_validator(mode="after")
    def _one(self) -> Approver:
        if (self.user is None) == (self.group is None):
            raise ValueError("an approver is either a user or a group")
        return self

    def text(self) -> str:
        return f"user {self.user}" if self.user is not None else f"group {self.group}"


class Approvals(Model):
    """How many distinct people must approve, and who may."""

    required: int = pydantic.Field(
        default=1,
        ge=1,
        le=20,
        description="How many distinct eligible people (never the submitter) must approve.",
    )
    approvers: list[Approver] = pydantic.Field(
        default_factory=list,
        max_length=256,
        description="Who may decide: users or groups. Empty: anyone allowed by RBAC to patch "
        "approvals.",
    )


class Expiry(Model):
    """How long a request stands, by risk (90s, 30m, 4h, 1h30m, 2d)."""

    critical: str | None = pydantic.Field(
        default=None, max_length=32, pattern=DURATION_PATTERN, description="Critical risk."
    )
    high: str | None = pydantic.Field(
        default=None, max_length=32, pattern=DURATION_PATTERN, description="High risk."
    )
    medium: str | None = pydantic.Field(
        default=None, max_length=32, pattern=DURATION_PATTERN, description="Medium risk."
    )
    low: str | None = pydantic.Field(
        default=None, max_length=32, pattern=DURATION_PATTERN, description="Low risk."
    )


class MaxRisk(enum.StrEnum):
    NONE = "none"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class AutoApprove(Model):
    """Which changes are approved by policy, without a person."""

    max_risk: MaxRisk = pydantic.Field(
        default=MaxRisk.LOW,
        description="The highest risk approved by policy (when the recommendation's "
        "autoApprove is true): none, low, medium, high or critical.",
    )


class WindowKind(enum.StrEnum):
    ALLOW = "Allow"
    DENY = "Deny"


class Window(Model):
    """A recurring time span: plans start only inside Allow windows (if there are any) and
    never inside a Deny window (a freeze). A plan already running is not interrupted."""

    name: str = pydantic.Field(min_length=1, max_length=63, description="Shown in messages.")
    kind: WindowKind = pydantic.Field(description="Allow or Deny.")
    schedule: str = pydantic.Field(
        min_length=1,
        max_length=128,
        description="When the window opens: a cron expression of five fields (minute hour "
        "day-of-month month day-of-week), in timeZone.",
    )
    duration: str = pydantic.Field(
        min_length=2,
        max_length=32,
        pattern=DURATION_PATTERN,
        description="How long it stays open (90s, 30m, 4h, 1h30m, 2d).",
    )
    time_zone: str = pydantic.Field(
        default="UTC",
        min_length=1,
        max_length=64,
        description="IANA time zone of the schedule (Europe/Berlin); default UTC.",
    )


class NotifyEvent(enum.StrEnum):
    APPROVAL_REQUESTED = "ApprovalRequested"
    APPROVAL_EXPIRING_SOON = "ApprovalExpiringSoon"
    APPROVED = "Approved"
    REJECTED = "Rejected"
    EXPIRED = "Expired"
    PLAN_FAILED = "PlanFailed"
    ROLLED_BACK = "RolledBack"
    VERIFICATION_FAILED = "VerificationFailed"
    VERIFICATION_INCONCLUSIVE = "VerificationInconclusive"


class Notify(Model):
    """Whom to tell: a signed POST to an AgentEndpoint of the namespace."""

    endpoint: str = pydantic.Field(
        min_length=1, max_length=253, description="Name of an AgentEndpoint of the namespace."
    )
    events: list[NotifyEvent] = pydantic.Field(
        default_factory=list,
        max_length=9,
        description="Which events (empty: all of them).",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )


class ApprovalPolicySpec(Model):
    """What a policy sets for the recommendations it selects; every field is optional and a
    missing one leaves the built-in default (or another policy's value)."""

    selector: PolicySelector = pydantic.Field(
        default_factory=PolicySelector, description="Which recommendations it governs."
    )
    approvals: Approvals | None = pydantic.Field(
        default=None, description="N-of-M: how many distinct eligible people must approve."
    )
    expiry: Expiry | None = pydantic.Field(
        default=None, description="How long a request stands, by risk."
    )
    auto_approve: AutoApprove | None = pydantic.Field(
        default=None, description="Up to which risk changes are approved by policy."
    )
    windows: list[Window] = pydantic.Field(
        default_factory=list, max_length=32, description="When plans may (not) start."
    )
    max_concurrent_plans: int | None = pydantic.Field(
        default=None,
        ge=1,
        le=1000,
        description="At most this many plans of one customer Running at once; the others "
        "wait in rank order.",
    )
    notify: list[Notify] = pydantic.Field(
        default_factory=list, max_length=16, description="Whom to tell, on which events."
    )


class ApprovalPolicy(Model):
    api_version: Literal["optiinfra.io/v1alpha1"] = API_VERSION
    kind: Literal["ApprovalPolicy"] = "ApprovalPolicy"
    metadata: ObjectMeta
    spec: ApprovalPolicySpec
