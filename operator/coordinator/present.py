"""What a person reads: why a recommendation has its phase and the approval queue (a
plan's timeline: ``coordinator.timeline``). Pure
functions over the objects as the API server returns them (plain dicts, so that an object
written by a newer operator still reads); ``now`` is passed in.

Used by the kubectl plugin (``coordinator.plugin``) and the gateway's dashboard. They
explain what the objects' status says; they decide nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from coordinator.api.approval import POLICY_DECIDER, ApprovalPhase
from coordinator.api.common import RiskLevel
from coordinator.api.recommendation import RecommendationPhase
from coordinator.core import verification

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


def table(rows: Sequence[Sequence[str]]) -> str:
    """`rows` (the first: the header) as aligned columns, three spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


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


def _ratios(spec: Mapping[str, Any], others: Mapping[str, Obj]) -> list[float]:
    """The realisation ratios of the verified changes of `spec`'s agent, oldest first."""
    found = [
        (str(s.get("measuredAt")), float(s["ratio"]))
        for o in others.values()
        if _spec(o).get("agentId") == spec.get("agentId")
        and (s := _status(o).get("realisedSavings") or {}).get("ratio") is not None
    ]
    return [ratio for _, ratio in sorted(found)]


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
    realised = status.get("realisedSavings") or {}
    if realised.get("realisedMonthly") is not None:
        lines.append(f"Realised savings {float(realised['realisedMonthly']):.2f} a month.")
    note = verification.calibration_note(
        float(spec.get("estimatedSavings", 0)), _ratios(spec, others)
    )
    if note:
        lines.append(note)
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
