"""VerificationTemplate: how the outcome of a change is checked against its metrics.

Written by admins, namespaced, read by the operator; agents never write one (an agent
does not choose its own success criteria). A template selects recommendations like an
ApprovalPolicy (``selector``); every template that selects a recommendation applies, and
a recommendation may name more in ``spec.verification.templates`` (adds, never removes).

After a plan's last step succeeds the plan is ``Verifying``: each metric's PromQL query
is measured every ``interval``, ``count`` times, and each result is judged by CEL
conditions over ``result`` and ``baseline`` (the same query over ``baseline.window``,
recorded before the first step ran). The anchors are Argo Rollouts' AnalysisTemplate and
AnalysisRun. The verification's progress is recorded in the plan's status
(``VerificationStatus``), from which it resumes after a restart.
"""

from __future__ import annotations

import enum
from typing import Annotated, Final, Literal

import pydantic

from coordinator.api.common import API_VERSION, Model, Time, rules
from coordinator.api.meta import ObjectMeta
from coordinator.api.policy import DURATION_PATTERN as POLICY_DURATION_PATTERN
from coordinator.api.policy import PolicySelector

# Durations as Prometheus and Argo Rollouts write them (90s, 1m, 30m, 1h30m, 2d), or 0.
DURATION_PATTERN: Final = r"^(0|([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?)$"
METRIC_NAME_PATTERN: Final = r"^[a-z0-9]([-a-z0-9_]{0,61}[a-z0-9])?$"
OBJECT_NAME_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
MAX_MEASUREMENTS: Final = 10
"""How many measurements of each metric the plan's status keeps (the most recent)."""

Duration = Annotated[
    str, pydantic.StringConstraints(min_length=1, max_length=32, pattern=DURATION_PATTERN)
]
# A window of time to average over: not 0.
Window = Annotated[
    str, pydantic.StringConstraints(min_length=2, max_length=32, pattern=POLICY_DURATION_PATTERN)
]
# A PromQL query: the API server refuses placeholders it would not fill in.
Query = Annotated[
    str,
    pydantic.StringConstraints(min_length=1, max_length=4096),
    pydantic.WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": 4096,
            **rules(
                (
                    "!self.replace('{{namespace}}', '').replace('{{target.kind}}', '')"
                    ".replace('{{target.name}}', '').replace('{{customerId}}', '')"
                    ".contains('{{')",
                    "the only placeholders are {{namespace}}, {{target.kind}}, "
                    "{{target.name}} and {{customerId}}",
                )
            ),
        }
    ),
]
TemplateName = Annotated[
    str, pydantic.StringConstraints(min_length=1, max_length=253, pattern=OBJECT_NAME_PATTERN)
]


class SecretKeyRef(Model):
    """A key of a Secret in the template's namespace."""

    name: str = pydantic.Field(
        min_length=1,
        max_length=253,
        pattern=OBJECT_NAME_PATTERN,
        description="Name of the Secret (same namespace as the template).",
    )
    key: str = pydantic.Field(
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="The key in the Secret's data that holds the bearer token.",
    )


class PrometheusProvider(Model):
    """A Prometheus server, asked through its HTTP API (/api/v1/query)."""

    address: str = pydantic.Field(
        min_length=1,
        max_length=2048,
        pattern=r"^https?://[^\s]+$",
        description="Base URL of the Prometheus server (http:// or https://), for example "
        "http://prometheus.monitoring:9090.",
    )
    secret_ref: SecretKeyRef | None = pydantic.Field(
        default=None,
        description="Optional: a Secret key holding a bearer token sent with every query.",
    )
    ca_bundle: str | None = pydantic.Field(
        default=None,
        max_length=65536,
        description="Optional: PEM certificates that the server's certificate must chain to "
        "(https only); without it the system's trust store is used.",
    )
    timeout_seconds: int = pydantic.Field(
        default=10, ge=1, le=300, description="How long one query may take, in seconds."
    )


class Provider(Model):
    """Where the metrics come from."""

    prometheus: PrometheusProvider = pydantic.Field(description="A Prometheus server.")


