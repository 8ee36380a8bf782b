"""When a kind has been listed, from kopf's events (``--watch=kopf``).

kopf's watching hands over the objects of a listing (at start, and afresh after 410 Gone)
as events without a type, then the watch's events (ADDED, MODIFIED, DELETED); it has no
public hook for "the listing is over". So a listing of one kind in one scope (a
namespace, or None: the cluster) is over when as many objects were listed as a LIST
counted (`Listings.expect`), or when a watch event of that scope shows kopf watches
(it watches only once its listing is handed over). A listing event after the listing
was over begins a fresh listing (a relist): its end says which objects it saw, so that
the others can go (they were deleted while the watch was away).

Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

Scope = str | None
"""A namespace, or None for the whole cluster."""
Key = tuple[str, str]
"""(namespace, name)."""


@dataclasses.dataclass
class _Listing:
    keys: set[Key] = dataclasses.field(default_factory=set)
    expected: int | None = None
    over: bool = False
    fresh: bool = False
    """A relist (not the first listing)."""


@dataclasses.dataclass(frozen=True)
class Ended:
    """A relist is over: the objects it saw of `plural` in `scope`."""

    plural: str
    scope: Scope
    keys: frozenset[Key]


@dataclasses.dataclass(frozen=True)
class Step:
    """What one listing event means: a relist `began` (count it), or one `ended`."""

    began: bool = False
    ended: Ended | None = None


class Listings:
    """The listings of kinds in scopes, as kopf's events show them."""

    def __init__(self) -> None:
        self._listings: dict[tuple[str, Scope], _Listing] = {}
        self._waiting: set[tuple[str, Scope]] | None = None
        """The first listings `listed` waits for; None until they are all named."""

    @property
    def listed(self) -> bool:
        """Every first listing named in `wait_for` is over."""
        return self._waiting is not None and not self._waiting

    def wait_for(self, counts: Iterable[tuple[str, Scope, int]]) -> None:
        """The first listings to wait for, each with the count of a LIST of it."""
        self._waiting = set()
        for plural, scope, count in counts:
            listing = self._listings.setdefault((plural, scope), _Listing())
            if not listing.fresh:
                self._waiting.add((plural, scope))
                self.expect(plural, scope, count)
        self._settle()

    def expect(self, plural: str, scope: Scope, count: int) -> Ended | None:
        """A LIST of `plural` in `scope` counted `count` objects: the listing is over once
        it saw as many (an empty one at once)."""
        listing = self._listings.setdefault((plural, scope), _Listing())
        if listing.over:
            return None
        listing.expected = count
        return self._check(plural, scope, listing)

    def listed_object(self, plural: str, scope: Scope, key: Key) -> Step:
        """An object of a listing (an event without a type)."""
        listing = self._listings.setdefault((plural, scope), _Listing())
        began = listing.over
        if began:  # listed again: kopf lists afresh after 410 Gone
            listing = self._listings[plural, scope] = _Listing(fresh=True)
        listing.keys.add(key)
        return Step(began=began, ended=self._check(plural, scope, listing))

    def watched(self, plural: str, scope: Scope) -> Ended | None:
        """A watch event: kopf watches `scope`, so its listing is over."""
        listing = self._listings.setdefault((plural, scope), _Listing())
        return None if listing.over else self._over(plural, scope, listing)

    def _check(self, plural: str, scope: Scope, listing: _Listing) -> Ended | None:
        if listing.expected is not None and len(listing.keys) >= listing.expected:
            return self._over(plural, scope, listing)
        return None

    def _over(self, plural: str, scope: Scope, listing: _Listing) -> Ended | None:
        listing.over = True
        self._settle()
        keys, listing.keys = frozenset(listing.keys), set()  # kept only while listing
        return Ended(plural, scope, keys) if listing.fresh else None

    def _settle(self) -> None:
        if self._waiting:
            self._waiting = {k for k in self._waiting if not self._listings[k].over}
