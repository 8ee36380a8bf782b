"""The tests' own layout: helpers live in tests/support, fixtures in conftest files, and
no test module imports another test module or a conftest, or keeps a private copy of a
helper that tests/support has (a free port, a fake API server, a recommendation builder)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parents[1]
SUPPORT = TESTS / "support"
SHARED = {"free_port", "FakeApi", "CountingApi", "rec", "recommendation", "rec_body"}
"""Names whose one definition is in tests/support."""
NOT_YET = {
    "unit/test_admission.py: rec",
    "unit/test_catalogue.py: recommendation",
    "unit/test_gateway_origin.py: rec",
    "unit/test_present.py: rec",
}
"""Private recommendation builders still to be replaced by tests/support/builders.py (each
builds the typed model or a partial document its module reads); none may be added."""


def modules() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if SUPPORT not in p.parents)


def imported(path: Path) -> list[str]:
    """The modules `path` imports (relative imports as written, with their dots)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append("." * node.level + (node.module or ""))
            if node.module in {"tests", "tests.unit", "tests.cluster"}:
                found += [f"{node.module}.{alias.name}" for alias in node.names]
    return found


def forbidden(module: str) -> bool:
    """A test module, a conftest, or a helper outside tests/support."""
    if module.startswith("."):
        return True
    parts = module.split(".")
    if parts[0] == "conftest" or parts[-1] == "conftest":
        return True
    return parts[0] == "tests" and len(parts) > 1 and parts[1] != "support"


def test_no_test_module_imports_another_test_module_or_a_conftest() -> None:
    offenders = {
        f"{path.relative_to(TESTS)}: {module}"
        for path in modules()
        for module in imported(path)
        if forbidden(module)
    }
    assert not offenders, sorted(offenders)


def test_the_helpers_of_tests_support_are_not_copied_into_test_modules() -> None:
    copies = {
        f"{path.relative_to(TESTS)}: {node.name}"
        for path in modules()
        for node in ast.parse(path.read_text()).body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and node.name in SHARED
    }
    assert copies <= NOT_YET, sorted(copies - NOT_YET)


def test_only_tests_support_holds_helpers_besides_conftest_and_test_modules() -> None:
    helpers = {
        str(path.relative_to(TESTS))
        for path in modules()
        if path.name not in {"__init__.py", "conftest.py"} and not path.name.startswith("test_")
    }
    assert not helpers, sorted(helpers)


def test_the_checks_see_what_they_forbid() -> None:
    assert forbidden("tests.cluster.test_operator")
    assert forbidden("tests.cluster.conftest")
    assert forbidden(".conftest")
    assert forbidden("conftest")
    assert forbidden("tests.unit.plan_support")
    assert not forbidden("tests.support.kube")
    assert not forbidden("coordinator.reconciler")
