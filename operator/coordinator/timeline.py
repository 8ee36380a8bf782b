"""What a person reads of a plan: its timeline, the steps then the verification (the
baseline and each measurement), for ``kubectl optiinfra plan`` and the gateway's
dashboard. Pure functions over the plan as the API server returns it (a plain dict);
``now`` is passed in. Split from ``coordinator.present``, whose helpers it reads with.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final

from coordinator.api.plan import StepPhase
from coordinator.present import Obj, _name, _spec, _status, duration, parse_time, phase

_MARK = {
    StepPhase.PENDING: ".",
    StepPhase.RUNNING: ">",
    StepPhase.SUCCEEDED: "#",
    StepPhase.FAILED: "X",
    StepPhase.SKIPPED: "-",
    StepPhase.ROLLED_BACK: "<",
    StepPhase.ROLLBACK_FAILED: "!",
}


def intervals(
    plan: Obj, *, now: datetime
) -> tuple[float, dict[str, tuple[float, float, float | None]]]:
    """Where each step sits on the plan's time axis, in ms from the plan's start:
    ``(span, {step: (start, end, undone_at)})``. Steps run one at a time, so a step
    starts no earlier than the one before it ended; its length is its ``durationMs``
    (status times are whole seconds, too coarse for short steps); rollbacks come after
    the last step that ran, in reverse order."""
    status = _status(plan)
    start = parse_time(status.get("startedAt"))
    if start is None:
        return 0.0, {}
    offset = functools.partial(_offset, start)
    states = {str(s.get("name")): s for s in status.get("steps") or []}
    order = [str(s.get("name")) for s in _spec(plan).get("steps") or []]
    placed: dict[str, tuple[float, float, float | None]] = {}
    cursor = 0.0
    for name in order:
        state = states.get(name, {})
        began = offset(state.get("startedAt"))
        if began is None:
            continue
        first = max(began, cursor)
        if state.get("durationMs") is not None:
            last = first + float(state["durationMs"])
        elif state.get("phase") == StepPhase.RUNNING:
            last = max(offset(now.isoformat()) or first, first)
        else:
            last = max(offset(state.get("finishedAt")) or first, first)
        placed[name] = (first, last, None)
        cursor = last
    for name in reversed(order):
        undone = offset(states.get(name, {}).get("rolledBackAt"))
        if name in placed and undone is not None:
            cursor = max(undone, cursor)
            placed[name] = (placed[name][0], placed[name][1], cursor)
    finished = offset(status.get("finishedAt")) or 0.0
    window = verification(plan, now=now)
    verifying = 0.0 if window is None else window["end"] or window["start"] or 0.0
    span = max(cursor, finished, verifying, float(status.get("totalDurationMs") or 0), 1.0)
    return span, placed


def _offset(start: datetime, value: Any) -> float | None:
    """`value` (a time) in ms after `start`; None when it is not a time."""
    moment = parse_time(value)
    return None if moment is None else (moment - start).total_seconds() * 1000


def verification(plan: Obj, *, now: datetime) -> dict[str, Any] | None:
    """A plan's verification window on the time axis of ``intervals`` (ms from the plan's
    start): ``phase`` (Pending until the last step), ``start``, ``end`` (now while it
    runs), ``message``, ``decision``, ``baseline`` and per metric its ``measurements``
    (``at`` in ms, ``time``, ``value``, ``phase``, ``message``); None when the plan is not
    verified (no baseline recorded)."""
    status = _status(plan)
    found, start = status.get("verification"), parse_time(status.get("startedAt"))
    if not isinstance(found, Mapping) or start is None:
        return None
    began, end = (_offset(start, found.get(key)) for key in ("startedAt", "finishedAt"))
    if began is not None and end is None:
        end = max(_offset(start, now.isoformat()) or began, began)
    baseline = found.get("baseline") or {}
    return {
        "phase": str(found.get("phase") or "Pending"),
        "start": began,
        "end": end,
        **{k: found.get(k) for k in ("message", "decision")},
        "baseline": dict(baseline),
        "baseline_skipped_by": found.get("baselineSkippedBy"),
        "metrics": [
            {
                "name": str(metric.get("name")),
                "phase": str(metric.get("phase") or "Running"),
                "dry_run": bool(metric.get("dryRun")),
                "baseline": baseline.get(metric.get("name")),
                "measurements": [
                    {"at": _offset(start, m.get("at")), "time": m.get("at")}
                    | {k: m.get(k) for k in ("value", "phase", "message")}
                    for m in metric.get("measurements") or []
                ],
            }
            for metric in found.get("metrics") or []
        ],
    }


_MEASURED: Final = {"Successful": "+", "Failed": "x", "Inconclusive": "?", "Error": "e"}


def _verification_lines(
    window: Mapping[str, Any], column: Callable[[float], int], *, width: int, label: int
) -> list[str]:
    """The verification's bar (``=`` its window, a mark per measurement) and, per metric,
    its baseline and measurements (time after the verification started, value, phase)."""
    bar = [" "] * width
    began = window["start"]
    if began is not None:
        for i in range(column(began), max(column(began), column(window["end"] - 0.001)) + 1):
            bar[i] = "="
    for metric in window["metrics"]:
        for m in metric["measurements"]:
            if m["at"] is not None:
                bar[column(m["at"])] = _MEASURED.get(m["phase"], "?")
    head = window["phase"] + (f" ({window['message']})" if window["message"] else "")
    head += f", decided: {window['decision']}" if window["decision"] else ""
    lines = [f"  {'verify':<{label}} |{''.join(bar)}| {head}"]
    if window["baseline_skipped_by"]:
        lines.append(f"  {'':<{label}}  baseline skipped by {window['baseline_skipped_by']}")
    for metric in window["metrics"]:
        base = metric["baseline"]
        lines.append(
            f"  {'':<{label}}  {metric['name']}: {metric['phase']}"
            + (f", baseline {_value(base)}" if base is not None else ", no baseline")
            + (" (dry run)" if metric["dry_run"] else "")
        )
        for m in metric["measurements"]:
            after = duration(((m["at"] or 0.0) - (began or 0.0)) / 1000)
            why = f" {m['message']}" if m["message"] else ""
            lines.append(f"  {'':<{label}}    +{after} {_value(m['value'])} {m['phase']}{why}")
    return lines


def _value(value: Any) -> str:
    return "no data" if value is None else f"{float(value):.6g}"


def timeline(plan: Obj, *, now: datetime, width: int = 40) -> list[str]:
    """A plan's steps as a timeline: one bar per step on a shared time axis, rollbacks
    drawn after the step (`<` from the step's end to its rollback)."""
    spec, status = _spec(plan), _status(plan)
    steps = {str(s.get("name")): s for s in status.get("steps") or []}
    span, placed = intervals(plan, now=now)
    head = f"plan {_name(plan)}: {phase(plan)}"
    if status.get("progress"):
        head += f" {status['progress']}"
    if status.get("totalDurationMs") is not None:
        head += f" in {status['totalDurationMs']} ms"
    if spec.get("suspend") and phase(plan) == "Pending":
        head += f" (suspended: kubectl optiinfra start {_name(plan)})"
    if spec.get("abort"):
        head += " (aborted)"
    lines = [head]
    label = max([len(str(s.get("name"))) for s in spec.get("steps") or []] + [6])

    def column(ms: float) -> int:
        return min(width - 1, max(0, int(ms / span * width)))

    for step in spec.get("steps") or []:
        name = str(step.get("name"))
        state = steps.get(name, {})
        step_phase = str(state.get("phase") or "Pending")
        try:
            mark = _MARK[StepPhase(step_phase)]
        except ValueError:
            mark = "?"
        bar = [" "] * width
        if name in placed:
            first, last, undone = placed[name]
            a, b = column(first), max(column(first), column(last - 0.001))
            for i in range(a, b + 1):
                bar[i] = "#" if mark in "<!" else mark
            if undone is not None:  # at least one `<`, where there is room
                for i in range(b + 1, min(width, max(b + 1, column(undone)) + 1)):
                    bar[i] = "<"
        elif step_phase == StepPhase.PENDING:
            bar = ["."] * width
        flags = ("critical" if step.get("critical", True) else "optional") + (
            "" if step.get("reversible", True) else ", irreversible"
        )
        took = f" {state['durationMs']} ms" if state.get("durationMs") is not None else ""
        lines.append(f"  {name:<{label}} |{''.join(bar)}| {step_phase}{took} ({flags})")
        if state.get("error"):
            lines.append(f"  {'':<{label}}  error: {state['error']}")
        if state.get("message"):
            lines.append(f"  {'':<{label}}  {state['message']}")
    window = verification(plan, now=now)
    if window is not None:
        lines += _verification_lines(window, column, width=width, label=label)
    if status.get("message"):
        lines.append(f"  {status['message']}")
    return lines
