"""The caller's use cases (coordinator.usecases) against a fake of k8s.caller: the phase
checks and their messages, the patches, and the bounded wait for the operator; and how the
plugin and the gateway render what they return."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import kubernetes
import pytest
from aiohttp.test_utils import TestClient, TestServer

from coordinator import plugin, usecases
from coordinator.api.common import APPROVALS, PLANS
from coordinator.core import policy
from coordinator.gateway import callers, server
from tests.support.callers import (
    NAMESPACE,
    FakeCaller,
    approval,
    copy_votes,
    plan,
    vote,
    votes_webhook,
)

API = object()
BEARER = {"Authorization": "Bearer s3cret-token"}


class Clock:
    """A fake monotonic clock; sleeping advances it."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _decide(decision: str = "Approved", reason: str | None = None, **kw: Any) -> usecases.Decided:
    clock = Clock()
    return usecases.decide(
        API, NAMESPACE, "a-1", decision, reason, timeout=2.0, clock=clock, sleep=clock.sleep, **kw
    )


@pytest.mark.parametrize(
    ("obj", "why", "message"),
    [
        (
            approval("a-1", "Approved", decidedBy="alice", decidedAt="2026-01-01T10:00:00Z"),
            usecases.Refusal.DECIDED,
            "approval a-1 was already Approved by alice at 2026-01-01T10:00:00Z",
        ),
        (
            approval("a-1", "Rejected"),
            usecases.Refusal.DECIDED,
            "approval a-1 was already Rejected by someone",
        ),
        (
            approval("a-1", "Expired"),
            usecases.Refusal.EXPIRED,
            "approval a-1 expired at 2026-01-02T03:04:05Z; it cannot be decided",
        ),
        (
            approval("a-1", "Withdrawn", message="the recommendation changed"),
            usecases.Refusal.WITHDRAWN,
            "approval a-1 was withdrawn (the recommendation changed); it cannot be decided",
        ),
        (
            approval("a-1", "Withdrawn"),
            usecases.Refusal.WITHDRAWN,
            "approval a-1 was withdrawn (superseded or changed); it cannot be decided",
        ),
        (None, usecases.Refusal.NOT_FOUND, f"approval a-1 not found in namespace {NAMESPACE}"),
    ],
)
def test_an_approval_that_cannot_be_decided_is_refused_before_anything_is_sent(
    monkeypatch: pytest.MonkeyPatch, obj: dict[str, Any] | None, why: str, message: str
) -> None:
    fake = FakeCaller().install(monkeypatch)
    if obj is not None:
        fake.add(APPROVALS, obj)
    with pytest.raises(usecases.RefusedError) as refused:
        _decide()
    assert (refused.value.why, refused.value.message) == (why, message)
    assert fake.patches == []


def test_a_decision_waits_until_the_operator_records_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def operator(fake: FakeCaller) -> None:
        fake.objects[APPROVALS, "a-1"]["status"] = {"phase": "Rejected", "decidedBy": "approver"}

    fake = FakeCaller(operator=operator, operator_after=3).install(monkeypatch)
    fake.add(APPROVALS, approval("a-1"))
    done = _decide("Rejected", "too risky")
    assert fake.patches == [
        (APPROVALS, "a-1", {"spec": {"decision": "Rejected", "reason": "too risky"}})
    ]
    assert done.settled is usecases.Settled.DECIDED
    assert done.approval["status"]["decidedBy"] == "approver"
    assert fake.reads == 1 + 3  # the check, then polls until the operator wrote


