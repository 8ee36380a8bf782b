"""The reconciler's actions against a fake API server: exactly what it writes, and when
(seconds, not minutes)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from coordinator import reconciler as reconciler_
from coordinator import store as store_
from coordinator.api.common import APPROVALS, PLANS, RECOMMENDATIONS
from coordinator.api.defaults import Backoff
from coordinator.k8s import client as client_
from tests.support.fakeapi import FakeApi
from tests.support.shell import (
    NOW,
    NS,
    counting_decisions,
    in_loop,
    rec_body,
    shell,
    until,
    work,
)

# --- the reconciler's actions ---------------------------------------------------------


@in_loop
async def test_a_new_recommendation_gets_an_approval_and_its_status_in_one_write_each() -> None:
    api = FakeApi()
    store, reconciler, recorder = shell(api)
    store.apply(RECOMMENDATIONS, api.put(RECOMMENDATIONS, rec_body("a")))
    result = await reconciler.reconcile((NS, "c1"))
    assert [w[:3] for w in api.writes] == [
        ("create", APPROVALS, "a"),
        ("status", APPROVALS, "a"),
        ("status", RECOMMENDATIONS, "a"),
    ]
    assert all("observedGeneration" in w[3].split(",") for w in api.writes[1:])
    rec = store.recommendation((NS, "a"))  # what was written, before any watch event
    assert rec is not None
    assert rec.phase.value == "AwaitingApproval"
    assert store.approval((NS, "a")) is not None
    # Medium risk: 48 h to decide; the group comes back when it expires (no watch event
    # of the approval it created does: that is the reconcile's own write).
    assert result.requeue_after == pytest.approx(timedelta(hours=48).total_seconds() + 0.05)
    assert recorder.reasons  # the transition is told in Events
    api.writes.clear()
    again = await reconciler.reconcile((NS, "c1"))
    assert api.writes == []  # nothing changed: nothing written
    # Medium risk: 48 h to decide; the group comes back when it expires.
    assert again.requeue_after == pytest.approx(timedelta(hours=48).total_seconds() + 0.05)


@in_loop
async def test_an_approved_recommendation_gets_its_plan_created_and_handed_over() -> None:
    api = FakeApi()
    store, reconciler, _ = shell(api)
    store.apply(RECOMMENDATIONS, api.put(RECOMMENDATIONS, rec_body("a", risk="low")))
    result = await reconciler.reconcile((NS, "c1"))
    assert [p.metadata.name for p in result.created_plans] == ["a"]
    assert ("create", PLANS, "a", "") in api.writes
    assert store.plan((NS, "a")) is not None
    rec = store.recommendation((NS, "a"))
    assert rec is not None
    assert rec.phase.value == "Approved"


@in_loop
async def test_the_loser_of_a_conflict_is_superseded_and_its_group_written_once() -> None:
    api = FakeApi()
    store, reconciler, _ = shell(api)
    store.apply(RECOMMENDATIONS, api.put(RECOMMENDATIONS, rec_body("win", priority=10)))
    store.apply(RECOMMENDATIONS, api.put(RECOMMENDATIONS, rec_body("lose", priority=1)))
    await reconciler.reconcile((NS, "c1"))
    lose = store.recommendation((NS, "lose"))
    assert lose is not None
    assert lose.phase.value == "Superseded"
    assert lose.status is not None
    assert lose.status.superseded_by == "win"
    assert [w[:3] for w in api.writes if w[2] == "lose"] == [("status", RECOMMENDATIONS, "lose")]


@in_loop
async def test_a_create_refused_while_the_old_object_goes_comes_back_shortly() -> None:
    api = FakeApi()
    store, reconciler, _ = shell(api)
    store.apply(RECOMMENDATIONS, api.put(RECOMMENDATIONS, rec_body("a")))
    api.conflict_on_create.add((APPROVALS, "a"))
    result = await reconciler.reconcile((NS, "c1"))
    assert result.requeue_after == reconciler_.CREATE_AGAIN_SECONDS
    assert store.approval((NS, "a")) is None
    await reconciler.reconcile((NS, "c1"))
    assert store.approval((NS, "a")) is not None


@in_loop
async def test_a_change_queues_its_group_and_the_groups_that_depend_on_it() -> None:
    api = FakeApi()
    store, reconciler, _ = shell(api)
    store.apply(
        RECOMMENDATIONS, api.put(RECOMMENDATIONS, rec_body("c", customer="d", depends_on=("a",)))
    )
    store.apply(RECOMMENDATIONS, api.put(RECOMMENDATIONS, rec_body("a")))
    assert sorted(reconciler.queue._queued) == [(NS, "c1"), (NS, "d")]


@in_loop
async def test_a_failing_reconcile_is_retried_with_backoff_and_then_succeeds() -> None:
    api = FakeApi()
    store, reconciler, _ = shell(api)
    reconciler.queue = reconciler_.WorkQueue(retry=Backoff(first=0.01, cap=0.02))
    store.apply(RECOMMENDATIONS, api.put(RECOMMENDATIONS, rec_body("a")))
    real = api.patch_status
    failures = [client_.ApiException(status=500, reason="boom")] * 2

    async def flaky(*args: Any, **kwargs: Any) -> dict[str, Any]:
        if failures:
            raise failures.pop()
        return await real(*args, **kwargs)

    api.patch_status = flaky  # type: ignore[method-assign]

    def written() -> bool:
        """Recommendation a has its status written."""
        record = store.record(RECOMMENDATIONS, (NS, "a"))
        return record is not None and bool(record.phase)

    task = asyncio.create_task(work(reconciler))
    try:
        await until(written, 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert not failures
    rec = store.recommendation((NS, "a"))
    assert rec is not None
    assert rec.phase.value == "AwaitingApproval"


async def _reconciles_until_idle(
    reconciler: reconciler_.Reconciler, during: Callable[[], None] = lambda: None
) -> int:
    """Run the workers until the queue is idle; how many reconciles ran. `during` runs
    inside the first reconcile (a change the watch shows meanwhile)."""
    count = 0
    real = reconciler.reconcile

    async def counted(key: Any) -> Any:
        nonlocal count
        count += 1
        if count == 1:
            during()
        return await real(key)

    reconciler.reconcile = counted  # type: ignore[method-assign]
    task = asyncio.create_task(work(reconciler))
    try:
        await asyncio.sleep(0)
        await asyncio.wait_for(reconciler.queue.idle(), 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return count


def _echoing(api: FakeApi, store: store_.Store) -> None:
    """The watch shows each status write before its response arrives (as it often does)."""
    real = api.patch_status

    async def patch_status(plural: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        written = await real(plural, *args, **kwargs)
        store.apply(plural, copy.deepcopy(written))  # the echo, first
        return written

    api.patch_status = patch_status  # type: ignore[method-assign]


@in_loop
async def test_the_watch_echo_of_a_reconcile_own_writes_does_not_run_it_again() -> None:
    api = FakeApi()
    store, reconciler, _ = shell(api)
    _echoing(api, store)
    store.apply(RECOMMENDATIONS, api.put(RECOMMENDATIONS, rec_body("a")))
    assert await _reconciles_until_idle(reconciler) == 1
    assert [w[:3] for w in api.writes] == [
        ("create", APPROVALS, "a"),
        ("status", APPROVALS, "a"),
        ("status", RECOMMENDATIONS, "a"),
    ]


@in_loop
async def test_a_change_the_watch_shows_during_a_reconcile_runs_it_again() -> None:
    api = FakeApi()
    store, reconciler, _ = shell(api)
    _echoing(api, store)
    store.apply(RECOMMENDATIONS, api.put(RECOMMENDATIONS, rec_body("a")))
    late = api.put(RECOMMENDATIONS, rec_body("b", resources=("db",)))
    assert await _reconciles_until_idle(reconciler, lambda: store.apply(RECOMMENDATIONS, late)) == 2
    b = store.recommendation((NS, "b"))
    assert b is not None
    assert b.phase.value == "AwaitingApproval"


@in_loop
async def test_a_settled_recommendation_is_not_decided_again_until_an_input_changes() -> None:
    api = FakeApi()
    store, reconciler, _ = shell(api)
    for name, resource in (("a", "web"), ("b", "db")):
        store.apply(
            RECOMMENDATIONS, api.put(RECOMMENDATIONS, rec_body(name, resources=(resource,)))
        )
    with counting_decisions() as decided:
        await _settle_and_change(api, store, reconciler, decided)


async def _settle_and_change(
    api: FakeApi, store: store_.Store, reconciler: reconciler_.Reconciler, decided: list[str]
) -> None:
    await reconciler.reconcile((NS, "c1"))  # both new: decided, written
    await reconciler.reconcile((NS, "c1"))  # as written: decided once more, nothing to do
    decided.clear()
    api.writes.clear()
    await reconciler.reconcile((NS, "c1"))
    assert decided == []  # settled, same inputs
    assert api.writes == []
    # A person rejects b: only b is decided again.
    approval = api.objects[(APPROVALS, NS, "b")]
    approval["spec"]["decision"] = "Rejected"
    store.apply(APPROVALS, api.put(APPROVALS, approval))
    await reconciler.reconcile((NS, "c1"))
    assert decided == ["b"]
    b = store.recommendation((NS, "b"))
    assert b is not None
    assert b.phase.value == "Rejected"
    # Time passes beyond a's expiry: its effective phase changes, so it is decided again.
    decided.clear()
    reconciler.clock = lambda: NOW + timedelta(hours=49)
    await reconciler.reconcile((NS, "c1"))
    assert "a" in decided
    a = store.recommendation((NS, "a"))
    assert a is not None
    assert a.phase.value == "Expired"


@in_loop
async def test_a_deleted_recommendation_leaves_what_the_reconciler_remembers_of_it() -> None:
    """The settled inputs are kept per group: a recommendation deleted is forgotten at the
    group's next reconcile, and a group with none left is forgotten whole."""
    api = FakeApi()
    store, reconciler, _ = shell(api)
    for name, resource in (("a", "web"), ("b", "db")):
        store.apply(
            RECOMMENDATIONS, api.put(RECOMMENDATIONS, rec_body(name, resources=(resource,)))
        )
    await reconciler.reconcile((NS, "c1"))
    await reconciler.reconcile((NS, "c1"))  # both settled now
    uids = {name: store.record(RECOMMENDATIONS, (NS, name)) for name in ("a", "b")}
    assert set(reconciler._settled[(NS, "c1")]) == {r.uid for r in uids.values() if r}
    store.apply(RECOMMENDATIONS, api.objects[(RECOMMENDATIONS, NS, "a")], deleted=True)
    await reconciler.reconcile((NS, "c1"))
    b = uids["b"]
    assert b is not None
    assert set(reconciler._settled[(NS, "c1")]) == {b.uid}
    store.apply(RECOMMENDATIONS, api.objects[(RECOMMENDATIONS, NS, "b")], deleted=True)
    await reconciler.reconcile((NS, "c1"))
    assert (NS, "c1") not in reconciler._settled
