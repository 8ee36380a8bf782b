"""The verification's outcome notified: VerificationFailed and VerificationInconclusive, once
per transition a status write makes, to the ApprovalPolicies of the plan's recommendation,
in the same body as the other notifications."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from coordinator import notifications as notifications_
from coordinator import store as store_
from coordinator.api.common import APPROVALS, POLICIES, RECOMMENDATIONS
from coordinator.api.plan import ExecutionPlan, ExecutionPlanStatus, PlanPhase
from coordinator.api.policy import NotifyEvent
from coordinator.api.verification import VerificationPhase, VerificationStatus
from coordinator.core import planevents
from coordinator.core import policy as policies_
from tests.support import builders
from tests.support.shell import NS

AT = datetime(2026, 3, 1, 12, tzinfo=UTC)
WHY = "latency/p99: 0.45 with baseline 0.2: failureCondition result > baseline * 1.5"


def verifying(phase: VerificationPhase | None, message: str | None = None) -> ExecutionPlanStatus:
    verification = VerificationStatus(phase=phase, message=message)
    return ExecutionPlanStatus(phase=PlanPhase.VERIFYING, verification=verification)


def test_each_verification_outcome_has_its_event_once() -> None:
    running = verifying(VerificationPhase.RUNNING)
    failed = verifying(VerificationPhase.FAILED, WHY)
    events = planevents.transition_events(running, failed)
    assert [(e.reason, e.type) for e in events] == [("VerificationFailed", "Warning")]
    assert WHY in events[0].message
    assert planevents.transition_events(failed, failed) == []  # written again: no new event
    inconclusive = verifying(VerificationPhase.INCONCLUSIVE, "latency/p99: no data")
    (event,) = planevents.transition_events(running, inconclusive)
    assert event.reason == "VerificationInconclusive"
    assert "no data" in event.message
    successful = verifying(VerificationPhase.SUCCESSFUL, "all 1 metrics successful")
    assert planevents.transition_events(running, successful) == []
    # A restarted runner records the event again (the recorder's key keeps it single).
    assert event.key in {e.key for e in planevents.implied_events(inconclusive)}


def test_every_verification_event_is_a_notify_event() -> None:
    for reason in ("VerificationFailed", "VerificationInconclusive"):
        assert policies_.NOTIFY_EVENTS[reason].value == reason


def sent_by(policy: dict[str, Any] | None) -> tuple[notifications_.Notifications, list[Any]]:
    """Notifications over a Store holding rec-1 (and `policy`), and what they send."""
    store = store_.Store()
    store.apply(RECOMMENDATIONS, with_uid(builders.recommendation("rec-1", namespace=NS), "u1"))
    store.apply(APPROVALS, with_uid(builders.approval("rec-1", namespace=NS), "u2"))
    if policy is not None:
        store.apply(POLICIES, with_uid(policy, "u3"))
    sent: list[Any] = []
    notifications = notifications_.Notifications(clock=lambda: AT)
    notifications.send = lambda ns, targets, event, body: sent.append((ns, targets, event, body))
    plan = ExecutionPlan.model_validate(
        builders.plan("rec-1", namespace=NS, customerId="customer-1")
    )
    old, new = verifying(VerificationPhase.RUNNING), verifying(VerificationPhase.FAILED, WHY)
    notifications.plan_events(store, plan, planevents.transition_events(old, new))
    return notifications, sent


def with_uid(body: dict[str, Any], uid: str) -> dict[str, Any]:
    body["metadata"] |= {"uid": uid, "resourceVersion": "1"}
    return body


def test_a_failed_verification_is_notified_to_the_policys_endpoints() -> None:
    notify = [{"endpoint": "slack", "events": ["VerificationFailed"]}]
    _, sent = sent_by(builders.policy("notify", namespace=NS, notify=notify))
    [(ns, targets, event, body)] = sent
    assert (ns, targets, event) == (NS, ["slack"], NotifyEvent.VERIFICATION_FAILED.value)
    document = json.loads(body)
    assert document["event"] == "VerificationFailed"
    assert document["recommendation"] == "rec-1"
    assert WHY in document["message"]


def test_only_the_events_a_policy_asks_for_are_sent() -> None:
    notify = [{"endpoint": "slack", "events": ["VerificationInconclusive"]}]
    assert sent_by(builders.policy("notify", namespace=NS, notify=notify))[1] == []
    assert sent_by(None)[1] == []  # no policy: nobody to tell
