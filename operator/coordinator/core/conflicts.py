"""Conflicts between one customer's recommendations and how they are resolved (RULES 1-3).

``evaluate`` takes the recommendations of one customer in one namespace as they stand
and decides, for each one that takes part, a verdict: kept, superseded (by whom),
blocked (why), or executing (it holds its resources), with its conflict entries. It
decides from the objects alone, never from the order they arrive in, so the operator
can run it on every change and ``coordinator check`` on files.

The steps, each a plain function:

1. scope: ended recommendations take no part; ``Executing`` ones hold their resources;
   every other one is a participant (``Pending``, ``AwaitingApproval``, ``Approved``,
   and ``Blocked`` and ``Superseded`` ones, which are judged afresh every time);
2. blocking, from the dependency graph of the namespace: cycles, missing names, and
   dependencies that ended without succeeding (judged on the phases given);
3. detection: the pairs that share a resource, found through an inverted index
   (resource -> recommendations) in O(n + conflicts); ``detect_all_pairs`` is the
   obvious quadratic method, kept only to cross-check it in tests and the benchmark;
4. resolution: rank, walk the ranking best first, keep a recommendation unless it
   shares a resource with one already kept or with an executing one.

It computes over plain tuples and dicts and builds the API ``Conflict`` values last,
only for the recommendations that have conflicts. Pure: no I/O, no clock, no cluster.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import operator
import types
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime
from typing import Final, NamedTuple

from coordinator.api.common import RiskLevel
from coordinator.api.recommendation import (
    Conflict,
    ConflictType,
    Recommendation,
    RecommendationPhase,
    RecommendationSpec,
)
from coordinator.core import actions as actions_

SEVERITY: Final = types.MappingProxyType(
    {
        ConflictType.RESOURCE: RiskLevel.MEDIUM,
        ConflictType.ACTION: RiskLevel.HIGH,
        ConflictType.DEPENDENCY: RiskLevel.HIGH,
    }
)
"""How serious each type of conflict is."""


class Scope(NamedTuple):
    """Where recommendations can conflict: one customer in one namespace."""

    namespace: str
    customer_id: str


def scope_of(recommendation: Recommendation) -> Scope:
    return Scope(recommendation.metadata.namespace, recommendation.spec.customer_id)


def by_scope(recommendations: Iterable[Recommendation]) -> dict[Scope, list[Recommendation]]:
    """The recommendations grouped by scope, scopes sorted, each group in input order."""
    groups: dict[Scope, list[Recommendation]] = collections.defaultdict(list)
    for recommendation in recommendations:
        groups[scope_of(recommendation)].append(recommendation)
    return {scope: groups[scope] for scope in sorted(groups)}


class Outcome(enum.StrEnum):
    """What the evaluation decided for a recommendation."""

    KEPT = "kept"
    SUPERSEDED = "superseded"
    BLOCKED = "blocked"
    EXECUTING = "executing"
    """Already executing: holds its resources and is never superseded."""


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """The decision for one recommendation and the conflicts it is part of."""

    name: str
    outcome: Outcome
    conflicts: tuple[Conflict, ...] = ()
    superseded_by: str | None = None
    message: str = ""
    """Why: the resolution text when superseded, the reasons when blocked, else empty."""


@dataclasses.dataclass(frozen=True, slots=True)
class Evaluation:
    """The verdicts of one evaluation, held column by column (cheap for many).

    ``outcomes`` has every recommendation that takes part or is blocked, in name order;
    the other mappings only have the names they concern.
    """

    outcomes: Mapping[str, Outcome]
    superseded_by: Mapping[str, str]
    messages: Mapping[str, str]
    conflicts: Mapping[str, tuple[Conflict, ...]]

    def verdict(self, name: str) -> Verdict:
        """The verdict of ``name``; KeyError if it got none (ended, or not evaluated)."""
        return Verdict(
            name,
            self.outcomes[name],
            self.conflicts.get(name, ()),
            superseded_by=self.superseded_by.get(name),
            message=self.messages.get(name, ""),
        )

    @property
    def verdicts(self) -> Mapping[str, Verdict]:
        """Every verdict by name, in name order (a view: each is built when read)."""
        return _Verdicts(self)


class _Verdicts(Mapping[str, Verdict]):
    __slots__ = ("_evaluation",)

    def __init__(self, evaluation: Evaluation) -> None:
        self._evaluation = evaluation

    def __getitem__(self, name: str) -> Verdict:
        return self._evaluation.verdict(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._evaluation.outcomes)

    def __len__(self) -> int:
        return len(self._evaluation.outcomes)


class Sharing(NamedTuple):
    """Two recommendations (indices, ``first < second``) that share a resource."""

    first: int
    second: int
    resources: tuple[str, ...]
    """The shared resources, sorted."""


Detector = Callable[[Sequence[Collection[str]]], list[Sharing]]
"""Finds the pairs that share a resource, given each one's resources (no duplicates)."""


