"""The operator's ``--namespace`` values: plain names, or patterns as kopf reads them.

A value is a pattern when it has glob characters (``*``, ``?``, ``[``), a negation
(``!``) or several comma-separated globs. A pattern matches as kopf's documented syntax
says (kopf is given the same values): the globs are read left to right; the first
inclusive one makes the initial match (a leading negation implies a ``*`` before it); a
negation un-matches; a later inclusive glob matches again only what the initial match
took. So ``myapp-*, !*-pr-*, *pr-123`` takes myapp-test and myapp-pr-123, not
myapp-pr-456 nor otherapp-pr-123.

Written here rather than imported from kopf's private modules (``kopf._cogs``), which
carry no compatibility promise; kopf has no public matcher (an upstream note).

Pure: no I/O.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence

_PATTERN_CHARACTERS = frozenset("*?[,!")


def is_pattern(value: str) -> bool:
    """Whether a ``--namespace`` value is a pattern rather than one namespace's name."""
    return bool(_PATTERN_CHARACTERS & set(value))


def plain(values: Sequence[str]) -> list[str]:
    """The values that name one namespace each."""
    return [value for value in values if not is_pattern(value)]


def matches(name: str, pattern: str) -> bool:
    """Whether namespace `name` matches the ``--namespace`` value `pattern`."""
    globs = [glob.strip() for glob in pattern.split(",")]
    if not globs or globs[0].startswith("!"):
        globs.insert(0, "*")
    first = found = fnmatch.fnmatchcase(name, globs[0])
    for glob in globs[1:]:
        if glob.startswith("!"):
            found = found and not fnmatch.fnmatchcase(name, glob[1:])
        else:
            found = found or (first and fnmatch.fnmatchcase(name, glob))
    return found


def selector(values: Sequence[str]) -> Callable[[str], bool]:
    """Whether a namespace is one the operator watches, for its ``--namespace`` values
    (none: every namespace)."""
    if not values:
        return lambda _: True
    if not any(is_pattern(v) for v in values):
        return set(values).__contains__
    patterns = list(values)
    return lambda name: any(matches(name, p) for p in patterns)
