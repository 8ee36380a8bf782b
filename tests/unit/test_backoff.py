"""The one backoff: `api.defaults.Backoff` (the policy as a value) and
`core.backoff.RateLimiter` (per-key failures, as client-go's work queue counts them).

Examples of the operator's policies first, then hypothesis properties."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator.api import defaults
from coordinator.api.defaults import Backoff
from coordinator.core.backoff import RateLimiter


def first(backoff: Backoff, n: int, rand: float = 0.0) -> list[float]:
    return list(itertools.islice(backoff.delays(lambda: rand), n))


def test_the_policies_keep_the_pauses_each_site_had() -> None:
    assert first(defaults.RECONCILE_RETRY, 9) == [0.5, 1, 2, 4, 8, 16, 32, 60, 60]
    assert first(defaults.API_RETRY, 7) == [0.2, 0.4, 0.8, 1.6, 3.2, 5, 5]
    assert first(defaults.AGENT_RETRY, 6) == [0.5, 1, 2, 4, 5, 5]
    assert first(defaults.WAIT_POLL, 6) == [0.5, 1, 2, 4, 5, 5]
    assert first(defaults.ADMISSION_PROBE, 7) == [0.05, 0.1, 0.2, 0.4, 0.8, 1, 1]
    assert first(defaults.CONFLICT_RETRY, 6) == [0.05, 0.1, 0.2, 0.4, 0.4, 0.4]


def test_jitter_shortens_a_pause_by_at_most_its_fraction() -> None:
    # the runner's pauses were delay * uniform(0.5, 1.0); they still are
    assert first(defaults.API_RETRY, 3, rand=0.0) == [0.2, 0.4, 0.8]
    assert first(defaults.API_RETRY, 3, rand=0.999) == pytest.approx([0.1, 0.2, 0.4], rel=1e-2)


def test_thousands_of_failures_stay_at_the_cap() -> None:
    assert defaults.RECONCILE_RETRY.delay(100_000) == 60.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"first": 0.0, "cap": 1.0}, "0 < first <= cap"),
        ({"first": 2.0, "cap": 1.0}, "0 < first <= cap"),
        ({"first": 0.1, "cap": 1.0, "factor": 0.5}, "factor must be >= 1"),
        ({"first": 0.1, "cap": 1.0, "jitter": 1.5}, "jitter must be between 0 and 1"),
    ],
)
def test_a_policy_that_makes_no_sense_is_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Backoff(**kwargs)


def test_the_limiter_counts_per_key_and_forgets_on_success() -> None:
    limiter = RateLimiter[str](Backoff(first=0.5, cap=4.0))
    assert [limiter.when("a") for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert limiter.when("b") == 0.5
    assert (limiter.retries("a"), limiter.retries("b")) == (5, 1)
    limiter.forget("a")
    assert (limiter.retries("a"), limiter.when("a")) == (0, 0.5)


policies = st.builds(
    Backoff,
    first=st.floats(min_value=1e-3, max_value=10.0),
    cap=st.floats(min_value=10.0, max_value=1000.0),
    factor=st.floats(min_value=1.0, max_value=10.0),
    jitter=st.floats(min_value=0.0, max_value=1.0),
)
draws = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)


@given(policy=policies, attempt=st.integers(min_value=0, max_value=5000), rand=draws)
def test_a_pause_is_never_above_the_cap_nor_below_zero(
    policy: Backoff, attempt: int, rand: float
) -> None:
    assert 0.0 <= policy.delay(attempt, rand=rand) <= policy.cap


@given(policy=policies, attempt=st.integers(min_value=0, max_value=5000))
def test_without_jitter_pauses_never_shrink(policy: Backoff, attempt: int) -> None:
    assert policy.delay(attempt) <= policy.delay(attempt + 1)


@given(
    policy=policies,
    keys=st.lists(st.sampled_from("abc"), max_size=40),
    key=st.sampled_from("abc"),
)
def test_after_forget_a_key_starts_again_from_the_first_pause(
    policy: Backoff, keys: list[str], key: str
) -> None:
    limiter = RateLimiter[str](policy)
    for failed in keys:
        limiter.when(failed)
    limiter.forget(key)
    assert limiter.retries(key) == 0
    assert limiter.when(key) == policy.first
    others = {other: keys.count(other) for other in "abc" if other != key}
    assert {other: limiter.retries(other) for other in others} == others
