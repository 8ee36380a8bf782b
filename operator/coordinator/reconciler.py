"""The reconciler: one customer's recommendations at a time, from observation to writes.

Every change of a Recommendation, Approval or ExecutionPlan in the Store puts its group —
one customer in one namespace — on the work queue, except the reconciler's own writes to
the group it is reconciling (``workqueue.Reconciling``), through one function with the
change's origin (`Reconciler.enqueue`, ``core.origin``). A worker takes the group and
runs one reconcile, with a context of its own passed down to every write, a short
numbered sequence:

1. observe: the group's recommendations, with the Approval and plan each owns, from the
   Store (no LIST per event), which holds the operator's own writes as soon as they are
   answered (the watch may lag behind them); ended recommendations found settled last
   time, with the same inputs, are left out, and their approval and plan leave memory
   (`Store.evict`: read again only if one of them, or the recommendation, changes);
2. compute: ``core.lifecycle.evaluate`` decides every status, approval and plan;
3. act: write each status that changed in one merge patch (``k8s.status.StatusWriter``),
   create, withdraw or replace approvals, create or delete plans, post Events;
4. return when to run again: at the earliest expiry of a pending approval, so expiry
   needs no event (`Result.requeue_after`), or when an ApprovalPolicy's
   ApprovalExpiringSoon is due; and the plans to start: those it created, and in a
   namespace with ApprovalPolicies the group's pending plans (a budget freed, a window
   opened: see `plan_gate`).

`plan_gate` asks the one place a plan's start is gated (``coordinator.plangate``); a
plan held by a window puts its group back on the queue for when the window opens or
ends. What a reconcile decided is told to the ApprovalPolicies' endpoints by
``coordinator.notifications``.

A key added while it is being reconciled is reconciled again afterwards, never twice at
once; a reconcile that raises is tried again after a per-key exponential backoff
(`WorkQueue.retry`, ``api.defaults.RECONCILE_RETRY``). Besides the Store and the queue
(``coordinator.workqueue``), the one state kept from one reconcile to the next is
which ended recommendations are settled, and from which inputs (``coordinator.settled``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from coordinator import metrics, plangate, settled, workqueue
from coordinator import notifications as notifications_
from coordinator import store as store_
from coordinator.api.approval import POLICY_DECIDER, Approval, ApprovalPhase, ApprovalStatus
from coordinator.api.common import (
    API_VERSION,
    APPROVALS,
    ENDPOINTS,
    PLANS,
    POLICIES,
    RECOMMENDATIONS,
)
from coordinator.api.plan import ExecutionPlan, PlanPhase
from coordinator.api.policy import ApprovalPolicy
from coordinator.api.recommendation import Recommendation, RecommendationPhase
from coordinator.core import approval as policy_
from coordinator.core import conflicts, lifecycle
from coordinator.core.origin import Origin, waits
from coordinator.k8s import client as client_
from coordinator.k8s import events as events_
from coordinator.k8s import status as status_

logger = logging.getLogger(__name__)

GroupKey = store_.GroupKey
ObjectKey = store_.ObjectKey

C = TypeVar("C", Approval, ExecutionPlan)

Reconciling = workqueue.Reconciling
Result = workqueue.Result
WorkQueue = workqueue.WorkQueue


class Reconciler:
    """Reconciles customer groups from the Store; writes through the StatusWriter."""

    def __init__(
        self,
        *,
        client: client_.Client,
        recorder: events_.Recorder,
        policy: policy_.ApprovalPolicy,
        store: store_.Store,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        workers: int = 4,
    ) -> None:
        self.client = client
        self.recorder = recorder
        self.policy = policy
        self.store = store
        self.writer = status_.StatusWriter(client)
        """The reconciler's own writer: each write's answer goes to the reconcile's context
        (`Reconciling.written`), which puts it in the Store as an own write."""
        self._settled: dict[str, tuple[Any, ...]] = {}
        """Recommendations (by uid) whose last evaluation decided nothing to do, and the
        inputs it was decided from (`_inputs`): with the same inputs they are not decided
        again (most of a group is settled when one of it changes; deciding was most of a
        reconcile's CPU)."""
        self.clock = clock
        self.workers = workers
        self.queue = WorkQueue()
        self.acting = asyncio.Event()
        """Set while this replica may write (it leads); the workers wait for it."""
        self.acting.set()
        now = lambda: self.clock()  # noqa: E731, PLW0108 - `clock` may be replaced (tests)
        self.notifications = notifications_.Notifications(clock=now)
        """The ApprovalPolicies' notifications of what a reconcile decided."""
        self.gate = plangate.PlanGate(store, clock=now)
        """Whether a plan may start (`plan_gate`)."""

    # --- what triggers a reconcile ------------------------------------------------------

    def enqueue(self, plural: str, record: store_.Record, deleted: bool, origin: Origin) -> None:
        """The one place a change of the Store becomes queue keys: the groups it concerns
        — its own, and for a recommendation the groups of those that depend on it; for an
        ApprovalPolicy every group of its namespace; an AgentEndpoint none. Where it came
        from decides the rest (``core.origin``): a listing's keys wait behind the changes
        of now; a change of a group being reconciled runs it again afterwards, unless it
        is one of that reconcile's own writes (``workqueue.Reconciling``)."""
        if plural == ENDPOINTS:
            return
        backlog = waits(origin)
        if plural == POLICIES:
            for key in self.store.groups_in(record.namespace):
                self.queue.add(key, backlog=backlog)
            return
        if deleted and plural == RECOMMENDATIONS:
            self._settled.pop(record.uid, None)
        change = (plural, record.key, -1 if deleted else record.rv)
        self.queue.add((record.namespace, record.customer), backlog=backlog, change=change)
        if plural != RECOMMENDATIONS:
            return
        for dependent in self.store.dependents(record.key):
            customer = self.store.customer_of(dependent)
            if customer is not None:
                self.queue.add((record.namespace, customer), backlog=backlog)

    # Why a reconcile's own writes do not run it again: the reconcile that wrote them
    # computed the group's whole desired state from what it observed, so running it again
    # right away would only find nothing to do (it was one extra reconcile of the whole
    # group per write; the profile put reconciles at a third of the operator's CPU). The
    # groups that depend on it are still queued, and anyone else's change (a watch event
    # at another version, a write of the runner) runs the group again.

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
            ctx = Reconciling(key, self.store)  # this reconcile's own state, passed down
            try:
                await self.acting.wait()  # a replica that does not lead keeps its queue
                result = await self.reconcile(ctx)
                self.queue.forget(key)
                if result.requeue_after is not None:
                    self.queue.add_after(key, result.requeue_after)
                for plan in (*result.created_plans, *result.pending_plans):
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
                self.queue.done(key, ctx.writes)

    # --- one reconcile ------------------------------------------------------------------

    async def observe(
        self, key: GroupKey, policies: tuple[tuple[str, str | None], ...] = ()
    ) -> list[lifecycle.Observed]:
        """The group's recommendations with the Approval and plan each owns — but not the
        ended ones settled from the same inputs as last time (`policies` among them): they
        take no part in anything (conflicts.evaluate gives them no verdict; a dependency
        on one is looked up in the namespace), and their approval and plan may have left
        memory (`Store.evict`). An evicted one that is needed is read again."""
        store = self.store
        observed = []
        for record in store.group(key):
            approval = store.child_record(APPROVALS, record)
            plan = store.child_record(PLANS, record)
            ended = settled.ended_inputs(record, approval, plan, policies)
            if ended is not None and self._settled.get(record.uid) == ended:
                continue
            observed.append(
                lifecycle.Observed(
                    recommendation=store.model(RECOMMENDATIONS, record),
                    approval=await store.fetch(APPROVALS, approval) if approval else None,
                    plan=await store.fetch(PLANS, plan) if plan else None,
                )
            )
        return observed

    async def reconcile(self, ctx: Reconciling | GroupKey) -> Result:
        """One reconcile, in the worker's context (or, given a group's key, one of its own)."""
        if not isinstance(ctx, Reconciling):
            ctx = Reconciling(ctx, self.store)
        metrics.RECONCILES.inc()
        with metrics.RECONCILE_DURATION.time():
            return await self._reconcile(ctx)

    async def _reconcile(self, ctx: Reconciling) -> Result:
        key = ctx.key
        policies = self.store.policies(key[0])
        context = tuple((p.metadata.name, p.metadata.resource_version) for p in policies)
        group = await self.observe(key, context)
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
        inputs: dict[str, tuple[Any, ...]] = {}

        def known(
            o: lifecycle.Observed, phase: RecommendationPhase, verdict: conflicts.Verdict | None
        ) -> lifecycle.Desired | None:
            rec = o.recommendation
            seen = inputs[rec.name] = settled.observed_inputs(o, phase, verdict, context)
            if rec.status is None or self._settled.get(rec.metadata.uid or "") != seen:
                return None
            return lifecycle.Desired(status=rec.status)  # what it decided last time: nothing

        desired = lifecycle.evaluate(
            group,
            namespace=namespace,
            policy=self.policy,
            now=now,
            policies=policies,
            known=known,
        )
        ending = False  # one is written ended now: a later reconcile lets its objects go
        for o in group:  # remember which are settled, and by which inputs
            uid = o.recommendation.metadata.uid or ""
            wanted = desired[o.recommendation.name]
            if lifecycle.settled(o, wanted):
                self._settled[uid] = inputs[o.recommendation.name]
                rec_key = (o.recommendation.metadata.namespace or "", o.recommendation.name)
                record = self.store.record(RECOMMENDATIONS, rec_key)
                if wanted.status.phase.ended and record is not None and record.uid == uid:
                    self.store.evict(record)  # its approval and plan: out of memory
            else:
                self._settled.pop(uid, None)
                ending = ending or wanted.status.phase.ended
        acted = await asyncio.gather(
            *(self._act(ctx, o, desired[o.recommendation.name], policies) for o in group)
        )
        expiries = []
        for o in group:  # when a pending approval expires, or is to be told expiring soon
            wanted = desired[o.recommendation.name]
            if wanted.status.phase is not RecommendationPhase.AWAITING_APPROVAL:
                continue
            if wanted.create_approval is not None:  # created now: no watch event brings it back
                expires = wanted.create_approval.spec.expires_at
                expiries.append(expires)
                if policies:
                    expiries.append(max(now, expires - self.notifications.lead))
            elif o.approval is not None:
                expiries.append(o.approval.spec.expires_at)
        if policies:
            expiries.extend(self.notifications.expiring(group, desired, policies, now=now))
        requeue = None
        if expiries:
            requeue = max(0.0, (min(expiries) - now).total_seconds()) + 0.05
        if any(again for _, again in acted):
            requeue = min(requeue, CREATE_AGAIN_SECONDS) if requeue else CREATE_AGAIN_SECONDS
        if ending:
            requeue = min(requeue, SETTLE_AGAIN_SECONDS) if requeue else SETTLE_AGAIN_SECONDS
        plans = tuple(plan for plan, _ in acted if plan is not None)
        pending: tuple[ExecutionPlan, ...] = ()
        if policies:  # a budget freed or a window opened: the gate is asked again
            created = {p.metadata.name for p in plans}
            pending = tuple(
                o.plan
                for o in group
                if o.plan is not None
                and o.plan.metadata.name not in created
                and o.plan.status_phase is PlanPhase.PENDING
                and not o.plan.spec.suspend
            )
        return Result(requeue_after=requeue, created_plans=plans, pending_plans=pending)

    async def _act(
        self,
        ctx: Reconciling,
        observed: lifecycle.Observed,
        desired: lifecycle.Desired,
        policies: list[ApprovalPolicy],
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
            made = await self._create(ctx, APPROVALS, rec, desired.create_approval)
            again = made is None
            approval = made or desired.create_approval
        if desired.create_plan is not None:  # before the decision is recorded: no wait
            created_plan = await self._create(ctx, PLANS, rec, desired.create_plan)
            again = again or created_plan is None
        if (
            desired.create_approval is None
            and desired.approval_status is not None
            and approval is not None
        ):
            await self._write_status(ctx, APPROVALS, approval, desired.approval_status.to_wire())
            _observe_decision(approval, desired.approval_status)
        await self._write_status(ctx, RECOMMENDATIONS, rec, desired.status.to_wire())
        for event in desired.events:
            target = approval if event.on_approval else rec
            if target is not None:
                self._event(target, event)
            if policies and not event.on_approval:
                self.notifications.event(rec, approval, policies, event.reason, event.message)
        return created_plan, again

    def plan_gate(self, key: ObjectKey) -> tuple[bool, str, datetime | None]:
        """Whether plan `key` may start now (``coordinator.plangate``)."""
        return self.gate.check(key)

    def recheck_at(self, key: GroupKey, when: datetime) -> None:
        """Reconcile group `key` again at `when` (a window opens or ends): its pending
        plans are then asked `plan_gate` again."""
        delay = max(0.0, (when - self.clock()).total_seconds()) + 0.05
        self.queue.add_after(key, delay)

    async def _create(
        self, ctx: Reconciling, plural: str, owner: Recommendation, child: C
    ) -> C | None:
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
            raw = await self.writer.create(plural, ns, body, status, written=ctx.written)
        except client_.ApiException as exc:
            if exc.status == 409:  # the old one is still going away: try again shortly
                return None
            raise
        return type(child).model_validate(raw)

    async def _write_status(
        self,
        ctx: Reconciling,
        plural: str,
        obj: Recommendation | Approval | ExecutionPlan,
        new: Mapping[str, Any],
    ) -> None:
        old = obj.status.to_wire() if obj.status is not None else None
        meta = obj.metadata
        await self.writer.write(
            plural, meta.namespace, meta.name, old, new, missing_ok=True, written=ctx.written
        )

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
        # again) posts its own. Not replayed after a restart (see docs/design.md, Events).
        key = f"{target.metadata.resource_version or ''}|{event.key}"
        self.recorder.record(
            ref, reason=event.reason, message=event.message, key=key, type_=event.type.value
        )


CREATE_AGAIN_SECONDS: Final = 0.5
"""When a create found the name still taken (the old object is going away)."""
SETTLE_AGAIN_SECONDS: Final = 1.0
"""When a recommendation was written ended: the group is reconciled again, finds it
settled, and lets its approval and plan go (`Store.evict`); nothing else might bring
the group back."""


def _observe_decision(approval: Approval, status: ApprovalStatus) -> None:
    """A person's decision was just recorded: how long did it take?"""
    was = approval.status.phase if approval.status else ApprovalPhase.PENDING
    decided = status.phase in (ApprovalPhase.APPROVED, ApprovalPhase.REJECTED)
    if was is not ApprovalPhase.PENDING or not decided or status.decided_by == POLICY_DECIDER:
        return
    if status.decided_at is not None and status.requested_at is not None:
        wait = (status.decided_at - status.requested_at).total_seconds()
        metrics.APPROVAL_WAIT.labels(status.phase.value).observe(max(0.0, wait))
