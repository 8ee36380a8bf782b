"""Verification: a change checked against its metrics after the plan's last step.

The anchor is Argo Rollouts' AnalysisRun. Pure: no I/O, no clock (``now`` is passed in),
no Prometheus client. The shell asks Prometheus and hands the readings in; everything it
needs to go on is in the plan's ``status.verification``, so a restarted operator resumes
from status alone.

How the shell drives it (once the plan machine says the plan is Verifying)::

    checks = verification.select(templates, recommendation, risk=risk).checks
    status = verification.begin(checks, status, now=now)          # idempotent
    for check in verification.due(checks, status, now=now):
        reading = prometheus.query(check.query)                    # Reading
        status = persist(verification.record(checks, status, check.name, reading, now=now))
    # come back at verification.next_due(checks, status)

The rules, where Argo Rollouts and the contract leave a choice:

- Every measurement counts towards ``count``: a value, no data or an error. The first is
  due ``initialDelay`` after the verification started, each next one ``interval`` after
  the previous one was taken (after downtime the schedule shifts; nothing is lost or
  measured twice: ``record`` ignores a reading for a metric that is not due).
- A measurement: ``failureCondition`` true -> Failed; else ``successCondition`` true ->
  Successful; both given and neither true -> Inconclusive; only one given -> the other
  outcome. No data (also NaN), a query error or a condition that cannot be evaluated is
  an Error: never Successful.
- A metric: Failed once ``failed > failureLimit``; Inconclusive once
  ``inconclusive > inconclusiveLimit`` or ``consecutiveErrors > consecutiveErrorLimit``;
  after ``count`` measurements Successful if at least one was Successful, otherwise
  Inconclusive (no data is never a success).
- The verification: Failed as soon as a metric that is not ``dryRun`` failed; Running
  while any metric runs; then Inconclusive if a metric that is not ``dryRun`` is,
  otherwise Successful. ``dryRun`` metrics are measured and recorded, never decide.
- Queries are filled in with the recommendation's values; a value that could change the
  query's meaning (quotes, braces, spaces: anything but letters, digits, ``.``, ``_``,
  ``-``, ``/``) is refused, so an agent cannot write its own success into a template's
  query through its customerId or target kind.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from coordinator.api.approval import Approval, ApprovalPhase, ApprovalSpec, Decision
from coordinator.api.common import RiskLevel
from coordinator.api.meta import ObjectMeta
from coordinator.api.recommendation import Recommendation, RecommendationSpec
from coordinator.api.verification import (
    MAX_MEASUREMENTS,
    Measurement,
    MeasurementPhase,
    Metric,
    MetricStatus,
    PrometheusProvider,
    SavingsStatus,
    VerificationDecision,
    VerificationPhase,
    VerificationStatus,
    VerificationTemplate,
    VerificationTemplateSpec,
)
from coordinator.core import approvalstatus, cel, conflicts, policy, text
from coordinator.core.approval import parse_duration

HOURS_PER_MONTH: Final = 730
"""Hours in a month, as cloud price lists count them."""

PLACEHOLDERS: Final = ("{{namespace}}", "{{target.kind}}", "{{target.name}}", "{{customerId}}")
_PLACEHOLDER: Final = re.compile(r"\{\{.*?\}\}")
_SAFE_VALUE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")

CALIBRATION_PLANS: Final = 10
"""How many of an agent's last verified plans its realisation ratio is averaged over."""


# --- checking a template (for admission) ---------------------------------------------------


def template_problems(spec: VerificationTemplateSpec) -> list[str]:
    """What is wrong with a template, each problem naming its field: bad CEL in a condition,
    an unknown placeholder in a query. Empty when it is valid. For the admission webhook:
    the API server's own rules cannot compile CEL held in a string."""
    found: list[str] = []
    for index, metric in enumerate(spec.metrics):
        where = f"spec.metrics[{index}]"
        found += [f"{where}.query: {p}" for p in query_problems(metric.query)]
        for field, source in (
            ("successCondition", metric.success_condition),
            ("failureCondition", metric.failure_condition),
        ):
            if source is not None and (problem := cel.problem(source)) is not None:
                found.append(f"{where}.{field}: {problem}")
    if spec.savings is not None:
        found += [f"spec.savings.query: {p}" for p in query_problems(spec.savings.query)]
    return found