def test_a_decision_without_a_reason_sends_none(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCaller().install(monkeypatch)
    fake.add(APPROVALS, approval("a-1"))
    _decide()
    assert fake.patches == [(APPROVALS, "a-1", {"spec": {"decision": "Approved"}})]


def test_the_wait_is_bounded_and_says_the_decision_was_only_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeCaller().install(monkeypatch)  # no operator: nothing is ever recorded
    fake.add(APPROVALS, approval("a-1"))
    clock = Clock()
    done = usecases.decide(
        API, NAMESPACE, "a-1", "Approved", None, timeout=1.0, clock=clock, sleep=clock.sleep
    )
    assert done.settled is usecases.Settled.SENT
    assert clock.now == pytest.approx(101.0)  # waited the whole timeout, and no longer
    assert all(s <= usecases.POLL for s in clock.slept)


def test_a_vote_counts_as_recorded_only_once_the_operator_has_copied_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two of three: bob voted before; the approver's vote is recorded by the webhook at
    once and copied into status later. The stale status (bob's vote alone) is not taken
    for the approver's."""
    fake = FakeCaller(
        admit=votes_webhook("approver"),
        operator=lambda f: copy_votes(f, "a-1"),
        operator_after=3,
    ).install(monkeypatch)
    fake.add(APPROVALS, _voted_by_bob())
    done = _decide()
    assert done.settled is usecases.Settled.RECORDED
    assert done.votes == 2
    assert fake.reads == 1 + 3


def _voted_by_bob() -> dict[str, Any]:
    """An approval of two of three with bob's vote, recorded and copied into status."""
    obj = approval("a-1", responses=[vote("bob")])
    obj["metadata"]["annotations"][policy.RESPONSES_ANNOTATION] = json.dumps([vote("bob")])
    return obj


@pytest.mark.parametrize(
    ("obj", "switch", "why", "message"),
    [
        (plan("p-1", "Succeeded", suspend=False), usecases.start, usecases.Refusal.ENDED,
         "executionplan p-1 already ended: Succeeded"),
        (plan("p-1", "RolledBack", suspend=False), usecases.abort, usecases.Refusal.ENDED,
         "executionplan p-1 already ended: RolledBack"),
        (plan("p-1", "Running", suspend=False), usecases.start, usecases.Refusal.STARTED,
         "executionplan p-1 is already started (Running)"),
        (plan("p-1", "Running", suspend=False, abort=True), usecases.abort,
         usecases.Refusal.ABORTED, "executionplan p-1 is already aborted (Running)"),
        (None, usecases.start, usecases.Refusal.NOT_FOUND,
         f"executionplan p-1 not found in namespace {NAMESPACE}"),
    ],
)  # fmt: skip
def test_a_plan_that_cannot_be_switched_is_refused_before_anything_is_sent(
    monkeypatch: pytest.MonkeyPatch, obj: dict[str, Any] | None, switch: Any, why: str, message: str
) -> None:
    fake = FakeCaller().install(monkeypatch)
    if obj is not None:
        fake.add(PLANS, obj)
    with pytest.raises(usecases.RefusedError) as refused:
        switch(API, NAMESPACE, "p-1")
    assert (refused.value.why, refused.value.message) == (why, message)
    assert fake.patches == []


def test_start_and_abort_patch_the_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCaller().install(monkeypatch)
    fake.add(PLANS, plan("p-1"))
    assert usecases.start(API, NAMESPACE, "p-1")["spec"]["suspend"] is False
    assert usecases.abort(API, NAMESPACE, "p-1")["spec"]["abort"] is True
    assert [body for _, _, body in fake.patches] == [
        {"spec": {"suspend": False}},
        {"spec": {"abort": True}},
    ]


# The plugin renders the outcomes as text.


def _session() -> plugin.Session:
    session = object.__new__(plugin.Session)
    session.api, session.namespace, session.all_namespaces = API, NAMESPACE, False
    return session


def test_the_plugin_says_how_many_votes_are_recorded_counting_this_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fails before the use cases: the plugin took bob's earlier vote in status for this
    one and said "1 so far" before the operator had recorded the second."""
    fake = FakeCaller(
        admit=votes_webhook("approver"),
        operator=lambda f: copy_votes(f, "a-1"),
        operator_after=2,
    ).install(monkeypatch)
    fake.add(APPROVALS, _voted_by_bob())
    said = plugin._decide(_session(), "a-1", "Approved", "agreed")
    assert said == "approval a-1: your decision is recorded (2 so far; still pending)"


def test_the_plugin_renders_decided_sent_and_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def operator(fake: FakeCaller) -> None:
        fake.objects[APPROVALS, "a-1"]["status"] = {"phase": "Approved", "decidedBy": "approver"}

    fake = FakeCaller(operator=operator).install(monkeypatch)
    fake.add(APPROVALS, approval("a-1"))
    said = plugin._decide(_session(), "a-1", "Approved", None)
    assert said == "approval a-1 Approved by approver"
    with pytest.raises(usecases.RefusedError, match="was already Approved by approver"):
        plugin._decide(_session(), "a-1", "Rejected", "no")
    monkeypatch.setattr(plugin, "WAIT_SECONDS", 0.0)
    fake.add(APPROVALS, approval("a-2"))
    assert plugin._decide(_session(), "a-2", "Rejected", "no") == (
        "approval a-2: Rejected sent; the operator has not recorded it yet"
    )
    fake.add(PLANS, plan("p-1"))
    assert plugin._plan_switch(_session(), "p-1", start=True) == "executionplan p-1 started"
    assert plugin._plan_switch(_session(), "p-1", start=False) == (
        "executionplan p-1 aborted: rolling back"
    )


# The gateway renders them as the origin document's JSON and status codes.


def _gateway(fake: FakeCaller, *requests: tuple[str, str]) -> list[tuple[int, Any]]:
    """Each (method, path) sent to the gateway in process, with a bearer token; the
    statuses and JSON answers."""
    config = kubernetes.client.Configuration(host="http://127.0.0.1:9")
    gateway = callers.Gateway(base=config, namespace=NAMESPACE, settle_timeout=1.0)
    answers = []

    async def run() -> None:
        async with TestClient(TestServer(server.application(gateway))) as client:
            for method, path in requests:
                response = await client.request(method, path, json={}, headers=BEARER)
                answers.append((response.status, await response.json()))

    asyncio.run(run())
    return answers


def test_the_gateway_answers_refusals_with_the_same_messages_as_409_or_404(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeCaller().install(monkeypatch)
    decided = approval("a-1", "Approved", decidedBy="alice", decidedAt="2026-01-01T10:00:00Z")
    fake.add(APPROVALS, decided)
    fake.add(PLANS, plan("p-1", "Running", suspend=False))
    assert _gateway(
        fake,
        ("POST", "/coordination/approvals/a-1/reject"),
        ("POST", "/coordination/approvals/a-9/approve"),
        ("POST", "/coordination/plans/p-1/execute"),
        ("POST", "/coordination/plans/p-9/execute"),
    ) == [
        (400, {"error": "reason: required to reject"}),
        (404, {"error": "Approval not found"}),
        (409, {"error": "executionplan p-1 is already started (Running)"}),
        (404, {"error": "Plan not found"}),
    ]
    assert _gateway(fake, ("POST", "/coordination/approvals/a-1/approve")) == [
        (409, {"error": "approval a-1 was already Approved by alice at 2026-01-01T10:00:00Z"})
    ]
    assert fake.patches == []


def test_the_gateway_renders_a_decision_and_a_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def operator(fake: FakeCaller) -> None:
        fake.objects[APPROVALS, "a-1"]["status"] = {"phase": "Approved", "decidedBy": "approver"}

    fake = FakeCaller(operator=operator).install(monkeypatch)
    fake.add(APPROVALS, approval("a-1"))
    fake.add(PLANS, plan("p-1"))
    (decided, started) = _gateway(
        fake,
        ("POST", "/coordination/approvals/a-1/approve"),
        ("POST", "/coordination/plans/p-1/execute"),
    )
    assert decided[0] == 200
    assert decided[1]["message"] == "Recommendation approved"
    assert (decided[1]["approval"]["status"], decided[1]["approval"]["decided_by"]) == (
        "approved",
        "approver",
    )
    assert started[0] == 200
    assert started[1]["message"] == "Plan execution started"
    assert started[1]["plan"]["suspended"] is False
