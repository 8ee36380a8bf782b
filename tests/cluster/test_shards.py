"""Shards against the real API server (``coordinator run --shard``), each a process with the
operator's ServiceAccount: customers split by consistent hashing, each driven by exactly
one shard; a SIGKILLed shard's customers are driven again once its Lease expires, a
stopped shard's at once, and no step is ever run twice (the plans' status watched
throughout); a shard that joins takes only what the ring gives it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import kubernetes
import planwatch

from coordinator.api.shardnames import RELEASED_AT_ANNOTATION, record_name
from coordinator.core import shards
from tests.support import Kubectl, wait_for
from tests.support.builders import recommendation
from tests.support.cluster import OPERATOR_SA
from tests.support.kube import Objects, apply
from tests.support.processes import OperatorProcess

PLANS = "executionplans"
RECS = "recommendations"
LEASES_NS = OPERATOR_SA[0]
DURATION = 6


def _shard_args(ring: str, identity: str, duration: int = DURATION) -> list[str]:
    return [
        "--shard",
        f"--ring={ring}",
        f"--identity={identity}",
        f"--lease-namespace={LEASES_NS}",
        f"--lease-duration={duration}",
    ]


def _acting(process: OperatorProcess) -> bool:
    status, text = process.readiness()
    return status == 200 and text.startswith("acting for")


def _holder(api: kubernetes.client.ApiClient, ring: str, customer: shards.Customer) -> Any:
    try:
        lease = kubernetes.client.CoordinationV1Api(api).read_namespaced_lease(
            record_name(ring, *customer), LEASES_NS
        )
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return lease


def _slow_recs(kubectl: Kubectl, namespace: str, customers: list[str], steps: int) -> None:
    plan = [
        {
            "name": f"s{i}",
            "action": f"s{i}",
            "executor": "simulated",
            "params": {"durationMs": 1500},
        }
        for i in range(steps)
    ]
    for customer in customers:
        apply(
            kubectl,
            namespace,
            recommendation(
                f"rec-{customer}",
                customerId=customer,
                riskLevel="low",
                executeNow=True,
                steps=plan,
            ),
        )


def _under_way(objects: Objects, customers: list[str]) -> None:
    def lagging() -> dict[str, Any]:
        found = {}
        for c in customers:
            plan = objects.status(PLANS, f"rec-{c}")
            if plan.get("currentStep", 0) < 1 and plan.get("phase") != "Succeeded":
                found[c] = (plan.get("phase"), objects.status(RECS, f"rec-{c}").get("phase"))
        return found

    try:
        wait_for(lambda: not lagging(), what="every plan to be under way", timeout=60)
    except AssertionError:
        raise AssertionError(f"plans not under way (plan, recommendation): {lagging()}") from None


def test_shards_split_customers_and_a_killed_ones_run_again_without_a_step_twice(
    api: kubernetes.client.ApiClient,
    kubectl: Kubectl,
    own_namespace: str,
    own_operator: Callable[..., OperatorProcess],
) -> None:
    ring = f"t-{uuid.uuid4().hex[:6]}"
    names = ("shard-a", "shard-b", "shard-c")
    processes = {name: own_operator(name, *_shard_args(ring, name)) for name in names}
    for name, process in processes.items():
        wait_for(lambda p=process: _acting(p), what=f"{name} to act", timeout=30)
    customers = [f"cust-{i}" for i in range(9)]
    objects = Objects(api, own_namespace)
    watch = planwatch.PlanWatch(api, own_namespace)
    watch.start()
    try:
        _slow_recs(kubectl, own_namespace, customers, steps=8)
        three = shards.ring(names)
        owner = {c: shards.owner(three, own_namespace, c) for c in customers}
        assert len(set(owner.values())) >= 2, owner  # the ring does spread them

        _under_way(objects, customers)
        for c in customers:  # decided and driven by the shard the ring names, and only it
            assert objects.status(RECS, f"rec-{c}").get("shard") == owner[c]
            assert _holder(api, ring, (own_namespace, c)).spec.holder_identity == owner[c]

        victim = owner[customers[0]]
        moved = [c for c in customers if owner[c] == victim]
        killed_at = time.monotonic()
        processes[victim].kill()
        two = shards.ring(n for n in names if n != victim)

        def taken_over() -> bool:
            return all(
                (h := _holder(api, ring, (own_namespace, c))) is not None
                and h.spec.holder_identity == shards.owner(two, own_namespace, c)
                for c in moved
            )

        wait_for(
            taken_over, what="the killed shard's customers to be claimed", timeout=DURATION + 10
        )
        took = time.monotonic() - killed_at
        assert took < DURATION + 6, f"its customers were claimed after {took:.1f}s"
        for c in customers:
            objects.wait_phase(PLANS, f"rec-{c}", "Succeeded", timeout=90)
        for c in moved:  # the shard that finished it decided it last
            assert objects.status(RECS, f"rec-{c}").get("shard") == shards.owner(
                two, own_namespace, c
            )
    finally:
        watch.stop()
    assert watch.seen, "the watch saw nothing"
    assert planwatch.rewritten(watch.seen) == []


def test_a_stopped_shard_hands_over_at_once_and_a_new_one_takes_only_its_arcs(
    api: kubernetes.client.ApiClient,
    kubectl: Kubectl,
    own_namespace: str,
    own_operator: Callable[..., OperatorProcess],
) -> None:
    ring = f"t-{uuid.uuid4().hex[:6]}"
    slow = 30  # a Lease that would take 30 s to expire: the hand-over must not wait for it
    a = own_operator("shard-a", *_shard_args(ring, "shard-a", slow))
    b = own_operator("shard-b", *_shard_args(ring, "shard-b", slow))
    for process in (a, b):
        wait_for(lambda p=process: _acting(p), what="both shards to act", timeout=30)
    customers = [f"cust-{i}" for i in range(12)]
    objects = Objects(api, own_namespace)
    watch = planwatch.PlanWatch(api, own_namespace)
    watch.start()
    try:
        _slow_recs(kubectl, own_namespace, customers, steps=10)
        _under_way(objects, customers)
        # A third shard joins: only the customers whose owner changes move, to it.
        c_ = own_operator("shard-c", *_shard_args(ring, "shard-c", slow))
        two, three = (
            shards.ring(["shard-a", "shard-b"]),
            shards.ring(["shard-a", "shard-b", "shard-c"]),
        )
        moving = {
            m.customer[1] for m in shards.moves(two, three, [(own_namespace, c) for c in customers])
        }
        assert all(shards.owner(three, own_namespace, c) == "shard-c" for c in moving)

        def holders_follow(ring_: shards.Ring) -> bool:
            return all(
                (h := _holder(api, ring, (own_namespace, c))) is not None
                and h.spec.holder_identity == shards.owner(ring_, own_namespace, c)
                for c in customers
            )

        wait_for(lambda: _acting(c_), what="the third shard to act", timeout=30)
        wait_for(
            lambda: holders_follow(three), what="the moved customers to be claimed", timeout=30
        )

        # A graceful stop: released at once, claimed long before its 30 s Lease would expire.
        stopped_at = time.monotonic()
        a.terminate()
        without_a = shards.ring(["shard-b", "shard-c"])
        wait_for(lambda: holders_follow(without_a), what="shard-a's customers claimed", timeout=20)
        assert time.monotonic() - stopped_at < slow - 5
        for c in customers:
            objects.wait_phase(PLANS, f"rec-{c}", "Succeeded", timeout=90)
    finally:
        watch.stop()
    assert planwatch.rewritten(watch.seen) == []
    released = [
        h
        for c in customers
        if (h := _holder(api, ring, (own_namespace, c))) is not None
        and (h.metadata.annotations or {}).get(RELEASED_AT_ANNOTATION)
    ]
    assert released == []  # every customer is driven by a live shard at the end
