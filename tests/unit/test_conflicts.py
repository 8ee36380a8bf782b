"""RULES 1-3: scope, conflicts (resource, action, dependency), blocking and resolution."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from coordinator.api.common import RiskLevel
from coordinator.api.recommendation import Conflict, ConflictType, RecommendationPhase
from coordinator.core import actions, conflicts
from tests.support.conflicts import minutes, outcomes, rec

Phase = RecommendationPhase
KEPT = "kept"

# -- RULES 1: scope and who takes part ------------------------------------------------------


def test_only_the_same_customer_in_the_same_namespace_can_conflict() -> None:
    everyone = [
        rec("a", "i-1", priority=5),
        rec("b", "i-1", customer="customer-2"),
        rec("c", "i-1", namespace="team-2"),
        rec("d", "i-1"),
    ]
    groups = conflicts.by_scope(everyone)
    assert list(groups) == [
        conflicts.Scope("default", "customer-1"),
        conflicts.Scope("default", "customer-2"),
        conflicts.Scope("team-2", "customer-1"),
    ]
    results = {scope: outcomes(conflicts.evaluate(group)) for scope, group in groups.items()}
    assert results == {
        ("default", "customer-1"): {"a": KEPT, "d": "superseded by a"},
        ("default", "customer-2"): {"b": KEPT},
        ("team-2", "customer-1"): {"c": KEPT},
    }


@pytest.mark.parametrize(
    ("group", "error"),
    [
        ([rec("a", "i-1"), rec("b", "i-1", customer="customer-2")], "one customer"),
        ([rec("a", "i-1"), rec("b", "i-1", namespace="other")], "one customer"),
        ([rec("a", "i-1"), rec("a", "i-2")], "more than one recommendation named a"),
    ],
)
def test_evaluate_refuses_more_than_one_scope_or_a_name_twice(group: list[Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        conflicts.evaluate(group)


@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        # Active ones take part: the better one wins.
        (Phase.PENDING, {"best": KEPT, "other": "superseded by best"}),
        (Phase.AWAITING_APPROVAL, {"best": KEPT, "other": "superseded by best"}),
        (Phase.APPROVED, {"best": KEPT, "other": "superseded by best"}),
        # Blocked and Superseded ones are judged afresh: nothing blocks it any more.
        (Phase.BLOCKED, {"best": KEPT, "other": "superseded by best"}),
        (Phase.SUPERSEDED, {"best": KEPT, "other": "superseded by best"}),
        # Executing holds its resources.
        (Phase.EXECUTING, {"best": "executing", "other": "superseded by best"}),
        # Ended ones take no part and get no verdict.
        (Phase.REJECTED, {"other": KEPT}),
        (Phase.EXPIRED, {"other": KEPT}),
        (Phase.SUCCEEDED, {"other": KEPT}),
        (Phase.FAILED, {"other": KEPT}),
        (Phase.ROLLED_BACK, {"other": KEPT}),
    ],
)
def test_who_takes_part_by_phase(phase: Phase, expected: dict[str, str]) -> None:
    evaluation = conflicts.evaluate(
        [rec("best", "i-1", priority=9, phase=phase), rec("other", "i-1", phase=Phase.PENDING)]
    )
    assert outcomes(evaluation) == expected


def test_an_executing_one_holds_its_resources_against_a_better_newcomer() -> None:
    evaluation = conflicts.evaluate(
        [
            rec("running", "i-1", priority=1, savings=10, phase=Phase.EXECUTING),
            rec("newcomer", "i-1", "i-2", priority=100),
        ]
    )
    assert outcomes(evaluation) == {"newcomer": "superseded by running", "running": "executing"}
    text = "Kept recommendation running (priority: 1, savings: 10.00), discarded newcomer"
    assert evaluation.verdict("newcomer").message == text
    # Listed on both sides, resolved, although the executing one ranks lower.
    assert [c.resolution for c in evaluation.verdict("running").conflicts] == [text]
    assert [c.resolution for c in evaluation.verdict("newcomer").conflicts] == [text]


def test_two_executing_ones_both_hold_and_their_conflict_is_unresolved() -> None:
    evaluation = conflicts.evaluate(
        [rec("a", "i-1", phase=Phase.EXECUTING), rec("b", "i-1", phase=Phase.EXECUTING)]
    )
    assert outcomes(evaluation) == {"a": "executing", "b": "executing"}
    assert [c.resolution for c in evaluation.verdict("a").conflicts] == [""]


# -- RULES 2: conflict entries ----------------------------------------------------------------


def test_resource_conflict_entry_on_both_sides_with_exact_texts() -> None:
    evaluation = conflicts.evaluate(
        [
            rec("rec-003", "i-103", "i-101", "i-102", priority=10, savings=2000),
            rec("rec-004", "i-104", "i-102", "i-103", priority=8, savings=1500),
        ]
    )
    resolution = "Kept recommendation rec-003 (priority: 10, savings: 2000.00), discarded rec-004"
    entry = {
        "type": "resource",
        "resources": ["i-102", "i-103"],
        "severity": "medium",
        "description": "Both recommendations affect resources: [i-102 i-103]",
        "resolution": resolution,
    }
    assert [c.to_wire() for c in evaluation.verdict("rec-003").conflicts] == [
        {**entry, "with": ["rec-004"]}
    ]
    assert [c.to_wire() for c in evaluation.verdict("rec-004").conflicts] == [
        {**entry, "with": ["rec-003"]}
    ]
    assert evaluation.verdict("rec-004").superseded_by == "rec-003"
    assert evaluation.verdict("rec-004").message == resolution
    assert evaluation.verdict("rec-003").message == ""


def test_contradictory_actions_add_an_action_entry_after_the_resource_entry() -> None:
    evaluation = conflicts.evaluate(
        [
            rec("rec-005", "cluster-a", action="scale_up", priority=8, risk="low"),
            rec("rec-006", "cluster-a", action="scale_down", priority=10, savings=1000),
        ]
    )
    resolution = "Kept recommendation rec-006 (priority: 10, savings: 1000.00), discarded rec-005"
    for name, other in (("rec-005", "rec-006"), ("rec-006", "rec-005")):
        assert evaluation.verdict(name).conflicts == (
            Conflict(
                type=ConflictType.RESOURCE,
                with_=[other],
                resources=["cluster-a"],
                severity=RiskLevel.MEDIUM,
                description="Both recommendations affect resources: [cluster-a]",
                resolution=resolution,
            ),
            Conflict(
                type=ConflictType.ACTION,
                with_=[other],
                resources=["cluster-a"],
                severity=RiskLevel.HIGH,
                # The actions in the order of the recommendations' names.
                description="Contradictory actions: scale_up vs scale_down",
                resolution=resolution,
            ),
        )


def test_contradictory_actions_on_different_resources_are_no_conflict() -> None:
    evaluation = conflicts.evaluate(
        [rec("a", "i-1", action="scale_up"), rec("b", "i-2", action="scale_down")]
    )
    assert outcomes(evaluation) == {"a": KEPT, "b": KEPT}
    assert evaluation.conflicts == {}


def test_entries_are_sorted_by_the_other_name() -> None:
    evaluation = conflicts.evaluate(
        [
            rec("m", "i-1", "i-2", "i-3", priority=9),
            rec("z", "i-1"),
            rec("a", "i-2", action="rightsize"),
            rec("k", "i-3"),
        ]
    )
    assert [c.with_ for c in evaluation.verdict("m").conflicts] == [["a"], ["k"], ["z"]]


def test_resolution_is_empty_when_neither_of_the_pair_was_kept() -> None:
    evaluation = conflicts.evaluate(
        [rec("a", "i-1", "i-2", priority=9), rec("b", "i-1", "i-3"), rec("c", "i-2", "i-3")]
    )
    assert outcomes(evaluation) == {"a": KEPT, "b": "superseded by a", "c": "superseded by a"}
    between = [c for c in evaluation.verdict("b").conflicts if c.with_ == ["c"]]
    assert [c.resolution for c in between] == [""]


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        ("scale_up", "scale_down", True),
        ("scale_down", "scale_up", True),
        ("replicas_up", "replicas_down", True),
        ("increase_memory", "decrease_memory", True),
        ("enable_compression", "disable_compression", True),
        ("migrate_to_spot", "migrate_to_on_demand", True),
        ("migrate_to_on_demand", "migrate_to_spot", True),
        ("scale_up", "scale_up", False),
        ("increase_memory", "decrease_cpu", False),
        ("enable_compression", "disable_cache", False),
        ("scale_up", "migrate_to_spot", False),
        ("scale_up", "x_down", False),
        ("migrate_to_spot", "migrate_to_reserved", False),
        ("increase_", "decrease_", False),
    ],
)
def test_the_default_action_table(first: str, second: str, expected: bool) -> None:
    assert actions.DEFAULT.contradicts(first, second) is expected


def test_the_action_table_takes_more_pairs() -> None:
    table = actions.DEFAULT.with_pairs([("pause", "resume")])
    assert table.contradicts("resume", "pause")
    assert table.contradicts("scale_up", "scale_down")
    assert not actions.DEFAULT.contradicts("pause", "resume")
    with pytest.raises(ValueError, match="cannot contradict itself"):
        actions.DEFAULT.with_pairs([("pause", "pause")])
    group = [rec("a", "i-1", action="pause"), rec("b", "i-1", action="resume")]
    kinds = [c.type for c in conflicts.evaluate(group, actions=table).verdict("a").conflicts]
    assert kinds == [ConflictType.RESOURCE, ConflictType.ACTION]
    kinds = [c.type for c in conflicts.evaluate(group).verdict("a").conflicts]
    assert kinds == [ConflictType.RESOURCE]


# -- RULES 2: dependencies and blocking ---------------------------------------------------


def _dependency(members: list[str], *, of: str, description: str) -> Conflict:
    return Conflict(
        type=ConflictType.DEPENDENCY,
        with_=[m for m in members if m != of],
        resources=[],
        severity=RiskLevel.HIGH,
        description=description,
        resolution="",
    )


@pytest.mark.parametrize(
    ("edges", "description"),
    [
        ({"a": ["b"], "b": ["a"]}, "Circular dependency: a -> b -> a"),
        ({"b": ["c"], "c": ["a"], "a": ["b"]}, "Circular dependency: a -> b -> c -> a"),
        ({"y": ["x"], "x": ["y"]}, "Circular dependency: x -> y -> x"),
        ({"a": ["a"]}, "Circular dependency: a -> a"),
        # Not a simple cycle: the shortest one through the smallest name.
        ({"a": ["c", "b"], "b": ["a"], "c": ["b"]}, "Circular dependency: a -> b -> a"),
        # Two shortest ones: the names decide.
        ({"a": ["c", "b"], "b": ["a"], "c": ["a"]}, "Circular dependency: a -> b -> a"),
    ],
)
def test_every_member_of_a_cycle_is_blocked_with_one_entry(
    edges: dict[str, list[str]], description: str
) -> None:
    group = [rec(name, f"i-{name}", depends_on=targets) for name, targets in edges.items()]
    evaluation = conflicts.evaluate(group)
    members = sorted(edges)
    for name in members:
        verdict = evaluation.verdict(name)
        assert verdict.outcome is conflicts.Outcome.BLOCKED
        assert verdict.message == description
        assert verdict.conflicts == (_dependency(members, of=name, description=description),)


def test_a_self_dependency_names_no_other_member() -> None:
    """RULES 2: ``with`` names the other members of the cycle; a self-loop has none."""
    evaluation = conflicts.evaluate([rec("a", "i-1", depends_on=["a"])])
    (conflict,) = evaluation.verdict("a").conflicts
    assert conflict.type is ConflictType.DEPENDENCY
    assert conflict.with_ == []
    assert conflict.to_wire()["with"] == []
    assert conflict.description == "Circular dependency: a -> a"


def test_a_cycle_through_another_customer_blocks_and_names_it() -> None:
    other = rec("z", "i-9", customer="customer-2", depends_on=["a"])
    evaluation = conflicts.evaluate(
        [rec("a", "i-1", depends_on=["z"]), rec("b", "i-2", depends_on=["a"])],
        namespace=[other],
    )
    assert outcomes(evaluation) == {"a": "blocked", "b": KEPT}
    assert evaluation.verdict("a").conflicts == (
        _dependency(["a", "z"], of="a", description="Circular dependency: a -> z -> a"),
    )
    assert list(evaluation.conflicts) == ["a"]  # "z" is another customer's: not evaluated


@pytest.mark.parametrize(
    ("dependency_phase", "message"),
    [
        (None, "Dependency dep does not exist"),
        (Phase.REJECTED, "Dependency dep ended Rejected without succeeding"),
        (Phase.EXPIRED, "Dependency dep ended Expired without succeeding"),
        (Phase.FAILED, "Dependency dep ended Failed without succeeding"),
        (Phase.ROLLED_BACK, "Dependency dep ended RolledBack without succeeding"),
        (Phase.SUCCEEDED, ""),
        (Phase.PENDING, ""),
        (Phase.BLOCKED, ""),
        (Phase.SUPERSEDED, ""),
        (Phase.EXECUTING, ""),
    ],
)
def test_a_missing_or_failed_dependency_blocks(
    dependency_phase: Phase | None, message: str
) -> None:
    # The dependency is another customer's: names are looked up in the whole namespace.
    namespace = (
        [] if dependency_phase is None else [rec("dep", "x", customer="c2", phase=dependency_phase)]
    )
    evaluation = conflicts.evaluate([rec("a", "i-1", depends_on=["dep"])], namespace=namespace)
    verdict = evaluation.verdict("a")
    assert verdict.outcome is (conflicts.Outcome.BLOCKED if message else conflicts.Outcome.KEPT)
    assert verdict.message == message
    assert verdict.conflicts == ()


def test_every_reason_to_block_is_given() -> None:
    evaluation = conflicts.evaluate(
        [
            rec("a", "i-1", depends_on=["b", "gone", "failed"]),
            rec("b", "i-2", depends_on=["a"]),
            rec("failed", "i-3", phase=Phase.FAILED),
        ]
    )
    assert evaluation.verdict("a").message == (
        "Circular dependency: a -> b -> a; Dependency failed ended Failed without succeeding; "
        "Dependency gone does not exist"
    )


def test_a_dependency_in_another_namespace_does_not_count() -> None:
    elsewhere = rec("dep", "x", namespace="other")
    evaluation = conflicts.evaluate([rec("a", "i-1", depends_on=["dep"])], namespace=[elsewhere])
    assert evaluation.verdict("a").message == "Dependency dep does not exist"


def test_a_blocked_one_takes_no_part_in_resolution() -> None:
    evaluation = conflicts.evaluate(
        [rec("a", "i-1", priority=9, depends_on=["gone"]), rec("b", "i-1")]
    )
    assert outcomes(evaluation) == {"a": "blocked", "b": KEPT}
    assert evaluation.verdict("a").conflicts == evaluation.verdict("b").conflicts == ()


def test_a_blocked_one_whose_cycle_is_broken_takes_part_again() -> None:
    evaluation = conflicts.evaluate(
        [
            rec("a", "i-1", priority=9, phase=Phase.BLOCKED, depends_on=["b"]),
            rec("b", "i-1", phase=Phase.SUPERSEDED),
        ]
    )
    assert outcomes(evaluation) == {"a": KEPT, "b": "superseded by a"}


def test_an_executing_member_of_a_cycle_keeps_executing_and_gets_the_entry() -> None:
    evaluation = conflicts.evaluate(
        [
            rec("a", "i-1", phase=Phase.EXECUTING, depends_on=["b"]),
            rec("b", "i-2", depends_on=["a"]),
        ]
    )
    assert outcomes(evaluation) == {"a": "executing", "b": "blocked"}
    assert [c.type for c in evaluation.verdict("a").conflicts] == [ConflictType.DEPENDENCY]


# -- RULES 3: ranking ---------------------------------------------------------------------

# Each case: what makes "winner" better; everything before that criterion is equal. The
# winner is named "z-winner" so that the name, the last criterion, would pick the other.
RANKING_CASES = {
    "priority beats savings": ({"priority": 2}, {"priority": 1, "savings": 9000}),
    "savings beat confidence": ({"savings": 200}, {"savings": 100, "confidence": 1}),
    "confidence beats risk": (
        {"confidence": 0.9, "risk": "critical"},
        {"confidence": 0.8, "risk": "low"},
    ),
    "lower risk beats age": (
        {"risk": "low", "created": minutes(9)},
        {"risk": "high", "created": minutes(1)},
    ),
    "medium beats high": ({"risk": "medium"}, {"risk": "high"}),
    "high beats critical": ({"risk": "high"}, {"risk": "critical"}),
    "older beats name": ({"created": minutes(1)}, {"created": minutes(2)}),
    "a creation time beats none": ({"created": minutes(1)}, {}),
}


@pytest.mark.parametrize(("winner", "loser"), RANKING_CASES.values(), ids=RANKING_CASES.keys())
def test_ranking_tie_breakers(winner: dict[str, Any], loser: dict[str, Any]) -> None:
    base = {"confidence": 0.5}
    group = [
        rec("z-winner", "i-1", **{**base, **winner}),
        rec("a-loser", "i-1", **{**base, **loser}),
    ]
    assert outcomes(conflicts.evaluate(group)) == {
        "a-loser": "superseded by z-winner",
        "z-winner": KEPT,
    }


@pytest.mark.parametrize(
    "created", [(None, None), (minutes(1), minutes(1))], ids=["missing", "equal"]
)
def test_with_everything_else_equal_the_name_decides(
    created: tuple[Any, Any],
) -> None:
    group = [rec("b", "i-1", created=created[0]), rec("a", "i-1", created=created[1])]
    assert outcomes(conflicts.evaluate(group)) == {"a": KEPT, "b": "superseded by a"}


def test_the_name_decides_ties_whatever_the_order_conflicts_are_found_in() -> None:
    # "c" is found sharing with "a" before "b" is seen at all; "b" must still rank first.
    evaluation = conflicts.evaluate(
        [rec("a", "i-1"), rec("b", "i-2", priority=1), rec("c", "i-1", "i-2", priority=1)]
    )
    assert outcomes(evaluation) == {"a": KEPT, "b": KEPT, "c": "superseded by b"}


# -- RULES 3: the walk ----------------------------------------------------------------------


def test_a_chain_keeps_the_first_and_the_third() -> None:
    evaluation = conflicts.evaluate(
        [
            rec("a", "i-1", priority=3),
            rec("b", "i-1", "i-2", priority=2),
            rec("c", "i-2", priority=1),
        ]
    )
    assert outcomes(evaluation) == {"a": KEPT, "b": "superseded by a", "c": KEPT}
    between = [c.resolution for c in evaluation.verdict("c").conflicts]
    assert between == ["Kept recommendation c (priority: 1, savings: 0.00), discarded b"]


def test_a_star_supersedes_every_point() -> None:
    evaluation = conflicts.evaluate(
        [
            rec("hub", "i-1", "i-2", "i-3", priority=9),
            rec("x", "i-1"),
            rec("y", "i-2"),
            rec("z", "i-3"),
        ]
    )
    assert outcomes(evaluation) == {
        "hub": KEPT,
        "x": "superseded by hub",
        "y": "superseded by hub",
        "z": "superseded by hub",
    }


def test_superseded_by_names_the_best_ranked_winner_it_conflicts_with() -> None:
    evaluation = conflicts.evaluate(
        [
            rec("second", "i-2", priority=8),
            rec("first", "i-1", priority=9),
            rec("loser", "i-1", "i-2", priority=1),
        ]
    )
    assert outcomes(evaluation) == {
        "first": KEPT,
        "loser": "superseded by first",
        "second": KEPT,
    }
    assert [c.resolution.split(",")[0] for c in evaluation.verdict("loser").conflicts] == [
        "Kept recommendation first (priority: 9",
        "Kept recommendation second (priority: 8",
    ]


def test_superseded_by_names_the_executing_one_it_lost_to_not_one_kept_later() -> None:
    # "x" ranks best but loses to the executing "held"; "y" ranks below "x" and is kept
    # because "x" was not. x lost to "held", not to "y".
    evaluation = conflicts.evaluate(
        [
            rec("held", "i-1", phase=Phase.EXECUTING),
            rec("x", "i-1", "i-2", priority=9),
            rec("y", "i-2", priority=5),
        ]
    )
    assert outcomes(evaluation) == {"held": "executing", "x": "superseded by held", "y": KEPT}


@pytest.mark.parametrize(
    ("winner_now", "also_given"),
    [
        (Phase.REJECTED, True),
        (Phase.EXPIRED, True),
        (None, False),  # deleted
        (Phase.PENDING, True),  # but blocked: see the dependency below
    ],
    ids=["rejected", "expired", "deleted", "blocked"],
)
def test_losers_come_back_when_the_winner_leaves(
    winner_now: Phase | None, also_given: bool
) -> None:
    before = conflicts.evaluate([rec("winner", "i-1", priority=9), rec("loser", "i-1", "i-2")])
    assert outcomes(before)["loser"] == "superseded by winner"
    blocked = ["gone"] if winner_now is Phase.PENDING else []
    winner = rec("winner", "i-1", priority=9, phase=winner_now, depends_on=blocked)
    loser = rec("loser", "i-1", "i-2", phase=Phase.SUPERSEDED)
    evaluation = conflicts.evaluate([winner, loser] if also_given else [loser])
    assert outcomes(evaluation)["loser"] == KEPT
    assert evaluation.verdict("loser").conflicts == ()


def test_verdicts_come_in_name_order() -> None:
    evaluation = conflicts.evaluate(
        [
            rec("d", "i-1", depends_on=["gone"]),
            rec("c", "i-1"),
            rec("b", "i-2", depends_on=["gone"]),
            rec("a", "i-3", phase=Phase.EXECUTING),
            rec("e", "i-1", phase=Phase.REJECTED),
        ]
    )
    assert list(evaluation.verdicts) == ["a", "b", "c", "d"]


def test_the_result_does_not_depend_on_the_order() -> None:
    group = [
        rec("a", "i-1", "i-2", priority=3),
        rec("b", "i-2", "i-3", priority=3, savings=5),
        rec("c", "i-3", "i-4", priority=3, savings=5, confidence=0.5),
        rec("d", "i-4", "i-1"),
        rec("e", "i-5", depends_on=["f"]),
        rec("f", "i-5", depends_on=["e"]),
    ]
    expected = conflicts.evaluate(group)
    for order in itertools.permutations(group):
        assert conflicts.evaluate(order) == expected
