"""The approval policy's flags (``--expiry-<risk>``, ``--min-risk``,
``--calibrate-savings``), shared by
``coordinator run`` and ``coordinator check``: their parsing, and the policy they describe."""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import Final

from coordinator.api.common import RiskLevel
from coordinator.core import approval

EXPIRIES: Final = tuple(risk.value for risk in RiskLevel)[::-1]
"""The ApprovalPolicy fields that are expiries: critical, high, medium, low."""


def add_policy_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--expiry-<risk>`` and ``--min-risk`` flags, defaults from
    ``approval.DEFAULT_POLICY``."""
    for name in EXPIRIES:
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
    parser.add_argument(
        "--calibrate-savings",
        dest="calibrate_savings",
        action="store_true",
        help="resolve conflicts on estimatedSavings x the agent's realisation ratio (realised "
        "over estimated savings of its last verified changes in the namespace), so that an "
        "agent that over-promises stops winning",
    )


def policy_from(arguments: argparse.Namespace) -> approval.ApprovalPolicy:
    """The policy the ``--expiry-<risk>`` flags describe."""
    return approval.ApprovalPolicy(
        **{name: getattr(arguments, f"expiry_{name}") for name in EXPIRIES},
        min_risk=tuple(getattr(arguments, "min_risk", None) or ()),
        calibrate_savings=bool(getattr(arguments, "calibrate_savings", False)),
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
