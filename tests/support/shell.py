"""The shell without a cluster: a Store and a reconciler over the one fake API server
(tests/support/fakeapi.py), and the objects of team-a that the shell tests put there, each
made by the one builder of its kind (tests/support/builders.py)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime
from typing import Any, cast
from unittest import mock

from coordinator import reconciler as reconciler_
from coordinator import store as store_
from coordinator.core import approval as policy_
from coordinator.core import lifecycle
from coordinator.k8s import client as client_
from coordinator.k8s import events as events_
from tests.support import builders
from tests.support.fakeapi import FakeApi, FakeRecorder

NS = "team-a"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
NOOP = [{"name": "s", "action": "noop", "executor": "simulated"}]
"""The one simulated step of the shell's recommendations and plans."""


def rec_body(
    name: str,
    *,
    customer: str = "c1",
    risk: str = "medium",
    resources: tuple[str, ...] = ("web",),
    depends_on: tuple[str, ...] = (),
    priority: int = 0,
) -> dict[str, Any]:
    """A recommendation of team-a as kubectl applied it (with the fields the Store drops)."""
    return builders.recommendation(
        name,
        namespace=NS,
        metadata={
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": '{"a whole": "manifest"}',
                "optiinfra.io/submitted-by": "agent",
            },
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
        },
        customerId=customer,
        agentId="a",
        title=name,
        riskLevel=risk,
        affectedResources=list(resources),
        dependsOn=list(depends_on),
        priority=priority,
        steps=NOOP,
    )


def endpoint_body(name: str, url: str = "https://agent.example.com/hook") -> dict[str, Any]:
    """An AgentEndpoint of team-a whose key is in Secret NAME-hmac."""
    return builders.endpoint(
        name, namespace=NS, url=url, secretRef={"name": f"{name}-hmac", "key": "k"}
    )


def policy_body(name: str, **spec: Any) -> dict[str, Any]:
    """An ApprovalPolicy of team-a."""
    return builders.policy(name, namespace=NS, **spec)


def plan_body(
    name: str, *, phase: str = "Pending", suspend: bool = False, owner: str | None = None
) -> dict[str, Any]:
    """A plan of team-a; `owner`: the uid of the recommendation `name` that owns it."""
    references = [
        {
            "apiVersion": "optiinfra.io/v1alpha1",
            "kind": "Recommendation",
            "name": name,
            "uid": owner,
            "controller": True,
        }
    ]
    return builders.plan(
        name,
        namespace=NS,
        metadata={"ownerReferences": references} if owner else None,
        status={"phase": phase},
        customerId="c1",
        suspend=suspend,
        steps=NOOP,
    )


def in_loop(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an async test in a fresh event loop."""

    @functools.wraps(test)
    def run() -> None:
        asyncio.run(test())

    return run


class Enqueuing(store_.Store):
    """A Store whose every answer goes to its reconciler's one enqueue, as
    ``parts.dispatch.Dispatch`` dispatches it (without the plans' side): the shell's
    tests apply objects to it as the watch or a write would."""

    reconciler: reconciler_.Reconciler | None = None

    def apply(self, plural: str, raw: Any, **kwargs: Any) -> store_.Change | None:
        change = super().apply(plural, raw, **kwargs)
        if change is not None and self.reconciler is not None:
            self.reconciler.queue.enqueue(change, self)
        return change


async def work(
    reconciler: reconciler_.Reconciler, started: Callable[[Any], None] = lambda _: None
) -> None:
    """The reconciler's workers, as ``parts.dispatch`` runs them, until cancelled: each
    plan a reconcile gives back to start goes to `started` (its changes were enqueued by
    the `Enqueuing` store already)."""

    async def worker() -> None:
        while True:
            key = await reconciler.queue.get()
            result = reconciler_.Result()
            try:
                result = await reconciler.work(key)
                for plan in result.to_start:
                    started(plan)
            finally:
                reconciler.queue.done(key, result.writes)

    await asyncio.gather(*(worker() for _ in range(reconciler.workers)))


async def until(probe: Callable[[], bool], seconds: float) -> None:
    """Until `probe()` holds, looked at every 10 ms; fails after `seconds`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not probe():
        if loop.time() > deadline:
            raise AssertionError(f"not true within {seconds} s: {probe.__doc__ or probe}")
        await asyncio.sleep(0.01)


def shell(api: FakeApi) -> tuple[store_.Store, reconciler_.Reconciler, FakeRecorder]:
    store = Enqueuing(loader=api.get)
    recorder = FakeRecorder()
    client = cast(client_.Client, api)
    reconciler = reconciler_.Reconciler(
        client=client,
        recorder=cast(events_.Recorder, recorder),
        policy=policy_.ApprovalPolicy(),
        store=store,
        clock=lambda: NOW,
    )
    store.reconciler = reconciler
    return store, reconciler, recorder


def watched(api: FakeApi, store: store_.Store) -> None:
    """What the watch would show: every object as the fake holds it now."""
    for (plural, _, _), obj in list(api.objects.items()):
        store.apply(plural, obj)


@contextlib.contextmanager
def counting_decisions() -> Iterator[list[str]]:
    """The names of the recommendations `lifecycle.decide` is asked about, in order."""
    decided: list[str] = []
    real = lifecycle.decide

    def counting(observed: lifecycle.Observed, **kwargs: Any) -> lifecycle.Desired:
        decided.append(observed.recommendation.name)
        return real(observed, **kwargs)

    with mock.patch.object(lifecycle, "decide", counting):
        yield decided
