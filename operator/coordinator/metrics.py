"""Prometheus metrics of the operator (served by `coordinator run --metrics-port`).

Counts of recommendations by phase and of conflicts by type are computed when scraped,
from the counts the Store keeps; durations are observed as things happen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Final, NamedTuple

import prometheus_client
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from coordinator.api.recommendation import RecommendationPhase

_DURATIONS: Final = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_WAITS: Final = (1, 10, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 48 * 3600, 72 * 3600)

REGISTRY: Final = prometheus_client.CollectorRegistry()
APPROVAL_WAIT: Final = prometheus_client.Histogram(
    "optiinfra_approval_wait_seconds",
    "Time from an approval request to a person's decision.",
    ["decision"],
    buckets=_WAITS,
    registry=REGISTRY,
)
PLAN_DURATION: Final = prometheus_client.Histogram(
    "optiinfra_plan_duration_seconds",
    "Wall time of execution plans, from start to end, by the phase they ended in.",
    ["phase"],
    buckets=_DURATIONS,
    registry=REGISTRY,
)
STEP_DURATION: Final = prometheus_client.Histogram(
    "optiinfra_step_duration_seconds",
    "Duration of plan steps, by action and outcome.",
    ["action", "phase"],
    buckets=_DURATIONS,
    registry=REGISTRY,
)
REALISED_SAVINGS: Final = prometheus_client.Gauge(
    "optiinfra_realised_savings_usd",
    "Monthly savings a verified change realised (USD): (cost per hour before - after) x 730, "
    "the last verified plan of each customer and agent.",
    ["customer", "agent"],
    registry=REGISTRY,
)
REALISATION_RATIO: Final = prometheus_client.Gauge(
    "optiinfra_savings_realisation_ratio",
    "Realised over estimated monthly savings of an agent's last verified plan.",
    ["agent"],
    registry=REGISTRY,
)
SHARD_CUSTOMERS: Final = prometheus_client.Gauge(
    "optiinfra_shard_customers",
    "Customers this shard drives (coordinator run --shard)",
    ["shard"],
    registry=REGISTRY,
)
SHARD_MOVES: Final = prometheus_client.Counter(
    "optiinfra_shard_moves",
    "Customers this shard took (in) or let go of (out)",
    ["direction"],
    registry=REGISTRY,
)
SHARD_HANDOFF: Final = prometheus_client.Histogram(
    "optiinfra_shard_handoff_seconds",
    "From a ring change to the customers claimed and listed into the Store",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60),
    registry=REGISTRY,
)
RECONCILES: Final = prometheus_client.Counter(
    "optiinfra_reconciles",
    "Reconciles of a customer group.",
    registry=REGISTRY,
)
RECONCILE_ERRORS: Final = prometheus_client.Counter(
    "optiinfra_reconcile_errors",
    "Reconciles that failed and were retried.",
    registry=REGISTRY,
)
NOTIFICATIONS: Final = prometheus_client.Counter(
    "optiinfra_notifications",
    "Notifications of ApprovalPolicies, by event and outcome (sent, failed after bounded "
    "retries, dropped when the queue was full).",
    ["event", "outcome"],
    registry=REGISTRY,
)
RECONCILE_DURATION: Final = prometheus_client.Histogram(
    "optiinfra_reconcile_duration_seconds",
    "Time to reconcile one customer group (observe, decide, write).",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=REGISTRY,
)


class Counts(NamedTuple):
    """What the Store counts: copies, safe to read in a thread."""

    phases: Mapping[str, int]
    """Recommendations by phase."""
    conflicts: Mapping[str, int]
    """Conflict entries by type."""
    objects: Mapping[tuple[str, bool], int]
    """Objects by kind (plural) and whether held in memory."""


State = Callable[[], Counts]


class StateCollector(Collector):
    """Recommendations by phase, conflicts by type and objects held, from counts the
    Store keeps (this runs in prometheus_client's thread: it reads a copy, never the
    Store)."""

    def __init__(self, state: State) -> None:
        self._state = state

    def collect(self) -> Iterator[GaugeMetricFamily]:
        phases, conflicts, objects = self._state()
        by_phase = GaugeMetricFamily(
            "optiinfra_recommendations", "Recommendations by phase.", labels=["phase"]
        )
        for phase in RecommendationPhase:
            by_phase.add_metric([phase.value], phases.get(phase.value, 0))
        yield by_phase
        by_type = GaugeMetricFamily(
            "optiinfra_conflicts",
            "Conflict entries on recommendations, by type (each pair counts on both sides).",
            labels=["type"],
        )
        for kind, count in sorted(conflicts.items()):
            if count > 0:
                by_type.add_metric([kind], count)
        yield by_type
        held = GaugeMetricFamily(
            "optiinfra_store_objects",
            'Objects the operator knows, by kind; held="false": approvals and plans of '
            "ended recommendations, kept as stubs (read again from the API server if needed).",
            labels=["kind", "held"],
        )
        for (plural, in_memory), count in sorted(objects.items()):
            held.add_metric([plural, str(in_memory).lower()], count)
        yield held


def serve(port: int, state: State) -> None:
    """Serve /metrics on `port`, including the state counted by the Store."""
    REGISTRY.register(StateCollector(state))
    prometheus_client.start_http_server(port, registry=REGISTRY)
