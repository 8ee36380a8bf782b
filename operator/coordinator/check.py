"""``coordinator check``: what the operator will decide for a set of manifests, offline.

Reads Recommendation manifests from files and folders (``*.yaml``, ``*.yml``,
``*.json``, recursively; multi-document YAML; ``kind: List`` as ``kubectl get -o yaml``
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
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, NamedTuple

import pydantic
import yaml

from coordinator.api.common import API_VERSION, RiskLevel, format_time
from coordinator.api.policy import ApprovalPolicy
from coordinator.api.recommendation import Recommendation, RecommendationPhase
from coordinator.core import admission, approval, catalogue, conflicts
from coordinator.core import policy as policies_

SUFFIXES: Final = (".yaml", ".yml", ".json")
KIND: Final = "Recommendation"
POLICY_KIND: Final = "ApprovalPolicy"


@dataclasses.dataclass(frozen=True, slots=True)
class Manifest:
    """A valid Recommendation and where it was read from."""

    recommendation: Recommendation
    origin: str
    """The file, and the document in it when there are several: ``a.yaml (document 2)``."""


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


# -- Reading --------------------------------------------------------------------------------


def read(paths: Sequence[str]) -> tuple[list[Manifest], list[str]]:
    """The Recommendations in ``paths`` and every problem found, as messages.

    A folder is searched recursively for ``SUFFIXES``; a file named on its own is read
    whatever its name. Documents that are not Recommendations of this API version, and
    empty ones, are skipped. The status of a Recommendation is dropped unread.
    """
    manifests, _, problems = read_all(paths)
    return manifests, problems


def read_all(paths: Sequence[str]) -> tuple[list[Manifest], list[ApprovalPolicy], list[str]]:
    """``read``, and the ApprovalPolicies found among the same files."""
    manifests: list[Manifest] = []
    policies: list[ApprovalPolicy] = []
    problems: list[str] = []
    seen: dict[tuple[str, str], str] = {}
    for file in _files(paths, problems):
        documents = list(_documents(file, problems))
        for where, document in documents:
            origin = file if len(documents) == 1 and not where.item else f"{file} ({where})"
            found = _policy(document, origin=origin, problems=problems)
            if found is not None:
                policies.append(found)
                continue
            manifest = _manifest(document, origin=origin, problems=problems)
            if manifest is None:
                continue
            key = (manifest.recommendation.metadata.namespace, manifest.recommendation.name)
            if key in seen:
                problems.append(
                    f"{origin}: {_object(manifest.recommendation)}: metadata.name: "
                    f"defined twice, also in {seen[key]}"
                )
                continue
            seen[key] = origin
            manifests.append(manifest)
    return manifests, policies, problems


def _policy(document: Any, *, origin: str, problems: list[str]) -> ApprovalPolicy | None:
    """An ApprovalPolicy document, validated (its windows too); None for other kinds (and
    for an invalid one, with the problems)."""
    if not (
        isinstance(document, dict)
        and document.get("kind") == POLICY_KIND
        and document.get("apiVersion") == API_VERSION
    ):
        return None
    document = {key: value for key, value in document.items() if key != "status"}
    metadata = document.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    what = f"{POLICY_KIND} {name or 'without a name'}"
    try:
        found = ApprovalPolicy.model_validate(document)
    except pydantic.ValidationError as error:
        problems.extend(
            f"{origin}: {what}: {_field(problem['loc'])}{problem['msg']}"
            for problem in error.errors()
        )
        return None
    bad = [
        f"{origin}: {what}: spec.windows[{index}]: {problem}"
        for index, window in enumerate(found.spec.windows)
        if (problem := policies_.window_problem(window))
    ]
    problems.extend(bad)
    return None if bad else found


def _files(paths: Sequence[str], problems: list[str]) -> Iterator[str]:
    for path in map(Path, paths):
        if path.is_dir():
            yield from sorted(
                str(found)
                for found in path.rglob("*")
                if found.suffix in SUFFIXES and found.is_file()
            )
        elif path.is_file():
            yield str(path)
        else:
            problems.append(f"{path}: no such file or folder")


class _Where(NamedTuple):
    """Where a document is in its file: the document, and the item of a ``kind: List``."""

    document: int
    item: int | None = None

    def __str__(self) -> str:
        where = f"document {self.document}"
        return where if self.item is None else f"{where}, item {self.item}"


def _documents(file: str, problems: list[str]) -> Iterator[tuple[_Where, Any]]:
    """The documents of ``file``, the items of a ``kind: List`` one by one.

    A syntax error is a problem naming the line; the documents before it still count.
    """
    try:
        text = Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        problems.append(f"{file}: cannot read: {error}")
        return
    try:
        parsed = [json.loads(text)] if file.endswith(".json") else yaml.safe_load_all(text)
        for number, document in enumerate(parsed, start=1):
            if isinstance(document, dict) and document.get("kind") == "List":
                for item, entry in enumerate(document.get("items") or (), start=1):
                    yield _Where(number, item), entry
            else:
                yield _Where(number), document
    except json.JSONDecodeError as error:
        problems.append(
            f"{file}: line {error.lineno}, column {error.colno}: invalid JSON: {error.msg}"
        )
    except yaml.YAMLError as error:
        problems.append(f"{file}: {_yaml_problem(error)}")


def _yaml_problem(error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        what = " ".join(part for part in (error.context, error.problem) if part)
        return f"line {mark.line + 1}, column {mark.column + 1}: invalid YAML: {what}"
    return f"invalid YAML: {error}"


def _manifest(document: Any, *, origin: str, problems: list[str]) -> Manifest | None:
    if not (
        isinstance(document, dict)
        and document.get("kind") == KIND
        and document.get("apiVersion") == API_VERSION
    ):
        return None
    # Status belongs to the operator: `kubectl apply` ignores it, and so does check.
    document = {key: value for key, value in document.items() if key != "status"}
    try:
        recommendation = Recommendation.model_validate(document)
    except pydantic.ValidationError as error:
        name = _object_name(document)
        problems.extend(
            f"{origin}: {name}: {_field(problem['loc'])}{problem['msg']}"
            for problem in error.errors()
        )
        return None
    # The params of each step, as the admission webhook checks them (it refuses these).
    found = admission.step_problems(old=None, new=recommendation)
    if found:
        problems.extend(f"{origin}: {_object(recommendation)}: {problem}" for problem in found)
    try:
        catalogue.plan_steps(recommendation.spec)
    except catalogue.NoDefaultPlanError as error:  # the API server would refuse it too
        problems.append(f"{origin}: {_object(recommendation)}: {error}")
        return None
    return Manifest(recommendation, origin)


def _object_name(document: Mapping[str, Any]) -> str:
    """``Recommendation namespace/name``, or just the kind when there is no usable name."""
    metadata = document.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("name"), str):
        namespace = metadata.get("namespace")
        namespace = namespace if isinstance(namespace, str) else "default"
        return f"{KIND} {namespace}/{metadata['name']}"
    return f"{KIND} without a name"


def _object(recommendation: Recommendation) -> str:
    return f"{KIND} {recommendation.metadata.namespace}/{recommendation.name}"


def _field(location: tuple[int | str, ...]) -> str:
    """``spec.steps[0].name: `` for pydantic's ``('spec', 'steps', 0, 'name')``."""
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else part
    return f"{path}: " if path else ""


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
    now: datetime | None = None,
) -> list[Decision]:
    """What the operator will decide for each recommendation, as ``read`` gives them
    (without status: all are new), under the ApprovalPolicies of their namespaces. Sorted
    by namespace, customer and name.
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
            decisions.append(
                Decision(
                    recommendation,
                    verdict,
                    phase,
                    required,
                    expiry,
                    merged,
                    start or policies_.Go(),
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
    rows = [columns, *(_row(d, with_policies=with_policies) for d in decisions)]
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
    add_policy_arguments(parser)


def _time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid time {text!r}: expected RFC 3339, such as 2026-03-06T22:00:00Z"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


_EXPIRIES: Final = tuple(risk.value for risk in RiskLevel)[::-1]
"""The ApprovalPolicy fields that are expiries: critical, high, medium, low."""


def add_policy_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--expiry-<risk>`` and ``--min-risk`` flags, defaults from
    ``approval.DEFAULT_POLICY``."""
    for name in _EXPIRIES:
        default = getattr(approval.DEFAULT_POLICY, name)
        parser.add_argument(
            f"--expiry-{name}",
            dest=f"expiry_{name}",
            metavar="DURATION",
            type=_positive_duration,
            default=default,
            help=f"how long an approval request for a {name}-risk change stands "
            f"(default {approval.format_duration(default)}; such as 90s, 30m, 4h, 1h30m, 2d)",
        )
    parser.add_argument(
        "--min-risk",
        dest="min_risk",
        action="append",
        type=_min_risk,
        default=[],
        metavar="ACTION=LEVEL",
        help="treat ACTION as at least this risky, whatever its riskLevel says (repeatable; "
        "built in: scaling to zero and delete_*/remove_* actions are at least high)",
    )


