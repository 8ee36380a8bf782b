"""Text from agents reaches status, Events and a person's terminal without control
characters or escape sequences (``core.text``), wherever it enters."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, cast

import pytest

from coordinator import plugin
from coordinator.api.plan import ExecutionPlanStatus, PlanPhase, StepPhase
from coordinator.core import plan, text
from coordinator.core.planevents import implied_events
from coordinator.k8s.client import Client
from coordinator.k8s.events import ObjectRef, Recorder
from tests.support.plans import Call, Harness, RecordingExecutor, plan_spec, step

UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
"""What must never reach a terminal (newline and tab are judged per place)."""

HOSTILE = (
    "\x1b[31mdenied\x1b[0m\r\nStep a: Succeeded\x1b]0;owned\x07 \x1b[2J\x9b3J\x00\x7f\x85"
    "\u202edone\u202c"
)


@pytest.mark.parametrize(
    ("raw", "one_line", "multi_line"),
    [
        ("plain text, café ☃", "plain text, café ☃", "plain text, café ☃"),
        (HOSTILE, "denied Step a: Succeeded done", "denied\nStep a: Succeeded done"),
        ("a\tb\nc\u2028d", "a b c d", "a b\nc d"),
        ("link \x1b]8;;http://x\x1b\\here\x1b]8;;\x1b\\ end", "link here end", "link here end"),
        ("\x1bc\x1b(0reset", "reset", "reset"),
    ],
)
def test_clean_strips_controls_and_whole_escape_sequences(
    raw: str, one_line: str, multi_line: str
) -> None:
    assert text.clean(raw) == one_line
    assert text.clean(raw, keep="\n") == multi_line


def test_clean_value_cleans_every_string_to_a_bounded_depth() -> None:
    value = {"k\x1b[1m": ["v\x07", 3, None, True, {"x": "a\nb\x1b[2Kc"}]}
    assert text.clean_value(value) == {"k": ["v", 3, None, True, {"x": "a\nbc"}]}
    deep: dict[str, Any] = {}
    inner = deep
    for _ in range(1000):  # deeper than anything recursion would survive
        inner["n"] = {}
        inner = inner["n"]
    cleaned = text.clean_value(deep)
    depth = 0
    while isinstance(cleaned, dict):
        cleaned, depth = cleaned["n"], depth + 1
    assert (depth, cleaned) == (text.MAX_DEPTH, text.TOO_DEEP)


@dataclass
class HostileExecutor(RecordingExecutor):
    """Step 0 succeeds with a hostile result; step 1 fails, and step 0's undo too, with
    hostile errors."""

    def run(self, kind: str, index: int, persisted: ExecutionPlanStatus) -> plan.Outcome:
        self.calls.append(Call(kind, index, persisted))
        if kind == "undo":
            return plan.Outcome(ok=False, error="undo\x00 \x9b2Jbroke\x1b[0m")
        if index == 0:
            result = {"note\x1b[2J": "line 1\x1b]0;pwned\x07\r\nline 2", "deep": [{"x": "\x07"}]}
            return plan.Outcome(ok=True, result=result)
        return plan.Outcome(ok=False, error=HOSTILE)


def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def test_plan_status_and_its_events_hold_what_agents_wrote_cleaned() -> None:
    harness = Harness(plan_spec(step("a"), step("b")), HostileExecutor())
    harness.run()
    status = harness.saved
    assert status.phase is PlanPhase.FAILED  # a rollback failed
    a, b = status.steps
    assert a.phase is StepPhase.ROLLBACK_FAILED
    assert a.result == {"note": "line 1\nline 2", "deep": [{"x": ""}]}  # results keep lines
    assert a.error == "rollback failed: undo broke"
    assert b.error == "denied Step a: Succeeded done"  # errors are one line
    for value in strings(harness.wire):
        assert not UNSAFE.search(value), value
    for event in implied_events(status):
        assert not UNSAFE.search(event.message), event
        assert "\n" not in event.message, event


def test_an_event_message_is_cleaned_before_it_is_queued() -> None:
    recorder = Recorder(cast(Client, None))
    ref = ObjectRef("optiinfra.io/v1alpha1", "Recommendation", "team-a", "rec-1", "uid-1")
    recorder.record(ref, reason="StepFailed", message=HOSTILE, key="step|b|Failed")
    pending = recorder._queue.get_nowait()
    assert pending[3] == "denied Step a: Succeeded done"


def test_the_plugin_prints_no_control_characters(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(plugin, "run", lambda argv: f"plan p: Failed\n  error: {HOSTILE}")
    assert plugin.main(["plan", "p"]) == 0
    out = capsys.readouterr().out
    assert out == "plan p: Failed\n  error: denied\nStep a: Succeeded done\n"

    def refused(argv: Any) -> str:
        raise plugin.FailureError(f"approval x: {HOSTILE}")

    monkeypatch.setattr(plugin, "run", refused)
    assert plugin.main(["approve", "x"]) == 1
    err = capsys.readouterr().err
    assert err == "error: approval x: denied Step a: Succeeded done\n"
