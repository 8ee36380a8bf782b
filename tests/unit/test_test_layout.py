"""The tests' own layout: helpers live in tests/support, fixtures in conftest files, and
no test module imports another test module or a conftest, keeps a private copy of a
helper that tests/support has (a free port, a fake API server), or builds an object of
one of our kinds itself: tests/support/builders.py has the one builder per kind."""

from __future__ import annotations

import ast
from pathlib import Path

from coordinator.crdgen import KINDS

TESTS = Path(__file__).parents[1]
SUPPORT = TESTS / "support"
SHARED = {"free_port", "FakeApi", "CountingApi", "rec_body"}
"""Names whose one definition is in tests/support."""
OUR_KINDS = {kind.kind for kind in KINDS}
BUILDER_NAMES = {"rec", "recommendation", "approval", "plan", "endpoint", "policy", "template"}
"""The names of the builders of tests/support/builders.py (and their short forms)."""


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
    assert not copies, sorted(copies)


def fixture(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Decorated with pytest.fixture (a fixture is named for what it gives, not a builder)."""
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if "fixture" in ast.unparse(target):
            return True
    return False


def our_object(node: ast.Dict) -> bool:
    """A dict literal of an object of ours: with "kind": one of ours and no "name" of its
    own (that would be a reference to an object, such as an ownerReference), or without a
    kind but with a literal "metadata" and a "spec" (a document the reader takes as ours)."""
    keys = {
        k.value: v
        for k, v in zip(node.keys, node.values, strict=True)
        if isinstance(k, ast.Constant)
    }
    kind = keys.get("kind")
    if kind is None:
        return isinstance(keys.get("metadata"), ast.Dict) and "spec" in keys
    return isinstance(kind, ast.Constant) and kind.value in OUR_KINDS and "name" not in keys


def builders_in(source: str, *, by_name: bool = True) -> set[str]:
    """The functions of `source` that build an object of our kinds: those (tests aside)
    holding a dict literal of one, and (`by_name`) those (fixtures aside) named like a
    builder of tests/support/builders.py."""
    return {
        node.name
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and not node.name.startswith("test_")
        and (
            any(isinstance(d, ast.Dict) and our_object(d) for d in ast.walk(node))
            or (by_name and node.name in BUILDER_NAMES and not fixture(node))
        )
    }


def test_a_test_module_builds_no_object_of_our_kinds_itself() -> None:
    """tests/support/builders.py has one builder per kind; test modules override it."""
    own = {
        f"{path.relative_to(TESTS)}: {name}"
        for path in modules()
        for name in builders_in(path.read_text())
    }
    assert not own, sorted(own)


def test_tests_support_has_one_builder_per_kind() -> None:
    own = {
        f"{path.relative_to(TESTS)}: {name}"
        for path in sorted(SUPPORT.glob("*.py"))
        if path.name != "builders.py"
        for name in builders_in(path.read_text(), by_name=False)  # typed forms of it are fine
    }
    assert not own, sorted(own)


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
    assert builders_in('def approval(name):\n    return {"name": name}') == {"approval"}
    assert builders_in('def make():\n    return [{"kind": "ExecutionPlan"}]') == {"make"}
    assert builders_in('async def f():\n    x = {"kind": "AgentEndpoint"}') == {"f"}
    assert builders_in("@pytest.fixture\ndef endpoint(agent):\n    return agent") == set()
    assert builders_in('def test_x():\n    plan = {"kind": "ExecutionPlan"}') == set()
    assert builders_in('def target():\n    return {"kind": "Deployment"}') == set()
    owner = 'def owned():\n    return [{"kind": "Recommendation", "name": "r", "uid": "u"}]'
    assert builders_in(owner) == set()
    assert builders_in("def rec():\n    return r", by_name=False) == set()
    partial = 'def raw(n):\n    return {"metadata": {"name": n}, "spec": {"customerId": "c"}}'
    assert builders_in(partial) == {"raw"}
    hpa = 'def hpa():\n    return {"kind": "HorizontalPodAutoscaler", "metadata": {}, "spec": {}}'
    assert builders_in(hpa) == set()
    copied = 'def decide(a):\n    a.model_copy(update={"metadata": a.metadata, "spec": s})'
    assert builders_in(copied) == set()
