"""The --namespace values: names or patterns, matched as kopf's documented syntax says."""

from __future__ import annotations

import pytest

from coordinator.core import namespaces


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        # kopf's documented examples (kopf reads the same values)
        ("myapp-*, !*-pr-*, *pr-123", "myapp-test", True),
        ("myapp-*, !*-pr-*, *pr-123", "myapp-live", True),
        ("myapp-*, !*-pr-*, *pr-123", "myapp-pr-123", True),
        ("myapp-*, !*-pr-*, *pr-123", "myapp-pr-456", False),
        ("myapp-*, !*-pr-*, *pr-123", "otherapp-pr-123", False),
        ("!*-pr-*, *pr-123", "myapp-test", True),
        ("!*-pr-*, *pr-123", "otherapp-pr-123", True),
        ("!*-pr-*, *pr-123", "myapp-pr-456", False),
        ("!kube-*", "kube-system", False),
        ("!kube-*", "team-a", True),
        ("team-?", "team-a", True),
        ("team-?", "team-ab", False),
        ("Team-*", "team-a", False),  # namespaces are lower case: no case folding
    ],
)
def test_patterns_match_as_kopf_documents_them(pattern: str, name: str, expected: bool) -> None:
    assert namespaces.matches(name, pattern) is expected


def test_a_negation_or_a_list_is_a_pattern_too() -> None:
    """Read as a plain name, `!kube-*` would have watched (and probed) a namespace of
    that name instead of every namespace but kube-*."""
    assert [namespaces.is_pattern(v) for v in ("team-a", "team-*", "!kube-*", "a,b")] == [
        False,
        True,
        True,
        True,
    ]
    assert namespaces.plain(["team-a", "!kube-*", "team-b"]) == ["team-a", "team-b"]
    watched = namespaces.selector(["team-a", "!kube-*"])
    assert [watched(n) for n in ("team-a", "other", "kube-system")] == [True, True, False]
    assert namespaces.selector([])("anything")
    assert not namespaces.selector(["team-a"])("team-b")
