"""ApprovalPolicy rules: which policies govern a recommendation, how they combine, the
votes of N-of-M approvals, change windows and the per-customer plan budget.

- ``select`` and ``merge``: every policy of the namespace whose selector matches governs
  the recommendation; when several do, the most restrictive value wins field by field —
  the highest ``approvals.required``; every approver list must be satisfied (a voter must
  be in at least one list, and each list needs at least one approving member); the
  shortest expiry per risk; the lowest ``autoApprove.maxRisk``; every window counts
  (a Deny beats an Allow); the smallest ``maxConcurrentPlans``; every ``notify`` target.
  Policies are taken in name order, so the result never depends on the order they were
  listed in.
- ``tally``: an approval is Approved when ``required`` distinct eligible people (never the
  submitter) approved and every approver list has an approving member; Rejected at the
  first rejection by an eligible person.
- ``window_gate`` and ``budget_gate``: whether an approved plan may start now, or must
  wait (why, and until when). A plan already running is never interrupted: the gates are
  asked only before a plan starts.

Pure: no clock (``now`` is passed in), no I/O, no cluster. Windows are evaluated with
cronsim in the window's IANA time zone (zoneinfo); a window's duration is elapsed time,
so a window that spans a daylight-saving change lasts exactly its duration.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import cronsim

from coordinator.api.approval import Approval
from coordinator.api.common import RiskLevel, format_time
from coordinator.api.policy import (
    ApprovalPolicy,
    ApprovalPolicySpec,
    Approver,
    MaxRisk,
    Notify,
    NotifyEvent,
    PolicySelector,
    Window,
    WindowKind,
)
from coordinator.api.recommendation import Recommendation, RecommendationSpec
from coordinator.core.approval import parse_duration

__all__ = ["parse_duration"]

RESPONSES_ANNOTATION: Final = "optiinfra.io/responses"
"""Set on an Approval by the admission webhook only: the votes so far (JSON list of
``{user, groups, decision, reason, at}``), which the operator copies into
``status.responses``."""

_MAX_RISK_RANK: Final[Mapping[MaxRisk, int]] = {
    MaxRisk.NONE: -1,
    MaxRisk.LOW: 0,
    MaxRisk.MEDIUM: 1,
    MaxRisk.HIGH: 2,
    MaxRisk.CRITICAL: 3,
}


# --- selection and merge ------------------------------------------------------------------


def selects(spec: ApprovalPolicySpec, rec: RecommendationSpec, *, risk: RiskLevel) -> bool:
    """Whether the policy's selector matches: every list given contains the value."""
    return selector_matches(spec.selector, rec, risk=risk)


def selector_matches(sel: PolicySelector, rec: RecommendationSpec, *, risk: RiskLevel) -> bool:
    """Whether a selector (of an ApprovalPolicy or a VerificationTemplate) matches: every
    list given contains the recommendation's value."""
    return (
        (not sel.customer_ids or rec.customer_id in sel.customer_ids)
        and (not sel.actions or rec.action in sel.actions)
        and (not sel.agent_types or rec.agent_type in sel.agent_types)
        and (not sel.risk_levels or risk in sel.risk_levels)
    )


@dataclasses.dataclass(frozen=True, slots=True)
class ApproverSet:
    """The approvers one policy names."""

    policy: str
    approvers: tuple[Approver, ...]

    def admits(self, user: str, groups: Iterable[str]) -> bool:
        groups = set(groups)
        return any(
            (a.user is not None and a.user == user) or (a.group is not None and a.group in groups)
            for a in self.approvers
        )

    def text(self) -> str:
        return " or ".join(a.text() for a in self.approvers)


@dataclasses.dataclass(frozen=True, slots=True)
class Merged:
    """The policies that govern one recommendation, combined most-restrictively."""

    policies: tuple[str, ...] = ()
    """Names of the policies applied, sorted."""
    required: int = 1
    approver_sets: tuple[ApproverSet, ...] = ()
    expiry: Mapping[RiskLevel, timedelta] = dataclasses.field(default_factory=dict)
    """Only the risks some policy sets; the others keep the operator's defaults."""
    max_risk: MaxRisk = MaxRisk.LOW
    windows: tuple[Window, ...] = ()
    max_concurrent_plans: int | None = None
    notify: tuple[Notify, ...] = ()

    def auto_approves(self, risk: RiskLevel) -> bool:
        """Whether a change of `risk` may be approved by policy (with autoApprove)."""
        return risk.rank <= _MAX_RISK_RANK[self.max_risk]


