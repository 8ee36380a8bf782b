"""The reconciler: one customer's recommendations at a time, from observation to writes.

Every change of a Recommendation, Approval or ExecutionPlan in the Store puts its group —
one customer in one namespace — on the work queue, except the reconciler's own writes to
the group it is reconciling (``workqueue.Reconciling``), through one function with the
change's origin (``WorkQueue.enqueue``, called by ``parts.dispatch`` with the change the
Store answered, ``core.origin``). A worker of ``parts.dispatch`` takes the group and
hands it to `work`: one reconcile, with a context of its own passed down to every
write, a short numbered sequence:

1. observe: the group's recommendations, with the Approval and plan each owns, from the
   Store (no LIST per event), which holds the operator's own writes as soon as they are
   answered (the watch may lag behind them); ended recommendations found settled last
   time, with the same inputs, are left out, and their approval and plan leave memory
   (`Store.evict`: read again only if one of them, or the recommendation, changes);
2. compute: ``core.lifecycle.evaluate`` decides every status, approval and plan;
3. act: write each status that changed in one merge patch (``k8s.status.StatusWriter``),
   create, withdraw or replace approvals, create or delete plans, post Events;
4. return, as values (`Result`, computed by ``coordinator.followup``): when to run
   again — at the earliest expiry of a pending approval, so expiry needs no event, or
   when an ApprovalPolicy's ApprovalExpiringSoon is due; the plans to start — those it
   created, and in a namespace with ApprovalPolicies the group's pending plans (a budget
   freed, a window opened: see `plan_gate`); and its writes: their versions and the
   changes they made in the Store, which the worker's caller dispatches (nothing of a
   reconcile calls back up into the parts).

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
import dataclasses
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from coordinator import followup, metrics, plangate, settled, workqueue
from coordinator import notifications as notifications_
from coordinator import store as store_
from coordinator.api.approval import Approval
from coordinator.api.common import (
    API_VERSION,
    APPROVALS,
    PLANS,
    RECOMMENDATIONS,
)
from coordinator.api.plan import ExecutionPlan
from coordinator.api.policy import ApprovalPolicy
from coordinator.api.recommendation import Recommendation, RecommendationPhase
from coordinator.core import approval as policy_
from coordinator.core import conflicts, lifecycle
from coordinator.k8s import client as client_
from coordinator.k8s import events as events_
from coordinator.k8s import status as status_

logger = logging.getLogger(__name__)

CREATE_AGAIN_SECONDS = followup.CREATE_AGAIN_SECONDS
SETTLE_AGAIN_SECONDS = followup.SETTLE_AGAIN_SECONDS

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
        """The reconciler's own writer: each write's answer comes back as its return value
        and goes to the reconcile's context (`Reconciling.written`), which puts it in the
        Store as an own write and keeps its change for the `Result`."""
        self._settled: dict[GroupKey, dict[str, tuple[Any, ...]]] = {}
        """Per group, its recommendations (by uid) whose last evaluation decided nothing to
        do, and the inputs it was decided from (``coordinator.settled``): with the same
        inputs they are not decided again (most of a group is settled when one of it
        changes; deciding was most of a reconcile's CPU). Those no longer in the group
        (deleted) leave it when the group is observed next (`observe`)."""
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

    # --- one key, for a worker (``parts.dispatch``) --------------------------------------

    async def work(self, key: GroupKey) -> Result:
        """Reconcile group `key`, taken from the queue by a worker, in a context of its own
        (passed down to every write); what it gives back, with its writes and their
        changes in the Store, for the worker's caller to dispatch (it calls `queue.done`
        after). A failure is retried after the key's backoff; nothing is raised."""
        ctx = Reconciling(key, self.store)
        result = Result()
        try:
            await self.acting.wait()  # a replica that does not lead keeps its queue
            if not self.store.drives(key):
                return result  # a customer this shard let go (``parts.shards``)
            result = await self.reconcile(ctx)
            self.queue.forget(key)
            if result.requeue_after is not None:
                self.queue.add_after(key, result.requeue_after)
        except client_.ApiException as exc:
            if not client_.namespace_gone(exc):  # else the namespace is going away with it all
                metrics.RECONCILE_ERRORS.inc()
                delay = self.queue.retry(key)
                logger.error("reconcile of %s/%s failed, again in %.1fs: %s", *key, delay, exc)
        except Exception:
            metrics.RECONCILE_ERRORS.inc()
            delay = self.queue.retry(key)
            logger.exception("reconcile of %s/%s failed; again in %.1fs", *key, delay)
        return dataclasses.replace(result, writes=frozenset(ctx.writes), changes=tuple(ctx.changes))

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
        records = store.group(key)
        known = self._settled.get(key)
        if known is not None:  # a recommendation deleted since: forgotten
            for uid in known.keys() - {record.uid for record in records}:
                del known[uid]
            if not records:
                del self._settled[key]
        for record in records:
            approval = store.child_record(APPROVALS, record)
            plan = store.child_record(PLANS, record)
            ended = settled.ended_inputs(record, approval, plan, policies)
            if ended is not None and known is not None and known.get(record.uid) == ended:
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
        # The namespace is where dependsOn names are looked up and agents' realised savings
        # are read (--calibrate-savings): only read (all of it, a cost that grows with the
        # namespace) when a recommendation of the group has some, or to calibrate.
        namespace = (
            self.store.in_namespace(key[0])
            if self.policy.calibrate_savings or any(o.recommendation.spec.depends_on for o in group)
            else []
        )
        now = self.clock()
        inputs: dict[str, tuple[Any, ...]] = {}
        settled_here = self._settled.setdefault(key, {})

        def known(
            o: lifecycle.Observed, phase: RecommendationPhase, verdict: conflicts.Verdict | None
        ) -> lifecycle.Desired | None:
            rec = o.recommendation
            seen = inputs[rec.name] = settled.observed_inputs(o, phase, verdict, context)
            if rec.status is None or settled_here.get(rec.metadata.uid or "") != seen:
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
                settled_here[uid] = inputs[o.recommendation.name]
                rec_key = (o.recommendation.metadata.namespace or "", o.recommendation.name)
                record = self.store.record(RECOMMENDATIONS, rec_key)
                if wanted.status.phase.ended and record is not None and record.uid == uid:
                    self.store.evict(record)  # its approval and plan: out of memory
            else:
                settled_here.pop(uid, None)
                ending = ending or wanted.status.phase.ended
        acted = await asyncio.gather(
            *(self._act(ctx, o, desired[o.recommendation.name], policies) for o in group)
        )
        plans = tuple(plan for plan, _ in acted if plan is not None)
        requeue = followup.requeue_after(
            group,
            desired,
            policies,
            self.notifications,
            now=now,
            create_again=any(again for _, again in acted),
            ending=ending,
        )
        # In a namespace with ApprovalPolicies a budget freed or a window opened: the
        # group's pending plans ask the gate again.
        pending = followup.pending_plans(group, plans) if policies else ()
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
            followup.observe_decision(approval, desired.approval_status)
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
        body = followup.child_body(owner, child)
        status = child.status.to_wire() if child.status is not None else None
        try:
            answers = await self.writer.create(plural, ns, body, status)
        except client_.ApiException as exc:
            if exc.status == 409:  # the old one is still going away: try again shortly
                return None
            raise
        for raw in answers:  # the create's own watch event is old
            ctx.written(plural, raw)
        return type(child).model_validate(answers[-1])

    async def _write_status(
        self,
        ctx: Reconciling,
        plural: str,
        obj: Recommendation | Approval | ExecutionPlan,
        new: Mapping[str, Any],
    ) -> None:
        old = obj.status.to_wire() if obj.status is not None else None
        meta = obj.metadata
        raw = await self.writer.write(plural, meta.namespace, meta.name, old, new, missing_ok=True)
        if raw is not None:
            ctx.written(plural, raw)

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
