"""The wire names of the API (group, version, the kinds' plurals) are written once, in
``coordinator.api.common``; the operator, the benchmarks and the scripts use its constants.

Keys of JSON documents that happen to be spelled like a plural (the origin document's
``recommendations``, ``coordinator check``'s output) are not names of the API and are left
alone: dictionary keys, subscripts and ``.get`` arguments are not looked at."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WIRE_NAMES = frozenset(
    {
        "optiinfra.io",
        "v1alpha1",
        "optiinfra.io/v1alpha1",
        "recommendations",
        "approvals",
        "executionplans",
        "agentendpoints",
        "approvalpolicies",
    }
)
HOME = REPO / "operator" / "coordinator" / "api" / "common.py"


def _restated(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            skipped.update(id(key) for key in node.keys if key is not None)
        elif isinstance(node, ast.Subscript):
            skipped.update(id(inner) for inner in ast.walk(node.slice))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
        ):
            skipped.update(id(arg) for arg in node.args)
    return [
        f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in WIRE_NAMES and id(node) not in skipped
    ]


def test_the_group_version_and_plurals_are_named_only_in_api_common() -> None:
    files = [
        path
        for folder in ("operator", "bench", "hack")
        for path in sorted((REPO / folder).rglob("*.py"))
        if path != HOME
    ]
    assert files
    assert [line for path in files for line in _restated(path)] == []
