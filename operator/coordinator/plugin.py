"""``kubectl optiinfra``: decide, start, abort and explain, as the person at the keyboard.

Installed as the executable ``kubectl-optiinfra`` (kubectl finds it on PATH), with
``kubectl_complete-optiinfra`` for shell completion of names. Every call is made with
the user's own kubeconfig: RBAC decides, and the admission webhooks record who decided.

  kubectl optiinfra approve NAME [--reason TEXT]   decide an Approval
  kubectl optiinfra reject NAME --reason TEXT
  kubectl optiinfra start NAME                     start a suspended ExecutionPlan
  kubectl optiinfra start NAME --skip-baseline     start one waiting for its baseline
  kubectl optiinfra abort NAME                     roll a running plan back
  kubectl optiinfra why NAME                       why a Recommendation has its phase
                                                   (and, with shards, which shard drives it)
  kubectl optiinfra queue [-A]                     approvals waiting, soonest expiry first
  kubectl optiinfra plan NAME                      a plan's steps as a timeline
  kubectl optiinfra shards                         a ring's shards and their customers

``why`` and ``shards`` take ``--ring NAME`` (default optiinfra) and ``--lease-namespace NS``
(default optiinfra-system), as ``coordinator run --shard`` does.

``-n/--namespace``, ``--kubeconfig`` and ``--context`` work as in kubectl. Errors are one
line on stderr and exit status 1. What is printed comes partly from agents (titles, step
errors, results): it is cleaned of control characters and escape sequences first
(``core.text``), so nothing an agent wrote can drive the terminal or forge a line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import kubernetes

from coordinator import present, shardview, timeline, usecases
from coordinator.api import defaults
from coordinator.api.common import APPROVALS, PLANS, RECOMMENDATIONS
from coordinator.api.shardnames import DEFAULT_RING, HANDOFF_LABEL, RING_LABEL, record_name
from coordinator.core import text as text_
from coordinator.k8s import caller

WAIT_SECONDS = 10.0


class FailureError(Exception):
    """A one-line message for the user."""


def _globals() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-n", "--namespace")
    parser.add_argument("--kubeconfig")
    parser.add_argument("--context")
    parser.add_argument("-A", "--all-namespaces", action="store_true")
    return parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl optiinfra",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_globals()],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    approve = commands.add_parser("approve", help="approve an Approval")
    approve.add_argument("name")
    approve.add_argument("--reason")
    reject = commands.add_parser("reject", help="reject an Approval (a reason is required)")
    reject.add_argument("name")
    reject.add_argument("--reason", required=True)
    start = commands.add_parser("start", help="start a suspended ExecutionPlan")
    start.add_argument("name")
    start.add_argument(
        "--skip-baseline",
        action="store_true",
        help="start a plan that waits for its verification baseline without one",
    )
    for command, text in (
        ("abort", "abort an ExecutionPlan: roll back what it did"),
        ("plan", "an ExecutionPlan's steps as a timeline"),
    ):
        commands.add_parser(command, help=text).add_argument("name")
    commands.add_parser("queue", help="approvals waiting for a decision, soonest expiry first")
    why = commands.add_parser("why", help="why a Recommendation has its phase")
    why.add_argument("name")
    shards = commands.add_parser("shards", help="a ring's shards and the customers each drives")
    for sub in (why, shards):
        sub.add_argument(
            "--ring", default=DEFAULT_RING, help="the shards' ring (default %(default)s)"
        )
        sub.add_argument(
            "--lease-namespace",
            default=defaults.OPERATOR_NAMESPACE,
            metavar="NS",
            help="where the shards' Leases are (default %(default)s)",
        )
    return parser


class Session:
    """The user's API client and namespace."""

    def __init__(self, options: argparse.Namespace) -> None:
        self.api = caller.client(caller.configuration(options.kubeconfig, options.context))
        self.namespace = options.namespace or caller.default_namespace(
            options.kubeconfig, options.context
        )
        self.all_namespaces = bool(options.all_namespaces)

    def get(self, plural: str, name: str) -> dict[str, Any]:
        return usecases.read(self.api, self.namespace, plural, name)


