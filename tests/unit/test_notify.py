"""Notifications: signed like a webhook step, retried a bounded number of times, counted,
and never waited for by the caller."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime

import pytest

from coordinator import metrics
from coordinator.api.policy import ApprovalPolicySpec, NotifyEvent
from coordinator.core import addresses, policy
from coordinator.core import webhook as protocol
from coordinator.executors.endpoints import Target
from coordinator.executors.notify import ATTEMPTS, Notification, Notifier
from coordinator.executors.post import NoAnswerError, checked_post
from tests.support.answers import CHUNK, HUGE, Huge, with_huge

KEY = b"k" * 32
Headers = Mapping[str, str]
TARGET = Target(name="slack", url="http://127.0.0.1:1/", key=KEY, timeout_seconds=5)


class Resolver:
    async def resolve(self, namespace: str, name: str) -> Target:
        return TARGET


async def no_sleep(_: float) -> None:
    return None


def count(event: str, outcome: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "optiinfra_notifications_total", {"event": event, "outcome": outcome}
    )
    return value or 0.0


BODY = policy.notification(
    NotifyEvent.APPROVED,
    namespace="team-a",
    recommendation="rec-1",
    customer_id="c1",
    message="Approved by alice, bob",
    at=datetime(2026, 1, 1, tzinfo=UTC),
)


def test_the_body_is_slack_compatible_and_signed_for_notification_only() -> None:
    document = json.loads(BODY)
    assert document["text"] == "[Approved] team-a/rec-1 (c1): Approved by alice, bob"
    sent: list[tuple[bytes, Mapping[str, str]]] = []

    async def post(
        t: Target, body: bytes, headers: Mapping[str, str], s: float
    ) -> tuple[int, bytes]:
        sent.append((body, headers))
        return (503, b"") if len(sent) < 3 else (200, b"ok")

    notifier = Notifier(Resolver(), post=post, sleep=no_sleep, clock=lambda: 1_700_000_000)
    outcome = asyncio.run(notifier.deliver(Notification("team-a", "slack", "Approved", BODY)))
    assert outcome == "sent"
    assert len(sent) == 3
    assert {body for body, _ in sent} == {BODY}  # retries carry the same event id
    body, headers = sent[-1]

    def problem(purpose: str) -> str | None:
        return protocol.verify(
            KEY,
            timestamp=headers[protocol.TIMESTAMP_HEADER],
            signature_header=headers[protocol.SIGNATURE_HEADER],
            payload=body,
            now=1_700_000_000,
            purpose=purpose,
        )

    assert problem(protocol.NOTIFY) is None
    assert problem(protocol.STEP) == "bad signature"  # never good as a step request
    mac = hmac.new(KEY, b"notify.1700000000." + body, hashlib.sha256).hexdigest()
    assert headers[protocol.SIGNATURE_HEADER] == f"sha256={mac}"


def test_the_event_id_names_one_notification_of_one_recommendation() -> None:
    def event_id(uid: str, event: NotifyEvent, at: datetime, message: str = "m") -> str:
        body = policy.notification(
            event,
            namespace="team-a",
            recommendation="rec-1",
            customer_id="c1",
            message=message,
            at=at,
            uid=uid,
        )
        found: str = json.loads(body)["eventId"]
        return found

    first = datetime(2026, 1, 1, tzinfo=UTC)
    later = datetime(2026, 1, 1, 0, 5, tzinfo=UTC)
    one = event_id("uid-1", NotifyEvent.APPROVED, first)
    assert len(one) == 32
    assert event_id("uid-1", NotifyEvent.APPROVED, later) == one  # sent again after a restart
    assert event_id("uid-2", NotifyEvent.APPROVED, first) != one  # a new recommendation
    assert event_id("uid-1", NotifyEvent.REJECTED, first) != one
    assert event_id("uid-1", NotifyEvent.APPROVED, first, "other") != one


def test_a_receiver_that_is_down_is_tried_a_bounded_number_of_times_and_counted() -> None:
    calls = 0

    async def post(
        t: Target, body: bytes, headers: Mapping[str, str], s: float
    ) -> tuple[int, bytes]:
        nonlocal calls
        calls += 1
        raise NoAnswerError("connection refused")

    before = count("Approved", "failed")

    async def main() -> None:
        notifier = Notifier(Resolver(), post=post, sleep=no_sleep)
        notifier.start()
        notifier.send("team-a", ["slack"], "Approved", BODY)  # returns at once
        await asyncio.wait_for(notifier._queue.join(), 5)
        await notifier.stop()

    asyncio.run(main())
    assert calls == ATTEMPTS
    assert count("Approved", "failed") == before + 1


def test_a_4xx_is_not_retried() -> None:
    calls = 0

    async def post(
        t: Target, body: bytes, headers: Mapping[str, str], s: float
    ) -> tuple[int, bytes]:
        nonlocal calls
        calls += 1
        return 404, b""

    notifier = Notifier(Resolver(), post=post, sleep=no_sleep)
    outcome = asyncio.run(notifier.deliver(Notification("team-a", "slack", "Approved", BODY)))
    assert (outcome, calls) == ("failed", 1)


@pytest.mark.parametrize("path", ["/stream", "/announced"])
def test_an_answer_over_64_kib_fails_the_notification_unread(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def test(url: str, huge: Huge) -> None:
        target = Target(name="slack", url=url + path, key=KEY, timeout_seconds=5)

        class Here:
            async def resolve(self, namespace: str, name: str) -> Target:
                return target

        local = checked_post(addresses.LOCAL_TESTING)  # the answering server is on 127.0.0.1
        notifier = Notifier(Here(), post=local, sleep=no_sleep)
        outcome = await notifier.deliver(Notification("team-a", "slack", "Approved", BODY))
        assert outcome == "failed"
        assert huge.requests == 1  # not sent again
        assert huge.sent < HUGE * len(CHUNK) // 4, huge.sent

    with caplog.at_level(logging.WARNING, "coordinator.executors.notify"):
        with_huge(200, test)
    assert (
        "notification Approved to AgentEndpoint team-a/slack not delivered: answered 200 with a "
        "body larger than 65536 bytes (the most the operator reads of an answer: 64 KiB)"
    ) in caplog.text


def test_targets_by_event() -> None:
    merged = policy.merge(
        [
            ("a", ApprovalPolicySpec.model_validate({"notify": [{"endpoint": "slack"}]})),
            (
                "b",
                ApprovalPolicySpec.model_validate(
                    {
                        "notify": [
                            {"endpoint": "pager", "events": ["PlanFailed", "RolledBack"]},
                            {"endpoint": "slack", "events": ["Approved"]},
                        ]
                    }
                ),
            ),
        ]
    )
    assert policy.notify_targets(merged, NotifyEvent.APPROVED) == ["slack"]
    assert policy.notify_targets(merged, NotifyEvent.PLAN_FAILED) == ["slack", "pager"]


def test_an_address_the_operator_may_not_call_is_not_asked_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The default transport judges the address first: loopback (without
    --allow-loopback-endpoints) fails the notification at once, nothing sent, no retry."""
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    notifier = Notifier(Resolver(), sleep=sleep)
    with caplog.at_level(logging.WARNING, logger="coordinator.executors.notify"):
        outcome = asyncio.run(notifier.deliver(Notification("team-a", "slack", "Approved", BODY)))
    assert (outcome, sleeps) == ("failed", [])
    assert "AgentEndpoint slack: host 127.0.0.1 (loopback address): refused" in caplog.text
