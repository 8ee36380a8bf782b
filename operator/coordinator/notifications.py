"""The ApprovalPolicies' notifications of what a reconcile decided: which event, to whom
(``core.policy``), with which body; handed to `send` (``executors.notify``'s queue), never
waited for. ApprovalExpiringSoon is sent once per approval (per process), `lead` before
its expiry. The plan runner hands over the events of its status writes (``plan_events``):
VerificationFailed and VerificationInconclusive are notified once per transition written."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta

from coordinator import store as store_
from coordinator.api.approval import Approval
from coordinator.api.common import format_time
from coordinator.api.plan import ExecutionPlan
from coordinator.api.policy import ApprovalPolicy, NotifyEvent
from coordinator.api.recommendation import Recommendation, RecommendationPhase
from coordinator.core import lifecycle
from coordinator.core import policy as policies_
from coordinator.core.planevents import PlanEvent


class Notifications:
    """What a reconcile tells the ApprovalPolicies' endpoints."""

    def __init__(self, *, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self.send: Callable[[str, list[str], str, bytes], None] | None = None
        """Sends a notification of the ApprovalPolicies (namespace, endpoints, event,
        body); never waits (see executors.notify)."""
        self.lead = timedelta(hours=1)
        """How long before its expiry a pending approval is notified ApprovalExpiringSoon."""
        self._expiring_notified: set[str] = set()
        """The uids of the pending approvals notified as expiring soon (by this process)."""

    def event(
        self,
        rec: Recommendation,
        approval: Approval | None,
        policies: list[ApprovalPolicy],
        reason: str,
        message: str,
    ) -> None:
        event = policies_.NOTIFY_EVENTS.get(reason)
        if event is not None:
            self._post(rec, approval, policies, event, message)

    def plan_events(
        self, store: store_.Store, plan: ExecutionPlan, events: Sequence[PlanEvent]
    ) -> None:
        """The events of a plan's status write that are notified (its verification's
        outcome), to the ApprovalPolicies of its recommendation (read from `store`)."""
        notified = [e for e in events if e.reason in policies_.NOTIFY_EVENTS]
        if self.send is None or not notified:
            return
        ns = plan.metadata.namespace
        key = (ns, plan.spec.recommendation)
        rec, policies = store.recommendation(key), store.policies(ns)
        if rec is None or not policies:
            return
        approval = store.approval(key)
        for event in notified:
            self.event(rec, approval, policies, event.reason, event.message)

    def _post(
        self,
        rec: Recommendation,
        approval: Approval | None,
        policies: list[ApprovalPolicy],
        event: NotifyEvent,
        message: str,
    ) -> None:
        if self.send is None:
            return
        targets = policies_.notify_targets(policies_.governing_of(policies, rec, approval), event)
        if targets:
            body = policies_.notification(
                event,
                namespace=rec.metadata.namespace,
                recommendation=rec.name,
                customer_id=rec.spec.customer_id,
                message=message,
                at=self.clock(),
                uid=rec.metadata.uid or "",
            )
            self.send(rec.metadata.namespace, targets, event.value, body)

    def expiring(
        self,
        group: list[lifecycle.Observed],
        desired: Mapping[str, lifecycle.Desired],
        policies: list[ApprovalPolicy],
        *,
        now: datetime,
    ) -> list[datetime]:
        """ApprovalExpiringSoon, once per approval (per process), `notify_lead` before its
        expiry; the times to look again for the ones not due yet."""
        later: list[datetime] = []
        if self.send is None:
            return later
        for o in group:
            approval = o.approval
            if approval is None or not approval.metadata.uid:
                continue
            uid = approval.metadata.uid
            if desired[o.recommendation.name].status.phase is not (
                RecommendationPhase.AWAITING_APPROVAL
            ):
                self._expiring_notified.discard(uid)
                continue
            expires = approval.spec.expires_at
            if policies_.expiring_soon(expires, lead=self.lead, now=now):
                if uid not in self._expiring_notified:
                    self._expiring_notified.add(uid)
                    self._post(
                        o.recommendation,
                        approval,
                        policies,
                        NotifyEvent.APPROVAL_EXPIRING_SOON,
                        f"approval {approval.metadata.name} expires at {format_time(expires)}",
                    )
            elif now < expires - self.lead:
                later.append(expires - self.lead)
        return later
