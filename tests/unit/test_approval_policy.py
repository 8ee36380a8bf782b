"""RULES 4: who must approve, when a request expires, generations, durations."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from coordinator.api.common import RiskLevel
from coordinator.api.plan import Executor, Step
from coordinator.core import approval
from tests.support.conflicts import rec

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("risk", "auto_approve", "needed"),
    [
        ("low", True, False),
        ("low", False, True),
        ("medium", True, True),
        ("medium", False, True),
        ("high", True, True),
        ("critical", True, True),
    ],
)
def test_approval_is_needed_unless_low_risk_and_auto_approve(
    risk: str, auto_approve: bool, needed: bool
) -> None:
    spec = rec("a", risk=risk, autoApprove=auto_approve).spec
    assert approval.needs_approval(spec) is needed


def test_auto_approve_defaults_to_true() -> None:
    assert not approval.needs_approval(rec("a", risk="low").spec)


@pytest.mark.parametrize(
    ("risk", "hours"),
    [(RiskLevel.CRITICAL, 4), (RiskLevel.HIGH, 24), (RiskLevel.MEDIUM, 48), (RiskLevel.LOW, 72)],
)
def test_default_expiry_by_risk(risk: RiskLevel, hours: int) -> None:
    policy = approval.DEFAULT_POLICY
    assert approval.expires_after(risk, policy=policy) == timedelta(hours=hours)
    assert approval.expires_at(NOW, risk, policy=policy) == NOW + timedelta(hours=hours)


def test_expiry_is_configurable_per_risk() -> None:
    policy = approval.ApprovalPolicy(critical=timedelta(minutes=5), low=timedelta(days=7))
    assert [approval.expires_after(risk, policy=policy) for risk in RiskLevel] == [
        timedelta(days=7),
        timedelta(hours=48),
        timedelta(hours=24),
        timedelta(minutes=5),
    ]


@pytest.mark.parametrize("expiry", [timedelta(0), timedelta(seconds=-1)])
def test_a_policy_refuses_an_expiry_that_is_not_positive(expiry: timedelta) -> None:
    with pytest.raises(ValueError, match="the expiry for high risk must be positive"):
        approval.ApprovalPolicy(high=expiry)


@pytest.mark.parametrize(
    ("now", "expired"),
    [
        (NOW - timedelta(seconds=1), False),
        (NOW, True),
        (NOW + timedelta(seconds=1), True),
    ],
)
def test_an_approval_expires_at_its_time(now: datetime, expired: bool) -> None:
    assert approval.is_expired(NOW, now=now) is expired


@pytest.mark.parametrize(
    ("text", "duration"),
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("4h", timedelta(hours=4)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2d", timedelta(days=2)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("0s", timedelta(0)),
    ],
)
def test_parse_duration(text: str, duration: timedelta) -> None:
    assert approval.parse_duration(text) == duration


@pytest.mark.parametrize(
    "text", ["", "4", "h", "4H", "1.5h", "-1h", " 4h", "4h ", "1m1h", "1h1h", "4 h", "4hours"]
)
def test_parse_duration_refuses_anything_else_saying_what_it_takes(text: str) -> None:
    expected = (
        f"invalid duration {text!r}: expected whole numbers with units d, h, m, s in that "
        "order, such as 90s, 30m, 4h, 1h30m or 2d"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        approval.parse_duration(text)


@pytest.mark.parametrize(
    ("duration", "text"),
    [
        (timedelta(hours=48), "48h"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(hours=1, seconds=5), "1h5s"),
        (timedelta(0), "0s"),
    ],
)
def test_format_duration_writes_what_parse_duration_reads(duration: timedelta, text: str) -> None:
    assert approval.format_duration(duration) == text
    assert approval.parse_duration(text) == duration


# --- guards against a drastic change labelled low -------------------------------------------

WEB = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}


def scale_to(replicas: int) -> list[Step]:
    return [
        Step(
            name="scale",
            action="scale",
            executor=Executor.KUBERNETES,
            params={"target": WEB, "replicas": replicas},
        )
    ]


def assess(spec_rec: Any, steps: list[Step], **kwargs: Any) -> approval.Assessment:
    return approval.assess(
        spec_rec.spec,
        steps,
        annotations=kwargs.pop("annotations", {}),
        policy=kwargs.pop("policy", approval.DEFAULT_POLICY),
    )


def test_a_low_risk_change_within_bounds_is_approved_by_policy() -> None:
    found = assess(rec("a", risk="low"), scale_to(3))
    assert (found.risk, found.needs_person, found.reasons) == (RiskLevel.LOW, False, ())


def test_scaling_to_zero_is_at_least_high_whatever_the_label() -> None:
    found = assess(rec("a", risk="low"), scale_to(0))
    assert (found.risk, found.needs_person) == (RiskLevel.HIGH, True)
    assert found.why == "risk raised from low to high: step scale scales web to zero"
    assert assess(rec("a", risk="critical"), scale_to(0)).risk is RiskLevel.CRITICAL


@pytest.mark.parametrize("action", ["delete_volume", "remove_nodes", "terminate", "drop_table"])
def test_deleting_actions_are_at_least_high(action: str) -> None:
    found = assess(rec("a", risk="low", action=action), [])
    assert (found.risk, found.needs_person) == (RiskLevel.HIGH, True)
    assert found.why == f"risk raised from low to high: {action} deletes"


def test_the_policy_sets_a_minimum_for_named_actions() -> None:
    policy = approval.ApprovalPolicy(min_risk=(("rightsize", RiskLevel.MEDIUM),))
    found = assess(rec("a", risk="low", action="rightsize"), [], policy=policy)
    assert (found.risk, found.needs_person) == (RiskLevel.MEDIUM, True)
    assert "the policy's minimum for rightsize" in found.why
    other = assess(rec("a", risk="low", action="scale_up"), [], policy=policy)
    assert other.risk is RiskLevel.LOW


def test_a_submitter_who_may_not_make_the_change_needs_a_person_to_approve() -> None:
    denied = "agent may not patch deployments.apps/web/scale in namespace team-a"
    found = assess(
        rec("a", risk="low"),
        scale_to(3),
        annotations={approval.SUBMITTER_MAY_NOT_ANNOTATION: denied},
    )
    assert (found.risk, found.needs_person) == (RiskLevel.LOW, True)
    assert found.why == f"a person must approve: the submitter {denied}"
