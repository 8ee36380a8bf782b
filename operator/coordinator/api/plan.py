"""ExecutionPlan: the steps that carry out an approved recommendation, and their progress."""

from __future__ import annotations

import enum
from typing import Any, Literal

import pydantic

from coordinator.api.common import (
    API_VERSION,
    CONDITIONS,
    Condition,
    Model,
    Time,
    immutable,
    rules,
)
from coordinator.api.meta import ObjectMeta
from coordinator.api.verification import VerificationStatus

STEP_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9_]{0,61}[a-z0-9])?$"
ACTION_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
_UNIQUE_STEP_NAMES = (
    "self.all(s, self.exists_one(t, t.name == s.name))",
    "step names must be unique",
)


def step_list_schema(*extra_rules: tuple[str, str]) -> dict[str, Any]:
    """CRD extensions of a list of steps: a map keyed by name, names unique, plus extra rules."""
    return {
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["name"],
        **rules(_UNIQUE_STEP_NAMES, *extra_rules),
    }


class Executor(enum.StrEnum):
    """What carries a step out."""

    SIMULATED = "simulated"
    KUBERNETES = "kubernetes"
    WEBHOOK = "webhook"  # an agent outside the cluster, through an AgentEndpoint


class Step(Model):
    """One step of a plan."""

    name: str = pydantic.Field(
        pattern=STEP_NAME_PATTERN,
        max_length=63,
        description="Name of the step, unique in the plan (lower case, digits, '-' and '_').",
    )
    action: str = pydantic.Field(
        pattern=ACTION_PATTERN,
        description="What the step does, for example take_snapshot or scale_workload.",
    )
    critical: bool = pydantic.Field(
        default=True,
        description="A failed critical step rolls the plan back; a failed non-critical step "
        "is recorded and the plan goes on.",
    )
    reversible: bool = pydantic.Field(
        default=True,
        description="Whether the step can be undone when the plan rolls back.",
    )
    executor: Executor = pydantic.Field(
        description="Who carries the step out: kubernetes (a change to an object of this "
        "namespace), webhook (the agent behind the AgentEndpoint named in params.endpoint), "
        "or simulated (demos and tests only: nothing changes). Required: nothing is "
        "simulated unless a manifest says so.",
    )
    params: dict[str, Any] = pydantic.Field(
        default_factory=dict,
        description="Parameters for the executor, checked at admission. simulated: durationMs, "
        "fail, failUndo. kubernetes (always in the recommendation's namespace; target is "
        "{apiVersion, kind, name}): "
        "scale (alias scale_workload): target (or kind: Deployment|StatefulSet|ReplicaSet and "
        "name), replicas; the previous count is restored on rollback while the replicas are "
        "still what the step set. "
        "patch: target, patch (an object), type: merge (default) or strategic; the fields it "
        "sets are recorded (annotation optiinfra.io/before.<plan>.<step>) and restored on "
        "rollback only while they still hold what the step wrote (lists are restored whole). "
        "apply: manifest (one object; namespace forced to the recommendation's), created with "
        "server-side apply, labelled optiinfra.io/plan; fails if the object exists; deleted on "
        "rollback. "
        "wait: target, and condition {type, status} or jsonPath with value, timeoutSeconds "
        "(default 300); undo does nothing. "
        "webhook: endpoint (an AgentEndpoint of the namespace), timeoutSeconds (the step's, "
        "default 300), the rest passed to the agent.",
    )
    # --- executors (issue 12): how long a step may take --------------------------------------
    timeout_seconds: int | None = pydantic.Field(
        default=None,
        ge=1,
        description="How long the step may take, in seconds. kubernetes wait: how long to wait "
        "for the condition (default 300; params.timeoutSeconds takes precedence); a timeout "
        "fails the step.",
    )