def _decide(session: Session, name: str, decision: str, reason: str | None) -> str:
    try:
        done = usecases.decide(
            session.api, session.namespace, name, decision, reason, timeout=WAIT_SECONDS
        )
    except caller.CallerError as exc:
        raise FailureError(caller.denied(exc.message)) from None
    status = done.approval.get("status") or {}
    if done.settled is usecases.Settled.DECIDED:
        return f"approval {name} {status.get('phase')} by {status['decidedBy']}"
    if done.settled is usecases.Settled.RECORDED:
        return f"approval {name}: your decision is recorded ({done.votes} so far; still pending)"
    return f"approval {name}: {decision} sent; the operator has not recorded it yet"


def _plan_switch(session: Session, name: str, *, start: bool, skip_baseline: bool = False) -> str:
    try:
        if start:
            usecases.start(session.api, session.namespace, name, skip_baseline=skip_baseline)
        else:
            usecases.abort(session.api, session.namespace, name)
    except caller.CallerError as exc:
        raise FailureError(caller.denied(exc.message)) from None
    if skip_baseline:
        return f"executionplan {name} started without its verification baseline"
    return f"executionplan {name} " + ("started" if start else "aborted: rolling back")


def _why(session: Session, name: str, *, ring: str, lease_namespace: str) -> str:
    rec = session.get(RECOMMENDATIONS, name)
    status = rec.get("status") or {}
    others = {
        str(o["metadata"]["name"]): o
        for o in caller.list_(session.api, session.namespace, RECOMMENDATIONS)
    }
    approval = (
        caller.get(session.api, session.namespace, APPROVALS, status["approval"])
        if status.get("approval")
        else None
    )
    plan = (
        caller.get(session.api, session.namespace, PLANS, status["plan"])
        if status.get("plan")
        else None
    )
    now = datetime.now(UTC)
    lines = present.why(rec, approval=approval, plan=plan, others=others, now=now)
    return "\n".join([*lines, *_driven_by(session, rec, ring, lease_namespace, now)])


def _driven_by(
    session: Session, rec: dict[str, Any], ring: str, lease_namespace: str, now: datetime
) -> list[str]:
    """Which shard decided `rec` and which drives its customer now; nothing without shards
    (no status.shard and no hand-off record, or Leases the user may not read)."""
    decided = (rec.get("status") or {}).get("shard")
    customer = str((rec.get("spec") or {}).get("customerId") or "")
    try:
        record = caller.lease(
            session.api, lease_namespace, record_name(ring, session.namespace, customer)
        )
        leases = (
            caller.leases(session.api, lease_namespace, f"{RING_LABEL}={ring}")
            if record is not None or decided
            else []
        )
    except caller.CallerError as exc:
        if not decided:
            return []
        return [f"Decided by shard {decided}.", f"  (Leases in {lease_namespace}: {exc.message})"]
    return shardview.owner_lines(rec, record=record, leases=leases, now=now)


def _shards(session: Session, ring: str, lease_namespace: str) -> str:
    leases = caller.leases(session.api, lease_namespace, f"{RING_LABEL}={ring}")
    records = caller.leases(session.api, lease_namespace, f"{HANDOFF_LABEL}={ring}")
    rows = shardview.ring_shards(leases, records, datetime.now(UTC))
    if not rows and not records:
        return f"no shards in ring {ring} (Leases in namespace {lease_namespace})"
    table = [["SHARD", "STATE", "RENEWED", "CUSTOMERS", "LEASE"]]
    table += [[r.holder, r.state, r.renewed, str(r.customers), r.lease or "-"] for r in rows]
    lines = [present.table(table)] if rows else []
    free = shardview.waiting(records)
    if free:
        shown = ", ".join(free[:5]) + (f" and {len(free) - 5} more" if len(free) > 5 else "")
        lines.append(f"{len(free)} customers released, not claimed yet: {shown}")
    return "\n".join(lines)


