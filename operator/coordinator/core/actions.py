"""Which actions contradict each other: the table behind action conflicts (RULES 2).

Two actions contradict when one undoes what the other does: ``scale_up`` and
``scale_down``, and generally ``X_up``/``X_down``, ``increase_X``/``decrease_X``,
``enable_X``/``disable_X``, plus explicit pairs such as ``migrate_to_spot`` and
``migrate_to_on_demand``. The table is a frozen value; ``with_pairs`` gives a new one
with more pairs. Pure: it reads no configuration and does no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import Final

Pair = tuple[str, str]


def _pairs(pairs: Iterable[Pair]) -> frozenset[frozenset[str]]:
    result: set[frozenset[str]] = set()
    for a, b in pairs:
        if a == b:
            raise ValueError(f"an action cannot contradict itself: {a!r}")
        result.add(frozenset((a, b)))
    return frozenset(result)


@dataclasses.dataclass(frozen=True, slots=True)
class ActionTable:
    """A symmetric relation over action names.

    ``pairs``: explicit contradicting pairs. ``prefixes`` and ``suffixes``: opposite
    affixes; with the prefix pair ``("increase_", "decrease_")``, ``increase_memory``
    contradicts ``decrease_memory`` (what remains, ``memory``, must match and must not
    be empty).
    """

    pairs: frozenset[frozenset[str]] = frozenset()
    prefixes: tuple[Pair, ...] = ()
    suffixes: tuple[Pair, ...] = ()

    def contradicts(self, a: str, b: str) -> bool:
        """Whether doing ``a`` and ``b`` to the same resource is contradictory (symmetric)."""
        if a == b:
            return False
        return frozenset((a, b)) in self.pairs or b in self._opposites(a)

    def with_pairs(self, pairs: Iterable[Pair]) -> ActionTable:
        """The same table with more explicit contradicting pairs."""
        return dataclasses.replace(self, pairs=self.pairs | _pairs(pairs))

    def _opposites(self, action: str) -> Iterator[str]:
        """The actions that ``action`` contradicts by an affix pair."""
        for first, second in self.prefixes:
            for mine, theirs in ((first, second), (second, first)):
                if action.startswith(mine) and len(action) > len(mine):
                    yield theirs + action[len(mine) :]
        for first, second in self.suffixes:
            for mine, theirs in ((first, second), (second, first)):
                if action.endswith(mine) and len(action) > len(mine):
                    yield action[: -len(mine)] + theirs


DEFAULT: Final = ActionTable(
    pairs=_pairs([("migrate_to_spot", "migrate_to_on_demand")]),
    prefixes=(("increase_", "decrease_"), ("enable_", "disable_")),
    suffixes=(("_up", "_down"),),
)
"""The product's table (RULES 2)."""
