"""The origin document's HTTP API, mapped onto the objects: pure functions.

Requests (snake_case, as the origin document sends them) become Recommendation specs;
the objects' status, as the operator wrote it, becomes the origin's responses. Nothing
is decided here: conflicts, winners and approvals are read from status, never
recomputed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import pydantic

from coordinator.api.approval import POLICY_DECIDER
from coordinator.api.common import API_VERSION, format_time
from coordinator.api.recommendation import RecommendationSpec

Obj = Mapping[str, Any]


class BadRequestError(ValueError):
    """A request the gateway refuses with 400; the message names the field."""


# origin field -> spec field
FIELDS: Final = {
    "customer_id": "customerId",
    "agent_id": "agentId",
    "agent_type": "agentType",
    "type": "type",
    "title": "title",
    "description": "description",
    "action": "action",
    "risk_level": "riskLevel",
    "estimated_savings": "estimatedSavings",
    "affected_resources": "affectedResources",
    "priority": "priority",
    "confidence": "confidence",
    "depends_on": "dependsOn",
    "auto_approve": "autoApprove",
    "execute_now": "executeNow",
}
_ORIGIN: Final = {v: k for k, v in FIELDS.items()}
REQUIRED: Final = ("id", "agent_id", "agent_type", "title", "action", "risk_level")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL: Final = "optiinfra.io/submitted-via"


def _require_object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise BadRequestError(f"{where}: must be a JSON object")
    return value


def coordinate_request(body: Any) -> tuple[str, list[dict[str, Any]]]:
    """The customer and the Recommendation objects of a POST /coordination/coordinate
    body. The request's ``auto_approve`` and ``execute_now`` apply to each
    recommendation (one of its own wins)."""
    request = _require_object(body, "body")
    customer = request.get("customer_id")
    if not isinstance(customer, str) or not customer:
        raise BadRequestError("customer_id: required (a non-empty string)")
    items = request.get("recommendations")
    if not isinstance(items, list):
        raise BadRequestError("recommendations: required (a list)")
    for flag in ("auto_approve", "execute_now"):
        if flag in request and not isinstance(request[flag], bool):
            raise BadRequestError(f"{flag}: must be true or false")
    objects = []
    seen: set[str] = set()
    for index, raw in enumerate(items):
        where = f"recommendations[{index}]"
        item = dict(_require_object(raw, where))
        for field in REQUIRED:
            if item.get(field) in (None, ""):
                raise BadRequestError(f"{where}.{field}: required")
        name = item["id"]
        if not isinstance(name, str) or len(name) > 253 or not _NAME.match(name):
            raise BadRequestError(
                f"{where}.id: {name!r} is not a valid name (lowercase letters, digits, '-', '.')"
            )
        if name in seen:
            raise BadRequestError(f"{where}.id: {name} appears twice in the request")
        seen.add(name)
        item.setdefault("customer_id", customer)
        if item["customer_id"] != customer:
            raise BadRequestError(
                f"{where}.customer_id: {item['customer_id']} differs from the request's "
                f"customer_id {customer}"
            )
        for flag in ("auto_approve", "execute_now"):
            if flag in request:
                item.setdefault(flag, request[flag])
        unknown = sorted(set(item) - set(FIELDS) - {"id"})
        if unknown:
            raise BadRequestError(f"{where}.{unknown[0]}: unknown field")
        spec = {FIELDS[k]: v for k, v in item.items() if k != "id" and v is not None}
        try:
            RecommendationSpec.model_validate(spec)
        except pydantic.ValidationError as exc:
            error = exc.errors()[0]
            loc = [str(p) for p in error["loc"]]
            field = ".".join([_ORIGIN.get(loc[0], loc[0]), *loc[1:]]) if loc else "?"
            raise BadRequestError(f"{where}.{field}: {error['msg']}") from None
        objects.append(
            {
                "apiVersion": API_VERSION,
                "kind": "Recommendation",
                "metadata": {"name": name, "labels": {LABEL: "gateway"}},
                "spec": spec,
            }
        )
    return customer, objects


def decision_request(body: Any, *, reject: bool) -> tuple[str | None, str | None]:
    """(user_id, reason) of an approve or reject body; the body may be empty."""
    if body is None:
        body = {}
    request = _require_object(body, "body")
    user_id, reason = request.get("user_id"), request.get("reason")
    if user_id is not None and not isinstance(user_id, str):
        raise BadRequestError("user_id: must be a string")
    if reason is not None and not isinstance(reason, str):
        raise BadRequestError("reason: must be a string")
    if reject and not reason:
        raise BadRequestError("reason: required to reject")
    return user_id, reason


def _spec(obj: Obj | None) -> Mapping[str, Any]:
    return (obj or {}).get("spec") or {}


def _status(obj: Obj | None) -> Mapping[str, Any]:
    return (obj or {}).get("status") or {}


def _snake(phase: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", phase).lower()


_STEP_STATUS: Final = {"Succeeded": "completed"}


def settled(rec: Obj | None, approval: Obj | None, plan: Obj | None) -> bool:
    """Whether the operator has evaluated this generation of `rec` and written what
    follows from it (the Approval it asks for, the plan it names)."""
    if rec is None:
        return False
    status = _status(rec)
    if status.get("observedGeneration") != rec.get("metadata", {}).get("generation"):
        return False
    phase = status.get("phase")
    if not phase:
        return False
    if phase in ("AwaitingApproval", "Approved"):
        wanted = "Pending" if phase == "AwaitingApproval" else "Approved"
        if approval is None or _status(approval).get("phase") != wanted:
            return False
    return not (status.get("plan") and plan is None)


def recommendation(rec: Obj) -> dict[str, Any]:
    spec, status = _spec(rec), _status(rec)
    out: dict[str, Any] = {"id": rec["metadata"]["name"]}
    for origin_field, field in FIELDS.items():
        if field in spec:
            out[origin_field] = spec[field]
    out |= {
        "status": _snake(str(status.get("phase", "Pending"))),
        "superseded_by": status.get("supersededBy"),
        "approval_id": status.get("approval"),
        "plan_id": status.get("plan"),
        "message": status.get("message"),
        "created_at": rec["metadata"].get("creationTimestamp"),
    }
    return out


def approval(appr: Obj) -> dict[str, Any]:
    spec, status = _spec(appr), _status(appr)
    out: dict[str, Any] = {
        "id": appr["metadata"]["name"],
        "recommendation_id": spec.get("recommendation"),
        "customer_id": spec.get("customerId"),
        "risk_level": spec.get("riskLevel"),
        "status": _snake(str(status.get("phase", "Pending"))),
        "requested_at": status.get("requestedAt") or appr["metadata"].get("creationTimestamp"),
        "expires_at": spec.get("expiresAt"),
        "decided_by": status.get("decidedBy"),
        "decided_at": status.get("decidedAt"),
        "reason": status.get("reason"),
        "auto_approved": status.get("decidedBy") == POLICY_DECIDER,
    }
    if status.get("responses"):
        out["responses"] = status["responses"]
    if status.get("message"):
        out["message"] = status["message"]
    return out


def plan(obj: Obj) -> dict[str, Any]:
    spec, status = _spec(obj), _status(obj)
    states = {s.get("name"): s for s in status.get("steps") or []}
    steps = []
    for step in spec.get("steps") or []:
        state = states.get(step.get("name"), {})
        phase = str(state.get("phase", "Pending"))
        steps.append(
            {
                "name": step.get("name"),
                "action": step.get("action"),
                "executor": step.get("executor"),
                "critical": step.get("critical", True),
                "reversible": step.get("reversible", True),
                "status": _STEP_STATUS.get(phase, _snake(phase)),
                "result": state.get("result"),
                "error": state.get("error"),
                "duration_ms": state.get("durationMs"),
                "started_at": state.get("startedAt"),
                "completed_at": state.get("finishedAt"),
                "rolled_back_at": state.get("rolledBackAt"),
            }
        )
    phase = str(status.get("phase", "Pending"))
    return {
        "id": obj["metadata"]["name"],
        "recommendation_id": spec.get("recommendation"),
        "customer_id": spec.get("customerId"),
        "steps": steps,
        "status": _STEP_STATUS.get(phase, _snake(phase)),
        "suspended": bool(spec.get("suspend")),
        "aborted": bool(spec.get("abort")),
        "progress": status.get("progress"),
        "total_duration_ms": status.get("totalDurationMs"),
        "started_at": status.get("startedAt"),
        "completed_at": status.get("finishedAt"),
        "message": status.get("message"),
        "created_at": obj["metadata"].get("creationTimestamp"),
    }


def conflicts(recs: Sequence[Obj]) -> list[dict[str, Any]]:
    """The conflicts the status of `recs` records, each pair (or cycle) once: an entry is
    listed on both recommendations of a pair."""
    found: dict[tuple[str, frozenset[str]], dict[str, Any]] = {}
    for rec in recs:
        name = str(rec["metadata"]["name"])
        for entry in _status(rec).get("conflicts") or []:
            members = frozenset([name, *(entry.get("with") or [])])
            key = (str(entry.get("type")), members)
            resolution = entry.get("resolution") or ""
            if key in found:
                if resolution and not found[key]["resolution"]:
                    found[key]["resolution"] = resolution
                    found[key]["resolved"] = True
                continue
            ids = sorted(members)
            found[key] = {
                "id": f"conflict-{entry.get('type')}-{'-'.join(ids)}",
                "type": entry.get("type"),
                "recommendation_ids": ids,
                "resources": entry.get("resources") or [],
                "description": entry.get("description"),
                "severity": entry.get("severity"),
                "resolved": bool(resolution),
                "resolution": resolution,
            }
    order = {"resource": 0, "action": 1, "dependency": 2}
    return sorted(
        found.values(),
        key=lambda c: (c["recommendation_ids"], order.get(str(c["type"]), 9)),
    )


KEPT_OUT: Final = ("Superseded", "Blocked", "Rejected", "Expired")


def summary(
    *,
    coordination_id: str,
    recs: Sequence[Obj],
    approvals: Mapping[str, Obj],
    plans: Mapping[str, Obj],
    now: datetime,
    settled_: bool,
) -> dict[str, Any]:
    """The origin's answer to POST /coordination/coordinate, from the objects' status."""
    found = conflicts(recs)
    mine = [approvals[str(n)] for n in (_status(r).get("approval") for r in recs) if n in approvals]
    pending = [a for a in mine if _status(a).get("phase") == "Pending"]
    auto = [a for a in mine if _status(a).get("decidedBy") == POLICY_DECIDER]
    kept = [r for r in recs if _status(r).get("phase") not in KEPT_OUT]
    own_plans = [plans[str(n)] for n in (_status(r).get("plan") for r in recs) if n in plans]
    return {
        "id": coordination_id,
        "total_recommendations": len(recs),
        "conflicts_detected": len(found),
        "conflicts_resolved": sum(1 for c in found if c["resolved"]),
        "recommendations_kept": len(kept),
        "approvals_required": len(pending),
        "auto_approved": len(auto),
        "conflicts": found,
        "recommendations": [recommendation(r) for r in kept],
        "discarded": [recommendation(r) for r in recs if r not in kept],
        "approvals": [approval(a) for a in mine],
        "execution_plans": [plan(p) for p in own_plans],
        "settled": settled_,
        "created_at": format_time(now),
    }
