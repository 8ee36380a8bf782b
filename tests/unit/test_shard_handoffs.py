"""parts.shards over a fake Lease and records: what a shard takes in, what it lets go
and in which order (daemons first, then the Store, then the release), and that a lapse
lets go without releasing. The real Leases and processes: tests/cluster/test_shards.py."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

from coordinator import store as store_
from coordinator.api.common import PLANS, RECOMMENDATIONS
from coordinator.core import handoff, shards
from coordinator.k8s import client as client_
from coordinator.k8s import handoff as records_
from coordinator.k8s import shardlease
from coordinator.k8s.lease import Timing
from coordinator.parts import daemons as daemons_
from coordinator.parts import shards as shards_
from coordinator.parts import starts as starts_
from coordinator.workqueue import WorkQueue
from tests.support.fakeapi import FakeApi
from tests.support.shell import NS, in_loop, plan_body, rec_body

ME, OTHER = "shard-a", "shard-b"


class _Lease:
    identity, ring_name, name = ME, "r", "r-shard-a"
    timing = Timing.of(12)

    def __init__(self, members: list[str]) -> None:
        self.holding = True
        self.ring = shards.ring(members)
        self.changed = asyncio.Event()


class _Records:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.refuse: set[shards.Customer] = set()

    def claim(self, ring: shards.Ring, customer: shards.Customer) -> handoff.Verdict:
        if customer in self.refuse:
            return handoff.Verdict(start=False, reason="the old owner drives it")
        self.log.append(f"claim {customer[1]}")
        return handoff.Verdict(start=True, reason="nobody drives it")

    def release(self, customer: shards.Customer) -> bool:
        self.log.append(f"release {customer[1]}")
        return True


class _Daemons:
    def __init__(self, log: list[str], store: store_.Store) -> None:
        self.log, self.store = log, store

    async def leave(self, customers: Any) -> None:
        held = all(self.store.group(c) for c in customers)  # still in the Store
        self.log.append(f"daemons leave {sorted(c[1] for c in customers)} held={held}")


class _Starts:
    def busy(self, group: Any) -> bool:
        return False


def _customers_of(members: list[str], count: int = 12) -> dict[str, str | None]:
    ring = shards.ring(members)
    return {f"c{i}": shards.owner(ring, NS, f"c{i}") for i in range(count)}


def _shard(api: FakeApi, lease: _Lease, log: list[str]) -> tuple[shards_.Shards, store_.Store]:
    store = store_.Store()
    delivered: list[str] = []

    def deliver(plural: str, raw: Any, *, deleted: bool, origin: Any) -> None:
        delivered.append(raw["metadata"]["name"])
        store.apply(plural, raw, deleted=deleted, origin=origin)

    shard = shards_.Shards(
        cast(shardlease.ShardLease, lease),
        cast(records_.Records, _Records(log)),
        client=cast(client_.Client, api),
        store=store,
        queue=WorkQueue(),
        daemons=cast(daemons_.Daemons, _Daemons(log, store)),
        starts=cast(starts_.Starts, _Starts()),
        deliver=deliver,
        leading=asyncio.Event(),
        following=asyncio.Event(),
    )
    return shard, store


@in_loop
async def test_a_shard_takes_in_its_customers_and_lets_go_daemons_first_then_releases() -> None:
    logging.getLogger("coordinator").setLevel(logging.WARNING)
    owners = _customers_of([ME, OTHER])
    mine = sorted(c for c, o in owners.items() if o == ME)
    theirs = sorted(c for c, o in owners.items() if o == OTHER)
    assert mine
    assert theirs
    api, log = FakeApi(), []
    for customer in owners:
        api.put(RECOMMENDATIONS, rec_body(f"rec-{customer}", customer=customer))
    lease = _Lease([ME])  # alone at first: every customer is this shard's
    shard, store = _shard(api, lease, log)
    shard._settle = False
    for customer in owners:  # what the watch shows: nothing is taken in yet
        assert not shard.drives((NS, customer))
    await shard.rebalance()
    assert shard.leading.is_set()
    assert sorted(c for _, c in shard.held) == sorted(owners)
    assert sorted(log) == sorted(f"claim {c}" for c in owners)
    assert {c for _, c in store.groups()} == set(owners)
    # A plan of one that moves arrives by the watch: taken in (its customer is held).
    plan = api.put(PLANS, {**plan_body("x"), "spec": {"customerId": theirs[0]}})
    assert store.apply(PLANS, plan)

    log.clear()
    lease.ring = shards.ring([ME, OTHER])  # another joins: its arcs move to it
    await shard.rebalance()
    assert log[0] == f"daemons leave {theirs} held=True"  # before they leave the Store
    assert sorted(log[1:]) == sorted(f"release {c}" for c in theirs)
    assert sorted(c for _, c in shard.held) == mine
    assert {c for _, c in store.groups()} == set(mine)
    assert store.record(PLANS, (NS, "x")) is None
    assert store.apply(PLANS, plan) is None  # the watch again: not taken in any more


@in_loop
async def test_a_lapsed_lease_stops_acting_and_lets_go_without_releasing() -> None:
    logging.getLogger("coordinator").setLevel(logging.WARNING)
    api, log = FakeApi(), []
    api.put(RECOMMENDATIONS, rec_body("rec-1", customer="c1"))
    lease = _Lease([ME])
    shard, store = _shard(api, lease, log)
    shard._settle = False
    shard.drives((NS, "c1"))
    await shard.rebalance()
    assert shard.held == {(NS, "c1")}
    log.clear()
    lease.holding = False
    await shard.rebalance()
    assert not shard.leading.is_set()
    assert shard.following.is_set()
    assert log == ["daemons leave ['c1'] held=True"]  # no release: the Lease expires instead
    assert store.groups() == []
