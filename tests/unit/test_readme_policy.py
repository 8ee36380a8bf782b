"""The docs' ApprovalPolicy example is valid, and does what the docs say."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import yaml

from coordinator.api.common import RiskLevel
from coordinator.api.policy import ApprovalPolicy
from coordinator.core import policy

POLICIES = Path(__file__).parents[2] / "docs" / "concepts" / "approval-policies.md"


def example() -> ApprovalPolicy:
    text = POLICIES.read_text()
    block = re.search(r"<!-- policy-example -->\n```yaml\n(.*?)```", text, re.DOTALL)
    assert block is not None, "docs/concepts/approval-policies.md lost its policy example"
    return ApprovalPolicy.model_validate(yaml.safe_load(block.group(1)))


def test_the_readme_policy_example_is_valid_and_means_what_it_says() -> None:
    found = example()
    assert all(policy.window_problem(w) is None for w in found.spec.windows)
    merged = policy.merge([(found.metadata.name, found.spec)])
    assert merged.required == 2
    assert merged.max_concurrent_plans == 1
    assert not merged.auto_approves(RiskLevel.MEDIUM)
    # Friday 20:00 in Berlin: outside office hours, waits for Monday 08:00 (CET).
    friday = datetime(2026, 3, 6, 19, 0, tzinfo=UTC)
    verdict = policy.window_gate(merged.windows, now=friday)
    assert isinstance(verdict, policy.Wait)
    assert verdict.until == datetime(2026, 3, 9, 7, 0, tzinfo=UTC)
    # Christmas: frozen, whatever the office hours say.
    christmas = datetime(2026, 12, 24, 9, 0, tzinfo=UTC)
    held = policy.window_gate(merged.windows, now=christmas)
    assert isinstance(held, policy.Wait)
    assert "Deny window year-end-freeze" in held.reason
