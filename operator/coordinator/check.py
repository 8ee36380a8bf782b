"""``coordinator check``: what the operator will decide for a set of manifests, offline.

Reads Recommendation manifests from files and folders (``coordinator.manifests``: ``*.yaml``,
``*.yml``, ``*.json``, recursively; multi-document YAML; ``kind: List`` as ``kubectl get -o yaml``
writes it), validates them with the API models (and the params of each step, as the admission
webhook does), and runs the same core the operator
runs: conflicts and resolution per customer and namespace, the approval policy, the
plan catalogue. Everything starts ``Pending`` (a ``status`` in the files is ignored),
so only cycles and missing names block; where creation times are missing, as they
usually are in files, names break the last ties.

Prints JSON (``-o json``, the shape in the API) or a table for people. Invalid input:
one message per problem on stderr, naming the file, the object and the field, and
exit status 1. It reads files and writes stdout and stderr; it never talks to a cluster.

ApprovalPolicy manifests among the input files apply as the operator applies them (each
to the recommendations of its namespace that it selects, combined most-restrictively):
the approvals required, who may decide, the expiry, autoApprove, and whether an approved
plan could start at the time of the check (``--at``, default now) or waits for a window
or a budget. So a pull request that changes a policy shows its effect.

VerificationTemplates among the input files are listed for the recommendations they would
verify (``core.verification.select``, the verifier's own choice): ``verification`` in JSON,
a VERIFIED-BY column in the table.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from coordinator import manifests as manifests_
from coordinator import policyflags
from coordinator.api.common import format_time
from coordinator.api.policy import ApprovalPolicy
from coordinator.api.recommendation import Recommendation, RecommendationPhase
from coordinator.api.verification import VerificationTemplate
from coordinator.core import approval, catalogue, conflicts
from coordinator.core import policy as policies_
from coordinator.core import verification as verification_


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """What the operator will decide for one recommendation."""

    recommendation: Recommendation
    verdict: conflicts.Verdict
    phase: RecommendationPhase
    approval_required: bool
    expires_after: timedelta
    merged: policies_.Merged = policies_.DEFAULT
    start: policies_.Gate = dataclasses.field(default_factory=policies_.Go)
    """Whether an approved plan could start at the time of the check (windows, budget)."""
    verification: verification_.Selection | None = None
    """The VerificationTemplates that would verify it; None when the input has none and it
    names none."""

    def to_json(self) -> dict[str, Any]:
        """The entry of ``coordinator check -o json`` (see the API); with ``policies``,
        ``start`` (null, or ``{waits, until}``) and ``approval.approvals`` and ``approvers``
        where ApprovalPolicies select it."""
        spec = self.recommendation.spec
        entry: dict[str, Any] = {
            "namespace": self.recommendation.metadata.namespace,
            "name": self.recommendation.name,
            "customerId": spec.customer_id,
            "phase": self.phase.value,
            "supersededBy": self.verdict.superseded_by,
            "conflicts": [conflict.to_wire() for conflict in self.verdict.conflicts],
            "approval": {
                "required": self.approval_required,
                "expiresAfterSeconds": int(self.expires_after.total_seconds()),
            },
            "plan": {
                "steps": [
                    {
                        "name": step.name,
                        "action": step.action,
                        "critical": step.critical,
                        "reversible": step.reversible,
                    }
                    for step in catalogue.plan_steps(spec)
                ]
            },
        }
        if self.verification is not None:
            entry["verification"] = {
                "templates": list(self.verification.templates),
                "metrics": [check.name for check in self.verification.checks],
                "problems": list(self.verification.problems),
            }
        if self.merged.policies:  # what the ApprovalPolicies that select it add
            entry["approval"]["approvals"] = self.merged.required
            entry["approval"]["approvers"] = policies_.who_may_decide(self.merged.approver_sets)
            entry["policies"] = list(self.merged.policies)
            entry["start"] = (
                None
                if isinstance(self.start, policies_.Go)
                else {
                    "waits": self.start.reason,
                    "until": format_time(self.start.until) if self.start.until else None,
                }
            )
        return entry


# -- Deciding -------------------------------------------------------------------------------

_PHASES: Final = {
    conflicts.Outcome.SUPERSEDED: RecommendationPhase.SUPERSEDED,
    conflicts.Outcome.BLOCKED: RecommendationPhase.BLOCKED,
}


def decide(
    recommendations: Sequence[Recommendation],
    *,
    policy: approval.ApprovalPolicy,
    policies: Sequence[ApprovalPolicy] = (),
    templates: Sequence[VerificationTemplate] = (),
    now: datetime | None = None,
) -> list[Decision]:
    """What the operator will decide for each recommendation, as ``read`` gives them
    (without status: all are new), under the ApprovalPolicies of their namespaces, and
    which of `templates` would verify it. Sorted by namespace, customer and name.
    """
    at = now or datetime(2000, 1, 1, tzinfo=UTC)
    by_namespace: dict[str, list[ApprovalPolicy]] = collections.defaultdict(list)
    for found in policies:
        by_namespace[found.metadata.namespace].append(found)
    namespaces: dict[str, list[Recommendation]] = collections.defaultdict(list)
    for recommendation in recommendations:
        namespaces[recommendation.metadata.namespace].append(recommendation)
    decisions = []
    for scope, group in conflicts.by_scope(recommendations).items():
        by_name = {recommendation.name: recommendation for recommendation in group}
        evaluation = conflicts.evaluate(group, namespace=namespaces[scope.namespace])
        for verdict in evaluation.verdicts.values():
            recommendation = by_name[verdict.name]
            steps = catalogue.plan_steps(recommendation.spec)
            risk = approval.assess(recommendation.spec, steps, annotations={}, policy=policy).risk
            merged = policies_.governing(
                by_namespace[scope.namespace], recommendation.spec, risk=risk
            )
            assessment = approval.assess(
                recommendation.spec,
                steps,
                annotations={},  # who may do what is known only at admission
                policy=policy,
                auto_approves=merged.auto_approves,
            )
            required = assessment.needs_person
            if verdict.outcome is conflicts.Outcome.KEPT:
                phase = (
                    RecommendationPhase.AWAITING_APPROVAL
                    if required
                    else RecommendationPhase.APPROVED
                )
            else:
                phase = _PHASES[verdict.outcome]
            expiry = merged.expiry.get(
                assessment.risk, approval.expires_after(assessment.risk, policy=policy)
            )
            # Whether it could start at `at`, given windows alone (the budget depends on
            # what runs then; check knows nothing running).
            start = policies_.window_gate(merged.windows, now=at) if merged.windows else None
            selection = verification_.select(templates, recommendation, risk=assessment.risk)
            verified = templates or selection.problems
            decisions.append(
                Decision(
                    recommendation,
                    verdict,
                    phase,
                    required,
                    expiry,
                    merged,
                    start or policies_.Go(),
                    selection if verified else None,
                )
            )
    return decisions


# -- Printing -------------------------------------------------------------------------------

COLUMNS: Final = (
    "NAMESPACE",
    "NAME",
    "CUSTOMER",
    "PHASE",
    "SUPERSEDED-BY",
    "CONFLICTS",
    "APPROVAL",
)
NONE: Final = "<none>"


def table(decisions: Sequence[Decision]) -> str:
    """The decisions as a table for people, columns aligned as kubectl aligns them."""
    with_policies = any(decision.merged.policies for decision in decisions)
    columns = (*COLUMNS, "POLICIES", "START") if with_policies else COLUMNS
    verified = any(decision.verification is not None for decision in decisions)
    columns = (*columns, "VERIFIED-BY") if verified else columns
    rows = [
        columns,
        *((*_row(d, with_policies=with_policies), *_verified(d, verified)) for d in decisions),
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(columns))]
    return "".join(
        "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        + "\n"
        for row in rows
    )


def _row(decision: Decision, *, with_policies: bool = False) -> tuple[str, ...]:
    recommendation, verdict = decision.recommendation, decision.verdict
    if decision.approval_required:
        approval_text = (
            f"required, expires after {approval.format_duration(decision.expires_after)}"
        )
        if decision.merged.required > 1:
            approval_text += f", {decision.merged.required} approvals"
    else:
        approval_text = "auto (policy)"
    row = (
        recommendation.metadata.namespace,
        recommendation.name,
        recommendation.spec.customer_id,
        decision.phase.value,
        verdict.superseded_by or NONE,
        _conflicts_cell(verdict) or NONE,
        approval_text,
    )
    if not with_policies:
        return row
    start = "now" if isinstance(decision.start, policies_.Go) else decision.start.reason
    return (*row, ",".join(decision.merged.policies) or NONE, start)


def _verified(decision: Decision, shown: bool) -> tuple[str, ...]:
    """The VERIFIED-BY cell (when the column is shown): the templates, or why not."""
    if not shown:
        return ()
    selection = decision.verification
    if selection is None:
        return (NONE,)
    cell = ",".join(selection.templates) or NONE
    return (cell + (" (problems: see -o json)" if selection.problems else ""),)


def _conflicts_cell(verdict: conflicts.Verdict) -> str:
    """``resource,action with rec-006; dependency with a,b``; ``dependency with itself``
    for a recommendation that depends on itself (its ``with`` is empty)."""
    kinds: dict[tuple[str, ...], list[str]] = collections.defaultdict(list)
    for conflict in verdict.conflicts:
        kinds[tuple(conflict.with_)].append(conflict.type.value)
    return "; ".join(
        f"{','.join(types)} with {','.join(others) or 'itself'}" for others, types in kinds.items()
    )


# -- The command ----------------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``coordinator check`` to ``parser``."""
    parser.add_argument(
        "-f",
        "--filename",
        dest="paths",
        metavar="PATH",
        action="extend",
        nargs="+",
        required=True,
        help="a manifest file or a folder searched recursively for *.yaml, *.yml and "
        "*.json (repeatable)",
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=("table", "json"),
        default="table",
        help="table for people (default) or json",
    )
    parser.add_argument(
        "--at",
        type=_time,
        default=None,
        metavar="TIME",
        help="when to evaluate the ApprovalPolicies' change windows (RFC 3339, such as "
        "2026-03-06T22:00:00Z; default now)",
    )
    policyflags.add_policy_arguments(parser)


def _time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid time {text!r}: expected RFC 3339, such as 2026-03-06T22:00:00Z"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def run(arguments: argparse.Namespace) -> int:
    """Run ``coordinator check`` with parsed arguments: 0, or 1 when the input is invalid."""
    found, policies, templates, problems = manifests_.read_all(arguments.paths)
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"{len(problems)} problem(s) found; nothing was checked", file=sys.stderr)
        return 1
    decisions = decide(
        [m.recommendation for m in found],
        policy=policyflags.policy_from(arguments),
        policies=policies,
        templates=templates,
        now=arguments.at or datetime.now(UTC),
    )
    if arguments.output == "json":
        document = {"recommendations": [decision.to_json() for decision in decisions]}
        print(json.dumps(document, indent=2))
    elif decisions:
        print(table(decisions), end="")
    else:
        print("No recommendations found.", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``coordinator check`` on its own: parse ``argv`` and run."""
    parser = argparse.ArgumentParser(
        prog="coordinator check", description=__doc__.splitlines()[0] if __doc__ else None
    )
    configure(parser)
    return run(parser.parse_args(argv))
