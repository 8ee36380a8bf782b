"""`coordinator check -f examples/` prints exactly what the examples' comments say."""

from __future__ import annotations

import contextlib
import functools
import io
import json
from typing import Any

import pytest

from coordinator import check
from tests.support.examples import EXAMPLES, Example, load


@functools.cache
def decisions() -> dict[str, dict[str, Any]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert check.main(["-f", str(EXAMPLES), "-o", "json"]) == 0
    return {r["name"]: r for r in json.loads(out.getvalue())["recommendations"]}


def test_every_example_says_what_will_happen() -> None:
    examples = load()
    assert len(examples) >= 8
    for example in examples:
        assert example.checks, f"{example.path.name} has no '# check:' line"
        assert example.outcomes, f"{example.path.name} has no '# outcome:' line"


@pytest.mark.parametrize("example", load(), ids=lambda e: e.path.name)
def test_check_prints_what_the_comments_say(example: Example) -> None:
    for name, phase, winner in example.checks:
        assert name in decisions(), f"{name} is not in the output of coordinator check"
        assert decisions()[name]["phase"] == phase, name
        assert decisions()[name]["supersededBy"] == winner, name


def test_every_recommendation_in_the_examples_is_described() -> None:
    described = {name for example in load() for name, _, _ in example.checks}
    assert described == set(decisions())
