"""RULES 4: who must approve, when a request expires, generations, durations."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from coordinator.api.approval import ApprovalSpec
from coordinator.api.common import RiskLevel
from coordinator.core import approval
from tests.unit.conflict_support import rec

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


def test_an_approval_is_bound_to_the_generation_it_was_asked_for() -> None:
    spec = ApprovalSpec(
        recommendation="rec-003",
        recommendation_generation=2,
        customer_id="customer-1",
        risk_level=RiskLevel.MEDIUM,
        expires_at=NOW,
    )
    assert approval.is_bound_to(spec, generation=2)
    assert not approval.is_bound_to(spec, generation=3)
    assert not approval.is_bound_to(spec, generation=1)


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
