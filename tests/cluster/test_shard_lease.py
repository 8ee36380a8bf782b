"""Shard Leases against the real API server (k8s/shardlease.py), as the operator's
ServiceAccount with the rights of manifests/ (leases listed in its own namespace): two
replicas' Leases make a ring of two; one released (deleted at a graceful stop) leaves a
ring of one at once; one that stops renewing is dropped after its duration."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import kubernetes
import pytest

from coordinator.api import shardnames
from coordinator.k8s import shardlease
from coordinator.k8s.lease import Timing
from tests.support.cluster import OPERATOR_SA
from tests.support.kube import wait_for

NAMESPACE = OPERATOR_SA[0]
DURATION = 6.0


@pytest.fixture
def operator_api(operator_kubeconfig: Path) -> kubernetes.client.ApiClient:
    return kubernetes.config.new_client_from_config(config_file=str(operator_kubeconfig))


def replica(api: kubernetes.client.ApiClient, ring: str, identity: str) -> shardlease.ShardLease:
    return shardlease.ShardLease(
        api, namespace=NAMESPACE, ring=ring, identity=identity, timing=Timing.of(DURATION)
    )


def test_live_leases_make_the_ring_released_or_expired_ones_leave_it(
    operator_api: kubernetes.client.ApiClient,
) -> None:
    ring = f"e2e-{uuid.uuid4().hex[:6]}"
    first, second = (
        replica(operator_api, ring, "replica-a"),
        replica(operator_api, ring, "replica-b"),
    )
    for shard in (first, second):
        asyncio.run(shard.tick())
        assert shard.holding
    asyncio.run(first.tick())  # reads the ring after both renewed
    assert first.ring.members == {"replica-a", "replica-b"}
    assert len(first.ring.points) == 2 * first.ring.vnodes
    # Another ring's Leases are not members (the label selects).
    stranger = replica(operator_api, f"{ring}-other", "replica-c")
    asyncio.run(stranger.tick())
    asyncio.run(first.tick())
    assert first.ring.members == {"replica-a", "replica-b"}

    # A graceful stop: deleted, out of the ring at the next read.
    second.release()
    asyncio.run(first.tick())
    assert first.ring.members == {"replica-a"}
    assert not second.holding

    # A replica that stops renewing: still a member within its duration, then dropped.
    third = replica(operator_api, ring, "replica-d")
    asyncio.run(third.tick())
    silent_since = time.monotonic()
    asyncio.run(first.tick())
    assert first.ring.members == {"replica-a", "replica-d"}

    def dropped() -> bool:
        asyncio.run(first.tick())  # `first` keeps renewing; `third` does not
        return first.ring.members == {"replica-a"}

    wait_for(
        dropped, what="the silent replica's Lease to expire out of the ring", timeout=DURATION + 5
    )
    assert (
        time.monotonic() - silent_since >= DURATION - 1
    )  # not before its duration (less rounding)
    assert first.holding
    for shard in (first, third, stranger):
        shard.release()
    listed = kubernetes.client.CoordinationV1Api(operator_api).list_namespaced_lease(
        NAMESPACE, label_selector=f"{shardnames.RING_LABEL}={ring}"
    )
    assert listed.items == []
