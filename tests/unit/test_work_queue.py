"""The work queue: what changes now goes ahead of what a listing showed (a fake API
server; seconds, not minutes)."""

from __future__ import annotations

import asyncio

from coordinator import reconciler as reconciler_
from coordinator.api.defaults import Backoff
from tests.support.shell import (
    NS,
    in_loop,
)

# --- the work queue -------------------------------------------------------------------


@in_loop
async def test_what_changes_now_goes_ahead_of_what_a_listing_showed() -> None:
    queue = reconciler_.WorkQueue()
    for customer in ("a", "b", "c"):
        queue.add((NS, customer), backlog=True)  # the start-up listing
    queue.add((NS, "new"))  # a recommendation created now
    queue.add((NS, "c"))  # and a change of one in the backlog: it moves ahead
    queue.add((NS, "b"), backlog=True)  # listed again: stays where it is
    taken = []
    while len(queue):
        key = await queue.get()
        taken.append(key[1])
        queue.done(key)
    assert taken == ["new", "c", "a", "b"]
    await asyncio.wait_for(queue.idle(), 1)


@in_loop
async def test_the_queue_backs_off_per_key_exponentially_up_to_a_cap() -> None:
    queue = reconciler_.WorkQueue(retry=Backoff(first=0.5, cap=4.0))
    key = (NS, "c1")
    assert [queue.retry(key) for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert queue.retry((NS, "other")) == 0.5
    queue.forget(key)
    assert queue.retry(key) == 0.5
    queue.close()


@in_loop
async def test_a_key_that_keeps_failing_stays_at_the_cap() -> None:
    # 1 024 failures at the one-minute cap (17 hours of an API server that refuses a
    # group) used to overflow the doubling, an error that ended the reconciler
    queue = reconciler_.WorkQueue()
    key = (NS, "c1")
    delays = [queue.retry(key) for _ in range(2000)]
    assert delays[-1] == delays[100] == 60.0
    queue.close()


@in_loop
async def test_the_queue_brings_a_key_back_at_the_earliest_time_asked() -> None:
    queue = reconciler_.WorkQueue()
    key = (NS, "c1")
    queue.add_after(key, 60.0)
    queue.add_after(key, 0.01)
    queue.add_after(key, 30.0)
    assert await asyncio.wait_for(queue.get(), 2.0) == key
    queue.done(key)
    queue.close()
