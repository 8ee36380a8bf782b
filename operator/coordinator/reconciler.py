"""The reconciler: one customer's recommendations at a time, from observation to writes.

Every event about a Recommendation, Approval or ExecutionPlan puts its group — one
customer in one namespace — on a work queue. A worker takes the group and runs one
reconcile, a short numbered sequence:

1. observe: the group's recommendations, with the Approval and plan each owns, from
   the operator's in-memory indexes (no LIST per event) overlaid with what this
   process wrote last (the watch may lag behind its own writes);
2. compute: ``core.lifecycle.evaluate`` decides every status, approval and plan;
3. act: write each status that changed in one merge patch (none when nothing changed),
   create, withdraw or replace approvals, create or delete plans, post Events;
4. requeue: at the earliest expiry of a pending approval, so expiry needs no event.

A key added while it is being reconciled is reconciled again afterwards, never twice at
once. The work queue and the overlay are the only state; a restart rebuilds both.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

import pydantic

from coordinator import metrics
from coordinator.api.approval import POLICY_DECIDER, Approval, ApprovalPhase, ApprovalStatus
from coordinator.api.common import API_VERSION, format_time
from coordinator.api.plan import ExecutionPlan, PlanPhase
from coordinator.api.policy import ApprovalPolicy, NotifyEvent
from coordinator.api.recommendation import Recommendation, RecommendationPhase
from coordinator.core import approval as policy_
from coordinator.core import conflicts, lifecycle
from coordinator.core import policy as policies_
from coordinator.k8s import client as client_
from coordinator.k8s import events as events_

logger = logging.getLogger(__name__)

GroupKey = tuple[str, str]
"""(namespace, customerId)."""
ObjectKey = tuple[str, str]
"""(namespace, name)."""

RECOMMENDATIONS: Final = "recommendations"
APPROVALS: Final = "approvals"
PLANS: Final = "executionplans"

M = TypeVar("M", Recommendation, Approval, ExecutionPlan)
C = TypeVar("C", Approval, ExecutionPlan)


def _rv(obj: Recommendation | Approval | ExecutionPlan) -> int:
    raw = obj.metadata.resource_version
    return int(raw) if raw and raw.isdigit() else 0


_FIELDS_SETS: dict[frozenset[str], set[str]] = {}
OWN_ANNOTATIONS: Final = "optiinfra.io/"
"""In every annotation key the coordinator reads or writes (also kopf's, under
coordinator.optiinfra.io/)."""


def compact(obj: M) -> M:
    """`obj`, made to share with its likes what each parse gives it a copy of.

    The indexes hold every object of the three kinds, parsed. Every model instance
    carries the set of its field names that were given (about 400 bytes, the largest
    part of a parsed object); equal sets are shared: pydantic never changes the set of a
    frozen model in place (``model_copy`` copies it first), and all ours are frozen.
    Equal strings (customer, agent, messages, annotation keys...) are shared too, and
    annotations of others are dropped (`kubectl apply` keeps a copy of the whole manifest
    in one): the coordinator reads only its own, under optiinfra.io.
    """
    annotations = obj.metadata.annotations
    if any(OWN_ANNOTATIONS not in key for key in annotations):
        own = {k: v for k, v in annotations.items() if OWN_ANNOTATIONS in k}
        obj.metadata.__dict__["annotations"] = own
    _compact_model(obj)
    return obj


def _compact_model(model: pydantic.BaseModel) -> None:
    assert model.model_config.get("frozen"), f"{type(model).__name__} must be frozen"
    fields = model.__pydantic_fields_set__
    shared = _FIELDS_SETS.setdefault(frozenset(fields), fields)
    if shared is not fields:
        object.__setattr__(model, "__pydantic_fields_set__", shared)
    values = model.__dict__
    for key, value in values.items():
        values[key] = _compact_value(value)


def _compact_value(value: Any) -> Any:
    """Strings interned, models compacted; lists and dicts (made by the parse for the
    model's fields) get their strings interned, one level deep: what they hold of the
    raw body (free-form values) is left as it is."""
    if type(value) is str:
        return sys.intern(value)
    if isinstance(value, pydantic.BaseModel):
        _compact_model(value)
    elif type(value) is list:
        for index, item in enumerate(value):
            if type(item) is str:
                value[index] = sys.intern(item)
            elif isinstance(item, pydantic.BaseModel):
                _compact_model(item)
    elif type(value) is dict:
        interned = {
            sys.intern(k) if type(k) is str else k: sys.intern(v) if type(v) is str else v
            for k, v in value.items()
        }
        value.clear()
        value.update(interned)
    return value


class Overlay:
    """What this process wrote last, until the watch shows it (or something newer)."""

    def __init__(self) -> None:
        self._written: dict[tuple[str, str, str], Recommendation | Approval | ExecutionPlan] = {}

    def put(self, plural: str, obj: Recommendation | Approval | ExecutionPlan) -> None:
        self._written[(plural, obj.metadata.namespace, obj.metadata.name)] = obj

    def forget(self, plural: str, key: ObjectKey) -> None:
        self._written.pop((plural, *key), None)

    def latest(self, plural: str, obj: M) -> M:
        key = (plural, obj.metadata.namespace, obj.metadata.name)
        mine = self._written.get(key)
        if mine is None or mine.metadata.uid != obj.metadata.uid:
            return obj
        if _rv(mine) > _rv(obj):
            return mine  # type: ignore[return-value]
        del self._written[key]
        return obj


class WorkQueue:
    """Keys to reconcile: each at most once at a time, re-run if it changed meanwhile."""

    def __init__(self) -> None:
        self._queue: collections.deque[GroupKey] = collections.deque()
        self._queued: set[GroupKey] = set()
        self._active: set[GroupKey] = set()
        self._dirty: set[GroupKey] = set()
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

    def __len__(self) -> int:
        return len(self._queue)


@dataclasses.dataclass
class Indexes:
    """The operator's in-memory view, maintained by kopf from the watches."""

    recommendations: Mapping[GroupKey, Iterable[Recommendation]]
    namespaces: Mapping[str, Iterable[Recommendation]]
    approvals: Mapping[ObjectKey, Iterable[Approval]]
    plans: Mapping[ObjectKey, Iterable[ExecutionPlan]]
    policies: Mapping[str, Iterable[ApprovalPolicy]] = dataclasses.field(default_factory=dict)
    """The ApprovalPolicies of each namespace."""


def _owned_by(child: Approval | ExecutionPlan, owner: Recommendation) -> bool:
    return any(ref.uid == owner.metadata.uid for ref in child.metadata.owner_references)


def _first(values: Iterable[M] | None) -> M | None:
    return next(iter(values or ()), None)


class Reconciler:
    def __init__(
        self,
        *,
        client: client_.Client,
        recorder: events_.Recorder,
        policy: policy_.ApprovalPolicy,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        workers: int = 4,
    ) -> None:
        self.client = client
        self.recorder = recorder
        self.policy = policy
        self.clock = clock
        self.workers = workers
        self.queue = WorkQueue()
        self.overlay = Overlay()
        self.indexes: Indexes | None = None
        self._timers: dict[GroupKey, asyncio.TimerHandle] = {}
        self._customers: dict[ObjectKey, str] = {}
        """The customer of each recommendation present: its group, without a scan."""
        self._depends: dict[ObjectKey, tuple[str, ...]] = {}
        """The dependsOn of each recommendation that has one."""
        self._dependents: dict[ObjectKey, set[ObjectKey]] = {}
        """The recommendations that name each one in their dependsOn."""
        self.acting = asyncio.Event()
        """Set while this replica may write (it leads); the workers wait for it."""
        self.acting.set()
        self.notify: Callable[[str, list[str], str, bytes], None] | None = None
        """Sends a notification of approval policies (namespace, endpoints, event, body);
        never waits (see executors.notify)."""
        self.notify_lead = timedelta(hours=1)
        """How long before its expiry a pending approval is notified ApprovalExpiringSoon."""
        self._expiring_notified: set[str] = set()
        self.plan_created: Callable[[ExecutionPlan], Awaitable[None]] | None = None
        """Starts a plan this process just created, before its watch event does the same
        (starting is idempotent): an approved change does not wait for the watch."""

    # --- what triggers a reconcile ------------------------------------------------------

    def recommendation_changed(self, rec: Recommendation, *, deleted: bool = False) -> None:
        """A recommendation changed (or was deleted): its group, and the groups of the
        recommendations that depend on it."""
        ns = rec.metadata.namespace
        key = (ns, rec.name)
        self.queue.add((ns, rec.spec.customer_id))
        for dependency in self._depends.pop(key, ()):
            dependents = self._dependents.get((ns, dependency))
            if dependents is not None:
                dependents.discard(key)
                if not dependents:
                    del self._dependents[(ns, dependency)]
        if deleted:
            self._customers.pop(key, None)
            self.overlay.forget(RECOMMENDATIONS, key)
        else:
            self._customers[key] = rec.spec.customer_id
            if rec.spec.depends_on:
                self._depends[key] = tuple(rec.spec.depends_on)
                for dependency in rec.spec.depends_on:
                    self._dependents.setdefault((ns, dependency), set()).add(key)
        for dependent in self.dependents(key):
            customer = self._customers.get(dependent)
            if customer is not None:
                self.queue.add((ns, customer))

    def dependents(self, key: ObjectKey) -> list[ObjectKey]:
        """The recommendations whose dependsOn names recommendation `key`."""
        return sorted(self._dependents.get(key, ()))

    def find(self, key: ObjectKey) -> Recommendation | None:
        """Recommendation `key` as indexed (looked up in its group, not the namespace)."""
        assert self.indexes is not None
        customer = self._customers.get(key)
        if customer is None:
            return None
        group = self.indexes.recommendations.get((key[0], customer)) or ()
        return next((r for r in group if r.name == key[1]), None)

    def child_changed(self, child: Approval | ExecutionPlan, *, deleted: bool = False) -> None:
        self.queue.add((child.metadata.namespace, child.spec.customer_id))
        if deleted:
            plural = APPROVALS if isinstance(child, Approval) else PLANS
            self.overlay.forget(plural, (child.metadata.namespace, child.metadata.name))

    def _wake_at(self, key: GroupKey, when: datetime) -> None:
        loop = asyncio.get_running_loop()
        delay = max(0.0, (when - self.clock()).total_seconds()) + 0.05
        old = self._timers.get(key)
        if old is not None and old.when() <= loop.time() + delay:
            return
        if old is not None:
            old.cancel()
        self._timers[key] = loop.call_later(delay, self._fire, key)

    def _fire(self, key: GroupKey) -> None:
        self._timers.pop(key, None)
        self.queue.add(key)

    # --- the workers --------------------------------------------------------------------

    async def run(self) -> None:
        """Run the workers until cancelled."""
        tasks = [
            asyncio.create_task(self._work(), name=f"reconciler-{i}") for i in range(self.workers)
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            for timer in self._timers.values():
                timer.cancel()

    async def _work(self) -> None:
        while True:
            key = await self.queue.get()
            try:
                await self.acting.wait()  # a replica that does not lead keeps its queue
                await self.reconcile(key)
            except client_.ApiException as exc:
                if client_.namespace_gone(exc):  # the namespace is going away with it all
                    continue
                metrics.RECONCILE_ERRORS.inc()
                logger.error("reconcile of %s/%s failed, retrying in 1s: %s", *key, exc)
                asyncio.get_running_loop().call_later(1.0, self.queue.add, key)
            except Exception:
                metrics.RECONCILE_ERRORS.inc()
                logger.exception("reconcile of %s/%s failed; retrying in 1s", *key)
                asyncio.get_running_loop().call_later(1.0, self.queue.add, key)
            finally:
                self.queue.done(key)

    # --- one reconcile ------------------------------------------------------------------

    def observe(self, key: GroupKey) -> list[lifecycle.Observed]:
        assert self.indexes is not None, "bind the indexes before reconciling"
        idx = self.indexes
        observed = []
        for indexed in idx.recommendations.get(key) or ():
            rec = self.overlay.latest(RECOMMENDATIONS, indexed)
            name = (rec.metadata.namespace, rec.name)
            approval = _first(idx.approvals.get(name))
            plan = _first(idx.plans.get(name))
            approval = self.overlay.latest(APPROVALS, approval) if approval else None
            plan = self.overlay.latest(PLANS, plan) if plan else None
            observed.append(
                lifecycle.Observed(
                    recommendation=rec,
                    approval=approval if approval and _owned_by(approval, rec) else None,
                    plan=plan if plan and _owned_by(plan, rec) else None,
                )
            )
        return observed

    async def reconcile(self, key: GroupKey) -> None:
        assert self.indexes is not None
        metrics.RECONCILES.inc()
        with metrics.RECONCILE_DURATION.time():
            await self._reconcile(key)

    async def _reconcile(self, key: GroupKey) -> None:
        assert self.indexes is not None
        group = self.observe(key)
        if not group:
            return
        # The namespace is where dependsOn names are looked up: only read (all of it, a
        # cost that grows with the namespace) when a recommendation of the group has some.
        namespace = (
            [
                self.overlay.latest(RECOMMENDATIONS, r)
                for r in self.indexes.namespaces.get(key[0]) or ()
            ]
            if any(o.recommendation.spec.depends_on for o in group)
            else []
        )
        now = self.clock()
        desired = lifecycle.evaluate(
            group,
            namespace=namespace,
            policy=self.policy,
            now=now,
            policies=list(self.indexes.policies.get(key[0]) or ()),  # approval policies (14)
        )
        await asyncio.gather(*(self._act(o, desired[o.recommendation.name]) for o in group))
        expiries = [
            o.approval.spec.expires_at
            for o in group
            if o.approval is not None
            and desired[o.recommendation.name].status.phase is RecommendationPhase.AWAITING_APPROVAL
        ]
        if expiries:
            self._wake_at(key, min(expiries))
        self._notify_expiring(group, desired, now=now)  # approval policies (issue 14)

    async def _act(self, observed: lifecycle.Observed, desired: lifecycle.Desired) -> None:
        rec = observed.recommendation
        ns = rec.metadata.namespace
        approval = observed.approval
        if desired.delete_plan and observed.plan is not None:
            await self.client.delete(PLANS, ns, rec.name, uid=observed.plan.metadata.uid)
            self.overlay.forget(PLANS, (ns, rec.name))
        if desired.create_approval is not None:  # a plan never exists without its approval
            if approval is not None:
                await self.client.delete(APPROVALS, ns, rec.name, uid=approval.metadata.uid)
            approval = await self._create(APPROVALS, rec, desired.create_approval)
        if desired.create_plan is not None:  # before the decision is recorded: no wait
            plan = await self._create(PLANS, rec, desired.create_plan)
            if plan.metadata.uid is not None and self.plan_created is not None:
                await self.plan_created(plan)
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
            if not event.on_approval:  # approval policies (issue 14): notifications
                self._notify(rec, approval, event.reason, event.message)

    # --- approval policies (issue 14): notifications, never waited for -------------------

    def _notify(
        self, rec: Recommendation, approval: Approval | None, reason: str, message: str
    ) -> None:
        event = policies_.NOTIFY_EVENTS.get(reason)
        if event is None:
            return
        self._send(rec, approval, event, message)

    def _send(
        self,
        rec: Recommendation,
        approval: Approval | None,
        event: NotifyEvent,
        message: str,
    ) -> None:
        if self.notify is None or self.indexes is None:
            return
        policies = list(self.indexes.policies.get(rec.metadata.namespace) or ())
        if not policies:
            return
        risk = approval.spec.risk_level if approval is not None else rec.spec.risk_level
        merged = policies_.governing(policies, rec.spec, risk=risk)
        targets = policies_.notify_targets(merged, event)
        if targets:
            body = policies_.notification(
                event,
                namespace=rec.metadata.namespace,
                recommendation=rec.name,
                customer_id=rec.spec.customer_id,
                message=message,
                at=self.clock(),
            )
            self.notify(rec.metadata.namespace, targets, event.value, body)

    def _notify_expiring(
        self,
        group: list[lifecycle.Observed],
        desired: Mapping[str, lifecycle.Desired],
        *,
        now: datetime,
    ) -> None:
        """ApprovalExpiringSoon, once per approval (per process), `notify_lead` before."""
        if self.notify is None:
            return
        for o in group:
            approval = o.approval
            if approval is None or approval.metadata.uid is None:
                continue
            if desired[o.recommendation.name].status.phase is not (
                RecommendationPhase.AWAITING_APPROVAL
            ):
                continue
            expires = approval.spec.expires_at
            if policies_.expiring_soon(expires, lead=self.notify_lead, now=now):
                if approval.metadata.uid not in self._expiring_notified:
                    self._expiring_notified.add(approval.metadata.uid)
                    self._send(
                        o.recommendation,
                        approval,
                        NotifyEvent.APPROVAL_EXPIRING_SOON,
                        f"approval {approval.metadata.name} expires at {format_time(expires)}",
                    )
            elif now < expires - self.notify_lead:
                self._wake_at(
                    (o.recommendation.metadata.namespace, o.recommendation.spec.customer_id),
                    expires - self.notify_lead,
                )

    async def _create(self, plural: str, owner: Recommendation, child: C) -> C:
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
        try:
            raw = await self.client.create(plural, ns, body)
        except client_.ApiException as exc:
            if exc.status == 409:  # the old one is still going away: try again shortly
                asyncio.get_running_loop().call_later(
                    0.5, self.queue.add, (ns, owner.spec.customer_id)
                )
                return child
            raise
        if child.status is not None:
            raw = await self.client.patch_status(
                plural, ns, child.metadata.name, child.status.to_wire()
            )
        parsed = type(child).model_validate(raw)
        self.overlay.put(plural, parsed)
        return parsed

    async def _write_status(
        self, plural: str, obj: Recommendation | Approval | ExecutionPlan, new: Mapping[str, Any]
    ) -> None:
        old = obj.status.to_wire() if obj.status is not None else None
        patch = client_.status_patch(old, new)
        if patch is None:
            return
        try:
            raw = await self.client.patch_status(
                plural, obj.metadata.namespace, obj.metadata.name, patch
            )
        except client_.ApiException as exc:
            if exc.status == 404:  # deleted meanwhile: nothing to record
                return
            raise
        self.overlay.put(plural, type(obj).model_validate(raw))

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

    # --- approval policies (issue 14): the one place a plan's start is gated -------------

    def may_start(self, rec_key: ObjectKey) -> tuple[bool, str, datetime | None]:
        """Whether plan `rec_key` may start now: its dependencies have succeeded, and the
        change windows and the customer's budget of the policies that select it allow it
        (core.policy.gate). Else why, and when to ask again (None: on the next change)."""
        ready, why = self.dependencies_succeeded(rec_key)
        if not ready:
            return ready, why, None
        assert self.indexes is not None
        rec = self.find(rec_key)
        policies = list(self.indexes.policies.get(rec_key[0]) or ())
        if rec is None or not policies:
            return True, "", None
        approval = _first(self.indexes.approvals.get(rec_key))
        risk = approval.spec.risk_level if approval is not None else rec.spec.risk_level
        merged = policies_.governing(policies, rec.spec, risk=risk)
        if not merged.windows and merged.max_concurrent_plans is None:
            return True, "", None
        running: list[str] = []
        ready_plans: list[Recommendation] = []
        group = self.indexes.recommendations.get((rec_key[0], rec.spec.customer_id)) or ()
        for other in group:
            plan = _first(self.indexes.plans.get((rec_key[0], other.name)))
            if plan is None:
                continue
            plan = self.overlay.latest(PLANS, plan)
            if plan.status_phase in (PlanPhase.RUNNING, PlanPhase.ROLLING_BACK):
                running.append(other.name)
            elif (
                plan.status_phase is PlanPhase.PENDING
                and not plan.spec.suspend
                and not plan.spec.abort
            ):
                ready_plans.append(other)
        waiting = [r.name for r in sorted(ready_plans, key=conflicts.rank)]
        verdict = policies_.gate(
            rec_key[1], merged, now=self.clock(), running=running, waiting=waiting
        )
        if isinstance(verdict, policies_.Wait):
            names = ", ".join(merged.policies)
            return False, f"waiting: {verdict.reason} (policy {names})", verdict.until
        return True, "", None

    def dependencies_succeeded(self, rec_key: ObjectKey) -> tuple[bool, str]:
        """Whether every recommendation the given one depends on has Succeeded, and if not why."""
        assert self.indexes is not None
        rec = self.find(rec_key)
        if rec is not None and not rec.spec.depends_on:  # most depend on nothing
            return True, ""
        by_name = {r.name: r for r in self.indexes.namespaces.get(rec_key[0]) or ()}
        rec = by_name.get(rec_key[1])
        if rec is None:
            return True, ""
        waiting = [
            dep
            for dep in rec.spec.depends_on
            if dep not in by_name
            or self.overlay.latest(RECOMMENDATIONS, by_name[dep]).phase
            is not RecommendationPhase.SUCCEEDED
        ]
        if waiting:
            return False, f"waiting for {', '.join(sorted(waiting))} to succeed"
        return True, ""


def _observe_decision(approval: Approval, status: ApprovalStatus) -> None:
    """A person's decision was just recorded: how long did it take?"""
    was = approval.status.phase if approval.status else ApprovalPhase.PENDING
    decided = status.phase in (ApprovalPhase.APPROVED, ApprovalPhase.REJECTED)
    if was is not ApprovalPhase.PENDING or not decided or status.decided_by == POLICY_DECIDER:
        return
    if status.decided_at is not None and status.requested_at is not None:
        wait = (status.decided_at - status.requested_at).total_seconds()
        metrics.APPROVAL_WAIT.labels(status.phase.value).observe(max(0.0, wait))
