"""core.shards: the consistent-hash ring that assigns customers to shards.

Examples first (the hash is stable across processes), then hypothesis properties: the
assignment depends on the customer and the set of members only; one owner each; joining
and leaving move only what consistent hashing says."""

from __future__ import annotations

import datetime
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.core import shards

NAMES = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=24)
MEMBERS = st.lists(NAMES, min_size=1, max_size=6, unique=True)
CUSTOMERS = st.lists(
    st.tuples(st.sampled_from(["default", "team-a", "team-b"]), NAMES),
    min_size=1,
    max_size=40,
    unique=True,
)
SETTINGS = settings(max_examples=100, deadline=None)


def many_customers(count: int, salt: str = "") -> list[shards.Customer]:
    return [(f"ns-{i % 7}", f"customer-{salt}{i}") for i in range(count)]


def test_the_hash_is_sha256_so_every_process_computes_the_same_owners() -> None:
    three = shards.ring(["a", "b", "c"])
    owners = [shards.owner(three, "default", f"cust-{i}") for i in range(6)]
    assert owners == ["b", "b", "c", "b", "b", "c"]
    assert len(three.points) == 3 * shards.VNODES


def test_an_empty_ring_owns_nothing_and_a_ring_needs_points() -> None:
    assert shards.owner(shards.ring([]), "default", "c") is None
    with pytest.raises(ValueError, match="at least one point"):
        shards.ring(["a"], vnodes=0)


def test_a_lease_is_live_until_its_renewal_plus_its_duration() -> None:
    renewed = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    second = datetime.timedelta(seconds=1)
    assert shards.live(renewed, 15, renewed + 14 * second)
    assert not shards.live(renewed, 15, renewed + 15 * second)
    assert not shards.live(None, 15, renewed)
    assert not shards.live(renewed, 0, renewed)


@SETTINGS
@given(MEMBERS, CUSTOMERS, st.randoms(use_true_random=False))
def test_the_owner_is_a_function_of_the_customer_and_the_set_of_members(
    members: list[str], customers: list[shards.Customer], rng: random.Random
) -> None:
    shuffled = [*members, *members]  # order and duplicates do not matter
    rng.shuffle(shuffled)
    one, other = shards.ring(members), shards.ring(shuffled)
    assert one == other
    # Every recommendation of a customer, in any order, lands on the customer's one shard.
    recommendations = [
        (ns, cid, f"rec-{i}-{j}") for i, (ns, cid) in enumerate(customers) for j in range(3)
    ]
    rng.shuffle(recommendations)
    placed: dict[shards.Customer, set[str | None]] = {}
    for ns, cid, _ in recommendations:
        placed.setdefault((ns, cid), set()).add(shards.owner(other, ns, cid))
    assert placed == {c: {shards.owner(one, *c)} for c in customers}


@SETTINGS
@given(MEMBERS, CUSTOMERS)
def test_every_customer_has_exactly_one_owner_a_member(
    members: list[str], customers: list[shards.Customer]
) -> None:
    ring = shards.ring(members)
    for customer in customers:
        assert shards.owner(ring, *customer) in ring.members


# Derandomized: the bound below is statistical (see core.shards' docstring); the rings
# searched are the same on every run, so the test cannot flake.
@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(NAMES, min_size=4, max_size=4, unique=True))
def test_going_from_3_to_4_members_moves_about_a_quarter_never_more_than_a_third(
    members: list[str],
) -> None:
    customers = many_customers(1000)
    before, after = shards.ring(members[:3]), shards.ring(members)
    moved = shards.moves(before, after, customers)
    assert 1 / 6 < len(moved) / len(customers) <= 1 / 3
    # Only to the newcomer, each from the member that held it.
    assert {m.after for m in moved} == {members[3]}
    assert all(m.before == shards.owner(before, *m.customer) for m in moved)


@SETTINGS
@given(st.lists(NAMES, min_size=2, max_size=6, unique=True), st.data())
def test_removing_a_member_moves_only_its_customers(
    members: list[str], data: st.DataObject
) -> None:
    gone = data.draw(st.sampled_from(members))
    customers = many_customers(200, salt=gone)
    before = shards.ring(members)
    after = shards.ring([m for m in members if m != gone])
    moved = shards.moves(before, after, customers)
    theirs = {c for c in customers if shards.owner(before, *c) == gone}
    assert {m.customer for m in moved} == theirs
    assert all(m.before == gone and m.after in after.members for m in moved)


def test_an_empty_ring_after_the_last_member_leaves_moves_everything_to_nobody() -> None:
    customers = many_customers(10)
    moved = shards.moves(shards.ring(["a"]), shards.ring([]), customers)
    assert [(m.before, m.after) for m in moved] == [("a", None)] * 10