DEFAULT: Final = Merged()


def merge(policies: Iterable[tuple[str, ApprovalPolicySpec]]) -> Merged:
    """Combine the policies (name, spec) most-restrictively, field by field."""
    ordered = sorted(policies, key=lambda p: p[0])
    if not ordered:
        return DEFAULT
    required = 1
    sets: list[ApproverSet] = []
    expiry: dict[RiskLevel, timedelta] = {}
    max_risk: MaxRisk | None = None
    windows: list[Window] = []
    budget: int | None = None
    notify: list[Notify] = []
    for name, spec in ordered:
        if spec.approvals is not None:
            required = max(required, spec.approvals.required)
            if spec.approvals.approvers:
                sets.append(ApproverSet(name, tuple(spec.approvals.approvers)))
        if spec.expiry is not None:
            for risk in RiskLevel:
                raw = getattr(spec.expiry, risk.value)
                if raw:
                    value = parse_duration(raw)
                    expiry[risk] = min(expiry.get(risk, value), value)
        if spec.auto_approve is not None:
            level = spec.auto_approve.max_risk
            if max_risk is None or _MAX_RISK_RANK[level] < _MAX_RISK_RANK[max_risk]:
                max_risk = level
        windows.extend(spec.windows)
        if spec.max_concurrent_plans is not None:
            budget = min(budget or spec.max_concurrent_plans, spec.max_concurrent_plans)
        notify.extend(n for n in spec.notify if n not in notify)
    return Merged(
        policies=tuple(name for name, _ in ordered),
        required=required,
        approver_sets=tuple(sets),
        expiry=expiry,
        max_risk=MaxRisk.LOW if max_risk is None else max_risk,
        windows=tuple(windows),
        max_concurrent_plans=budget,
        notify=tuple(notify),
    )


def governing(
    policies: Iterable[ApprovalPolicy], rec: RecommendationSpec, *, risk: RiskLevel
) -> Merged:
    """The merged policy of the namespace's `policies` that select `rec`."""
    return merge((p.metadata.name, p.spec) for p in policies if selects(p.spec, rec, risk=risk))


def governing_of(
    policies: Iterable[ApprovalPolicy], rec: Recommendation, approval: Approval | None
) -> Merged:
    """The merged policies that select `rec` (at its approval's risk, after the operator's
    floors, when it has one)."""
    risk = approval.spec.risk_level if approval is not None else rec.spec.risk_level
    return governing(policies, rec.spec, risk=risk)


# --- votes ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Vote:
    """One person's decision, as the API server authenticated them."""

    user: str
    groups: tuple[str, ...]
    decision: str
    """Approved or Rejected."""
    reason: str | None
    at: datetime

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "user": self.user,
            "groups": list(self.groups),
            "decision": self.decision,
            "at": format_time(self.at),
        }
        if self.reason:
            out["reason"] = self.reason
        return out


def read_votes(raw: str | None) -> list[Vote]:
    """The votes recorded in the responses annotation (none if missing or unreadable)."""
    if not raw:
        return []
    try:
        items = json.loads(raw)
        return [
            Vote(
                user=str(item["user"]),
                groups=tuple(str(g) for g in item.get("groups") or ()),
                decision=str(item["decision"]),
                reason=item.get("reason"),
                at=datetime.fromisoformat(str(item["at"]).replace("Z", "+00:00")),
            )
            for item in items
        ]
    except (ValueError, KeyError, TypeError):
        return []


def write_votes(votes: Sequence[Vote]) -> str:
    return json.dumps([v.to_json() for v in votes], separators=(",", ":"))


def who_may_decide(sets: Sequence[ApproverSet]) -> str:
    """The eligible approvers in words."""
    if not sets:
        return "anyone allowed to patch approvals"
    return "; ".join(f"{s.text()} (policy {s.policy})" for s in sets)


def eligible(user: str, groups: Iterable[str], sets: Sequence[ApproverSet]) -> bool:
    """Whether `user` (in `groups`) may decide: in at least one approver list, or any user
    when no policy names approvers."""
    groups = tuple(groups)
    return not sets or any(s.admits(user, groups) for s in sets)


