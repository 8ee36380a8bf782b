"""The reconciler: one customer's recommendations at a time, from observation to writes.

Every change of a Recommendation, Approval or ExecutionPlan in the Store puts its group —
one customer in one namespace — on the work queue. A worker takes the group and runs one
reconcile, a short numbered sequence:

1. observe: the group's recommendations, with the Approval and plan each owns, from the
   Store (no LIST per event), which holds the operator's own writes as soon as they are
   answered (the watch may lag behind them);
2. compute: ``core.lifecycle.evaluate`` decides every status, approval and plan;
3. act: write each status that changed in one merge patch (``k8s.status.StatusWriter``),
   create, withdraw or replace approvals, create or delete plans, post Events;
4. return when to run again: at the earliest expiry of a pending approval, so expiry
   needs no event (`Result.requeue_after`), and the plans it created, to start at once.

A key added while it is being reconciled is reconciled again afterwards, never twice at
once; a reconcile that raises is tried again after a per-key exponential backoff
(`WorkQueue.retry`). The queue is the only state besides the Store.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from coordinator import metrics
from coordinator import store as store_
from coordinator.api.approval import POLICY_DECIDER, Approval, ApprovalPhase, ApprovalStatus
from coordinator.api.common import API_VERSION, APPROVALS, PLANS, RECOMMENDATIONS
from coordinator.api.plan import ExecutionPlan
from coordinator.api.recommendation import Recommendation, RecommendationPhase
from coordinator.core import approval as policy_
from coordinator.core import lifecycle
from coordinator.k8s import client as client_
from coordinator.k8s import events as events_
from coordinator.k8s import status as status_

logger = logging.getLogger(__name__)

GroupKey = store_.GroupKey
ObjectKey = store_.ObjectKey

C = TypeVar("C", Approval, ExecutionPlan)


RETRY_FIRST_SECONDS: Final = 0.5
RETRY_CAP_SECONDS: Final = 60.0
"""A failed reconcile is tried again after 0.5 s, doubling per failure of the same key
up to a minute; a success resets it."""


class WorkQueue:
    """Keys to reconcile: each at most once at a time, re-run if it changed meanwhile;
    `add_after` brings one back at a time, `retry` after a per-key exponential backoff."""

    def __init__(
        self, *, first: float = RETRY_FIRST_SECONDS, cap: float = RETRY_CAP_SECONDS
    ) -> None:
        self._queue: collections.deque[GroupKey] = collections.deque()
        self._queued: set[GroupKey] = set()
        self._active: set[GroupKey] = set()
        self._dirty: set[GroupKey] = set()
        self._timers: dict[GroupKey, asyncio.TimerHandle] = {}
        self._failures: dict[GroupKey, int] = {}
        self._first = first
        self._cap = cap
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def add(self, key: GroupKey) -> None:
        self._idle.clear()
        if key in self._active:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.append(key)
            self._ready.set()

    def add_after(self, key: GroupKey, seconds: float) -> None:
        """Add `key` in `seconds` (the earliest of the times asked for wins)."""
        loop = asyncio.get_running_loop()
        old = self._timers.get(key)
        if old is not None and old.when() <= loop.time() + seconds:
            return
        if old is not None:
            old.cancel()
        self._timers[key] = loop.call_later(max(0.0, seconds), self._fire, key)

    def _fire(self, key: GroupKey) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def retry(self, key: GroupKey) -> float:
        """`key` failed: add it again after its backoff; the delay."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        delay: float = min(self._first * 2.0**failures, self._cap)
        self.add_after(key, delay)
        return delay

    def forget(self, key: GroupKey) -> None:
        """`key` succeeded: its next failure starts the backoff again."""
        self._failures.pop(key, None)

    async def get(self) -> GroupKey:
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        key = self._queue.popleft()
        self._queued.discard(key)
        self._active.add(key)
        return key

    def done(self, key: GroupKey) -> None:
        self._active.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)
        elif not self._queue and not self._active:
            self._idle.set()

    async def idle(self) -> None:
        """Until nothing is queued or being reconciled."""
        await self._idle.wait()

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def __len__(self) -> int:
        return len(self._queue)


@dataclasses.dataclass(frozen=True, slots=True)
class Result:
    """What one reconcile asks for: to run again after `requeue_after` seconds (an
    approval's expiry), and the plans it created (to start at once)."""

    requeue_after: float | None = None
    created_plans: tuple[ExecutionPlan, ...] = ()


