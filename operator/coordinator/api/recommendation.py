"""Recommendation: a change an optimisation agent proposes; its spec belongs to the agent."""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

import pydantic

from coordinator.api.common import API_VERSION, CONDITIONS, Condition, Model, RiskLevel
from coordinator.api.meta import ObjectMeta
from coordinator.api.plan import ACTION_PATTERN, Step, step_list_schema
from coordinator.api.verification import RecommendationVerification, SavingsStatus

# An entry of affectedResources: any identifier of the customer's infrastructure.
Name = Annotated[str, pydantic.StringConstraints(min_length=1, max_length=253)]
# An entry of dependsOn: the name of a Kubernetes object (a DNS subdomain).
ObjectName = Annotated[
    str,
    pydantic.StringConstraints(
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    ),
]


class RecommendationPhase(enum.StrEnum):
    PENDING = "Pending"
    BLOCKED = "Blocked"
    SUPERSEDED = "Superseded"
    AWAITING_APPROVAL = "AwaitingApproval"
    APPROVED = "Approved"
    REJECTED = "Rejected"
    EXPIRED = "Expired"
    EXECUTING = "Executing"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ROLLED_BACK = "RolledBack"

    @property
    def ended(self) -> bool:
        """Finished for good; takes no part in anything."""
        return self in _ENDED


_ENDED = frozenset(
    {
        RecommendationPhase.REJECTED,
        RecommendationPhase.EXPIRED,
        RecommendationPhase.SUCCEEDED,
        RecommendationPhase.FAILED,
        RecommendationPhase.ROLLED_BACK,
    }
)


class ConflictType(enum.StrEnum):
    RESOURCE = "resource"
    ACTION = "action"
    DEPENDENCY = "dependency"


class Target(Model):
    """An object in the recommendation's namespace that the action acts on."""

    api_version: str = pydantic.Field(
        min_length=1, max_length=253, description="apiVersion of the object, e.g. apps/v1."
    )
    kind: str = pydantic.Field(
        min_length=1, max_length=63, description="Kind of the object, e.g. Deployment."
    )
    name: ObjectName = pydantic.Field(description="Name of the object.")

    def text(self) -> str:
        return f"{self.kind}/{self.name}"


class RecommendationSpec(Model):
    """What an agent proposes. The operator never writes it."""

    customer_id: str = pydantic.Field(
        min_length=1,
        max_length=63,
        description="The customer this change is for. Only recommendations of the same customer "
        "in the same namespace can conflict.",
    )
    agent_id: str = pydantic.Field(
        min_length=1, max_length=253, description="The agent that proposed the change."
    )
    agent_type: str = pydantic.Field(
        min_length=1,
        max_length=63,
        description="Kind of agent: cost, performance, resource, ...",
    )
    type: str | None = pydantic.Field(
        default=None, max_length=63, description="Free classification of the change."
    )
    title: str = pydantic.Field(
        min_length=1, max_length=256, description="One line saying what the change is."
    )
    description: str | None = pydantic.Field(
        default=None, max_length=4096, description="Longer explanation."
    )
    action: str = pydantic.Field(
        pattern=ACTION_PATTERN,
        description="What to do, in snake_case: migrate_to_spot, scale_down, scale_up, ... "
        "It picks the default plan and decides contradictions (scale_up vs scale_down).",
    )
    risk_level: RiskLevel = pydantic.Field(
        description="low, medium, high or critical. Anything above low needs a person's "
        "approval; the approval expires after 72h, 48h, 24h or 4h respectively."
    )
    estimated_savings: float = pydantic.Field(
        default=0, ge=0, description="Estimated monthly savings in USD. Breaks priority ties."
    )
    affected_resources: list[Name] = pydantic.Field(
        default_factory=list,
        max_length=256,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Resources the change touches (a set). Two recommendations that share one "
        "conflict; the better-ranked one is kept.",
    )
    priority: int = pydantic.Field(
        default=0, ge=0, le=1000, description="0..1000; higher wins a conflict."
    )
    confidence: float = pydantic.Field(
        default=1, ge=0, le=1, description="0..1, the agent's confidence. Breaks savings ties."
    )
    depends_on: list[ObjectName] = pydantic.Field(
        default_factory=list,
        max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Names of recommendations in the same namespace that must succeed before "
        "this one runs. A cycle or a missing name blocks it.",
    )
    auto_approve: bool = pydantic.Field(
        default=True,
        description="When true, a low-risk recommendation is approved by policy.",
    )
    execute_now: bool = pydantic.Field(
        default=False,
        description="When true, the plan starts as soon as it is approved; otherwise it is "
        "created suspended.",
    )
    target: Target | None = pydantic.Field(
        default=None,
        description="The object in this namespace that the action acts on (cluster actions: "
        "scale_up, scale_down, rightsize, increase_/decrease_*, enable_autoscaling). Without "
        "it the default plan asks the proposing agent to carry the action out (a webhook "
        "step to the AgentEndpoint named after agentId).",
    )
    parameters: dict[str, Any] | None = pydantic.Field(
        default=None,
        description="What the default plan needs besides the target: replicas (scale_up, "
        "scale_down); container and resources (rightsize, increase_*/decrease_*); "
        "minReplicas, maxReplicas, targetCPUUtilizationPercentage (enable_autoscaling); "
        "anything the agent's webhook takes (cloud actions).",
    )
    steps: list[Step] | None = pydantic.Field(
        default=None,
        min_length=1,
        max_length=64,
        json_schema_extra=step_list_schema(),
        description="Steps of the plan. When omitted, the default plan of the action is used.",
    )
    verification: RecommendationVerification | None = pydantic.Field(
        default=None,
        description="More VerificationTemplates to check the change with, besides those that "
        "select it (it can add, never remove).",
    )

    @pydantic.field_validator("affected_resources", "depends_on")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        seen: set[str] = set()
        for item in value:
            if item in seen:
                raise ValueError(f"duplicate entry {item!r}: the list is a set")
            seen.add(item)
        return value

    @pydantic.field_validator("steps")
    @classmethod
    def _unique_step_names(cls, value: list[Step] | None) -> list[Step] | None:
        names = [step.name for step in value or ()]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"step names must be unique; repeated: {', '.join(dupes)}")
        return value