@dataclasses.dataclass(frozen=True, slots=True)
class Tally:
    """Where the votes stand."""

    outcome: str
    """Pending, Approved or Rejected."""
    approvers: tuple[str, ...] = ()
    """Distinct eligible people who approved, in the order they did."""
    missing: str = ""
    """What an approval still needs, in words (Pending only)."""


def tally(
    votes: Sequence[Vote],
    *,
    required: int,
    sets: Sequence[ApproverSet],
    submitter: str | None,
) -> Tally:
    """Count the votes: ineligible voters and the submitter never count, a person counts
    once (their first vote), the first eligible rejection rejects."""
    counted: dict[str, Vote] = {}
    for vote in votes:
        if vote.user in counted or vote.user == submitter:
            continue
        if not eligible(vote.user, vote.groups, sets):
            continue
        if vote.decision == "Rejected":
            return Tally("Rejected", tuple(counted))
        counted[vote.user] = vote
    unmet = [s for s in sets if not any(s.admits(v.user, v.groups) for v in counted.values())]
    if len(counted) >= required and not unmet:
        return Tally("Approved", tuple(counted))
    needs = []
    if len(counted) < required:
        needs.append(f"{required - len(counted)} more of {required} approvals")
    needs.extend(f"an approval from {s.text()} (policy {s.policy})" for s in unmet)
    return Tally("Pending", tuple(counted), "; ".join(needs))


# --- windows and budget -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Go:
    """The plan may start now."""


@dataclasses.dataclass(frozen=True, slots=True)
class Wait:
    """The plan must wait: why, and when to look again (None: until something changes)."""

    reason: str
    until: datetime | None = None


Gate = Go | Wait


class WindowError(ValueError):
    """A window that cannot be evaluated (bad schedule, duration or time zone)."""


def window_problem(window: Window) -> str | None:
    """Why `window` cannot be evaluated, or None."""
    try:
        _zone(window)
        _duration(window)
        cronsim.CronSim(window.schedule, datetime(2000, 1, 1, tzinfo=UTC))
    except (WindowError, cronsim.CronSimError) as exc:
        return f"window {window.name}: {exc}"
    return None