class Metric(Model):
    """One metric: a query measured count times, every interval, each result judged by the
    conditions (Argo Rollouts' AnalysisTemplate metric)."""

    model_config = pydantic.ConfigDict(
        json_schema_extra=rules(
            (
                "has(self.successCondition) || has(self.failureCondition)",
                "a metric needs a successCondition, a failureCondition or both",
            )
        )
    )

    name: str = pydantic.Field(
        pattern=METRIC_NAME_PATTERN,
        max_length=63,
        description="Name of the metric, unique in the template (lower case, digits, '-', '_').",
    )
    query: Query = pydantic.Field(
        description="PromQL whose value is the measurement: an instant query that returns one "
        "number (a scalar or a vector of one sample). Placeholders filled in before it runs: "
        "{{namespace}}, {{target.kind}}, {{target.name}}, {{customerId}}.",
    )
    success_condition: str | None = pydantic.Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="CEL over result (this measurement) and baseline (the query's value over "
        "baseline.window before the first step ran), both doubles: true means the measurement "
        "is Successful, for example result <= baseline * 1.10. Write numbers as doubles "
        "(1.0, not 1): CEL does not mix int and double.",
    )
    failure_condition: str | None = pydantic.Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="CEL over result and baseline: true means the measurement Failed, for "
        "example result > baseline * 1.25. It wins over successCondition. With both "
        "conditions and neither true the measurement is Inconclusive; with one of them, "
        "the other outcome is its negation.",
    )
    interval: Duration = pydantic.Field(
        default="1m",
        description="Time between two measurements (90s, 1m, 30m, 1h30m).",
    )
    count: int = pydantic.Field(
        default=5, ge=1, le=1000, description="How many measurements are taken."
    )
    initial_delay: Duration = pydantic.Field(
        default="0",
        description="Time between the end of the last step and the first measurement (0, 30s, 5m).",
    )
    failure_limit: int = pydantic.Field(
        default=0,
        ge=0,
        le=1000,
        description="How many Failed measurements are tolerated: one more fails the metric.",
    )
    inconclusive_limit: int = pydantic.Field(
        default=0,
        ge=0,
        le=1000,
        description="How many Inconclusive measurements are tolerated: one more makes the "
        "metric Inconclusive.",
    )
    consecutive_error_limit: int = pydantic.Field(
        default=4,
        ge=0,
        le=1000,
        description="How many errors (the query failed or returned no data) in a row are "
        "tolerated: one more makes the metric Inconclusive. No data is never a success.",
    )
    dry_run: bool = pydantic.Field(
        default=False,
        description="When true the metric is measured and recorded but never decides the "
        "verification (to try a new metric out).",
    )

    @pydantic.model_validator(mode="after")
    def _a_condition(self) -> Metric:
        if self.success_condition is None and self.failure_condition is None:
            raise ValueError("a metric needs a successCondition, a failureCondition or both")
        return self


class Baseline(Model):
    """The reference each measurement is compared with, taken before the change."""

    window: Window = pydantic.Field(
        default="30m",
        description="Each metric's query is averaged over this window before the first step "
        "runs; the value is recorded in the plan's status as the metric's baseline.",
    )


class Savings(Model):
    """What the change really saved: the target's cost before and after it."""

    query: Query = pydantic.Field(
        description="PromQL of the target's cost per hour in USD (for example from "
        "OpenCost's metrics), with the same placeholders as a metric's query.",
    )
    window: Window = pydantic.Field(
        default="1h",
        description="The query is averaged over this window before the first step and again "
        "at the end of the verification; realisedMonthly = (before - after) x 730.",
    )


class VerificationTemplateSpec(Model):
    """Which recommendations a template verifies, and how."""

    selector: PolicySelector = pydantic.Field(
        default_factory=PolicySelector,
        description="Which recommendations of the namespace it verifies, as an "
        "ApprovalPolicy's selector (an empty selector matches all).",
    )
    provider: Provider = pydantic.Field(description="Where the metrics come from.")
    metrics: list[Metric] = pydantic.Field(
        min_length=1,
        max_length=16,
        description="The metrics; all of them must pass (dryRun ones never decide).",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
        },
    )
    baseline: Baseline = pydantic.Field(
        default_factory=Baseline, description="How the baseline is taken."
    )
    savings: Savings | None = pydantic.Field(
        default=None, description="Optional: how realised savings are measured."
    )

    @pydantic.field_validator("metrics")
    @classmethod
    def _unique_names(cls, value: list[Metric]) -> list[Metric]:
        names = [m.name for m in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"metric names must be unique; repeated: {', '.join(dupes)}")
        return value


class VerificationTemplate(Model):
    api_version: Literal["optiinfra.io/v1alpha1"] = API_VERSION
    kind: Literal["VerificationTemplate"] = "VerificationTemplate"
    metadata: ObjectMeta
    spec: VerificationTemplateSpec


