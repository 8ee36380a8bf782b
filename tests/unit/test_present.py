"""What a person reads (coordinator.present): why, the queue, a plan's timeline."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from coordinator import present, timeline
from tests.support import builders

NOW = datetime(2026, 1, 2, 12, 0, 0, tzinfo=UTC)


def at_phase(
    name: str, phase: str, spec: dict[str, Any] | None = None, **status: Any
) -> dict[str, Any]:
    """Recommendation `name` (priority 10, savings 2000) with `status`, observed."""
    return builders.recommendation(
        name,
        metadata={"generation": 1, "creationTimestamp": "2026-01-01T00:00:00Z"},
        status={"phase": phase, "observedGeneration": 1, **status},
        **({"priority": 10, "estimatedSavings": 2000} | (spec or {})),
    )


def test_durations_for_a_person() -> None:
    assert present.duration(45) == "45s"
    assert present.duration(750) == "12m30s"
    assert present.duration(4 * 3600 + 300) == "4h05m"
    assert present.duration(2 * 86400 + 3 * 3600) == "2d3h"
    assert present.duration(-90) == "-1m30s"


def test_the_rule_that_decided() -> None:
    winner = at_phase("a", "AwaitingApproval")
    assert present.deciding_rule(winner, at_phase("b", "Superseded", {"priority": 8})) == (
        "higher priority (10 > 8)"
    )
    assert present.deciding_rule(
        winner, at_phase("b", "Superseded", {"estimatedSavings": 1500})
    ) == ("higher savings (2000.00 > 1500.00)")
    assert present.deciding_rule(winner, at_phase("b", "Superseded", {"confidence": 0.5})) == (
        "higher confidence (1 > 0.5)"
    )
    assert present.deciding_rule(winner, at_phase("b", "Superseded", {"riskLevel": "high"})) == (
        "lower risk (medium < high)"
    )
    assert present.deciding_rule(winner, at_phase("b", "Superseded")) == "name (a < b)"


def test_why_a_superseded_one_lost() -> None:
    winner = at_phase("rec-003", "AwaitingApproval")
    loser = at_phase(
        "rec-004",
        "Superseded",
        {"action": "scale_down", "priority": 8},
        supersededBy="rec-003",
        conflicts=[
            {
                "type": "resource",
                "with": ["rec-003"],
                "severity": "medium",
                "description": "Both recommendations affect resources: [i-102 i-103]",
                "resolution": "Kept recommendation rec-003 (priority: 10, savings: 2000.00), "
                "discarded rec-004",
            }
        ],
    )
    lines = present.why(
        loser, approval=None, plan=None, others={"rec-003": winner, "rec-004": loser}, now=NOW
    )
    assert lines[0].startswith("rec-004 is Superseded: scale_down for customer customer-1")
    assert lines[1] == "Lost to rec-003, kept by higher priority (10 > 8)."
    assert lines[2] == (
        "  resource conflict with rec-003 (medium): "
        "Both recommendations affect resources: [i-102 i-103]"
    )
    assert lines[3].startswith("    -> Kept recommendation rec-003")


def test_why_a_blocked_one_waits() -> None:
    blocked = at_phase(
        "rec-b", "Blocked", {"dependsOn": ["rec-gone", "rec-running"]}, message="Blocked by ..."
    )
    others = {"rec-running": at_phase("rec-running", "Executing")}
    lines = present.why(blocked, approval=None, plan=None, others=others, now=NOW)
    assert "Blocked by rec-gone: it does not exist." in lines
    assert "Waits for rec-running (it is Executing)." in lines
    assert lines[-1] == "Operator: Blocked by ..."


def test_why_an_approval_waits_and_until_when() -> None:
    waiting = at_phase("rec-a", "AwaitingApproval", approval="rec-a")
    approval = builders.approval(
        "rec-a",
        expiresAt="2026-01-04T12:00:00Z",
        status={"phase": "Pending", "responses": [{"user": "ann", "decision": "Approved"}]},
    )
    lines = present.why(waiting, approval=approval, plan=None, others={}, now=NOW)
    expected = (
        "Waits for a person (not its submitter) to decide approval rec-a "
        "until 2026-01-04T12:00:00Z (in 2d0h): kubectl optiinfra approve rec-a"
    )
    assert expected in lines
    assert "  responses so far: ann: Approved" in lines


def test_why_an_approval_of_a_policy_counts_the_votes_and_a_plan_says_what_holds_it() -> None:
    waiting = at_phase("rec-a", "AwaitingApproval", approval="rec-a")
    two_of_three = builders.approval(
        "rec-a",
        expiresAt="2026-01-04T12:00:00Z",
        required=2,
        policies=["prod-critical"],
        status={"phase": "Pending", "responses": [{"user": "bob", "decision": "Approved"}]},
    )
    lines = present.why(waiting, approval=two_of_three, plan=None, others={}, now=NOW)
    assert (
        "  needs 2 approvals from distinct eligible people, 1 so far (ApprovalPolicy prod-critical)"
    ) in lines
    approved = at_phase("rec-b", "Approved", plan="rec-b")
    held = builders.plan(
        "rec-b", status={"phase": "Pending", "message": "waiting: Deny window freeze until 18:00"}
    )
    lines = present.why(approved, approval=None, plan=held, others={}, now=NOW)
    assert "  waiting: Deny window freeze until 18:00" in lines


def expiring(name: str, expires: str, phase: str = "Pending") -> dict[str, Any]:
    """The high-risk Approval of `name` in namespace ns, expiring at `expires`."""
    return builders.approval(
        name, namespace="ns", status={"phase": phase}, expiresAt=expires, riskLevel="high"
    )


def test_the_queue_soonest_expiry_first() -> None:
    rows = present.queue(
        [
            expiring("later", "2026-01-04T12:00:00Z"),
            expiring("done", "2026-01-02T13:00:00Z", phase="Approved"),
            expiring("soon", "2026-01-02T16:00:00Z"),
        ],
        now=NOW,
    )
    assert [(r["name"], r["secondsLeft"]) for r in rows] == [
        ("soon", 4 * 3600.0),
        ("later", 48 * 3600.0),
    ]


def test_the_timeline_draws_steps_and_rollbacks() -> None:
    plan = builders.plan(
        "p",
        steps=[
            {"name": "one"},
            {"name": "two", "reversible": False},
            {"name": "three", "critical": True},
        ],
        status={
            "phase": "RolledBack",
            "progress": "3/3",
            "startedAt": "2026-01-02T12:00:00Z",
            "finishedAt": "2026-01-02T12:00:40Z",
            "totalDurationMs": 40000,
            "steps": [
                {
                    "name": "one",
                    "phase": "RolledBack",
                    "startedAt": "2026-01-02T12:00:00Z",
                    "finishedAt": "2026-01-02T12:00:10Z",
                    "rolledBackAt": "2026-01-02T12:00:40Z",
                    "durationMs": 10000,
                },
                {
                    "name": "two",
                    "phase": "Succeeded",
                    "startedAt": "2026-01-02T12:00:10Z",
                    "finishedAt": "2026-01-02T12:00:20Z",
                    "message": "irreversible: left as it is",
                },
                {
                    "name": "three",
                    "phase": "Failed",
                    "startedAt": "2026-01-02T12:00:20Z",
                    "finishedAt": "2026-01-02T12:00:30Z",
                    "error": "broke",
                },
            ],
        },
    )
    lines = timeline.timeline(plan, now=NOW, width=40)
    assert lines[0] == "plan p: RolledBack 3/3 in 40000 ms"
    bars = {line.split()[0]: line.split("|")[1] for line in lines[1:] if "|" in line}
    assert bars["one"] == "#" * 10 + "<" * 30
    assert bars["two"] == " " * 10 + "#" * 10 + " " * 20
    assert bars["three"] == " " * 20 + "X" * 10 + " " * 10
    assert "error: broke" in "\n".join(lines)
    assert "irreversible: left as it is" in "\n".join(lines)
    assert "(critical, irreversible)" in lines[2]


def test_short_steps_are_placed_by_their_duration_not_whole_seconds() -> None:
    plan = builders.plan(
        "p",
        steps=[{"name": "a"}, {"name": "b"}],
        status={
            "phase": "Succeeded",
            "startedAt": "2026-01-02T12:00:00Z",
            "finishedAt": "2026-01-02T12:00:00Z",
            "totalDurationMs": 800,
            "steps": [
                {"name": "a", "phase": "Succeeded", "startedAt": "2026-01-02T12:00:00Z",
                 "durationMs": 200},
                {"name": "b", "phase": "Succeeded", "startedAt": "2026-01-02T12:00:00Z",
                 "durationMs": 600},
            ],
        },
    )  # fmt: skip
    span, placed = timeline.intervals(plan, now=NOW)
    assert span == 800
    assert placed == {"a": (0.0, 200.0, None), "b": (200.0, 800.0, None)}
    bars = [line.split("|")[1] for line in timeline.timeline(plan, now=NOW, width=8)[1:]]
    assert bars == ["##      ", "  ######"]


def test_the_timeline_shows_the_baseline_and_each_measurement_in_the_verifying_window() -> None:
    def measured(second: int, value: float | None, phase: str, message: str) -> dict[str, Any]:
        at = f"2026-01-02T12:00:{second:02d}Z"
        return {"at": at, "value": value, "phase": phase, "message": message}

    plan = builders.plan(
        "p",
        steps=[{"name": "scale"}],
        status={
            "phase": "RollingBack",
            "startedAt": "2026-01-02T12:00:00Z",
            "steps": [{"name": "scale", "phase": "Succeeded", "durationMs": 10000,
                       "startedAt": "2026-01-02T12:00:00Z"}],
            "verification": {
                "phase": "Failed",
                "startedAt": "2026-01-02T12:00:10Z",
                "finishedAt": "2026-01-02T12:00:40Z",
                "message": "lat/p99: 0.45 (baseline 0.2) met result > baseline * 1.5",
                "baseline": {"lat/p99": 0.2},
                "metrics": [{"name": "lat/p99", "phase": "Failed", "measurements": [
                    measured(20, 0.21, "Successful", "result <= baseline * 1.1"),
                    measured(30, None, "Error", "no data"),
                    measured(40, 0.45, "Failed", "result > baseline * 1.5"),
                ]}],
            },
        },
    )  # fmt: skip
    window = timeline.verification(plan, now=NOW)
    assert window is not None
    assert (window["phase"], window["start"], window["end"]) == ("Failed", 10000, 40000)
    assert [m["at"] for m in window["metrics"][0]["measurements"]] == [20000, 30000, 40000]
    lines = timeline.timeline(plan, now=NOW, width=40)
    bars = {line.split()[0]: line.split("|")[1] for line in lines[1:] if "|" in line}
    assert bars["scale"] == "#" * 10 + " " * 30  # the axis runs to the verification's end
    assert bars["verify"] == " " * 10 + "=" * 10 + "+" + "=" * 9 + "e" + "=" * 8 + "x"
    text = "\n".join(lines)
    assert "| Failed (lat/p99: 0.45 (baseline 0.2) met result > baseline * 1.5)" in text
    assert "lat/p99: Failed, baseline 0.2" in text
    assert "+10s 0.21 Successful result <= baseline * 1.1" in text
    assert "+20s no data Error no data" in text
    assert "+30s 0.45 Failed result > baseline * 1.5" in text


def test_a_plan_without_a_baseline_has_no_verification_window() -> None:
    plan = builders.plan("p", status={"phase": "Running", "startedAt": "2026-01-02T12:00:00Z"})
    assert timeline.verification(plan, now=NOW) is None
    assert not any("verify" in line for line in timeline.timeline(plan, now=NOW))


def test_why_shows_realised_and_calibrated_savings() -> None:
    """An agent whose past changes realised a quarter of their claims: its new estimate of
    2000 is worth 500 to calibration; a change of its own that realised shows it."""
    past = [
        at_phase(
            f"past-{i}",
            "Succeeded",
            {"agentId": "cost-agent-1"},
            realisedSavings={
                "estimatedMonthly": 100.0,
                "realisedMonthly": 25.0,
                "ratio": 0.25,
                "measuredAt": f"2026-01-0{i}T00:00:00Z",
            },
        )
        for i in (1, 2)
    ]
    new = at_phase("rec-new", "AwaitingApproval", {"agentId": "cost-agent-1"})
    others = {str(o["metadata"]["name"]): o for o in (*past, new)}
    lines = present.why(new, approval=None, plan=None, others=others, now=NOW)
    assert lines[1] == (
        "Calibrated savings 500.00: its agent realised 25% of its estimates over its last 2 "
        "verified change(s) (conflicts rank on this with --calibrate-savings)."
    )
    done = present.why(past[0], approval=None, plan=None, others=others, now=NOW)
    assert done[1] == "Realised savings 25.00 a month."
    alone = present.why(new, approval=None, plan=None, others={"rec-new": new}, now=NOW)
    assert not any("alibrated" in line for line in alone)
