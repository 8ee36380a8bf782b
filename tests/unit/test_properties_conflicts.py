"""Properties of conflict resolution over random groups of recommendations (hypothesis).

Small universes (few names, few resources, contradicting actions, every phase, some
dependencies) so that conflicts, ties, cycles and revivals are frequent.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.api.recommendation import ConflictType, Recommendation, RecommendationPhase
from coordinator.core import conflicts
from tests.support.conflicts import minutes, rec

NAMES = [f"rec-{index}" for index in range(10)]
RESOURCES = [f"i-{index}" for index in range(8)]
ACTIONS = ["scale_up", "scale_down", "migrate_to_spot", "migrate_to_on_demand", "rightsize"]
KEEPS = {conflicts.Outcome.KEPT, conflicts.Outcome.EXECUTING}

SETTINGS = settings(max_examples=120, deadline=None)


def _group(fields: dict[str, tuple[Any, ...]]) -> list[Recommendation]:
    return [
        rec(
            name,
            *resources,
            action=action,
            priority=priority,
            savings=savings,
            confidence=confidence,
            risk=risk,
            created=created,
            phase=phase,
            depends_on=depends_on,
        )
        for name, (
            resources,
            action,
            priority,
            savings,
            confidence,
            risk,
            created,
            phase,
            depends_on,
        ) in fields.items()
    ]


# One tuple of fields per name: cheaper to generate than a draw per field.
groups = st.dictionaries(
    st.sampled_from(NAMES),
    st.tuples(
        st.lists(st.sampled_from(RESOURCES), max_size=3, unique=True),
        st.sampled_from(ACTIONS),
        st.integers(0, 2),
        st.sampled_from([0, 100.5]),
        st.sampled_from([0.5, 1]),
        st.sampled_from(["low", "medium", "high", "critical"]),
        st.none() | st.integers(0, 2).map(minutes),
        st.sampled_from(RecommendationPhase),
        st.lists(st.sampled_from(NAMES), max_size=1),
    ),
    min_size=1,
).map(_group)


def resources(verdict: conflicts.Verdict, group: list[Recommendation]) -> set[str]:
    return set(next(r for r in group if r.name == verdict.name).spec.affected_resources)


@SETTINGS
@given(groups, st.randoms(use_true_random=False))
def test_the_result_does_not_depend_on_the_order(group: list[Recommendation], random: Any) -> None:
    shuffled = list(group)
    random.shuffle(shuffled)
    assert conflicts.evaluate(shuffled) == conflicts.evaluate(group)


@SETTINGS
@given(groups)
def test_a_resolution_holds_its_invariants(group: list[Recommendation]) -> None:
    """One test, several invariants: generating the groups is what takes the time."""
    evaluation = conflicts.evaluate(group)
    no_kept_one_shares_a_resource_with_a_kept_or_executing_one(evaluation, group)
    every_superseded_one_lost_to_a_kept_or_executing_one_it_conflicts_with(evaluation)
    every_participant_that_is_not_kept_had_a_reason(evaluation, group)
    every_entry_is_listed_on_both_sides(evaluation)


def no_kept_one_shares_a_resource_with_a_kept_or_executing_one(
    evaluation: conflicts.Evaluation, group: list[Recommendation]
) -> None:
    verdicts = list(evaluation.verdicts.values())
    holding = [v for v in verdicts if v.outcome in KEEPS]
    for one in verdicts:
        if one.outcome is conflicts.Outcome.KEPT:
            for other in holding:
                if other.name != one.name:
                    assert not resources(one, group) & resources(other, group), (one, other)


def every_superseded_one_lost_to_a_kept_or_executing_one_it_conflicts_with(
    evaluation: conflicts.Evaluation,
) -> None:
    for verdict in evaluation.verdicts.values():
        if verdict.outcome is conflicts.Outcome.SUPERSEDED:
            assert verdict.superseded_by is not None
            assert evaluation.verdict(verdict.superseded_by).outcome in KEEPS
            assert any(
                c.type is ConflictType.RESOURCE and c.with_ == [verdict.superseded_by]
                for c in verdict.conflicts
            )
        else:
            assert verdict.superseded_by is None


def every_participant_that_is_not_kept_had_a_reason(
    evaluation: conflicts.Evaluation, group: list[Recommendation]
) -> None:
    for recommendation in group:
        phase = recommendation.phase
        if phase.ended:
            assert recommendation.name not in evaluation.verdicts
            continue
        verdict = evaluation.verdict(recommendation.name)
        if phase is RecommendationPhase.EXECUTING:
            assert verdict.outcome is conflicts.Outcome.EXECUTING
        elif verdict.outcome is conflicts.Outcome.BLOCKED:
            assert verdict.message
            assert all(c.type is ConflictType.DEPENDENCY for c in verdict.conflicts)
        elif not any(c.type is ConflictType.RESOURCE for c in verdict.conflicts):
            assert verdict.outcome is conflicts.Outcome.KEPT


def every_entry_is_listed_on_both_sides(evaluation: conflicts.Evaluation) -> None:
    for verdict in evaluation.verdicts.values():
        for conflict in verdict.conflicts:
            if conflict.type is not ConflictType.DEPENDENCY:
                (other,) = conflict.with_
                mirrored = conflict.model_copy(update={"with_": [verdict.name]})
                assert mirrored in evaluation.verdict(other).conflicts


@SETTINGS
@given(groups)
def test_indexed_detection_finds_what_comparing_all_pairs_finds(
    group: list[Recommendation],
) -> None:
    affected = [r.spec.affected_resources for r in group]
    assert sorted(conflicts.detect(affected)) == conflicts.detect_all_pairs(affected)
    assert conflicts.evaluate(group) == conflicts.evaluate(
        group, detector=conflicts.detect_all_pairs
    )