class Reconciler:
    """Reconciles customer groups from the Store; writes through the StatusWriter."""

    def __init__(
        self,
        *,
        client: client_.Client,
        recorder: events_.Recorder,
        policy: policy_.ApprovalPolicy,
        store: store_.Store,
        writer: status_.StatusWriter | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        workers: int = 4,
    ) -> None:
        self.client = client
        self.recorder = recorder
        self.policy = policy
        self.store = store
        self.writer = writer or status_.StatusWriter(client, store.apply)
        self.clock = clock
        self.workers = workers
        self.queue = WorkQueue()
        self.acting = asyncio.Event()
        """Set while this replica may write (it leads); the workers wait for it."""
        self.acting.set()

    # --- what triggers a reconcile ------------------------------------------------------

    def changed(self, plural: str, record: store_.Record) -> None:
        """An object of the store changed (or went): queue the groups it concerns — its
        own, and for a recommendation the groups of those that depend on it."""
        self.queue.add((record.namespace, record.customer))
        if plural != RECOMMENDATIONS:
            return
        for dependent in self.store.dependents(record.key):
            customer = self.store.customer_of(dependent)
            if customer is not None:
                self.queue.add((record.namespace, customer))

    # --- the workers --------------------------------------------------------------------

    async def run(self, started: Callable[[ExecutionPlan], Awaitable[None]]) -> None:
        """Run the workers until cancelled; `started` starts the plans a reconcile created
        (before their watch event does the same: an approved change does not wait)."""
        tasks = [
            asyncio.create_task(self._work(started), name=f"reconciler-{i}")
            for i in range(self.workers)
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            self.queue.close()

    async def _work(self, started: Callable[[ExecutionPlan], Awaitable[None]]) -> None:
        while True:
            key = await self.queue.get()
            try:
                await self.acting.wait()  # a replica that does not lead keeps its queue
                result = await self.reconcile(key)
                self.queue.forget(key)
                if result.requeue_after is not None:
                    self.queue.add_after(key, result.requeue_after)
                for plan in result.created_plans:
                    await started(plan)
            except client_.ApiException as exc:
                if client_.namespace_gone(exc):  # the namespace is going away with it all
                    continue
                metrics.RECONCILE_ERRORS.inc()
                delay = self.queue.retry(key)
                logger.error("reconcile of %s/%s failed, again in %.1fs: %s", *key, delay, exc)
            except Exception:
                metrics.RECONCILE_ERRORS.inc()
                delay = self.queue.retry(key)
                logger.exception("reconcile of %s/%s failed; again in %.1fs", *key, delay)
            finally:
                self.queue.done(key)

    # --- one reconcile ------------------------------------------------------------------

    def observe(self, key: GroupKey) -> list[lifecycle.Observed]:
        store = self.store
        observed = []
        for record in store.group(key):
            observed.append(
                lifecycle.Observed(
                    recommendation=store.model(RECOMMENDATIONS, record),
                    approval=store.child(APPROVALS, record),
                    plan=store.child(PLANS, record),
                )
            )
        return observed

    async def reconcile(self, key: GroupKey) -> Result:
        metrics.RECONCILES.inc()
        with metrics.RECONCILE_DURATION.time():
            return await self._reconcile(key)

    async def _reconcile(self, key: GroupKey) -> Result:
        group = self.observe(key)
        if not group:
            return Result()
        # The namespace is where dependsOn names are looked up: only read (all of it, a
        # cost that grows with the namespace) when a recommendation of the group has some.
        namespace = (
            self.store.in_namespace(key[0])
            if any(o.recommendation.spec.depends_on for o in group)
            else []
        )
        now = self.clock()
        desired = lifecycle.evaluate(group, namespace=namespace, policy=self.policy, now=now)
        acted = await asyncio.gather(*(self._act(o, desired[o.recommendation.name]) for o in group))
        expiries = [
            o.approval.spec.expires_at
            for o in group
            if o.approval is not None
            and desired[o.recommendation.name].status.phase is RecommendationPhase.AWAITING_APPROVAL
        ]
        requeue = None
        if expiries:
            requeue = max(0.0, (min(expiries) - now).total_seconds()) + 0.05
        if any(again for _, again in acted):
            requeue = min(requeue, CREATE_AGAIN_SECONDS) if requeue else CREATE_AGAIN_SECONDS
        plans = tuple(plan for plan, _ in acted if plan is not None)
        return Result(requeue_after=requeue, created_plans=plans)

    async def _act(
        self, observed: lifecycle.Observed, desired: lifecycle.Desired
    ) -> tuple[ExecutionPlan | None, bool]:
        """Make `desired` true for one recommendation: the plan it created, if any, and
        whether a create must be tried again (the old object of that name is going away)."""
        rec = observed.recommendation
        ns = rec.metadata.namespace
        approval = observed.approval
        created_plan: ExecutionPlan | None = None
        again = False
        if desired.delete_plan and observed.plan is not None:
            await self.client.delete(PLANS, ns, rec.name, uid=observed.plan.metadata.uid)
        if desired.create_approval is not None:  # a plan never exists without its approval
            if approval is not None:
                await self.client.delete(APPROVALS, ns, rec.name, uid=approval.metadata.uid)
            made = await self._create(APPROVALS, rec, desired.create_approval)
            again = made is None
            approval = made or desired.create_approval
        if desired.create_plan is not None:  # before the decision is recorded: no wait
            created_plan = await self._create(PLANS, rec, desired.create_plan)
            again = again or created_plan is None
        if (
            desired.create_approval is None
            and desired.approval_status is not None
            and approval is not None
        ):
            await self._write_status(APPROVALS, approval, desired.approval_status.to_wire())
            _observe_decision(approval, desired.approval_status)
        await self._write_status(RECOMMENDATIONS, rec, desired.status.to_wire())
        for event in desired.events:
            target = approval if event.on_approval else rec
            if target is not None:
                self._event(target, event)
        return created_plan, again

    async def _create(self, plural: str, owner: Recommendation, child: C) -> C | None:
        """Create `child` with its first status; the object as written, or None when the
        name is still taken by the old one going away."""
        ns = owner.metadata.namespace
        body = {
            "apiVersion": API_VERSION,
            "kind": child.kind,
            "metadata": {
                "name": child.metadata.name,
                "namespace": ns,
                "annotations": dict(child.metadata.annotations),
                "ownerReferences": [
                    client_.owner_reference(
                        {
                            "apiVersion": API_VERSION,
                            "kind": owner.kind,
                            "metadata": {"name": owner.name, "uid": owner.metadata.uid},
                        }
                    )
                ],
            },
            "spec": child.spec.to_wire(),
        }
        status = child.status.to_wire() if child.status is not None else None
        try:
            raw = await self.writer.create(plural, ns, body, status)
        except client_.ApiException as exc:
            if exc.status == 409:  # the old one is still going away: try again shortly
                return None
            raise
        return type(child).model_validate(raw)

    async def _write_status(
        self, plural: str, obj: Recommendation | Approval | ExecutionPlan, new: Mapping[str, Any]
    ) -> None:
        old = obj.status.to_wire() if obj.status is not None else None
        meta = obj.metadata
        await self.writer.write(plural, meta.namespace, meta.name, old, new, missing_ok=True)

    def _event(self, target: Recommendation | Approval, event: lifecycle.Event) -> None:
        if target.metadata.uid is None:
            return
        ref = events_.ObjectRef(
            API_VERSION,
            target.kind,
            target.metadata.namespace,
            target.metadata.name,
            target.metadata.uid,
        )
        # Named after the version of the object the transition was computed from: the
        # same evaluation posts the same event once, a later one (even of the same phase
        # again) posts its own. Not replayed after a restart (see README, Events).
        key = f"{target.metadata.resource_version or ''}|{event.key}"
        self.recorder.record(
            ref, reason=event.reason, message=event.message, key=key, type_=event.type.value
        )


CREATE_AGAIN_SECONDS: Final = 0.5
"""When a create found the name still taken (the old object is going away)."""


def _observe_decision(approval: Approval, status: ApprovalStatus) -> None:
    """A person's decision was just recorded: how long did it take?"""
    was = approval.status.phase if approval.status else ApprovalPhase.PENDING
    decided = status.phase in (ApprovalPhase.APPROVED, ApprovalPhase.REJECTED)
    if was is not ApprovalPhase.PENDING or not decided or status.decided_by == POLICY_DECIDER:
        return
    if status.decided_at is not None and status.requested_at is not None:
        wait = (status.decided_at - status.requested_at).total_seconds()
        metrics.APPROVAL_WAIT.labels(status.phase.value).observe(max(0.0, wait))
