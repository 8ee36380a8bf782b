"""A tiny in-memory world that stands in for the API server in the lifecycle tests: it
applies what ``lifecycle.evaluate`` asks for (status writes, approval and plan creation and
deletion), and `settle` steps it until nothing changes, as the operator would."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, datetime
from typing import Any

from coordinator.api.approval import Approval, Decision
from coordinator.api.common import DECIDED_BY_ANNOTATION
from coordinator.api.plan import ExecutionPlan, ExecutionPlanStatus, PlanPhase
from coordinator.api.policy import ApprovalPolicy
from coordinator.api.recommendation import Recommendation, RecommendationPhase
from coordinator.core import approval as policy_
from coordinator.core import lifecycle
from tests.support import builders

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
POLICY = policy_.ApprovalPolicy()
_uids = itertools.count(1)


def rec(name: str, *, generation: int = 1, **spec: Any) -> Recommendation:
    """A Recommendation of the world (its own uid), made by the one builder."""
    defaults: dict[str, Any] = {
        "agentId": "agent",
        "title": name,
        "affectedResources": [f"res-{name}"],
    }
    return Recommendation.model_validate(
        builders.recommendation(
            name,
            metadata={"uid": f"uid-{next(_uids)}", "generation": generation},
            **(defaults | spec),
        )
    )


@dataclasses.dataclass
class World:
    """Recommendations with the approvals and plans they own, changed only by `step`."""

    recs: dict[str, Recommendation]
    approvals: dict[str, Approval] = dataclasses.field(default_factory=dict)
    plans: dict[str, ExecutionPlan] = dataclasses.field(default_factory=dict)
    events: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    policies: list[ApprovalPolicy] = dataclasses.field(default_factory=list)

    def observed(self) -> list[lifecycle.Observed]:
        return [
            lifecycle.Observed(
                recommendation=r, approval=self.approvals.get(n), plan=self.plans.get(n)
            )
            for n, r in self.recs.items()
        ]

    def step(self, *, now: datetime = NOW) -> int:
        """Apply one evaluation; return how many writes it made."""
        desired = lifecycle.evaluate(
            self.observed(), policy=POLICY, now=now, policies=self.policies
        )
        writes = 0
        for name, d in desired.items():
            self.events += [(name, e.reason) for e in d.events]
            if d.delete_plan:
                self.plans.pop(name, None)
                writes += 1
            if d.create_approval is not None:
                self.approvals[name] = d.create_approval
                writes += 1
            elif d.approval_status is not None:
                self.approvals[name] = self.approvals[name].model_copy(
                    update={"status": d.approval_status}
                )
                writes += 1
            if d.create_plan is not None:
                self.plans[name] = d.create_plan
                writes += 1
            if d.status != self.recs[name].status:
                self.recs[name] = self.recs[name].model_copy(update={"status": d.status})
                writes += 1
        return writes

    def settle(self, *, now: datetime = NOW) -> None:
        for _ in range(10):
            if self.step(now=now) == 0:
                return
        raise AssertionError("the lifecycle does not settle")

    def phase(self, name: str) -> RecommendationPhase:
        return self.recs[name].phase

    def decide(
        self, name: str, decision: Decision, *, by: str = "approver", reason: str = ""
    ) -> None:
        approval = self.approvals[name]
        self.approvals[name] = approval.model_copy(
            update={
                "spec": approval.spec.model_copy(
                    update={"decision": decision, "reason": reason or None}
                ),
                "metadata": approval.metadata.model_copy(
                    update={"annotations": {DECIDED_BY_ANNOTATION: by}}
                ),
            }
        )

    def set_plan(self, name: str, phase: PlanPhase) -> None:
        plan = self.plans[name]
        self.plans[name] = plan.model_copy(update={"status": ExecutionPlanStatus(phase=phase)})


def world(*recs: Recommendation) -> World:
    return World({r.name: r for r in recs})
