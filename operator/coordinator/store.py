"""The Store: what the operator knows of its kinds, compact, in one place.

Its one job: hold the objects (one ``records.Record`` each: the fields looked up by, the
rest packed) and answer each change with a `Change`: the record, and where the change
came from (``core.origin``: listed, watched, or the answer of an own write, `own_write`).
It calls nobody: whoever applies a change gets it back and dispatches it
(``parts.dispatch.Dispatch.deliver``, the reconcile's context ``workqueue.Reconciling``,
the runner's and daemons' writes through ``coordinator.outbox``).
No pydantic model or watch response is kept: a reconcile materialises its group's
models (`recommendation`, `approval`, `plan`) through a small cache.

It tracks the resourceVersions of the operator's own writes (`own_write`): a watch event
older than what it holds is ignored, so nothing decides from a copy older than its write.

ApprovalPolicies (by namespace) and AgentEndpoints (by name) are kept the same way.

Approvals and plans of ended, settled recommendations leave memory (`evict`): their
records stay as stubs (name, uid, resourceVersion, owner, phase) and `fetch` reads one
again when needed; a watch event of an evicted object brings its body back.

It keeps the dependency maps (``dependsOn``) and the counts the metrics read (copies).

Only the event loop changes it. With shards, it takes in only the customers this
replica drives (`drives`) and forgets those it lets go (`drop`)."""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Mapping
from typing import Any, Final, Generic, TypeVar

from coordinator.api.approval import Approval, ApprovalPhase
from coordinator.api.common import (
    APPROVALS,
    ENDPOINTS,
    PLANS,
    POLICIES,
    RECOMMENDATIONS,
)
from coordinator.api.endpoint import AgentEndpoint
from coordinator.api.plan import ExecutionPlan, PlanPhase
from coordinator.api.policy import ApprovalPolicy
from coordinator.api.recommendation import Recommendation
from coordinator.core.origin import Origin
from coordinator.records import Change, EvictedError, ObjectKey, Packer, Record, strip, version

__all__ = [
    "AT_REST",
    "KINDS",
    "Change",
    "EvictedError",
    "GroupKey",
    "ObjectKey",
    "Origin",
    "Packer",
    "Record",
    "Store",
    "strip",
    "version",
]

GroupKey = tuple[str, str]
"""(namespace, customerId)."""

M = TypeVar("M", Recommendation, Approval, ExecutionPlan, ApprovalPolicy, AgentEndpoint)

MODEL_CACHE: Final = 4096
"""Models materialised lately, by (uid, resourceVersion), least recently used first out:
it must hold the objects of the groups that change together (~2 400 at 20/s over 50
customers; with 2 048 every reconcile parsed every object, the largest cost profiled). A
version replaced by a newer one leaves at once. 7 to 12 KB a model (measured)."""

CUSTOMER_KINDS: Final = (RECOMMENDATIONS, APPROVALS, PLANS)
"""The kinds that belong to a customer (``spec.customerId``)."""

AT_REST: Final[Mapping[str, frozenset[str]]] = {
    APPROVALS: frozenset(p.value for p in ApprovalPhase if p is not ApprovalPhase.PENDING),
    PLANS: frozenset(p.value for p in PlanPhase if p.ended),
}
"""The phases in which an approval or a plan changes no more by itself: only such are
evicted (a pending approval expires; a running plan is being driven)."""


@dataclasses.dataclass(frozen=True)
class Kind(Generic[M]):
    plural: str
    model: type[M]


KINDS: Final[Mapping[str, Kind[Any]]] = {
    RECOMMENDATIONS: Kind(RECOMMENDATIONS, Recommendation),
    APPROVALS: Kind(APPROVALS, Approval),
    PLANS: Kind(PLANS, ExecutionPlan),
    POLICIES: Kind(POLICIES, ApprovalPolicy),
    ENDPOINTS: Kind(ENDPOINTS, AgentEndpoint),
}


Loader = Callable[[str, str, str], Awaitable[Mapping[str, Any] | None]]
"""Reads one object from the API server: (plural, namespace, name) → it, or None (gone)."""