class RecommendationVerification(Model):
    """More verification for one recommendation (it never removes any)."""

    templates: list[TemplateName] = pydantic.Field(
        default_factory=list,
        max_length=16,
        description="Names of VerificationTemplates of the namespace that verify this change "
        "besides those that select it.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )

    @pydantic.field_validator("templates")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("templates is a set: a name may appear once")
        return value


# --- in the plan's status -------------------------------------------------------------------


class VerificationPhase(enum.StrEnum):
    RUNNING = "Running"
    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"

    @property
    def ended(self) -> bool:
        return self is not VerificationPhase.RUNNING


class MeasurementPhase(enum.StrEnum):
    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"
    ERROR = "Error"


class VerificationDecision(enum.StrEnum):
    """A person's answer to an Inconclusive verification."""

    KEEP = "Keep"
    ROLL_BACK = "RollBack"


class Measurement(Model):
    """One measurement of a metric."""

    at: Time = pydantic.Field(description="When it was taken.")
    value: float | None = pydantic.Field(
        default=None, description="The query's value; absent on an error or no data."
    )
    phase: MeasurementPhase = pydantic.Field(
        description="Successful, Failed, Inconclusive or Error (the query failed or returned "
        "no data)."
    )
    message: str | None = pydantic.Field(
        default=None, description="Which condition held, or what went wrong."
    )


class MetricStatus(Model):
    """The progress of one metric (Argo Rollouts' MetricResult)."""

    name: str = pydantic.Field(description="template/metric.")
    phase: VerificationPhase = pydantic.Field(
        default=VerificationPhase.RUNNING,
        description="Running, Successful, Failed or Inconclusive.",
    )
    dry_run: bool = pydantic.Field(
        default=False, description="Measured and recorded, but never decides."
    )
    successful: int = pydantic.Field(default=0, ge=0, description="Successful measurements.")
    failed: int = pydantic.Field(default=0, ge=0, description="Failed measurements.")
    inconclusive: int = pydantic.Field(default=0, ge=0, description="Inconclusive measurements.")
    errors: int = pydantic.Field(default=0, ge=0, description="Errors and no-data results.")
    consecutive_errors: int = pydantic.Field(
        default=0, ge=0, description="Errors since the last measurement that had a value."
    )
    measurements: list[Measurement] = pydantic.Field(
        default_factory=list,
        max_length=MAX_MEASUREMENTS,
        description=f"The last {MAX_MEASUREMENTS} measurements, oldest first.",
    )
    message: str | None = pydantic.Field(
        default=None, description="Why the metric has its phase, once it has ended."
    )

    @property
    def taken(self) -> int:
        """How many measurements were taken in all (the list keeps only the last ones)."""
        return self.successful + self.failed + self.inconclusive + self.errors


class SavingsStatus(Model):
    """Estimated against realised monthly savings."""

    estimated_monthly: float | None = pydantic.Field(
        default=None, description="The recommendation's estimatedSavings (USD per month)."
    )
    before_hourly: float | None = pydantic.Field(
        default=None, description="savings.query over savings.window before the first step."
    )
    after_hourly: float | None = pydantic.Field(
        default=None, description="savings.query over savings.window after the verification."
    )
    realised_monthly: float | None = pydantic.Field(
        default=None, description="(before - after) x 730, in USD per month."
    )
    ratio: float | None = pydantic.Field(
        default=None, description="realisedMonthly / estimatedMonthly (absent if no estimate)."
    )
    measured_at: Time | None = pydantic.Field(
        default=None, description="When the savings were measured after the change."
    )


class VerificationStatus(Model):
    """Where a plan's verification stands (Argo Rollouts' AnalysisRun status).

    Present from the baseline on (recorded before the first step runs, without a phase):
    a plan with it is verified after its last step."""

    phase: VerificationPhase | None = pydantic.Field(
        default=None,
        description="Running, Successful, Failed or Inconclusive; absent until the last "
        "step has succeeded.",
    )
    templates: list[str] = pydantic.Field(
        default_factory=list, description="The VerificationTemplates that apply."
    )
    started_at: Time | None = pydantic.Field(
        default=None, description="When the verification started (the last step ended)."
    )
    finished_at: Time | None = pydantic.Field(default=None, description="When it ended.")
    baseline: dict[str, float] = pydantic.Field(
        default_factory=dict,
        description="Each metric's (template/metric) value over baseline.window before the "
        "first step ran.",
    )
    baseline_skipped_by: str | None = pydantic.Field(
        default=None,
        description="Who started the plan without a baseline (kubectl optiinfra start "
        "--skip-baseline); conditions that read the baseline then cannot be evaluated.",
    )
    metrics: list[MetricStatus] = pydantic.Field(
        default_factory=list,
        description="One entry per metric.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
        },
    )
    savings: SavingsStatus | None = pydantic.Field(
        default=None, description="Estimated and realised savings."
    )
    message: str | None = pydantic.Field(
        default=None, description="Why the verification has its phase, once it has ended."
    )
    decision: VerificationDecision | None = pydantic.Field(
        default=None,
        description="When Inconclusive: a person's decision (Keep or RollBack; an expired "
        "request rolls back).",
    )