def detect(resources: Sequence[Collection[str]]) -> list[Sharing]:
    """The pairs that share a resource, through an inverted index: O(n + conflicts).

    The index maps each resource to the first recommendation that has it; only a
    resource that several have gets the list of all of them.
    """
    first_holder: dict[str, int] = {}
    holders: dict[str, list[int]] = {}
    for index, affected in enumerate(resources):
        for resource in affected:
            first = first_holder.setdefault(resource, index)
            if first != index:
                bucket = holders.get(resource)
                if bucket is None:
                    holders[resource] = [first, index]
                else:
                    bucket.append(index)
    shared: dict[tuple[int, int], list[str]] = {}
    for resource, bucket in holders.items():
        for position, first in enumerate(bucket):
            for second in bucket[position + 1 :]:
                shared.setdefault((first, second), []).append(resource)
    return [
        Sharing(first, second, tuple(sorted(found))) for (first, second), found in shared.items()
    ]


def detect_all_pairs(resources: Sequence[Collection[str]]) -> list[Sharing]:
    """What ``detect`` finds, by comparing every pair: O(n^2). For cross-checks only."""
    sets = [frozenset(affected) for affected in resources]
    sharings = []
    for first, mine in enumerate(sets):
        for second in range(first + 1, len(sets)):
            shared = mine & sets[second]
            if shared:
                sharings.append(Sharing(first, second, tuple(sorted(shared))))
    return sharings


def evaluate(
    recommendations: Iterable[Recommendation],
    *,
    namespace: Iterable[Recommendation] = (),
    actions: actions_.ActionTable = actions_.DEFAULT,
    detector: Detector = detect,
    ranking: Callable[[Recommendation], _Rank] | None = None,
) -> Evaluation:
    """The verdicts for one customer's recommendations in one namespace (RULES 1-3).

    ``recommendations``: all of that customer's recommendations in that namespace, in
    any order, each with the phase it has now. ``namespace``: the recommendations of
    that namespace, of any customer, to look ``dependsOn`` names up in (it may include
    ``recommendations``; objects of other namespaces are ignored). Ended
    recommendations get no verdict. ValueError if the recommendations are not of one
    scope or two have the same name. ``ranking``: another sort key than ``rank`` (the
    calibrated one: ``core.verification.calibrated_rank``).
    """
    ordered = sorted(recommendations, key=_NAME)
    facts = _read(ordered)
    dependencies = _dependencies(ordered, facts, namespace=namespace)
    # Indices into `ordered` from here on (they follow the names). Those that take no
    # part are given no resources, so detection never pairs them.
    apart = facts.ended | dependencies.blocked.keys()
    resources = [() if index in apart else found for index, found in enumerate(facts.resources)]
    sharings = sorted(detector(resources))
    lost_to = _resolve(
        sharings, rank=lambda index: (ranking or _rank)(ordered[index]), executing=facts.executing
    )
    return _evaluation(
        ordered,
        facts,
        sharings,
        lost_to=lost_to,
        dependencies=dependencies,
        actions=actions,
    )


def resolution_text(winner: str, spec: RecommendationSpec, *, discarded: str) -> str:
    """The resolution text of a conflict that ``winner`` (with ``spec``) won (RULES 3)."""
    return (
        f"Kept recommendation {winner} (priority: {spec.priority}, "
        f"savings: {spec.estimated_savings:.2f}), discarded {discarded}"
    )