class PlanPhase(enum.StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    VERIFYING = "Verifying"  # the steps are done; the metrics are being measured
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ROLLING_BACK = "RollingBack"
    ROLLED_BACK = "RolledBack"

    @property
    def ended(self) -> bool:
        return self in (PlanPhase.SUCCEEDED, PlanPhase.FAILED, PlanPhase.ROLLED_BACK)


class StepPhase(enum.StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"
    ROLLED_BACK = "RolledBack"
    ROLLBACK_FAILED = "RollbackFailed"


class ExecutionPlanSpec(Model):
    """What to run. Created by the operator; people only flip suspend and abort."""

    model_config = pydantic.ConfigDict(
        json_schema_extra=rules(("!oldSelf.abort || self.abort", "abort cannot be undone"))
    )

    recommendation: str = pydantic.Field(
        min_length=1,
        max_length=253,
        description="Name of the recommendation this plan carries out.",
        json_schema_extra=immutable("recommendation"),
    )
    customer_id: str = pydantic.Field(
        min_length=1,
        max_length=63,
        description="Customer of the recommendation (copied).",
        json_schema_extra=immutable("customerId"),
    )
    suspend: bool = pydantic.Field(
        default=True,
        description="While true the plan does not start. Set to false to start it.",
    )
    abort: bool = pydantic.Field(
        default=False,
        description="Set to true to stop a running plan and roll back its completed steps.",
    )
    steps: list[Step] = pydantic.Field(
        min_length=1,
        max_length=64,
        description="The steps, run one at a time in this order. Immutable.",
        json_schema_extra=step_list_schema(("self == oldSelf", "steps are immutable")),
    )


class StepStatus(Model):
    """Progress of one step."""

    name: str = pydantic.Field(description="Name of the step.")
    phase: StepPhase = pydantic.Field(default=StepPhase.PENDING, description="Phase of the step.")
    started_at: Time | None = pydantic.Field(default=None, description="When the step started.")
    finished_at: Time | None = pydantic.Field(default=None, description="When the step ended.")
    duration_ms: int | None = pydantic.Field(default=None, description="How long it ran.")
    result: dict[str, Any] | None = pydantic.Field(
        default=None, description="What the executor reported."
    )
    error: str | None = pydantic.Field(default=None, description="Why the step failed.")
    rolled_back_at: Time | None = pydantic.Field(
        default=None, description="When the step was undone during a rollback."
    )
    message: str | None = pydantic.Field(
        default=None, description="A note, for example why a step was not rolled back."
    )


class ExecutionPlanStatus(Model):
    """Where the plan stands. Written by the operator only."""

    phase: PlanPhase = pydantic.Field(default=PlanPhase.PENDING, description="Phase of the plan.")
    progress: str | None = pydantic.Field(
        default=None, description="Steps finished out of all steps, for example 2/3."
    )
    current_step: int | None = pydantic.Field(
        default=None, description="Index (0-based) of the step running or rolling back."
    )
    started_at: Time | None = pydantic.Field(default=None, description="When the plan started.")
    finished_at: Time | None = pydantic.Field(default=None, description="When the plan ended.")
    total_duration_ms: int | None = pydantic.Field(
        default=None, description="Wall time from start to end."
    )
    steps: list[StepStatus] = pydantic.Field(
        default_factory=list, description="One entry per step, in order."
    )
    message: str | None = pydantic.Field(default=None, description="What happened last.")
    observed_generation: int | None = pydantic.Field(
        default=None, description="The .metadata.generation this status was computed for."
    )
    verification: VerificationStatus | None = pydantic.Field(
        default=None,
        description="The check of the change against its metrics (VerificationTemplates): "
        "the baseline, recorded before the first step, then the measurements after the last "
        "one, and the savings realised.",
    )
    conditions: list[Condition] = pydantic.Field(
        default_factory=list,
        description="Standard conditions. Ready: True once Succeeded, Unknown while Pending, "
        "Running or Verifying, False when RollingBack, RolledBack or Failed; the reason is the "
        "phase. Reconciling (True while Pending, Running, Verifying or RollingBack) and Stalled "
        "(True once Failed or RolledBack), the kstatus conditions that Flux reads, are present "
        "only while True.",
        json_schema_extra=CONDITIONS,
    )


class ExecutionPlan(Model):
    api_version: Literal["optiinfra.io/v1alpha1"] = API_VERSION
    kind: Literal["ExecutionPlan"] = "ExecutionPlan"
    metadata: ObjectMeta
    spec: ExecutionPlanSpec
    status: ExecutionPlanStatus | None = None

    @property
    def status_phase(self) -> PlanPhase:
        return self.status.phase if self.status else PlanPhase.PENDING