def query_problems(query: str) -> list[str]:
    """The placeholders of a query that are not among ``PLACEHOLDERS`` (and unclosed ones)."""
    unknown = [p for p in _PLACEHOLDER.findall(query) if p not in PLACEHOLDERS]
    found = [
        f"unknown placeholder {p}: use {', '.join(PLACEHOLDERS)}" for p in dict.fromkeys(unknown)
    ]
    if "{{" in _PLACEHOLDER.sub("", query):
        found.append("unclosed placeholder: {{ without }}")
    return found


# --- which templates apply --------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Check:
    """One metric of one template, its query filled in for one recommendation."""

    template: str
    metric: Metric
    query: str
    provider: PrometheusProvider
    baseline_window: str

    @property
    def name(self) -> str:
        """Its key in status: template/metric."""
        return f"{self.template}/{self.metric.name}"

    @property
    def baseline_query(self) -> str:
        """The query averaged over the baseline window (evaluated before the first step)."""
        return over_window(self.query, self.baseline_window)


@dataclass(frozen=True, kw_only=True)
class SavingsCheck:
    """A template's savings query, filled in."""

    template: str
    query: str
    window: str
    provider: PrometheusProvider

    @property
    def window_query(self) -> str:
        return over_window(self.query, self.window)


@dataclass(frozen=True, kw_only=True)
class Selection:
    """What verifies one recommendation."""

    templates: tuple[str, ...]
    checks: tuple[Check, ...]
    savings: SavingsCheck | None
    problems: tuple[str, ...]
    """Why the selection is incomplete: a named template that does not exist, a query that
    cannot be filled in. A plan with problems must not start unverified: the shell says so."""


class RenderError(ValueError):
    """A query cannot be filled in for this recommendation."""


def applies(
    template: VerificationTemplate, recommendation: Recommendation, *, risk: RiskLevel
) -> bool:
    """Whether the template verifies the recommendation: it selects it (as an ApprovalPolicy
    would), or the recommendation names it in ``spec.verification.templates``."""
    if template.metadata.namespace != recommendation.metadata.namespace:
        return False
    named = recommendation.spec.verification
    if named is not None and template.metadata.name in named.templates:
        return True
    return policy.selector_matches(template.spec.selector, recommendation.spec, risk=risk)


def select(
    templates: Iterable[VerificationTemplate], recommendation: Recommendation, *, risk: RiskLevel
) -> Selection:
    """Every template that applies, its metrics as checks (by template name, then in the
    template's order), and the first savings query among them."""
    chosen = sorted(
        (t for t in templates if applies(t, recommendation, risk=risk)),
        key=lambda t: t.metadata.name,
    )
    problems: list[str] = []
    named = recommendation.spec.verification
    present = {t.metadata.name for t in chosen}
    problems += [
        f"VerificationTemplate {name} (spec.verification.templates) does not exist"
        for name in (named.templates if named is not None else ())
        if name not in present
    ]
    checks: list[Check] = []
    savings: SavingsCheck | None = None
    namespace = recommendation.metadata.namespace
    for template in chosen:
        name, spec = template.metadata.name, template.spec
        try:  # a template applies whole or not at all
            own = [
                Check(
                    template=name,
                    metric=metric,
                    query=render(metric.query, namespace=namespace, spec=recommendation.spec),
                    provider=spec.provider.prometheus,
                    baseline_window=spec.baseline.window,
                )
                for metric in spec.metrics
            ]
            own_savings = (
                None
                if spec.savings is None
                else SavingsCheck(
                    template=name,
                    query=render(spec.savings.query, namespace=namespace, spec=recommendation.spec),
                    window=spec.savings.window,
                    provider=spec.provider.prometheus,
                )
            )
        except RenderError as exc:
            problems.append(f"VerificationTemplate {name}: {exc}")
            continue
        checks += own
        savings = savings or own_savings
    return Selection(
        templates=tuple(t.metadata.name for t in chosen),
        checks=tuple(checks),
        savings=savings,
        problems=tuple(problems),
    )