def policy_from(arguments: argparse.Namespace) -> approval.ApprovalPolicy:
    """The policy the ``--expiry-<risk>`` flags describe."""
    return approval.ApprovalPolicy(
        **{name: getattr(arguments, f"expiry_{name}") for name in _EXPIRIES},
        min_risk=tuple(getattr(arguments, "min_risk", None) or ()),
    )


def _min_risk(text: str) -> tuple[str, RiskLevel]:
    action, sep, level = text.partition("=")
    levels = ", ".join(r.value for r in RiskLevel)
    if not sep or not action:
        raise argparse.ArgumentTypeError(f"expected ACTION=LEVEL, got {text!r}")
    try:
        return action.strip(), RiskLevel(level.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: the level is one of {levels}") from None


def _positive_duration(text: str) -> timedelta:
    try:
        duration = approval.parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if not duration:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: must be more than 0s")
    return duration


def run(arguments: argparse.Namespace) -> int:
    """Run ``coordinator check`` with parsed arguments: 0, or 1 when the input is invalid."""
    manifests, policies, problems = read_all(arguments.paths)
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"{len(problems)} problem(s) found; nothing was checked", file=sys.stderr)
        return 1
    decisions = decide(
        [m.recommendation for m in manifests],
        policy=policy_from(arguments),
        policies=policies,
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
