"""The docs site's API reference is exactly what the models generate, and says what the
schema enforces."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator import refdocs

REFERENCE = Path(__file__).parents[2] / "docs" / "reference"


@pytest.mark.parametrize("name", sorted(refdocs.pages()))
def test_committed_reference_is_up_to_date(name: str) -> None:
    path = REFERENCE / name
    assert path.exists(), f"{path} is missing: run `make manifests` and commit"
    assert path.read_text() == refdocs.pages()[name], (
        f"{path} is stale: run `make manifests` and commit"
    )


def test_the_reference_holds_only_generated_pages() -> None:
    assert {p.name for p in REFERENCE.glob("*.md")} == set(refdocs.pages())


def test_the_reference_says_what_the_schema_enforces() -> None:
    page = refdocs.pages()["recommendation.md"]
    row = next(line for line in page.splitlines() if line.startswith("| `spec.riskLevel` |"))
    assert "**required**" in row
    assert "one of `low`, `medium`, `high`, `critical`" in row
    priority = next(line for line in page.splitlines() if line.startswith("| `spec.priority` |"))
    assert "≥ 0; ≤ 1000; default `0`" in priority
