"""Shared building blocks of the API models: the base model, time, risk, conditions."""

from __future__ import annotations

import enum
import functools
from datetime import UTC, datetime
from typing import Annotated, Any, Final

import pydantic
from pydantic.alias_generators import to_camel

GROUP: Final = "optiinfra.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = "optiinfra.io/v1alpha1"

# The wire names: plurals of the kinds, and the annotations the coordinator reads or writes.
RECOMMENDATIONS: Final = "recommendations"
APPROVALS: Final = "approvals"
PLANS: Final = "executionplans"
ENDPOINTS: Final = "agentendpoints"
POLICIES: Final = "approvalpolicies"
TEMPLATES: Final = "verificationtemplates"
OWN_ANNOTATIONS: Final = "optiinfra.io/"
"""In every annotation key the coordinator reads or writes (also kopf's, under
coordinator.optiinfra.io/): the annotations it keeps of a watched object."""
SUBMITTED_BY_ANNOTATION: Final = "optiinfra.io/submitted-by"
"""Set on a Recommendation by the admission webhook: who submitted or last changed its spec."""
SUBMITTED_GROUPS_ANNOTATION: Final = "optiinfra.io/submitted-by-groups"
"""Set with SUBMITTED_BY_ANNOTATION: the submitter's groups as the API server authenticated
them (a JSON list), for AgentEndpoint ``submitters`` and the webhook body."""
SUBMITTER_MAY_NOT_ANNOTATION: Final = "optiinfra.io/submitter-may-not"
"""Set on a Recommendation by the admission webhook: a change its submitter may not make."""
DECIDED_BY_ANNOTATION: Final = "optiinfra.io/decided-by"
"""Set on an Approval by the admission webhook: who decided, from the request's userInfo."""
DECIDED_AT_ANNOTATION: Final = "optiinfra.io/decided-at"
"""Set on an Approval by the admission webhook: when the decision was made."""
FINALIZER: Final = "optiinfra.io/coordinator"
"""On a running ExecutionPlan: its deletion waits until it is rolled back."""
GENERATION_ANNOTATION: Final = "optiinfra.io/recommendation-generation"
"""Set on an ExecutionPlan: the recommendation generation it was made from."""


@functools.lru_cache(maxsize=4096)
def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix and no fractions, as Kubernetes writes times.
    (Cached: the same few times are written again at every status comparison.)"""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


# A timezone-aware datetime that serialises as Kubernetes does ("2026-01-02T03:04:05Z").
Time = Annotated[
    datetime,
    pydantic.BeforeValidator(_parse_time),
    pydantic.AfterValidator(_parse_time),
    pydantic.PlainSerializer(format_time, return_type=str, when_used="json"),
]


# Schema extensions for the generated CRDs (see coordinator.crdgen).
CONDITIONS: Final[dict[str, Any]] = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}


def rules(*checks: tuple[str, str]) -> dict[str, Any]:
    """CEL validation rules (rule, message) that the API server enforces on the field."""
    return {"x-kubernetes-validations": [{"rule": r, "message": m} for r, m in checks]}


def immutable(field: str) -> dict[str, Any]:
    return rules(("self == oldSelf", f"{field} is immutable"))


class Model(pydantic.BaseModel):
    """Base of every API value: frozen, camelCase on the wire, unknown fields refused."""

    model_config = pydantic.ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        use_enum_values=False,
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready form as it is stored in Kubernetes (camelCase, no nulls)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class RiskLevel(enum.StrEnum):
    """How much harm a change can do if it goes wrong."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """0 for low up to 3 for critical: lower is safer."""
        return _RISK_ORDER.index(self)


_RISK_ORDER = (RiskLevel.LOW, RiskLevel.MEDIUM, RiskLevel.HIGH, RiskLevel.CRITICAL)


class ConditionStatus(enum.StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(Model):
    """A standard Kubernetes condition (metav1.Condition)."""

    type: str = pydantic.Field(description="Type of the condition, in CamelCase (Ready, ...).")
    status: ConditionStatus = pydantic.Field(description="True, False or Unknown.")
    reason: str = pydantic.Field(
        default="", description="A one-word CamelCase reason for the last transition."
    )
    message: str = pydantic.Field(default="", description="A human-readable explanation.")
    last_transition_time: Time | None = pydantic.Field(
        default=None, description="When the status last changed."
    )
    observed_generation: int | None = pydantic.Field(
        default=None, description="The .metadata.generation the condition was computed for."
    )
