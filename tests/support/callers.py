"""A fake of ``coordinator.k8s.caller``'s reads and writes, for the use cases, the plugin
and the gateway without an API server: objects by (plural, name), Leases by (namespace,
name), merge patches recorded, and an operator that acts after a number of reads (as the
real one writes status later)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from coordinator.api.common import APPROVALS
from coordinator.core import policy
from coordinator.k8s import caller
from tests.support import builders

NAMESPACE = "team-a"
Obj = dict[str, Any]


def _merge(into: Obj, patch: Obj) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        elif value is None:
            into.pop(key, None)
        else:
            into[key] = copy.deepcopy(value)


@dataclass
class FakeCaller:
    """The objects of one namespace. `admit` stands for the admission webhooks (it may
    change a patched object, or raise caller.CallerError); `operator` runs once, on the
    read number `operator_after` after a patch, and may change the objects."""

    objects: dict[tuple[str, str], Obj] = field(default_factory=dict)
    leases: dict[tuple[str, str], Obj] = field(default_factory=dict)
    lease_error: caller.CallerError | None = None
    """Raised by every Lease read (a user whom RBAC does not let read them)."""
    patches: list[tuple[str, str, Any]] = field(default_factory=list)
    reads: int = 0
    admit: Callable[[str, Obj], None] | None = None
    operator: Callable[[FakeCaller], None] | None = None
    operator_after: int = 1
    _since_patch: int | None = None

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeCaller:
        monkeypatch.setattr(caller, "get", self.get)
        monkeypatch.setattr(caller, "patch", self.patch)
        monkeypatch.setattr(caller, "whoami", lambda api: ("approver", ["approvers"]))
        monkeypatch.setattr(caller, "list_", self.list_)
        monkeypatch.setattr(caller, "lease", self.lease)
        monkeypatch.setattr(caller, "leases", self.list_leases)
        return self

    def add(self, plural: str, obj: Obj) -> Obj:
        self.objects[plural, obj["metadata"]["name"]] = obj
        return obj

    def add_lease(self, obj: Obj) -> Obj:
        self.leases[obj["metadata"]["namespace"], obj["metadata"]["name"]] = obj
        return obj

    def list_(self, api: Any, namespace: str | None, plural: str) -> list[Obj]:
        assert namespace in (None, NAMESPACE)
        return [
            json.loads(json.dumps(o)) for (p, _), o in sorted(self.objects.items()) if p == plural
        ]

    def lease(self, api: Any, namespace: str, name: str) -> Obj | None:
        if self.lease_error is not None:
            raise self.lease_error
        found = self.leases.get((namespace, name))
        return json.loads(json.dumps(found)) if found is not None else None

    def list_leases(self, api: Any, namespace: str, selector: str) -> list[Obj]:
        """The Leases of `namespace` matching `selector` (one ``key=value``)."""
        if self.lease_error is not None:
            raise self.lease_error
        key, value = selector.split("=", 1)
        return [
            json.loads(json.dumps(o))
            for (ns, _), o in sorted(self.leases.items())
            if ns == namespace and (o["metadata"].get("labels") or {}).get(key) == value
        ]

    def get(self, api: Any, namespace: str, plural: str, name: str) -> Obj | None:
        assert namespace == NAMESPACE
        self.reads += 1
        if self._since_patch is not None:
            self._since_patch += 1
            if self._since_patch == self.operator_after and self.operator:
                self.operator(self)
        found = self.objects.get((plural, name))
        return json.loads(json.dumps(found)) if found is not None else None

    def patch(self, api: Any, namespace: str, plural: str, name: str, body: Any) -> Obj:
        assert namespace == NAMESPACE
        self.patches.append((plural, name, copy.deepcopy(body)))
        found = self.objects.get((plural, name))
        if found is None:
            raise caller.CallerError(404, f'{plural} "{name}" not found', reason="NotFound")
        _merge(found, body)
        if self.admit:
            self.admit(plural, found)
        self._since_patch = 0
        returned: Obj = json.loads(json.dumps(found))
        return returned


def approval(name: str, phase: str = "Pending", **status: Any) -> Obj:
    """The Approval of `name` in `phase` (and `status`), not yet stamped."""
    return builders.approval(
        name,
        metadata={"annotations": {}},
        status={"phase": phase, **status},
        expiresAt="2026-01-02T03:04:05Z",
    )


def plan(name: str, phase: str = "Pending", *, suspend: bool = True, abort: bool = False) -> Obj:
    """The one-step plan of `name` in `phase`, suspended unless not."""
    return builders.plan(
        name,
        status={"phase": phase},
        customerId="customer-1",
        suspend=suspend,
        abort=abort,
        steps=[{"name": "one", "action": "noop", "executor": "simulated"}],
    )


def vote(user: str, decision: str = "Approved") -> Obj:
    return {"user": user, "groups": [], "decision": decision, "at": "2026-01-01T00:00:00Z"}


def votes_webhook(voter: str) -> Callable[[str, Obj], None]:
    """The admission webhook of an N-of-M approval: records `voter`'s vote in the
    responses annotation and puts the decision back to Pending."""

    def admit(plural: str, obj: Obj) -> None:
        assert plural == APPROVALS
        annotations = obj["metadata"].setdefault("annotations", {})
        raw = annotations.get(policy.RESPONSES_ANNOTATION)
        recorded = json.loads(raw) if raw else []
        recorded.append(vote(voter, obj["spec"]["decision"]))
        annotations[policy.RESPONSES_ANNOTATION] = json.dumps(recorded)
        obj["spec"]["decision"] = "Pending"
        obj["spec"].pop("reason", None)

    return admit


def copy_votes(fake: FakeCaller, name: str) -> None:
    """What the operator does with an N-of-M approval: copy the votes into status."""
    obj = fake.objects[APPROVALS, name]
    raw = obj["metadata"]["annotations"].get(policy.RESPONSES_ANNOTATION)
    obj["status"]["responses"] = json.loads(raw) if raw else []
