"""coordinator.kopfpatch: kopf's start-up wait, with waiters woken on flips only.

kopf's workers each drop their object's toggle and wait for the whole set to be on.
The patched set must keep the semantics (all/any, toggles turned, made, dropped) and
wake each waiter a bounded number of times, where kopf's own wakes all on each change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import pytest
from kopf._cogs.aiokits import aiotoggles

from coordinator import kopfpatch

SetFactory = Callable[[Callable[[Iterable[bool]], bool]], aiotoggles.ToggleSet]


def counting(
    factory: SetFactory, fn: Callable[[Iterable[bool]], bool]
) -> tuple[aiotoggles.ToggleSet, list[int]]:
    calls = [0]

    def counted(states: Iterable[bool]) -> bool:
        calls[0] += 1
        return fn(states)

    return factory(counted), calls


async def start_up(toggles: aiotoggles.ToggleSet, n: int) -> None:
    """What kopf does with N listed objects: one toggle each, then N workers that drop
    their own and wait for all."""
    resource = await toggles.make_toggle(name="listing")

    async def worker(toggle: aiotoggles.Toggle) -> None:
        await toggles.drop_toggle(toggle)
        await toggles.wait_for(True)

    workers = []
    for i in range(n):  # the objects arrive one by one from the watch stream
        toggle = await toggles.make_toggle(name=f"object-{i}")
        workers.append(asyncio.create_task(worker(toggle)))
        for _ in range(3):
            await asyncio.sleep(0)
    await toggles.drop_toggle(resource)  # the listing is over
    await asyncio.wait_for(asyncio.gather(*workers), timeout=60)
    assert toggles.is_on()


def test_the_start_up_wait_costs_linear_time_where_kopfs_costs_quadratic() -> None:
    n = 300
    patched, patched_calls = counting(kopfpatch.ToggleSet, all)
    asyncio.run(start_up(patched, n))
    original, original_calls = counting(aiotoggles.ToggleSet, all)
    asyncio.run(start_up(original, n))
    assert patched_calls[0] <= 10 * n  # a few looks per toggle made, dropped, waited for
    assert original_calls[0] >= n * n / 4  # why the patch exists


@pytest.mark.parametrize("fn", [all, any])
def test_waiters_see_every_flip_made_by_turning_making_and_dropping(
    fn: Callable[[Iterable[bool]], bool],
) -> None:
    async def scenario() -> None:
        toggles = kopfpatch.ToggleSet(fn)
        a = await toggles.make_toggle(False, name="a")
        b = await toggles.make_toggle(False, name="b")
        on = asyncio.create_task(toggles.wait_for(True))
        await asyncio.sleep(0)
        assert not on.done()
        await a.turn_to(True)  # any: on now; all: b is still off
        await asyncio.sleep(0)
        assert on.done() == (fn is any)
        await toggles.drop_toggle(b)  # all: on now
        await asyncio.wait_for(on, timeout=5)
        off = asyncio.create_task(toggles.wait_for(False))
        await asyncio.sleep(0)
        assert not off.done()
        await toggles.make_toggle(False, name="c")  # an off toggle: all turns off, any not
        await asyncio.sleep(0)
        assert off.done() == (fn is all)
        await a.turn_to(False)
        await asyncio.wait_for(off, timeout=5)
        await toggles.drop_toggles(list(toggles))
        assert toggles.is_on() == (fn is all)  # all of nothing is on, any of nothing off

    asyncio.run(scenario())


def test_install_puts_it_in_kopf_for_the_version_it_was_written_for() -> None:
    original = aiotoggles.ToggleSet
    try:
        assert kopfpatch.install()
        assert aiotoggles.ToggleSet is kopfpatch.ToggleSet
    finally:
        aiotoggles.ToggleSet = original  # type: ignore[misc]
