"""What a person reads: why a recommendation has its phase, the approval queue, a plan's
timeline (its steps, then its verification: the baseline and each measurement). Pure
functions over the objects as the API server returns them (plain dicts, so that an object
written by a newer operator still reads); ``now`` is passed in.

Used by the kubectl plugin (``coordinator.plugin``) and the gateway's dashboard. They
explain what the objects' status says; they decide nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from coordinator.api.approval import POLICY_DECIDER, ApprovalPhase
from coordinator.api.common import RiskLevel
from coordinator.api.plan import StepPhase
from coordinator.api.recommendation import RecommendationPhase

Obj = Mapping[str, Any]


def parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def duration(seconds: float) -> str:
    """2d3h, 4h05m, 12m30s, 45s: at most two units, for a person."""
    whole = round(seconds)
    sign = "-" if whole < 0 else ""
    seconds = abs(whole)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{sign}{days}d{hours}h"
    if hours:
        return f"{sign}{hours}h{minutes:02d}m"
    if minutes:
        return f"{sign}{minutes}m{secs:02d}s"
    return f"{sign}{secs}s"


def _name(obj: Obj) -> str:
    return str(obj.get("metadata", {}).get("name", "?"))


def _spec(obj: Obj | None) -> Mapping[str, Any]:
    return (obj or {}).get("spec") or {}


def _status(obj: Obj | None) -> Mapping[str, Any]:
    return (obj or {}).get("status") or {}


def phase(obj: Obj | None) -> str:
    return str(_status(obj).get("phase") or "Pending")


def _risk_rank(value: Any) -> int:
    try:
        return RiskLevel(str(value)).rank
    except ValueError:
        return 0


def deciding_rule(winner: Obj, loser: Obj) -> str:
    """The first rule of the ranking (RULES 3) that puts `winner` before `loser`."""
    w, lo = _spec(winner), _spec(loser)
    ranked: list[tuple[str, Any, Any]] = [
        ("priority", w.get("priority", 0), lo.get("priority", 0)),
        ("savings", w.get("estimatedSavings", 0), lo.get("estimatedSavings", 0)),
        ("confidence", w.get("confidence", 1), lo.get("confidence", 1)),
        ("risk", _risk_rank(w.get("riskLevel")), _risk_rank(lo.get("riskLevel"))),
    ]
    for rule, a, b in ranked:
        if a != b:
            if rule == "risk":
                return f"lower risk ({w.get('riskLevel')} < {lo.get('riskLevel')})"
            shown = (f"{float(a):.2f}", f"{float(b):.2f}") if rule == "savings" else (a, b)
            return f"higher {rule} ({shown[0]} > {shown[1]})"
    created_w = winner.get("metadata", {}).get("creationTimestamp")
    created_l = loser.get("metadata", {}).get("creationTimestamp")
    if created_w and created_l and created_w != created_l:
        return f"created first ({created_w} < {created_l})"
    return f"name ({_name(winner)} < {_name(loser)})"


def why(
    rec: Obj,
    *,
    approval: Obj | None,
    plan: Obj | None,
    others: Mapping[str, Obj],
    now: datetime,
) -> list[str]:
    """Why `rec` has its phase, in a few lines a person reads in five seconds."""
    name, spec, status = _name(rec), _spec(rec), _status(rec)
    current = phase(rec)
    lines = [
        f"{name} is {current}: {spec.get('action')} for customer {spec.get('customerId')}, "
        f"risk {spec.get('riskLevel')}, priority {spec.get('priority', 0)}, "
        f"savings {float(spec.get('estimatedSavings', 0)):.2f}"
    ]
    generation = rec.get("metadata", {}).get("generation")
    if status.get("observedGeneration") not in (None, generation):
        lines.append(f"  (the operator has not yet seen generation {generation})")
    winner = status.get("supersededBy")
    if current == RecommendationPhase.SUPERSEDED and winner:
        other = others.get(str(winner))
        rule = deciding_rule(other, rec) if other else "the ranking"
        lines.append(f"Lost to {winner}, kept by {rule}.")
    for conflict in status.get("conflicts") or []:
        with_ = ", ".join(conflict.get("with") or []) or "itself"
        line = (
            f"  {conflict.get('type')} conflict with {with_} ({conflict.get('severity')}): "
            f"{conflict.get('description')}"
        )
        lines.append(line)
        if conflict.get("resolution"):
            lines.append(f"    -> {conflict['resolution']}")
    if current == RecommendationPhase.BLOCKED:
        for dep in spec.get("dependsOn") or []:
            other = others.get(str(dep))
            if other is None:
                lines.append(f"Blocked by {dep}: it does not exist.")
            elif phase(other) != "Succeeded":
                lines.append(f"Waits for {dep} (it is {phase(other)}).")
    appr_status = _status(approval)
    if current == RecommendationPhase.AWAITING_APPROVAL and approval is not None:
        expires = parse_time(_spec(approval).get("expiresAt") or appr_status.get("expiresAt"))
        left = f" (in {duration((expires - now).total_seconds())})" if expires else ""
        until = expires.strftime("%Y-%m-%dT%H:%M:%SZ") if expires else "?"
        lines.append(
            f"Waits for a person (not its submitter) to decide approval {_name(approval)} "
            f"until {until}{left}: kubectl optiinfra approve {_name(approval)}"
        )
        responses = appr_status.get("responses") or []
        required = int(_spec(approval).get("required") or 1)
        if required > 1:
            approved = sum(1 for r in responses if r.get("decision") == "Approved")
            policies = ", ".join(_spec(approval).get("policies") or ()) or "-"
            lines.append(
                f"  needs {required} approvals from distinct eligible people, {approved} so "
                f"far (ApprovalPolicy {policies})"
            )
        if responses:
            said = ", ".join(f"{r.get('user')}: {r.get('decision')}" for r in responses)
            lines.append(f"  responses so far: {said}")
    if appr_status.get("decidedBy") and current != RecommendationPhase.AWAITING_APPROVAL:
        who = appr_status["decidedBy"]
        verb = str(appr_status.get("phase", "decided")).lower()
        by = "by policy (low risk, autoApprove)" if who == POLICY_DECIDER else f"by {who}"
        reason = f": {appr_status['reason']}" if appr_status.get("reason") else ""
        lines.append(f"Approval {verb} {by} at {appr_status.get('decidedAt')}{reason}.")
    elif appr_status.get("phase") == ApprovalPhase.EXPIRED:
        lines.append(f"Approval expired at {_spec(approval).get('expiresAt')}, undecided.")
    if plan is not None:
        plan_status = _status(plan)
        progress = plan_status.get("progress") or ""
        if _spec(plan).get("suspend") and phase(plan) == "Pending":
            lines.append(
                f"Plan {_name(plan)} waits to be started: kubectl optiinfra start {_name(plan)}"
            )
        else:
            lines.append(f"Plan {_name(plan)} is {phase(plan)} {progress}".rstrip() + ".")
            if phase(plan) == "Pending" and plan_status.get("message"):
                lines.append(f"  {plan_status['message']}")  # a window, a budget, a dependency
    if status.get("message"):
        lines.append(f"Operator: {status['message']}")
    return lines


def queue(approvals: Sequence[Obj], *, now: datetime) -> list[dict[str, Any]]:
    """The approvals waiting for a decision, soonest expiry first, with the time left."""
    rows = []
    for approval in approvals:
        if phase(approval) != ApprovalPhase.PENDING:
            continue
        spec = _spec(approval)
        if spec.get("decision", "Pending") != "Pending":
            continue
        expires = parse_time(spec.get("expiresAt"))
        rows.append(
            {
                "namespace": approval.get("metadata", {}).get("namespace", ""),
                "name": _name(approval),
                "recommendation": spec.get("recommendation", ""),
                "customer": spec.get("customerId", ""),
                "risk": spec.get("riskLevel", ""),
                "expiresAt": spec.get("expiresAt", ""),
                "secondsLeft": (expires - now).total_seconds() if expires else None,
                "message": _status(approval).get("message", ""),
            }
        )
    rows.sort(key=lambda r: (r["secondsLeft"] is None, r["secondsLeft"] or 0, r["name"]))
    return rows


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