class Store:
    def __init__(self, *, cache_size: int = MODEL_CACHE, loader: Loader | None = None) -> None:
        self._objects: dict[str, dict[ObjectKey, Record]] = {plural: {} for plural in KINDS}
        self._groups: dict[GroupKey, set[str]] = {}
        """The names of the recommendations of each customer group."""
        self._namespaces: dict[str, set[str]] = {}
        """The names of the recommendations of each namespace."""
        self._policies: dict[str, set[str]] = {}
        """The names of the ApprovalPolicies of each namespace."""
        self._dependents: dict[ObjectKey, set[ObjectKey]] = {}
        """The recommendations that name each one in their dependsOn."""
        self._models: collections.OrderedDict[tuple[str, int], Any] = collections.OrderedDict()
        self.cache_size = cache_size  # with shards: 1/N of it (parts.shards)
        self.phases: collections.Counter[str] = collections.Counter()
        """Recommendations by phase (Pending when none is written yet)."""
        self.conflicts: collections.Counter[str] = collections.Counter()
        """Conflict entries on recommendations, by type."""
        self.counts: collections.Counter[tuple[str, bool]] = collections.Counter()
        """Objects by kind and whether their body is held (False: evicted stubs)."""
        self.loader = loader
        """How `fetch` reads an evicted object again (the operator's client)."""
        self._packers: dict[str, Packer] = {plural: Packer() for plural in KINDS}
        """One per kind: its records share the kind's dictionary."""
        self.drives: Callable[[GroupKey], bool] = lambda _: True
        """Whether a recommendation, approval or plan of a customer not held yet is taken
        in (with shards: only the customers this replica drives, ``parts.shards``)."""

    # --- changes ------------------------------------------------------------------------

    def apply(
        self,
        plural: str,
        raw: Mapping[str, Any],
        *,
        deleted: bool = False,
        origin: Origin = Origin.WATCHED,
    ) -> Change | None:
        """An object listed or watched, or the answer to a write (`origin`): the change,
        for the caller to dispatch. None when the store holds the same object at the same
        or a newer version already; a deletion removes it whatever."""
        meta = raw.get("metadata") or {}
        key = (meta.get("namespace") or "default", meta.get("name") or "")
        objects = self._objects[plural]
        old = objects.get(key)
        if deleted:
            if old is None or (old.uid != meta.get("uid") and meta.get("uid")):
                return None
            self._remove(plural, old)
            return Change(plural, old, True, origin)
        if old is None and plural in CUSTOMER_KINDS:
            customer = str((raw.get("spec") or {}).get("customerId") or "")
            if not self.drives((key[0], customer)):
                return None
        if old is not None and old.uid == meta.get("uid"):
            rv = version(meta.get("resourceVersion"))
            if old.rv >= rv:
                if old.body is None and old.rv == rv:  # read again: not a change
                    old.pack(raw, self._packers[plural])
                    self.counts[(plural, False)] -= 1
                    self.counts[(plural, True)] += 1
                return None
        record = Record(raw, self._packers[plural])
        if old is not None:
            self._remove(plural, old)
        self._add(plural, record)
        return Change(plural, record, False, origin)

    def own_write(self, plural: str, raw: Mapping[str, Any]) -> Change | None:
        """The API server's answer to a write of the operator (`apply`, as an own write)."""
        return self.apply(plural, raw, origin=Origin.OWN_WRITE)

    def resync(
        self, plural: str, namespaces: Callable[[str], bool], seen: set[ObjectKey]
    ) -> list[Change]:
        """After a fresh listing: the objects of `plural` in the listed namespaces that
        were not listed are gone (deleted while the watch was away); their deletions."""
        gone = []
        for key, record in list(self._objects[plural].items()):
            if namespaces(key[0]) and key not in seen:
                self._remove(plural, record)
                gone.append(Change(plural, record, True, Origin.LISTED))
        return gone

    def _add(self, plural: str, record: Record) -> None:
        self._objects[plural][record.key] = record
        self.counts[(plural, record.body is not None)] += 1
        if plural == POLICIES:
            self._policies.setdefault(record.namespace, set()).add(record.name)
        if plural != RECOMMENDATIONS:
            return
        ns = record.namespace
        self._groups.setdefault((ns, record.customer), set()).add(record.name)
        self._namespaces.setdefault(ns, set()).add(record.name)
        for dependency in record.depends_on:
            self._dependents.setdefault((ns, dependency), set()).add(record.key)
        self.phases[record.phase or "Pending"] += 1
        self.conflicts.update(record.conflicts)

    def _remove(self, plural: str, record: Record) -> None:
        self._objects[plural].pop(record.key, None)
        self.counts[(plural, record.body is not None)] -= 1
        self._models.pop((record.uid, record.rv), None)  # a version nobody asks for again
        if plural == POLICIES:
            _discard(self._policies, record.namespace, record.name)
        if plural != RECOMMENDATIONS:
            return
        ns = record.namespace
        _discard(self._groups, (ns, record.customer), record.name)
        _discard(self._namespaces, ns, record.name)
        for dependency in record.depends_on:
            _discard(self._dependents, (ns, dependency), record.key)
        self.phases.subtract((record.phase or "Pending",))
        self.conflicts.subtract(record.conflicts)

    def drop(self, customers: Collection[GroupKey]) -> int:
        """Forget every recommendation, approval and plan of `customers`, as if never seen
        (no change: a shard let them go, ``parts.shards``); how many."""
        gone = [
            (plural, record)
            for plural in CUSTOMER_KINDS
            for record in self._objects[plural].values()
            if (record.namespace, record.customer) in customers
        ]
        for plural, record in gone:
            self._remove(plural, record)
        return len(gone)

    def evict(self, owner: Record) -> int:
        """`owner` (a recommendation) ended and is settled: its approval and plan leave
        memory when at rest (`AT_REST`); their stubs stay. How many were evicted."""
        evicted = 0
        for plural in (APPROVALS, PLANS):
            record = self._objects[plural].get(owner.key)
            if (
                record is None
                or record.owner != owner.uid
                or record.body is None
                or record.phase not in AT_REST[plural]
            ):
                continue
            record.body = None
            self._models.pop((record.uid, record.rv), None)
            self.counts[(plural, True)] -= 1
            self.counts[(plural, False)] += 1
            evicted += 1
        return evicted

    # --- reads --------------------------------------------------------------------------

    def record(self, plural: str, key: ObjectKey) -> Record | None:
        return self._objects[plural].get(key)

    def records(self, plural: str) -> Iterator[Record]:
        return iter(list(self._objects[plural].values()))

    def __len__(self) -> int:
        return sum(len(objects) for objects in self._objects.values())

    def model(self, plural: str, record: Record) -> Any:
        """The record as its api model (cached by uid and resourceVersion); `EvictedError` when
        it is not held in memory."""
        cache_key = (record.uid, record.rv)
        model = self._models.get(cache_key)
        if model is not None and model.metadata.name == record.name:
            self._models.move_to_end(cache_key)
            return model
        model = KINDS[plural].model.model_validate_json(record.text())
        self._models[cache_key] = model
        while len(self._models) > self.cache_size:
            self._models.popitem(last=False)
        return model

    def get(self, plural: str, key: ObjectKey) -> Any:
        record = self._objects[plural].get(key)
        return None if record is None else self.model(plural, record)

    def held(self, plural: str, key: ObjectKey) -> Any:
        """Like `get`, but None for an evicted object too (for who only wants the live
        ones: an evicted approval or plan has ended)."""
        record = self._objects[plural].get(key)
        if record is None or record.body is None:
            return None
        return self.model(plural, record)

    async def fetch(self, plural: str, record: Record) -> Any:
        """The model of `record`, read again from the API server when it was evicted (None
        if it is gone there, or was replaced by another object of the same name). The same
        version gets its body back; a newer one is returned but not kept: it is a change,
        which its watch event brings through dispatch (the Store tells nobody)."""
        if record.body is not None:
            return self.model(plural, record)
        if self.loader is None:
            raise EvictedError(f"{plural} {record.namespace}/{record.name}: no loader to fetch it")
        raw = await self.loader(plural, record.namespace, record.name)
        if raw is None or (raw.get("metadata") or {}).get("uid") != record.uid:
            return None
        if version((raw.get("metadata") or {}).get("resourceVersion")) > record.rv:
            return KINDS[plural].model.model_validate(raw)
        self.apply(plural, raw)
        now = self._objects[plural].get(record.key)
        if now is None or now.uid != record.uid or now.body is None:
            return None
        return self.model(plural, now)

    def recommendation(self, key: ObjectKey) -> Recommendation | None:
        found: Recommendation | None = self.get(RECOMMENDATIONS, key)
        return found

    def approval(self, key: ObjectKey) -> Approval | None:
        found: Approval | None = self.get(APPROVALS, key)
        return found

    def plan(self, key: ObjectKey) -> ExecutionPlan | None:
        found: ExecutionPlan | None = self.get(PLANS, key)
        return found

    def endpoint(self, key: ObjectKey) -> AgentEndpoint | None:
        """The AgentEndpoint `key`, or None when the store does not hold it (yet)."""
        found: AgentEndpoint | None = self.get(ENDPOINTS, key)
        return found

    def endpoint_in(self, namespace: str, name: str) -> AgentEndpoint | None:
        """`endpoint` by namespace and name (what ``executors.webhook.ClientResolver``
        looks up)."""
        return self.endpoint((namespace, name))

    def child_record(self, plural: str, owner: Record) -> Record | None:
        """The approval or plan `owner` owns (same name, its uid as owner), or None."""
        record = self._objects[plural].get(owner.key)
        if record is None or record.owner != owner.uid:
            return None
        return record

    def group(self, key: GroupKey) -> list[Record]:
        """The recommendations of one customer group, by name."""
        names = sorted(self._groups.get(key) or ())
        objects = self._objects[RECOMMENDATIONS]
        return [objects[(key[0], name)] for name in names]

    def groups(self) -> list[GroupKey]:
        return list(self._groups)

    def names_in(self, namespace: str) -> set[str]:
        return set(self._namespaces.get(namespace) or ())

    def in_namespace(self, namespace: str) -> list[Recommendation]:
        objects = self._objects[RECOMMENDATIONS]
        return [
            self.model(RECOMMENDATIONS, objects[(namespace, name)])
            for name in sorted(self._namespaces.get(namespace) or ())
        ]

    def dependents(self, key: ObjectKey) -> list[ObjectKey]:
        """The recommendations whose dependsOn names recommendation `key`."""
        return sorted(self._dependents.get(key) or ())

    def customer_of(self, key: ObjectKey) -> str | None:
        record = self._objects[RECOMMENDATIONS].get(key)
        return None if record is None else record.customer

    def dependencies_succeeded(self, key: ObjectKey) -> tuple[bool, str]:
        """Whether every recommendation `key` depends on has Succeeded, and if not why."""
        objects = self._objects[RECOMMENDATIONS]
        record = objects.get(key)
        if record is None or not record.depends_on:
            return True, ""
        waiting = [
            dep
            for dep in record.depends_on
            if (dep_record := objects.get((key[0], dep))) is None or dep_record.phase != "Succeeded"
        ]
        if waiting:
            return False, f"waiting for {', '.join(sorted(waiting))} to succeed"
        return True, ""

    def plans(self) -> Iterable[Record]:
        return self.records(PLANS)

    def policies(self, namespace: str) -> list[ApprovalPolicy]:
        """The ApprovalPolicies of `namespace`, by name (models from the cache)."""
        objects = self._objects[POLICIES]
        return [
            self.model(POLICIES, objects[(namespace, name)])
            for name in sorted(self._policies.get(namespace) or ())
        ]

    def groups_in(self, namespace: str) -> list[GroupKey]:
        """The customer groups of `namespace`."""
        return [key for key in self._groups if key[0] == namespace]


def _discard(index: dict[Any, set[Any]], key: Any, value: Any) -> None:
    values = index.get(key)
    if values is not None:
        values.discard(value)
        if not values:
            del index[key]
