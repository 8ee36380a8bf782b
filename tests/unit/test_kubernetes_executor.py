"""The kubernetes executor against a fake of its objects: what it refuses to touch, what its
messages say of what it read, what its undo deletes, and what a namespace that did not opt in
is told (issue 22, items 3, 11 and 5)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from coordinator.api.plan import Step
from coordinator.core.plan import Outcome
from coordinator.core.steps import Target
from coordinator.executors import StepContext
from coordinator.executors.kubernetes import CREATED_BY, KubernetesExecutor
from coordinator.k8s.client import ApiException

CONTEXT = StepContext(namespace="team-a", plan="p", uid="plan-uid")


class FakeObjects:
    """The executor's `client.objects`: objects by (kind, name); deletes recorded."""

    def __init__(self, *objects: dict[str, Any]) -> None:
        self.by_name = {(o["kind"], o["metadata"]["name"]): o for o in objects}
        self.reads: list[Target] = []
        self.deleted: list[tuple[Target, str]] = []

    async def get(self, target: Target, namespace: str) -> dict[str, Any] | None:
        self.reads.append(target)
        return self.by_name.get((target.kind, target.name))

    async def delete(self, target: Target, namespace: str, *, uid: str) -> bool:
        self.deleted.append((target, uid))
        return True


class FakeClient:
    def __init__(self, objects: FakeObjects) -> None:
        self.objects = objects


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def executor(objects: FakeObjects, **kwargs: Any) -> KubernetesExecutor:
    clock = Clock()
    return KubernetesExecutor(
        FakeClient(objects),  # type: ignore[arg-type]
        sleep=clock.sleep,
        clock=clock,
        **kwargs,
    )


def step(action: str, **params: Any) -> Step:
    return Step.model_validate(
        {"name": "s", "action": action, "executor": "kubernetes", "params": params}
    )


def run(
    ex: KubernetesExecutor, s: Step, *, undo: bool = False, result: Mapping[str, Any] | None = None
) -> Outcome:
    if undo:
        return asyncio.run(ex.undo(s, result=result, context=CONTEXT))
    return asyncio.run(ex.execute(s, context=CONTEXT))


HMAC = "c3VwZXItc2VjcmV0LWhtYWMta2V5"
SECRET = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hmac"}, "data": {"key": HMAC}}


def test_a_wait_on_a_secret_fails_without_reading_it() -> None:
    objects = FakeObjects(SECRET)
    target = {"apiVersion": "v1", "kind": "Secret", "name": "hmac"}
    outcome = run(
        executor(objects),
        step("wait", target=target, jsonPath=".data.key", value="x", timeoutSeconds=5),
    )
    assert not outcome.ok
    assert "params.target.kind: the kubernetes executor may not act on Secret" in (
        outcome.error or ""
    )
    assert objects.reads == []
    assert HMAC not in (outcome.error or "")


def test_a_wait_that_times_out_does_not_print_what_the_object_holds() -> None:
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c"},
        "data": {"token": HMAC},
    }
    objects = FakeObjects(config)
    target = {"apiVersion": "v1", "kind": "ConfigMap", "name": "c"}
    outcome = run(
        executor(objects),
        step("wait", target=target, jsonPath=".data", value="x", timeoutSeconds=5),
    )
    assert not outcome.ok
    assert "last seen: .data=an object of 1 field" in (outcome.error or ""), outcome.error
    assert HMAC not in (outcome.error or "")


def test_the_allowlist_given_is_the_one_enforced_at_run_time() -> None:
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c"},
        "data": {"a": "1"},
    }
    target = {"apiVersion": "v1", "kind": "ConfigMap", "name": "c"}
    s = step("wait", target=target, jsonPath=".data.a", value="1")
    assert run(executor(FakeObjects(config)), s).ok
    outcome = run(executor(FakeObjects(config), kinds=frozenset({"Deployment.apps"})), s)
    assert not outcome.ok
    assert "may not act on ConfigMap" in (outcome.error or "")


def test_undo_of_apply_leaves_an_object_whose_uid_is_not_the_one_created() -> None:
    marker = f"{CONTEXT.plan}/s/{CONTEXT.uid}"
    manifest = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}
    other = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c", "uid": "someone-else", "annotations": {CREATED_BY: marker}},
    }
    objects = FakeObjects(other)
    outcome = run(
        executor(objects), step("apply", manifest=manifest), undo=True, result={"uid": "ours"}
    )
    assert outcome.ok
    assert outcome.result is not None
    assert outcome.result["deleted"] is False
    assert objects.deleted == []
    # the object the step created (same uid) is deleted
    outcome = run(
        executor(objects),
        step("apply", manifest=manifest),
        undo=True,
        result={"uid": "someone-else"},
    )
    assert objects.deleted
    assert objects.deleted[0][1] == "someone-else"


def forbidden(user: str) -> ApiException:
    exc = ApiException(status=403, reason="Forbidden")
    exc.body = json.dumps(
        {
            "message": f'deployments.apps "web" is forbidden: User "{user}" cannot get resource '
            '"deployments" in API group "apps" in the namespace "team-a"'
        }
    )
    return exc


class ForbiddenObjects(FakeObjects):
    def __init__(self, user: str) -> None:
        super().__init__()
        self.user = user

    async def get(self, target: Target, namespace: str) -> dict[str, Any] | None:
        raise forbidden(self.user)


def test_a_namespace_that_did_not_opt_in_is_told_what_to_bind() -> None:
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}
    s = step("scale", target=target, replicas=1)
    user = "system:serviceaccount:optiinfra-system:optiinfra-coordinator"
    outcome = run(executor(ForbiddenObjects(user)), s)
    assert not outcome.ok
    assert outcome.error is not None
    assert outcome.error.endswith(
        "namespace team-a has not opted in to the kubernetes executor; to let plans change "
        "workloads there: kubectl create rolebinding optiinfra-executor -n team-a "
        "--clusterrole=optiinfra-executor "
        "--serviceaccount=optiinfra-system:optiinfra-coordinator"
    ), outcome.error
    assert f'User "{user}" cannot get resource "deployments"' in outcome.error
    outcome = run(executor(ForbiddenObjects("ops")), s)
    assert (outcome.error or "").endswith("--clusterrole=optiinfra-executor --user=ops")
