"""What a person or an agent does to the objects, as the caller: decide an Approval, start
or abort an ExecutionPlan, and wait (bounded) until the operator has recorded a decision.

The kubectl plugin and the gateway both act through these use cases and only render what
they return: text for a terminal, the origin document's JSON and status codes for HTTP.
Every call goes to the API server through ``k8s.caller`` with the caller's own API
client, so RBAC decides and the admission webhooks record the real user. The phase checks
here are a courtesy (a clear message before a patch the webhooks would refuse anyway);
the API server stays the judge. Synchronous: the gateway runs them in a thread. Nothing
here knows the operator's shell, only the objects' spec and status.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from collections.abc import Callable
from typing import Any, Final, TypeVar

from coordinator import present
from coordinator.api.common import APPROVALS, PLANS, RECOMMENDATIONS
from coordinator.core import policy
from coordinator.core.verification import SKIP_BASELINE_ANNOTATION
from coordinator.k8s import caller

T = TypeVar("T")

POLL: Final = 0.15
"""Seconds between two reads while waiting for the operator."""
KINDS: Final = {RECOMMENDATIONS: "recommendation", APPROVALS: "approval", PLANS: "executionplan"}
"""How a message names an object of each plural (as kubectl names the kinds)."""
ENDED: Final = ("Succeeded", "Failed", "RolledBack")


class Refusal(enum.StrEnum):
    """Why a use case did nothing."""

    NOT_FOUND = "NotFound"
    DECIDED = "Decided"
    EXPIRED = "Expired"
    WITHDRAWN = "Withdrawn"
    ENDED = "Ended"
    STARTED = "Started"
    ABORTED = "Aborted"


class RefusedError(Exception):
    """The object does not exist, or is not in a phase where this can be done: `why`, and
    one line for the caller naming the object (``message``)."""

    def __init__(self, why: Refusal, message: str) -> None:
        super().__init__(message)
        self.why = why
        self.message = message


class Settled(enum.StrEnum):
    """How far a decision got within the wait."""

    DECIDED = "Decided"
    """The operator recorded the approval as decided (``status.decidedBy``)."""
    RECORDED = "Recorded"
    """The operator recorded the vote in ``status.responses``; more votes are needed."""
    SENT = "Sent"
    """The API server accepted the patch; the operator had not recorded it yet."""


@dataclasses.dataclass(frozen=True)
class Decided:
    """What became of a decision: how far it got, and the Approval as last read."""

    name: str
    decision: str
    settled: Settled
    approval: dict[str, Any]

    @property
    def votes(self) -> int:
        """The votes recorded so far (``status.responses``)."""
        return len((self.approval.get("status") or {}).get("responses") or [])


def read(api: Any, namespace: str, plural: str, name: str) -> dict[str, Any]:
    """The object; RefusedError(NOT_FOUND) when it does not exist."""
    found = caller.get(api, namespace, plural, name)
    if found is None:
        raise RefusedError(
            Refusal.NOT_FOUND, f"{KINDS[plural]} {name} not found in namespace {namespace}"
        )
    return found


def settle(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = POLL,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T | None:
    """Call `probe` until it returns something other than None, at least once and for at
    most `timeout` seconds; what it returned last."""
    deadline = clock() + timeout
    while True:
        found = probe()
        left = deadline - clock()
        if found is not None or left <= 0:
            return found
        sleep(min(interval, left))


def _decidable(name: str, approval: dict[str, Any]) -> None:
    spec, status = approval.get("spec") or {}, approval.get("status") or {}
    phase = status.get("phase")
    if phase in ("Approved", "Rejected"):
        by = status.get("decidedBy") or "someone"
        at = f" at {status['decidedAt']}" if status.get("decidedAt") else ""
        raise RefusedError(Refusal.DECIDED, f"approval {name} was already {phase} by {by}{at}")
    if phase == "Expired":
        raise RefusedError(
            Refusal.EXPIRED,
            f"approval {name} expired at {spec.get('expiresAt')}; it cannot be decided",
        )
    if phase == "Withdrawn":
        why = status.get("message") or "superseded or changed"
        raise RefusedError(
            Refusal.WITHDRAWN, f"approval {name} was withdrawn ({why}); it cannot be decided"
        )


def _votes_sent(patched: dict[str, Any]) -> int:
    """The votes the admission webhook counted with this patch (its annotation)."""
    annotations = (patched.get("metadata") or {}).get("annotations") or {}
    return len(policy.read_votes(annotations.get(policy.RESPONSES_ANNOTATION)))


def decide(
    api: Any,
    namespace: str,
    name: str,
    decision: str,
    reason: str | None,
    *,
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Decided:
    """Decide the Approval `name` (``Approved`` or ``Rejected``, with `reason`), then wait
    up to `timeout` seconds until the operator records the decision or, when more votes
    are needed, this vote. RefusedError when it does not exist or can no longer be
    decided (nothing is sent then); caller.CallerError when the API server refuses."""
    approval = read(api, namespace, APPROVALS, name)
    _decidable(name, approval)
    body: dict[str, Any] = {"spec": {"decision": decision}}
    if reason:
        body["spec"]["reason"] = reason
    patched = caller.patch(api, namespace, APPROVALS, name, body)
    expected = max(1, _votes_sent(patched))
    latest = [patched]

    def probe() -> Settled | None:
        found = caller.get(api, namespace, APPROVALS, name)
        if found is not None:
            latest[0] = found
        status = latest[0].get("status") or {}
        if status.get("decidedBy"):
            return Settled.DECIDED
        if len(status.get("responses") or []) >= expected:
            return Settled.RECORDED
        return None

    settled = settle(probe, timeout=timeout, clock=clock, sleep=sleep) or Settled.SENT
    return Decided(name=name, decision=decision, settled=settled, approval=latest[0])


def _switch(api: Any, namespace: str, name: str, *, start: bool) -> dict[str, Any]:
    plan = read(api, namespace, PLANS, name)
    spec, phase = plan.get("spec") or {}, present.phase(plan)
    if phase in ENDED:
        raise RefusedError(Refusal.ENDED, f"executionplan {name} already ended: {phase}")
    if start and not spec.get("suspend", False):
        raise RefusedError(Refusal.STARTED, f"executionplan {name} is already started ({phase})")
    if not start and spec.get("abort"):
        raise RefusedError(Refusal.ABORTED, f"executionplan {name} is already aborted ({phase})")
    body = {"spec": {"suspend": False}} if start else {"spec": {"abort": True}}
    return caller.patch(api, namespace, PLANS, name, body)


def start(api: Any, namespace: str, name: str, *, skip_baseline: bool = False) -> dict[str, Any]:
    """Start the suspended ExecutionPlan `name`; the plan as patched. RefusedError when it
    does not exist, has ended or is already started.

    With `skip_baseline`, a pending plan that waits for its verification baseline starts
    without one (suspended or not): the annotation ``optiinfra.io/skip-baseline`` names
    the caller as the API server authenticates them, and the operator records it in
    ``status.verification.baselineSkippedBy``."""
    if not skip_baseline:
        return _switch(api, namespace, name, start=True)
    plan = read(api, namespace, PLANS, name)
    phase = present.phase(plan)
    if phase in ENDED:
        raise RefusedError(Refusal.ENDED, f"executionplan {name} already ended: {phase}")
    if phase != "Pending":
        raise RefusedError(
            Refusal.STARTED, f"executionplan {name} is already started ({phase}): past its baseline"
        )
    user, _ = caller.whoami(api)
    body: dict[str, Any] = {"metadata": {"annotations": {SKIP_BASELINE_ANNOTATION: user}}}
    if (plan.get("spec") or {}).get("suspend", False):
        body["spec"] = {"suspend": False}
    return caller.patch(api, namespace, PLANS, name, body)


def abort(api: Any, namespace: str, name: str) -> dict[str, Any]:
    """Abort the ExecutionPlan `name` (the operator rolls back what it did); the plan as
    patched. RefusedError when it does not exist, has ended or is already aborted."""
    return _switch(api, namespace, name, start=False)
