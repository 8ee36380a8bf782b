"""The plan gate: the one place a plan's start is gated — its dependencies, the
AgentEndpoints its webhook steps wait for, and the change windows and per-customer
budget of the ApprovalPolicies that select it (``core.policy``), from the Store."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Final

from coordinator import store as store_
from coordinator.api.approval import POLICY_DECIDER
from coordinator.api.common import PLANS, SUBMITTED_BY_ANNOTATION
from coordinator.api.plan import PlanPhase
from coordinator.api.policy import ApprovalPolicy
from coordinator.api.recommendation import Recommendation
from coordinator.core import admission, conflicts
from coordinator.core import policy as policies_

ObjectKey = store_.ObjectKey


_IN_FLIGHT: Final = frozenset(
    {PlanPhase.RUNNING.value, PlanPhase.VERIFYING.value, PlanPhase.ROLLING_BACK.value}
)
"""The plans a budget counts (one being verified is still in flight: its change is live)."""


class PlanGate:
    """May a plan start now? From the Store, at `clock`'s time."""

    def __init__(self, store: store_.Store, *, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.clock = clock

    def check(self, key: ObjectKey) -> tuple[bool, str, datetime | None]:
        """Whether plan `key` may start now: its dependencies have succeeded, and the change
        windows and the customer's budget of the ApprovalPolicies that select it allow it
        (``core.policy``). Else why, and when to ask again (None: on the next change).

        Only the customer's plans otherwise ready to start (pending, not suspended, their
        dependencies succeeded, no window holding them) compete for the budget, best-ranked
        first: a plan held by a window or a dependency never holds up a ready one."""
        ready, why = self.store.dependencies_succeeded(key)
        if not ready:
            return False, why, None
        waits = self.endpoint_wait(key)
        if waits is not None:  # an AgentEndpoint created or changed starts it (parts.dispatch)
            return False, waits, None
        policies = self.store.policies(key[0])
        rec = self.store.recommendation(key) if policies else None
        if rec is None:
            return True, "", None
        now = self.clock()
        merged = policies_.governing_of(policies, rec, self.store.approval(key))
        if not merged.windows and merged.max_concurrent_plans is None:
            return True, "", None
        verdict = policies_.window_gate(merged.windows, now=now)
        if isinstance(verdict, policies_.Go) and merged.max_concurrent_plans is not None:
            running: list[str] = []
            candidates: list[Recommendation] = [rec]
            for record in self.store.group((key[0], rec.spec.customer_id)):
                if record.name == rec.name:
                    continue
                plan = self.store.record(PLANS, record.key)
                if plan is None:
                    continue
                if plan.phase in _IN_FLIGHT:
                    running.append(record.name)
                elif self._ready_but_for_budget(record.key, policies, now=now):
                    other = self.store.recommendation(record.key)
                    if other is not None:
                        candidates.append(other)
            waiting = [r.name for r in sorted(candidates, key=conflicts.rank)]
            verdict = policies_.budget_gate(
                rec.name, running=running, waiting=waiting, limit=merged.max_concurrent_plans
            )
        if isinstance(verdict, policies_.Wait):
            names = ", ".join(merged.policies)
            return False, f"waiting: {verdict.reason} (policy {names})", verdict.until
        return True, "", None

    def endpoint_wait(self, key: ObjectKey) -> str | None:
        """Why plan `key` waits for the AgentEndpoints its webhook steps name, or None
        (``core.admission.endpoint_wait``, with the submitter stamped at admission and
        whether a person approved)."""
        plan = self.store.plan(key)
        names = admission.webhook_endpoints(plan.spec.steps) if plan is not None else set()
        if plan is None or not names:
            return None
        rec = self.store.recommendation(key)
        annotations = rec.metadata.annotations if rec is not None else {}
        approval = self.store.approval(key)
        decided_by = approval.status.decided_by if approval and approval.status else None
        return admission.endpoint_wait(
            plan.spec.steps,
            namespace=key[0],
            endpoints={
                name: endpoint.spec if (endpoint := self.store.endpoint((key[0], name))) else None
                for name in names
            },
            submitter=annotations.get(SUBMITTED_BY_ANNOTATION),
            groups=admission.submitter_groups(annotations),
            person_approved=decided_by not in (None, POLICY_DECIDER),
        )

    def _ready_but_for_budget(
        self, key: ObjectKey, policies: list[ApprovalPolicy], *, now: datetime
    ) -> bool:
        """Whether plan `key` would start now if the budget let it: pending, not suspended
        or aborted, its dependencies succeeded, no window of its policies holding it."""
        record = self.store.record(PLANS, key)
        if record is None or record.phase not in (None, PlanPhase.PENDING.value):
            return False  # started or ended (an ended one may be evicted: never read it)
        plan = self.store.plan(key)
        rec = self.store.recommendation(key)
        if plan is None or rec is None or plan.status_phase is not PlanPhase.PENDING:
            return False
        if plan.spec.suspend or plan.spec.abort:
            return False
        if not self.store.dependencies_succeeded(key)[0]:
            return False
        merged = policies_.governing_of(policies, rec, self.store.approval(key))
        return isinstance(policies_.window_gate(merged.windows, now=now), policies_.Go)