def _queue(session: Session) -> str:
    items = caller.list_(
        session.api, None if session.all_namespaces else session.namespace, APPROVALS
    )
    rows = present.queue(items, now=datetime.now(UTC))
    if not rows:
        where = "any namespace" if session.all_namespaces else f"namespace {session.namespace}"
        return f"no approvals waiting in {where}"
    header = ["NAME", "CUSTOMER", "RISK", "EXPIRES", "LEFT", "WHY A PERSON"]
    if session.all_namespaces:
        header.insert(0, "NAMESPACE")
    table = [header]
    for row in rows:
        left = row["secondsLeft"]
        line = [
            row["name"],
            row["customer"],
            row["risk"],
            row["expiresAt"],
            "?" if left is None else ("expired" if left <= 0 else present.duration(left)),
            row["message"] or "",
        ]
        if session.all_namespaces:
            line.insert(0, row["namespace"])
        table.append(line)
    return present.table(table)


def _plan(session: Session, name: str) -> str:
    plan = session.get(PLANS, name)
    return "\n".join(timeline.timeline(plan, now=datetime.now(UTC)))


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    """The options, with -n/--kubeconfig/--context/-A anywhere on the line (as kubectl
    takes them)."""
    found, rest = _globals().parse_known_args(list(argv))
    options = _parser().parse_args(rest)
    for key, value in vars(found).items():
        if value:
            setattr(options, key, value)
    return options


def run(argv: Sequence[str]) -> str:
    """Run one command; the text to print. Raises FailureError, usecases.RefusedError or
    caller.CallerError."""
    options = _parse(argv)
    session = Session(options)
    command = options.command
    if command in ("approve", "reject"):
        decision = "Approved" if command == "approve" else "Rejected"
        return _decide(session, options.name, decision, options.reason)
    if command in ("start", "abort"):
        skip = bool(getattr(options, "skip_baseline", False))
        return _plan_switch(session, options.name, start=command == "start", skip_baseline=skip)
    if command == "why":
        return _why(
            session, options.name, ring=options.ring, lease_namespace=options.lease_namespace
        )
    if command == "shards":
        return _shards(session, options.ring, options.lease_namespace)
    if command == "plan":
        return _plan(session, options.name)
    return _queue(session)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        print(text_.clean(run(sys.argv[1:] if argv is None else argv), keep="\n"))
    except (FailureError, usecases.RefusedError, caller.CallerError) as exc:
        print(f"error: {text_.clean(str(exc))}", file=sys.stderr)
        return 1
    except kubernetes.config.ConfigException as exc:
        print(f"error: kubeconfig: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: cannot reach the API server: {exc}", file=sys.stderr)
        return 1
    return 0


COMMANDS = ("approve", "reject", "start", "abort", "why", "queue", "plan", "shards")


def completions(argv: Sequence[str]) -> list[str]:
    """Candidates for the last word of `argv` (kubectl's plugin completion protocol)."""
    options, rest = _globals().parse_known_args(list(argv))
    words = [w for w in rest if not w.startswith("-")]
    current = words[-1] if words else ""
    if len(words) <= 1:
        return [c for c in COMMANDS if c.startswith(current)]
    command = words[0]
    plural = {"approve": APPROVALS, "reject": APPROVALS, "why": RECOMMENDATIONS}.get(command, PLANS)
    if command in ("queue", "shards") or len(words) > 2:
        return []
    session = Session(options)
    try:
        items = caller.list_(session.api, session.namespace, plural)
    except caller.CallerError:
        return []
    if plural == APPROVALS:
        items = [i for i in items if (i.get("spec") or {}).get("decision") == "Pending"]
    names = sorted(str(i["metadata"]["name"]) for i in items)
    return [n for n in names if n.startswith(current)]


def complete(argv: Sequence[str] | None = None) -> int:
    """``kubectl_complete-optiinfra``: one candidate a line, then cobra's directive
    (``:4``, no file completion)."""
    try:
        found = completions(sys.argv[1:] if argv is None else argv)
    except Exception:  # completion never fails loudly
        found = []
    print("\n".join([*found, ":4"]))
    return 0
