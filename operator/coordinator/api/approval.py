"""Approval: a decision asked of a person (or taken by policy) for one recommendation."""

from __future__ import annotations

import enum
from typing import Literal

import pydantic

from coordinator.api.common import (
    API_VERSION,
    CONDITIONS,
    Condition,
    Model,
    RiskLevel,
    Time,
    immutable,
    rules,
)
from coordinator.api.meta import ObjectMeta
from coordinator.api.policy import Approver


class Decision(enum.StrEnum):
    PENDING = "Pending"
    APPROVED = "Approved"
    REJECTED = "Rejected"


class ApprovalPhase(enum.StrEnum):
    PENDING = "Pending"
    APPROVED = "Approved"
    REJECTED = "Rejected"
    EXPIRED = "Expired"
    WITHDRAWN = "Withdrawn"


POLICY_DECIDER = "policy"


class ApprovalSpec(Model):
    """The question and its answer. People change only decision and reason."""

    model_config = pydantic.ConfigDict(
        json_schema_extra=rules(
            (
                "oldSelf.decision == 'Pending' || self.decision == oldSelf.decision",
                "the decision is final: a decided approval cannot change",
            ),
            (
                "oldSelf.decision == 'Pending' || (has(self.reason) ? self.reason : '') == "
                "(has(oldSelf.reason) ? oldSelf.reason : '')",
                "the reason of a decided approval cannot change",
            ),
        )
    )

    recommendation: str = pydantic.Field(
        min_length=1,
        max_length=253,
        description="Name of the recommendation to decide on.",
        json_schema_extra=immutable("recommendation"),
    )
    recommendation_generation: int = pydantic.Field(
        ge=1,
        description="The generation of the recommendation's spec that is being approved.",
        json_schema_extra=immutable("recommendationGeneration"),
    )
    customer_id: str = pydantic.Field(
        min_length=1,
        max_length=63,
        description="Customer of the recommendation (copied).",
        json_schema_extra=immutable("customerId"),
    )
    risk_level: RiskLevel = pydantic.Field(
        description="Risk of the recommendation (copied).", json_schema_extra=immutable("riskLevel")
    )
    expires_at: Time = pydantic.Field(
        description="After this time the approval can no longer be decided. Set at creation; "
        "immutable.",
        json_schema_extra=immutable("expiresAt"),
    )
    decision: Decision = pydantic.Field(
        default=Decision.PENDING,
        description="Pending, Approved or Rejected. Set it with kubectl patch; once it is not "
        "Pending it cannot change.",
    )
    reason: str | None = pydantic.Field(
        default=None, max_length=1024, description="Why: free text, recorded with the decision."
    )
    required: int = pydantic.Field(
        default=1,
        ge=1,
        le=20,
        description="How many distinct eligible people (never the submitter) must approve; "
        "from the ApprovalPolicies that applied. Each approver sets decision to Approved: "
        "the vote is recorded in status.responses, and decision stays Pending until enough "
        "have approved. Set at creation; immutable.",
        json_schema_extra=immutable("required"),
    )
    approver_sets: list[ApproverSet] = pydantic.Field(
        default_factory=list,
        max_length=32,
        description="Who may decide, one entry per ApprovalPolicy that names approvers: a "
        "voter must be in at least one, and each needs an approving member. Empty: anyone "
        "allowed to patch approvals. Set at creation; immutable.",
        json_schema_extra=immutable("approverSets"),
    )
    policies: list[str] = pydantic.Field(
        default_factory=list,
        max_length=64,
        description="The ApprovalPolicies that applied when it was requested. Set at creation; "
        "immutable.",
        json_schema_extra=immutable("policies"),
    )


class ApproverSet(Model):
    """The approvers one ApprovalPolicy names."""

    policy: str = pydantic.Field(min_length=1, max_length=253, description="The policy.")
    approvers: list[Approver] = pydantic.Field(
        min_length=1, max_length=256, description="Users or groups."
    )


class Response(Model):
    """One person's vote, as the API server authenticated them."""

    user: str = pydantic.Field(description="The authenticated user.")
    groups: list[str] = pydantic.Field(
        default_factory=list, description="Their groups, as the API server saw them."
    )
    decision: Decision = pydantic.Field(description="Approved or Rejected.")
    reason: str | None = pydantic.Field(default=None, description="Why.")
    at: Time = pydantic.Field(description="When.")


HISTORY_LIMIT = 20
"""How many earlier requests an approval's ``status.history`` keeps (the newest ones)."""


class ApprovalRecord(Model):
    """How an earlier request for the same recommendation ended: an entry of status.history."""

    generation: int = pydantic.Field(
        ge=1, description="The generation of the recommendation's spec that was asked about."
    )
    phase: ApprovalPhase = pydantic.Field(
        description="How it ended: Approved, Rejected, Expired, or Withdrawn (the "
        "recommendation changed, or was superseded or blocked, before a decision)."
    )
    requested_at: Time | None = pydantic.Field(default=None, description="When it was asked.")
    expires_at: Time | None = pydantic.Field(default=None, description="When it expired.")
    decided_at: Time | None = pydantic.Field(default=None, description="When it was decided.")
    decided_by: str | None = pydantic.Field(
        default=None,
        description="The authenticated user who decided; 'policy' for automatic decisions.",
    )
    reason: str | None = pydantic.Field(default=None, description="Why it was decided so.")


class ApprovalStatus(Model):
    """The recorded decision. Written by the operator only."""

    phase: ApprovalPhase = pydantic.Field(
        default=ApprovalPhase.PENDING,
        description="Pending, Approved, Rejected, Expired or Withdrawn.",
    )
    requested_at: Time | None = pydantic.Field(default=None, description="When it was asked.")
    expires_at: Time | None = pydantic.Field(default=None, description="When it expires.")
    decided_at: Time | None = pydantic.Field(default=None, description="When it was decided.")
    decided_by: str | None = pydantic.Field(
        default=None,
        description="The authenticated user who decided, as the API server saw them; "
        "'policy' for automatic decisions.",
    )
    reason: str | None = pydantic.Field(default=None, description="Why it was decided so.")
    message: str | None = pydantic.Field(default=None, description="What happened last.")
    observed_generation: int | None = pydantic.Field(
        default=None, description="The .metadata.generation this status was computed for."
    )
    conditions: list[Condition] = pydantic.Field(
        default_factory=list,
        description="Standard conditions. Ready: True once approved, Unknown while pending, "
        "False when rejected, expired or withdrawn; the reason is the phase. Reconciling "
        "(True while pending) and Stalled (True once rejected, expired or withdrawn), the "
        "kstatus conditions that Flux reads, are present only while True.",
        json_schema_extra=CONDITIONS,
    )
    responses: list[Response] = pydantic.Field(
        default_factory=list,
        description="One entry per person who decided, in order, recorded from the "
        "authenticated request by the admission webhook (never from the client).",
    )
    history: list[ApprovalRecord] = pydantic.Field(
        default_factory=list,
        max_length=HISTORY_LIMIT,
        description="The earlier requests for this recommendation, oldest first (at most "
        f"{HISTORY_LIMIT}, the newest kept): an approval is replaced when the "
        "recommendation's spec changes or after it was withdrawn, and the decisions on the "
        "earlier generations are kept here.",
    )


class Approval(Model):
    api_version: Literal["optiinfra.io/v1alpha1"] = API_VERSION
    kind: Literal["Approval"] = "Approval"
    metadata: ObjectMeta
    spec: ApprovalSpec
    status: ApprovalStatus | None = None