class Conflict(Model):
    """A conflict with other recommendations, and how it was resolved."""

    type: ConflictType = pydantic.Field(description="resource, action or dependency.")
    with_: list[str] = pydantic.Field(
        alias="with", description="Names of the other recommendations in the conflict."
    )
    resources: list[str] = pydantic.Field(
        default_factory=list, description="The shared resources, sorted."
    )
    severity: RiskLevel = pydantic.Field(description="low, medium, high or critical.")
    description: str = pydantic.Field(description="What the conflict is.")
    resolution: str = pydantic.Field(
        default="", description="How it was resolved; empty while unresolved."
    )


class RecommendationStatus(Model):
    """What the operator decided. Written by the operator only."""

    phase: RecommendationPhase = pydantic.Field(
        default=RecommendationPhase.PENDING, description="Where the recommendation stands."
    )
    conflicts: list[Conflict] = pydantic.Field(
        default_factory=list, description="Conflicts with other recommendations."
    )
    superseded_by: str | None = pydantic.Field(
        default=None, description="When Superseded: the recommendation that won."
    )
    approval: str | None = pydantic.Field(default=None, description="Name of the Approval.")
    plan: str | None = pydantic.Field(default=None, description="Name of the ExecutionPlan.")
    message: str | None = pydantic.Field(default=None, description="Why it is in this phase.")
    policies: list[str] = pydantic.Field(
        default_factory=list,
        description="The ApprovalPolicies that select it, combined most-restrictively (the "
        "approvals required, who may decide, expiry, autoApprove, windows, budget).",
    )
    realised_savings: SavingsStatus | None = pydantic.Field(
        default=None,
        description="Estimated against realised monthly savings, copied from the plan's "
        "verification once measured.",
    )
    shard: str | None = pydantic.Field(
        default=None,
        description="With shards (coordinator run --shard): the replica that decided it, the "
        "holder of the live Lease of the ring that owns its customer by consistent hashing. "
        "Absent with one active replica.",
    )
    observed_generation: int | None = pydantic.Field(
        default=None, description="The .metadata.generation this status was computed for."
    )
    conditions: list[Condition] = pydantic.Field(
        default_factory=list,
        description="Standard conditions: Conflicting, Ready (True once Succeeded; the reason "
        "is the phase), Admitted (with the admission webhooks on), and the kstatus conditions "
        "that Flux reads, present only while True: Reconciling while Pending, "
        "AwaitingApproval, Approved, Executing or Superseded, Stalled once Blocked, "
        "Rejected, Expired, Failed or RolledBack.",
        json_schema_extra=CONDITIONS,
    )


class Recommendation(Model):
    api_version: Literal["optiinfra.io/v1alpha1"] = API_VERSION
    kind: Literal["Recommendation"] = "Recommendation"
    metadata: ObjectMeta
    spec: RecommendationSpec
    status: RecommendationStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def phase(self) -> RecommendationPhase:
        return self.status.phase if self.status else RecommendationPhase.PENDING
