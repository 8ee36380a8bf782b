"""When kopf's events show a kind listed (``--watch=kopf``): counted, watched, relisted."""

from __future__ import annotations

from coordinator.core.listings import Ended, Listings, Step


def test_listed_once_every_counted_listing_saw_as_many_objects() -> None:
    listings = Listings()
    listings.wait_for([("recs", "a", 2), ("recs", "b", 1), ("plans", "a", 0)])
    assert not listings.listed
    listings.listed_object("recs", "a", ("a", "r1"))
    listings.listed_object("recs", "b", ("b", "r1"))
    assert not listings.listed  # one of a's two is still to come
    listings.listed_object("recs", "a", ("a", "r2"))
    assert listings.listed


def test_not_listed_before_the_counts_are_in_whatever_was_seen() -> None:
    listings = Listings()
    listings.listed_object("recs", None, ("a", "r1"))
    listings.watched("recs", None)
    assert not listings.listed
    listings.wait_for([("recs", None, 5)])  # kopf watches already: its listing is over
    assert listings.listed


def test_a_watch_event_ends_a_listing_that_saw_fewer_than_counted() -> None:
    """An object deleted between the count and kopf's listing: the watch that follows
    the listing ends it."""
    listings = Listings()
    listings.wait_for([("recs", None, 3)])
    listings.listed_object("recs", None, ("a", "r1"))
    listings.listed_object("recs", None, ("a", "r2"))
    assert not listings.listed
    assert listings.watched("recs", None) is None  # the first listing: nothing to resync
    assert listings.listed


def test_a_listing_event_after_the_watch_began_is_a_relist_ended_with_what_it_saw() -> None:
    listings = Listings()
    listings.wait_for([("recs", "a", 1)])
    first = listings.listed_object("recs", "a", ("a", "r1"))
    assert first == Step()
    assert listings.listed
    listings.watched("recs", "a")

    relist = listings.listed_object("recs", "a", ("a", "r2"))  # after 410 Gone
    assert relist == Step(began=True)  # count it
    assert listings.listed  # readiness never goes back
    assert listings.listed_object("recs", "a", ("a", "r3")).began is False
    assert listings.expect("recs", "a", 2) == Ended(
        "recs", "a", frozenset({("a", "r2"), ("a", "r3")})
    )
    assert listings.watched("recs", "a") is None  # ended once


def test_a_relist_counted_before_its_objects_came_ends_with_the_last_one_or_a_watch() -> None:
    listings = Listings()
    listings.wait_for([("recs", None, 0)])
    listings.listed_object("recs", None, ("a", "r1"))
    assert listings.expect("recs", None, 2) is None
    ended = listings.listed_object("recs", None, ("b", "r2")).ended
    assert ended == Ended("recs", None, frozenset({("a", "r1"), ("b", "r2")}))

    listings.listed_object("recs", None, ("a", "r1"))  # another relist, one object left
    assert listings.watched("recs", None) == Ended("recs", None, frozenset({("a", "r1")}))