_NAME = operator.attrgetter("metadata.name")


@dataclasses.dataclass(frozen=True, slots=True)
class _Facts:
    """What evaluation reads of each recommendation (by index in name order)."""

    names: list[str]
    phases: list[RecommendationPhase]
    resources: list[Sequence[str]]
    ended: frozenset[int]
    executing: frozenset[int]
    dependent: list[int]
    """Those with ``dependsOn`` that have not ended."""


def _read(ordered: Sequence[Recommendation]) -> _Facts:
    """Everything evaluation needs of the objects, in one pass over them (with 10 000
    recommendations, every pass over the objects costs more than what it computes).

    ValueError if they are not of one scope or two have the same name.
    """
    names: list[str] = []
    phases: list[RecommendationPhase] = []
    resources: list[Sequence[str]] = []
    ended: set[int] = set()
    executing: set[int] = set()
    dependent: list[int] = []
    namespace, customer_id = scope_of(ordered[0]) if ordered else ("", "")
    for index, recommendation in enumerate(ordered):
        metadata, spec, status = recommendation.metadata, recommendation.spec, recommendation.status
        if metadata.namespace != namespace or spec.customer_id != customer_id:
            raise ValueError(
                f"{metadata.name} is of {scope_of(recommendation)}, not "
                f"{scope_of(ordered[0])}: evaluate one customer of one namespace at a time"
            )
        names.append(metadata.name)
        resources.append(spec.affected_resources)
        if status is None:  # new: Pending
            phases.append(RecommendationPhase.PENDING)
        else:
            phases.append(status.phase)
            if status.phase.ended:
                ended.add(index)
                continue
            if status.phase is RecommendationPhase.EXECUTING:
                executing.add(index)
        if spec.depends_on:
            dependent.append(index)
    if len(set(names)) != len(names):
        repeated = sorted(name for name, count in collections.Counter(names).items() if count > 1)
        raise ValueError(f"more than one recommendation named {', '.join(repeated)}")
    return _Facts(names, phases, resources, frozenset(ended), frozenset(executing), dependent)


# -- Blocking -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Dependencies:
    """What the dependency graph decided: who is blocked and why, who is in a cycle."""

    blocked: Mapping[int, str]
    """The blocked participants (indices), with their reasons."""
    cycles: Mapping[str, Conflict]
    """The dependency conflict entry of every member of a cycle (executing ones too)."""


def _dependencies(
    ordered: Sequence[Recommendation], facts: _Facts, *, namespace: Iterable[Recommendation]
) -> _Dependencies:
    if not facts.dependent:
        return _Dependencies({}, {})
    own_namespace = ordered[0].metadata.namespace
    neighbours = [r for r in namespace if r.metadata.namespace == own_namespace]
    known = {r.name: r.phase for r in neighbours}
    known.update(zip(facts.names, facts.phases, strict=True))
    graph = {r.name: r.spec.depends_on for r in neighbours}
    graph.update(zip(facts.names, (r.spec.depends_on for r in ordered), strict=True))
    cycles = _cycles(graph, roots=[facts.names[index] for index in facts.dependent])

    blocked = {}
    for index in facts.dependent:
        if index in facts.executing:
            continue  # too late to block: it holds its resources
        cycle = cycles.get(facts.names[index])
        reasons = [cycle.description] if cycle is not None else []
        for dependency in sorted(ordered[index].spec.depends_on):
            found = known.get(dependency)
            if found is None:
                reasons.append(f"Dependency {dependency} does not exist")
            elif found.ended and found is not RecommendationPhase.SUCCEEDED:
                reasons.append(f"Dependency {dependency} ended {found} without succeeding")
        if reasons:
            blocked[index] = "; ".join(reasons)
    return _Dependencies(blocked, cycles)