def _zone(window: Window) -> ZoneInfo:
    try:
        return ZoneInfo(window.time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise WindowError(f"unknown time zone {window.time_zone!r}") from None


def _duration(window: Window) -> timedelta:
    value = parse_duration(window.duration)
    if value <= timedelta(0):
        raise WindowError("the duration must be positive")
    return value


def _last_start(window: Window, now: datetime) -> datetime | None:
    """The latest time the window opened at or before `now` (UTC).

    cronsim's backward search passes over a start in the hour a clock turns back (02:00
    on the night CEST ends, searched back from the second 02:00); its forward search, as
    `_next_start` uses, does not. So the forward search from the backward one's answer
    has the last word (one step, unless that start was passed over)."""
    zone = _zone(window)
    latest = None
    for start in cronsim.CronSim(
        window.schedule, (now + timedelta(seconds=1)).astimezone(zone), reverse=True
    ):
        if (start_utc := start.astimezone(UTC)) <= now:
            latest = start_utc
            break
    since = latest if latest is not None else now - _duration(window)
    for start in cronsim.CronSim(window.schedule, since.astimezone(zone)):
        if (start_utc := start.astimezone(UTC)) > now:
            break
        latest = start_utc if latest is None else max(latest, start_utc)
    return latest


def _next_start(window: Window, now: datetime) -> datetime:
    """The first time the window opens after `now` (UTC)."""
    zone = _zone(window)
    return next(iter(cronsim.CronSim(window.schedule, now.astimezone(zone)))).astimezone(UTC)


def open_until(window: Window, now: datetime) -> datetime | None:
    """When the window closes, if it is open at `now`; else None."""
    start = _last_start(window, now)
    if start is None:
        return None
    end = start + _duration(window)
    return end if now < end else None


def window_gate(windows: Sequence[Window], *, now: datetime) -> Gate:
    """Whether a plan may start at `now`: never inside a Deny window; only inside an Allow
    window if there are any. Wait names the window and when to look again (the end of
    the Deny window, or the next opening of an Allow window)."""
    now = now.astimezone(UTC)
    try:
        for window in windows:
            if window.kind is WindowKind.DENY:
                end = open_until(window, now)
                if end is not None:
                    return Wait(f"inside Deny window {window.name} until {format_time(end)}", end)
        allows = [w for w in windows if w.kind is WindowKind.ALLOW]
        if not allows or any(open_until(w, now) is not None for w in allows):
            return Go()
        soonest = min(allows, key=lambda w: (_next_start(w, now), w.name))
        opens = _next_start(soonest, now)
        return Wait(
            f"outside the Allow windows; Allow window {soonest.name} opens at {format_time(opens)}",
            opens,
        )
    except (WindowError, cronsim.CronSimError) as exc:
        return Wait(f"a window cannot be evaluated: {exc}; fix the ApprovalPolicy")


def budget_gate(
    name: str, *, running: Iterable[str], waiting: Sequence[str], limit: int | None
) -> Gate:
    """Whether plan `name` may start under a budget of `limit` Running plans of its customer.

    `running`: the customer's plans Running now (other than `name`); `waiting`: the
    customer's plans ready to start, best-ranked first (`name` among them). The first
    ``limit - len(running)`` of them may start, the others wait.
    """
    if limit is None:
        return Go()
    busy = sorted(set(running) - {name})
    free = limit - len(busy)
    ahead = list(waiting).index(name) if name in waiting else len(waiting)
    if ahead < free:
        return Go()
    return Wait(
        f"budget: at most {limit} plan(s) of the customer running at once "
        f"(running: {', '.join(busy) or 'none'}; {ahead} ready ahead of it in rank order)"
    )


def gate(
    name: str,
    merged: Merged,
    *,
    now: datetime,
    running: Iterable[str],
    waiting: Sequence[str],
) -> Gate:
    """Whether an approved plan may start now: windows first, then the budget."""
    verdict = window_gate(merged.windows, now=now)
    if isinstance(verdict, Wait):
        return verdict
    return budget_gate(name, running=running, waiting=waiting, limit=merged.max_concurrent_plans)


# --- notifications ----------------------------------------------------------------------------

NOTIFY_EVENTS: Final[Mapping[str, NotifyEvent]] = {
    "ApprovalRequested": NotifyEvent.APPROVAL_REQUESTED,
    "Approved": NotifyEvent.APPROVED,
    "Rejected": NotifyEvent.REJECTED,
    "Expired": NotifyEvent.EXPIRED,
    "Failed": NotifyEvent.PLAN_FAILED,
    "RolledBack": NotifyEvent.ROLLED_BACK,
    "VerificationFailed": NotifyEvent.VERIFICATION_FAILED,
    "VerificationInconclusive": NotifyEvent.VERIFICATION_INCONCLUSIVE,
}
"""The Events (their reasons) that are notified, and as which event: the recommendation's,
and its plan's verification outcomes (``core.planevents``)."""


def notify_targets(merged: Merged, event: NotifyEvent) -> list[str]:
    """The AgentEndpoints to tell about `event` (each once, in policy order)."""
    names: list[str] = []
    for target in merged.notify:
        if (not target.events or event in target.events) and target.endpoint not in names:
            names.append(target.endpoint)
    return names


def notification(
    event: NotifyEvent,
    *,
    namespace: str,
    recommendation: str,
    customer_id: str,
    message: str,
    at: datetime,
    uid: str = "",
) -> bytes:
    """The body of a notification (compact JSON, keys sorted): what is signed is sent
    (with the purpose ``notify``, see ``core.webhook``). ``text`` makes it a
    Slack-compatible incoming-webhook message. ``eventId`` (32 hex digits of a sha256 of
    the recommendation's `uid` and the rest but ``at``) names this notification: every
    retry sends the same, and so does an operator (a restart, the other replica) that
    sends it again, so a receiver that records the ids it handled handles each once."""
    document = {
        "text": f"[{event.value}] {namespace}/{recommendation} ({customer_id}): {message}",
        "event": event.value,
        "namespace": namespace,
        "recommendation": recommendation,
        "customerId": customer_id,
        "message": message,
        "at": format_time(at),
    }
    named = {"uid": uid, **{k: v for k, v in document.items() if k != "at"}}
    canonical = json.dumps(named, sort_keys=True, separators=(",", ":")).encode()
    document["eventId"] = hashlib.sha256(canonical).hexdigest()[:32]
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def expiring_soon(expires_at: datetime, *, lead: timedelta, now: datetime) -> bool:
    """Whether a pending approval is within `lead` of its expiry (and not expired)."""
    return expires_at - lead <= now < expires_at