def render(query: str, *, namespace: str, spec: RecommendationSpec) -> str:
    """The query with its placeholders filled in. RenderError when a placeholder has no
    value (no target) or a value that could change the query's meaning."""
    values: dict[str, str | None] = {
        "{{namespace}}": namespace,
        "{{target.kind}}": spec.target.kind if spec.target is not None else None,
        "{{target.name}}": spec.target.name if spec.target is not None else None,
        "{{customerId}}": spec.customer_id,
    }
    problems = query_problems(query)
    if problems:
        raise RenderError(problems[0])
    for placeholder in dict.fromkeys(_PLACEHOLDER.findall(query)):
        value = values[placeholder]
        if value is None:
            raise RenderError(f"{placeholder}: the recommendation has no target")
        if not _SAFE_VALUE.fullmatch(value):
            raise RenderError(
                f"{placeholder}: {text.clean(value)!r} is not a plain name (letters, digits, "
                "'.', '_', '-', '/'): refused rather than put into a query"
            )
        query = query.replace(placeholder, value)
    return query


WINDOW_POINTS: Final = 60
"""How many points a window's average is taken over (its subquery's resolution)."""


def over_window(query: str, window: str) -> str:
    """The query's average over the last ``window`` (a PromQL subquery) at ``WINDOW_POINTS``
    points (at least a second apart). The resolution is explicit: a subquery without one
    uses Prometheus's evaluation interval (1m by default), which over a short window
    gives no point at all."""
    step = max(1, int(parse_duration(window).total_seconds()) // WINDOW_POINTS)
    return f"avg_over_time(({query})[{window}:{step}s])"


# --- the measurements ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Reading:
    """What the provider answered for one query: a value, no data (``value`` None and no
    error) or an error."""

    value: float | None = None
    error: str | None = None


def begin(
    checks: Sequence[Check],
    status: VerificationStatus | None,
    *,
    now: datetime,
    templates: Sequence[str] = (),
) -> VerificationStatus:
    """The verification started at ``now`` (phase Running, one entry per metric), keeping
    the baseline recorded before the first step. Idempotent: a verification that has
    begun is returned as it is."""
    current = status or VerificationStatus()
    if current.phase is not None:
        return current
    now = _utc(now).replace(microsecond=0)
    started = current.model_copy(
        update={
            "phase": VerificationPhase.RUNNING,
            "started_at": now,
            "templates": list(templates) or current.templates,
            "metrics": [MetricStatus(name=c.name, dry_run=c.metric.dry_run) for c in checks],
        }
    )
    return _settled(started, now=now)


def due_at(check: Check, status: VerificationStatus) -> datetime | None:
    """When the next measurement of this metric is due; None when none is (the metric has
    ended, or the verification has not begun or has ended)."""
    if status.phase is not VerificationPhase.RUNNING or status.started_at is None:
        return None
    entry = _entry(status, check.name)
    if entry is None or entry.phase is not VerificationPhase.RUNNING:
        return None
    if entry.taken >= check.metric.count:
        return None
    if entry.taken == 0:
        return status.started_at + parse_duration_or_zero(check.metric.initial_delay)
    interval = parse_duration_or_zero(check.metric.interval)
    if entry.measurements:
        return entry.measurements[-1].at + interval
    return (
        status.started_at
        + parse_duration_or_zero(check.metric.initial_delay)
        + entry.taken * interval
    )


def due(checks: Sequence[Check], status: VerificationStatus, *, now: datetime) -> list[Check]:
    """The checks whose measurement is due at ``now``."""
    now = _utc(now)
    return [c for c in checks if (at := due_at(c, status)) is not None and at <= now]


def next_due(checks: Sequence[Check], status: VerificationStatus) -> datetime | None:
    """The earliest time a measurement is due (when to come back); None when none is."""
    times = [at for c in checks if (at := due_at(c, status)) is not None]
    return min(times) if times else None


def record(
    checks: Sequence[Check],
    status: VerificationStatus,
    name: str,
    reading: Reading,
    *,
    now: datetime,
) -> VerificationStatus:
    """The status with the reading of metric ``name`` taken at ``now``; persist it.

    A reading for a metric that is not due (already measured for this slot, ended, or
    unknown) changes nothing: a measurement is never recorded twice. Times are kept to
    the second, as the API server stores them."""
    now = _utc(now).replace(microsecond=0)
    check = next((c for c in checks if c.name == name), None)
    if check is None:
        return status
    at = due_at(check, status)
    if at is None or now < at:
        return status
    entry = _entry(status, name)
    assert entry is not None  # due_at found it
    measurement = measure(check, reading, baseline=status.baseline.get(name), now=now)
    updated = _counted(entry, measurement, check.metric)
    metrics = [updated if m.name == name else m for m in status.metrics]
    return _settled(status.model_copy(update={"metrics": metrics}), now=now)


def measure(
    check: Check, reading: Reading, *, baseline: float | None, now: datetime
) -> Measurement:
    """One measurement: the reading judged by the metric's conditions."""
    at = _utc(now)
    if reading.error is not None:
        message = f"query failed: {text.clean(reading.error)[:300]}"
        return Measurement(at=at, phase=MeasurementPhase.ERROR, message=message)
    if reading.value is None or math.isnan(reading.value):
        return Measurement(at=at, phase=MeasurementPhase.ERROR, message="no data")
    value = reading.value
    metric = check.metric
    facts = f"result {_number(value)}" + (
        f", baseline {_number(baseline)}" if baseline is not None else ""
    )
    try:
        failed = metric.failure_condition is not None and cel.evaluate(
            metric.failure_condition, result=value, baseline=baseline
        )
        succeeded = (
            not failed
            and metric.success_condition is not None
            and cel.evaluate(metric.success_condition, result=value, baseline=baseline)
        )
    except cel.CelError as exc:
        return Measurement(at=at, value=value, phase=MeasurementPhase.ERROR, message=str(exc))
    if failed:
        phase, message = MeasurementPhase.FAILED, f"failureCondition {metric.failure_condition}"
    elif succeeded:
        phase, message = MeasurementPhase.SUCCESSFUL, f"successCondition {metric.success_condition}"
    elif metric.success_condition is None:
        phase = MeasurementPhase.SUCCESSFUL
        message = f"not failureCondition {metric.failure_condition}"
    elif metric.failure_condition is None:
        phase = MeasurementPhase.FAILED
        message = f"not successCondition {metric.success_condition}"
    else:
        phase = MeasurementPhase.INCONCLUSIVE
        message = "neither condition holds"
    return Measurement(at=at, value=value, phase=phase, message=f"{message} ({facts})")


def _counted(entry: MetricStatus, measurement: Measurement, metric: Metric) -> MetricStatus:
    phase = measurement.phase
    counts = {
        "successful": entry.successful + (phase is MeasurementPhase.SUCCESSFUL),
        "failed": entry.failed + (phase is MeasurementPhase.FAILED),
        "inconclusive": entry.inconclusive + (phase is MeasurementPhase.INCONCLUSIVE),
        "errors": entry.errors + (phase is MeasurementPhase.ERROR),
        "consecutive_errors": entry.consecutive_errors + 1
        if phase is MeasurementPhase.ERROR
        else 0,
    }
    kept = [*entry.measurements, measurement][-MAX_MEASUREMENTS:]
    updated = entry.model_copy(update={**counts, "measurements": kept})
    verdict, why = _metric_phase(updated, metric)
    label = f"metric {entry.name}"
    return updated.model_copy(
        update={"phase": verdict, "message": None if why is None else f"{label} {why}"}
    )


def _metric_phase(entry: MetricStatus, metric: Metric) -> tuple[VerificationPhase, str | None]:
    last = entry.measurements[-1]
    if entry.failed > metric.failure_limit:
        return VerificationPhase.FAILED, f"failed: {_last_of(entry, MeasurementPhase.FAILED)}"
    if entry.inconclusive > metric.inconclusive_limit:
        return (
            VerificationPhase.INCONCLUSIVE,
            f"inconclusive: {_last_of(entry, MeasurementPhase.INCONCLUSIVE)}",
        )
    if entry.consecutive_errors > metric.consecutive_error_limit:
        return (
            VerificationPhase.INCONCLUSIVE,
            f"inconclusive: {entry.consecutive_errors} errors in a row ({last.message})",
        )
    if entry.taken >= metric.count:
        if entry.successful == 0:
            return (
                VerificationPhase.INCONCLUSIVE,
                f"inconclusive: no successful measurement in {entry.taken}",
            )
        return VerificationPhase.SUCCESSFUL, f"successful: {entry.successful}/{entry.taken}"
    return VerificationPhase.RUNNING, None


def _last_of(entry: MetricStatus, phase: MeasurementPhase) -> str:
    found = next((m for m in reversed(entry.measurements) if m.phase is phase), None)
    return (found.message or phase.value) if found is not None else phase.value


def _settled(status: VerificationStatus, *, now: datetime) -> VerificationStatus:
    """The status with the verification's phase (and its end) from its metrics."""
    phase, message = overall(status.metrics)
    if phase is VerificationPhase.RUNNING:
        return status.model_copy(update={"phase": phase})
    return status.model_copy(update={"phase": phase, "message": message, "finished_at": now})


def overall(metrics: Sequence[MetricStatus]) -> tuple[VerificationPhase, str | None]:
    """The verification's phase from its metrics, and why (None while Running)."""
    deciding = [m for m in metrics if not m.dry_run]
    failed = [m for m in deciding if m.phase is VerificationPhase.FAILED]
    if failed:
        return VerificationPhase.FAILED, "; ".join(m.message or m.name for m in failed)
    if any(m.phase is VerificationPhase.RUNNING for m in metrics):
        return VerificationPhase.RUNNING, None
    inconclusive = [m for m in deciding if m.phase is VerificationPhase.INCONCLUSIVE]
    if inconclusive:
        return VerificationPhase.INCONCLUSIVE, "; ".join(m.message or m.name for m in inconclusive)
    return VerificationPhase.SUCCESSFUL, f"all {len(deciding)} metrics successful" + (
        f" ({len(metrics) - len(deciding)} dry-run)" if len(metrics) > len(deciding) else ""
    )


# --- savings ---------------------------------------------------------------------------------


def realised_savings(
    *,
    estimated_monthly: float | None,
    before_hourly: float,
    after_hourly: float,
    now: datetime,
) -> SavingsStatus:
    """Realised monthly savings ((before - after) x 730, USD) and their ratio to the
    estimate (absent when nothing was estimated)."""
    realised = round((before_hourly - after_hourly) * HOURS_PER_MONTH, 2)
    ratio = (
        round(realised / estimated_monthly, 4)
        if estimated_monthly is not None and estimated_monthly > 0
        else None
    )
    return SavingsStatus(
        estimated_monthly=estimated_monthly,
        before_hourly=before_hourly,
        after_hourly=after_hourly,
        realised_monthly=realised,
        ratio=ratio,
        measured_at=_utc(now),
    )


def savings_before(
    savings: SavingsCheck, reading: Reading, *, estimated_monthly: float | None
) -> SavingsStatus | BaselineGap:
    """The savings record started before the first step: the cost per hour over the
    savings window. Without it (no data, an error) the plan waits as for a metric's
    baseline: a realised figure needs both sides, and is never made up."""
    name = f"{savings.template}/savings"
    if reading.error is not None:
        return BaselineGap(metric=name, reason=text.clean(reading.error)[:300])
    if reading.value is None or not math.isfinite(reading.value):
        return BaselineGap(metric=name, reason=f"no data over {savings.window}")
    return SavingsStatus(estimated_monthly=estimated_monthly, before_hourly=reading.value)


def savings_after(savings: SavingsStatus, reading: Reading, *, now: datetime) -> SavingsStatus:
    """The savings record completed after a successful verification: realised monthly
    savings and their ratio when both readings have data, else the record as it was,
    stamped with when it was tried (so that it is tried once)."""
    value = reading.value if reading.error is None else None
    if savings.before_hourly is None or value is None or not math.isfinite(value):
        return savings.model_copy(update={"measured_at": _utc(now)})
    return realised_savings(
        estimated_monthly=savings.estimated_monthly,
        before_hourly=savings.before_hourly,
        after_hourly=value,
        now=now,
    )


def savings_note(savings: SavingsStatus) -> str:
    """What a plan's message says of its savings once measured after the change: the
    realised figure, or why there is none (never a made-up number)."""
    if savings.realised_monthly is not None:
        estimate = (
            f" of {savings.estimated_monthly:.2f} estimated (ratio {savings.ratio:.2f})"
            if savings.ratio is not None and savings.estimated_monthly is not None
            else ""
        )
        return f"realised savings {savings.realised_monthly:.2f} USD/month{estimate}"
    side = "before" if savings.before_hourly is None else "after"
    return f"no realised savings: the savings query had no data {side} the change"


# --- calibration -------------------------------------------------------------------------------


def realisation_ratio(ratios: Sequence[float], *, last: int = CALIBRATION_PLANS) -> float | None:
    """An agent's measured realisation ratio: the mean over its ``last`` verified plans
    (oldest first in ``ratios``), each ratio clamped to [0, 1] (calibration only ever
    discounts a promise; a change that cost more counts as 0). None without history."""
    recent = [r for r in ratios if math.isfinite(r)][-last:] if last > 0 else []
    if not recent:
        return None
    return sum(min(1.0, max(0.0, r)) for r in recent) / len(recent)


def calibrated_savings(estimated: float, ratio: float | None) -> float:
    """The estimate an agent's record backs: estimatedSavings x its realisation ratio (the
    estimate itself while it has no verified plans)."""
    return estimated if ratio is None else estimated * ratio


def realisation_history(recommendations: Iterable[Recommendation]) -> dict[str, list[float]]:
    """agentId -> the realisation ratios of its verified changes, oldest first (from each
    recommendation's ``status.realisedSavings``)."""
    measured = sorted(
        (
            (savings.measured_at, r.spec.agent_id, savings.ratio)
            for r in recommendations
            if r.status is not None
            and (savings := r.status.realised_savings) is not None
            and savings.ratio is not None
            and savings.measured_at is not None
        ),
        key=lambda item: (item[0], item[1]),
    )
    history: dict[str, list[float]] = {}
    for _, agent, ratio in measured:
        history.setdefault(agent, []).append(ratio)
    return history


def calibration_note(estimated: float, ratios: Sequence[float]) -> str | None:
    """What calibration makes of an agent's estimate (``kubectl optiinfra why``), or None
    while its agent has no verified change (``ratios``: oldest first)."""
    ratio = realisation_ratio(ratios)
    if ratio is None:
        return None
    return (
        f"Calibrated savings {calibrated_savings(estimated, ratio):.2f}: its agent realised "
        f"{ratio:.0%} of its estimates over its last {min(len(ratios), CALIBRATION_PLANS)} "
        "verified change(s) (conflicts rank on this with --calibrate-savings)."
    )


def calibrated_rank(
    recommendation: Recommendation,
    history: Mapping[str, Sequence[float]],
    *,
    last: int = CALIBRATION_PLANS,
) -> conflicts.Rank:
    """``conflicts.rank`` with the recommendation's estimatedSavings calibrated by its
    agent's realisation ratios (``history``: agentId -> ratios of its verified plans,
    oldest first)."""
    spec = recommendation.spec
    ratio = realisation_ratio(history.get(spec.agent_id, ()), last=last)
    calibrated = calibrated_savings(spec.estimated_savings, ratio)
    return conflicts.rank(
        recommendation.model_copy(
            update={"spec": spec.model_copy(update={"estimated_savings": calibrated})}
        )
    )


# --- helpers -----------------------------------------------------------------------------------


def parse_duration_or_zero(value: str) -> timedelta:
    """A template's duration; ``0`` is no time."""
    return timedelta(0) if value == "0" else parse_duration(value)


def _entry(status: VerificationStatus, name: str) -> MetricStatus | None:
    return next((m for m in status.metrics if m.name == name), None)


def _number(value: float | None) -> str:
    return "none" if value is None else f"{value:.6g}"


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# --- the baseline ------------------------------------------------------------------------------


SKIP_BASELINE_ANNOTATION: Final = "optiinfra.io/skip-baseline"
"""On an ExecutionPlan: start it without a baseline (``kubectl optiinfra start
--skip-baseline``); the value says who asked, recorded in ``baselineSkippedBy``."""


@dataclass(frozen=True, kw_only=True)
class BaselineGap:
    """Why a plan cannot get its baseline: the first metric without one, and the reason."""

    metric: str
    reason: str

    @property
    def message(self) -> str:
        return (
            f"waiting for the baseline of metric {self.metric}: {self.reason} (retried; "
            "kubectl optiinfra start --skip-baseline starts it without one)"
        )


def baseline(
    selection: Selection, readings: Mapping[str, Reading]
) -> VerificationStatus | BaselineGap:
    """The verification status to record before the first step (each metric's value over
    ``baseline.window``, by ``Check.name``), or the first metric without a baseline: no
    reading, no data (also NaN) or an error. A selection with problems has no baseline."""
    if selection.problems:
        return BaselineGap(metric="(templates)", reason=selection.problems[0])
    values: dict[str, float] = {}
    for check in selection.checks:
        reading = readings.get(check.name)
        if reading is None:
            return BaselineGap(metric=check.name, reason="not measured")
        if reading.error is not None:
            return BaselineGap(metric=check.name, reason=text.clean(reading.error)[:300])
        if reading.value is None or math.isnan(reading.value):
            return BaselineGap(metric=check.name, reason=f"no data over {check.baseline_window}")
        values[check.name] = reading.value
    return VerificationStatus(templates=list(selection.templates), baseline=values)


def skipped_baseline(selection: Selection, *, by: str) -> VerificationStatus:
    """The verification status of a plan started without a baseline by ``by``."""
    who = text.clean(by)[:253] or "unknown"
    return VerificationStatus(templates=list(selection.templates), baseline_skipped_by=who)


# --- a person's decision on an Inconclusive verification ---------------------------------------


DECISION_EXPIRY: Final = timedelta(hours=24)
"""How long a person has to keep or roll back an Inconclusive change when the
recommendation's own approval says nothing (its expiry window is used otherwise)."""


def approval_name(plan: str) -> str:
    """The Approval that asks a person about plan ``plan``'s Inconclusive verification."""
    return f"{plan}-verify"


def summary(status: VerificationStatus) -> str:
    """The measurements, one metric after the other, for a person: values, baseline, why."""
    parts = []
    for metric in status.metrics:
        values = ", ".join(
            _number(m.value) if m.value is not None else m.phase.value.lower()
            for m in metric.measurements
        )
        base = status.baseline.get(metric.name)
        parts.append(
            f"{metric.name}{' (dryRun)' if metric.dry_run else ''}: [{values}]"
            + (f" baseline {_number(base)}" if base is not None else " no baseline")
            + f" -> {metric.phase.value}"
        )
    return "; ".join(parts)


def decision_request(
    *,
    plan: str,
    namespace: str,
    recommendation: Recommendation,
    requested: Approval | None,
    status: VerificationStatus,
    now: datetime,
) -> Approval:
    """The Approval ``<plan>-verify`` (pending): approve keeps the change, reject or expiry
    rolls it back. Decided by the people who could approve the recommendation (the
    approver lists, quorum and risk of its approval ``requested``, when it has one); the
    measurements are in its message. It stands as long as that approval did (the expiry
    its risk has: ``--expiry-<risk>``), or ``DECISION_EXPIRY`` without one."""
    now = _utc(now).replace(microsecond=0)
    window = DECISION_EXPIRY
    if requested is not None and requested.status is not None and requested.status.requested_at:
        window = requested.spec.expires_at - requested.status.requested_at
    spec = ApprovalSpec(
        recommendation=recommendation.name,
        recommendation_generation=recommendation.metadata.generation,
        customer_id=recommendation.spec.customer_id,
        risk_level=requested.spec.risk_level if requested else recommendation.spec.risk_level,
        expires_at=now + window,
        decision=Decision.PENDING,
        required=requested.spec.required if requested else 1,
        approver_sets=list(requested.spec.approver_sets) if requested else [],
        policies=list(requested.spec.policies) if requested else [],
    )
    message = (
        f"verification of plan {plan} inconclusive ({status.message}): approve to keep the "
        f"change, reject to roll it back (expiry rolls it back). Measurements: {summary(status)}"
    )
    approval = Approval(
        metadata=ObjectMeta(name=approval_name(plan), namespace=namespace), spec=spec
    )
    pending = approvalstatus.status_in(approval, ApprovalPhase.PENDING, now=now)
    return approval.model_copy(
        update={"status": pending.model_copy(update={"message": text.clean(message)[:4000]})}
    )


def decision_of(
    approval: Approval, *, now: datetime
) -> tuple[VerificationDecision, ApprovalPhase] | None:
    """What the ``<plan>-verify`` approval says: Approved keeps, Rejected or expired rolls
    back (with the approval's phase to record); None while it waits."""
    if approval.spec.decision is Decision.APPROVED:
        return VerificationDecision.KEEP, ApprovalPhase.APPROVED
    if approval.spec.decision is Decision.REJECTED:
        return VerificationDecision.ROLL_BACK, ApprovalPhase.REJECTED
    if approvalstatus.expired(approval, now=_utc(now)):
        return VerificationDecision.ROLL_BACK, ApprovalPhase.EXPIRED
    return None
