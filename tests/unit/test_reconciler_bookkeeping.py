"""The reconciler's small maps: who depends on whom, which group a name is in.

They are kept for the recommendations present only: a deleted recommendation leaves
nothing behind, and a changed dependsOn drops the edges it no longer has.
"""

from __future__ import annotations

from typing import Any, cast

from coordinator import reconciler as reconciler_
from coordinator.api.recommendation import Recommendation
from coordinator.core import approval as policy_


def rec(name: str, *, customer: str = "c", depends_on: tuple[str, ...] = ()) -> Recommendation:
    return Recommendation.model_validate(
        {
            "apiVersion": "optiinfra.io/v1alpha1",
            "kind": "Recommendation",
            "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}"},
            "spec": {
                "customerId": customer,
                "agentId": "a",
                "agentType": "cost",
                "title": name,
                "action": "scale_down",
                "riskLevel": "low",
                "dependsOn": list(depends_on),
            },
        }
    )


def reconciler(*present: Recommendation) -> reconciler_.Reconciler:
    r = reconciler_.Reconciler(
        client=cast(Any, None), recorder=cast(Any, None), policy=policy_.ApprovalPolicy()
    )
    groups: dict[tuple[str, str], list[Recommendation]] = {}
    for one in present:
        groups.setdefault((one.metadata.namespace, one.spec.customer_id), []).append(one)
    r.indexes = reconciler_.Indexes(recommendations=groups, namespaces={}, approvals={}, plans={})
    return r


def test_dependents_follow_depends_on_as_it_changes_and_go_with_the_dependent() -> None:
    a, b, c = rec("a"), rec("b", depends_on=("a",)), rec("c", customer="d", depends_on=("a",))
    r = reconciler(a, b, c)
    for one in (a, b, c):
        r.recommendation_changed(one)
    assert r.dependents(("ns", "a")) == [("ns", "b"), ("ns", "c")]
    r.recommendation_changed(rec("b"))  # b no longer depends on a
    assert r.dependents(("ns", "a")) == [("ns", "c")]
    r.recommendation_changed(c, deleted=True)
    assert r.dependents(("ns", "a")) == []
    assert r._dependents == {}
    assert r._depends == {}


def test_a_change_of_a_recommendation_queues_the_groups_that_depend_on_it() -> None:
    a, c = rec("a"), rec("c", customer="d", depends_on=("a",))
    r = reconciler(a, c)
    r.recommendation_changed(c)
    r.queue = reconciler_.WorkQueue()
    r.recommendation_changed(a)
    assert sorted(r.queue._queued) == [("ns", "c"), ("ns", "d")]


def test_find_looks_in_the_group_and_forgets_the_deleted() -> None:
    a = rec("a", customer="x")
    r = reconciler(a)
    assert r.find(("ns", "a")) is None  # never seen: the caller asks the API server
    r.recommendation_changed(a)
    assert r.find(("ns", "a")) is a
    r.recommendation_changed(a, deleted=True)
    assert r.find(("ns", "a")) is None


def test_indexed_objects_keep_only_the_coordinators_annotations() -> None:
    applied = rec("a").model_copy(deep=True)
    applied.metadata.__dict__["annotations"] = {
        "kubectl.kubernetes.io/last-applied-configuration": '{"a whole": "manifest"}',
        "optiinfra.io/submitted-by": "agent",
        "coordinator.optiinfra.io/last-handled-configuration": "{}",
    }
    compacted = reconciler_.compact(applied)
    assert compacted.metadata.annotations == {
        "optiinfra.io/submitted-by": "agent",
        "coordinator.optiinfra.io/last-handled-configuration": "{}",
    }