def _cycles(graph: Mapping[str, Sequence[str]], *, roots: Iterable[str]) -> dict[str, Conflict]:
    """The dependency conflict entry of every node in a cycle reachable from ``roots``.

    ``with`` names the other members: empty for a recommendation that depends on itself.
    """
    entries: dict[str, Conflict] = {}
    for group in _strongly_connected(graph, roots=roots):
        members = sorted(group)
        if len(members) == 1 and members[0] not in graph[members[0]]:
            continue
        description = "Circular dependency: " + " -> ".join(_shortest_cycle(graph, members))
        for member in members:
            entries[member] = Conflict(
                type=ConflictType.DEPENDENCY,
                with_=[other for other in members if other != member],
                severity=SEVERITY[ConflictType.DEPENDENCY],
                description=description,
            )
    return entries


def _strongly_connected(
    graph: Mapping[str, Sequence[str]], *, roots: Iterable[str]
) -> list[list[str]]:
    """Tarjan's strongly connected components reachable from ``roots``, iteratively.

    Edges to names that are not in ``graph`` are left out (those block on their own).
    """
    number: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for root in roots:
        if root in number:
            continue
        number[root] = low[root] = len(number)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(graph[root]))]
        while work:
            node, edges = work[-1]
            for target in edges:
                if target not in graph:
                    continue
                if target not in number:
                    number[target] = low[target] = len(number)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(graph[target])))
                    break
                if target in on_stack:
                    low[node] = min(low[node], number[target])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == number[node]:
                    group: list[str] = []
                    while not group or group[-1] != node:
                        group.append(stack.pop())
                        on_stack.discard(group[-1])
                    groups.append(group)
    return groups


def _shortest_cycle(graph: Mapping[str, Sequence[str]], members: Sequence[str]) -> list[str]:
    """A shortest cycle through the first (smallest) member, closed: ``[a, b, a]``.

    Breadth first over the group's edges in name order, so the result is deterministic.
    A self-dependency only makes the cycle of a group of one.
    """
    start = members[0]
    if len(members) == 1:
        return [start, start]
    inside = set(members) - {start}
    came_from: dict[str, str] = {}
    queue = collections.deque([start])
    while queue:
        node = queue.popleft()
        targets = set(graph[node])
        if node != start and start in targets:
            path = [node]
            while path[-1] != start:
                path.append(came_from[path[-1]])
            return [*reversed(path), start]
        for target in sorted(targets & inside - came_from.keys()):
            came_from[target] = node
            queue.append(target)
    raise AssertionError(f"not strongly connected: {members}")


# -- Resolution -----------------------------------------------------------------------------

_Rank = tuple[float, float, float, int, datetime, str]
_NEWEST = datetime.max.replace(tzinfo=UTC)
Rank = _Rank
"""The ranking's sort key (``rank``), for helpers that rank with other figures."""


def _rank(recommendation: Recommendation) -> _Rank:
    """Sort key, best first: priority, savings, confidence (each higher first), risk
    (lower first), creation time (older first; a missing one counts as the newest), name.
    """
    spec = recommendation.spec
    return (
        -spec.priority,
        -spec.estimated_savings,
        -spec.confidence,
        spec.risk_level.rank,
        recommendation.metadata.creation_timestamp or _NEWEST,
        recommendation.metadata.name,
    )


def rank(recommendation: Recommendation) -> _Rank:
    """The ranking's sort key, best first (see ``_rank``): budgets start plans in this order."""
    return _rank(recommendation)


def _resolve(
    sharings: Sequence[Sharing], *, rank: Callable[[int], _Rank], executing: AbstractSet[int]
) -> dict[int, int]:
    """The candidates that lose, each with the one it lost to.

    Walks the ranking best first; a candidate is kept unless it shares a resource with
    one kept already or with an executing one, and then it lost to the best-ranked of
    those. Only candidates in a pair are ranked: the others are kept anyway.
    """
    neighbours: dict[int, list[int]] = collections.defaultdict(list)
    for first, second, _ in sharings:
        neighbours[first].append(second)
        neighbours[second].append(first)
    order = sorted(neighbours, key=rank)
    position = {candidate: place for place, candidate in enumerate(order)}
    winners = set(executing)
    lost_to: dict[int, int] = {}
    for candidate in order:
        if candidate in executing:
            continue
        beaten_by = [other for other in neighbours[candidate] if other in winners]
        if beaten_by:
            lost_to[candidate] = min(beaten_by, key=position.__getitem__)
        else:
            winners.add(candidate)
    return lost_to


def _evaluation(
    ordered: Sequence[Recommendation],
    facts: _Facts,
    sharings: Sequence[Sharing],
    *,
    lost_to: Mapping[int, int],
    dependencies: _Dependencies,
    actions: actions_.ActionTable,
) -> Evaluation:
    names = facts.names
    if facts.ended or dependencies.blocked:
        outcomes = {
            name: Outcome.BLOCKED if index in dependencies.blocked else Outcome.KEPT
            for index, name in enumerate(names)
            if index not in facts.ended
        }
    else:
        outcomes = dict.fromkeys(names, Outcome.KEPT)
    outcomes.update((names[index], Outcome.EXECUTING) for index in facts.executing)
    outcomes.update((names[loser], Outcome.SUPERSEDED) for loser in lost_to)

    texts = _Texts(ordered)
    superseded_by = {}
    messages = {names[index]: reasons for index, reasons in dependencies.blocked.items()}
    for loser, winner in lost_to.items():
        superseded_by[names[loser]] = names[winner]
        messages[names[loser]] = texts.resolution(winner, loser)

    conflicts = {
        names[index]: tuple(found)
        for index, found in _entries(
            ordered, sharings, lost_to=lost_to, actions=actions, texts=texts
        ).items()
    }
    for index in facts.dependent:
        cycle = dependencies.cycles.get(names[index])
        if cycle is not None:
            conflicts[names[index]] = (cycle, *conflicts.get(names[index], ()))
    return Evaluation(
        outcomes=types.MappingProxyType(outcomes),
        superseded_by=types.MappingProxyType(superseded_by),
        messages=types.MappingProxyType(messages),
        conflicts=types.MappingProxyType(conflicts),
    )


class _Texts:
    """The resolution texts of one evaluation, each made once."""

    __slots__ = ("_made", "_ordered")

    def __init__(self, ordered: Sequence[Recommendation]) -> None:
        self._ordered = ordered
        self._made: dict[tuple[int, int], str] = {}

    def resolution(self, winner: int, loser: int) -> str:
        text = self._made.get((winner, loser))
        if text is None:
            won = self._ordered[winner]
            text = resolution_text(
                won.metadata.name, won.spec, discarded=self._ordered[loser].metadata.name
            )
            self._made[winner, loser] = text
        return text


def _entries(
    ordered: Sequence[Recommendation],
    sharings: Sequence[Sharing],
    *,
    lost_to: Mapping[int, int],
    actions: actions_.ActionTable,
    texts: _Texts,
) -> dict[int, list[Conflict]]:
    """The resource and action conflict entries of each one in a pair, on both sides.

    Given ``sharings`` sorted, each one's entries come out sorted by the other's name
    (indices follow names), a resource entry before an action entry. The resolution
    text is set when one of the pair lost and the other did not.
    """
    entries: dict[int, list[Conflict]] = collections.defaultdict(list)
    contradictory: dict[tuple[str, str], bool] = {}  # few distinct actions: ask once each
    for first, second, resources in sharings:
        first_lost, second_lost = first in lost_to, second in lost_to
        if first_lost == second_lost:
            resolution = ""
        elif first_lost:
            resolution = texts.resolution(second, first)
        else:
            resolution = texts.resolution(first, second)
        kinds = [
            (
                ConflictType.RESOURCE,
                f"Both recommendations affect resources: [{' '.join(resources)}]",
            )
        ]
        both = ordered[first].spec.action, ordered[second].spec.action
        if both not in contradictory:
            contradictory[both] = actions.contradicts(*both)
        if contradictory[both]:
            kinds.append((ConflictType.ACTION, f"Contradictory actions: {both[0]} vs {both[1]}"))
        shared = list(resources)
        for mine, theirs in ((first, second), (second, first)):
            other = ordered[theirs].metadata.name
            for kind, description in kinds:
                entries[mine].append(
                    Conflict(
                        type=kind,
                        with_=[other],
                        resources=shared,
                        severity=SEVERITY[kind],
                        description=description,
                        resolution=resolution,
                    )
                )
    return entries
