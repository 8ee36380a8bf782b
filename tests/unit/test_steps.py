"""The kubernetes executor's pure parts: params at admission, before-images of patches, and
the "is it still what we wrote" comparison of undo."""

from __future__ import annotations

from typing import Any

import pytest

from coordinator.api.plan import Step
from coordinator.api.recommendation import Recommendation
from coordinator.core import admission, steps
from coordinator.core.steps import ABSENT, Field
from tests.support import builders

TARGET = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}


def step(action: str, timeout: int | None = None, **params: Any) -> Step:
    return Step.model_validate(
        {
            "name": "s",
            "action": action,
            "executor": "kubernetes",
            "params": params,
            **({"timeoutSeconds": timeout} if timeout else {}),
        }
    )


def problems(s: Step) -> list[str]:
    return steps.problems(s, where="spec.steps[2]", namespace="team-a")


# -- admission ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "s",
    [
        step("scale", target=TARGET, replicas=0),
        step("scale_workload", kind="StatefulSet", name="db", replicas=3),
        step("scale_workload", name="web", replicas=3),
        step("patch", target=TARGET, patch={"spec": {"replicas": 2}}),
        step("patch", target=TARGET, patch={"spec": {"x": [1]}}, type="strategic"),
        step(
            "apply",
            manifest={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}},
        ),
        step(
            "apply",
            manifest={
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "c", "namespace": "team-a"},
            },
        ),
        step("wait", target=TARGET, condition={"type": "Available", "status": "True"}),
        step("wait", target=TARGET, jsonPath="{.status.observedGeneration}", value=2),
        step("wait", target=TARGET, jsonPath=".metadata.labels['a.b/c']", value="x"),
    ],
)
def test_valid_params_have_no_problems(s: Step) -> None:
    assert problems(s) == []


@pytest.mark.parametrize(
    ("s", "expected"),
    [
        (
            step("scale", target={"apiVersion": "apps/v1", "name": "web"}, replicas=1),
            "spec.steps[2].params.target.kind: required",
        ),
        (step("scale", target=TARGET, replicas=-1), "spec.steps[2].params.replicas: must be"),
        (step("scale", target=TARGET, replicas=True), "spec.steps[2].params.replicas: must be"),
        (step("scale", target=TARGET), "spec.steps[2].params.replicas: required"),
        (step("scale_workload", kind="Pod", name="p", replicas=1), "spec.steps[2].params.kind:"),
        (step("scale_workload", replicas=1), "spec.steps[2].params.name: required"),
        (step("patch", target=TARGET, patch=[1]), "spec.steps[2].params.patch: must be"),
        (step("patch", target=TARGET), "spec.steps[2].params.patch: required"),
        (
            step("patch", target=TARGET, patch={"a": 1}, type="json"),
            "spec.steps[2].params.type: must be merge or strategic",
        ),
        (
            step("patch", target=TARGET, patch={"spec": {"$patch": "replace"}}, type="strategic"),
            'spec.steps[2].params.patch.spec["$patch"]: strategic-merge directives',
        ),
        (
            step("patch", target=TARGET, patch={"metadata": {"name": "other"}}),
            "spec.steps[2].params.patch.metadata.name: cannot be patched",
        ),
        (
            step("patch", target={**TARGET, "namespace": "x"}, patch={"a": 1}),
            "spec.steps[2].params.target.namespace: not allowed",
        ),
        (step("patch", target="web", patch={"a": 1}), "spec.steps[2].params.target: must be"),
        (
            step("apply", manifest={"apiVersion": "v1", "kind": "ConfigMap"}),
            "spec.steps[2].params.manifest.metadata.name: required",
        ),
        (
            step("apply", manifest={"kind": "ConfigMap", "metadata": {"name": "c"}}),
            "spec.steps[2].params.manifest.apiVersion: required",
        ),
        (
            step(
                "apply",
                manifest={
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "c", "namespace": "kube-system"},
                },
            ),
            "spec.steps[2].params.manifest.metadata.namespace: must be the recommendation's",
        ),
        (step("apply"), "spec.steps[2].params.manifest: required"),
        (step("wait", target=TARGET), "spec.steps[2].params.condition: required"),
        (
            step("wait", target=TARGET, condition={"type": "Ready"}),
            "spec.steps[2].params.condition.status: required",
        ),
        (
            step("wait", target=TARGET, jsonPath=".status.x"),
            "spec.steps[2].params.value: required",
        ),
        (
            step("wait", target=TARGET, jsonPath=".items[?(@.a)]", value=1),
            "spec.steps[2].params.jsonPath: cannot read",
        ),
        (
            step("wait", target=TARGET, jsonPath=".a", value=1, timeoutSeconds=0),
            "spec.steps[2].params.timeoutSeconds: must be a whole number > 0",
        ),
        (step("delete_everything"), "spec.steps[2].action: the kubernetes executor has no action"),
    ],
)
def test_bad_params_are_named(s: Step, expected: str) -> None:
    found = problems(s)
    assert any(p.startswith(expected) for p in found), found


def test_simulated_params_are_free() -> None:
    s = Step.model_validate(
        {"name": "s", "action": "anything", "executor": "simulated", "params": {"target": 1}}
    )
    assert problems(s) == []


def test_admission_checks_only_a_new_or_changed_spec() -> None:
    doc = builders.recommendation(
        "r",
        namespace="team-a",
        action="scale_down",
        riskLevel="low",
        steps=[{"name": "s", "action": "patch", "executor": "kubernetes"}],
    )
    rec = Recommendation.model_validate(doc)
    assert admission.step_problems(old=None, new=rec) == [
        "spec.steps[0].params.target: required ({apiVersion, kind, name} of an object in the "
        "namespace)",
        "spec.steps[0].params.patch: required (the fields to change)",
    ]
    assert admission.step_problems(old=rec, new=rec) == []


def test_timeout_comes_from_params_then_the_step_then_300() -> None:
    assert steps.timeout_seconds(step("wait", timeoutSeconds=2)) == 2
    assert steps.timeout_seconds(step("wait", timeout=7)) == 7
    assert steps.timeout_seconds(step("wait")) == 300


def test_target_legacy_kind_defaults_to_deployment() -> None:
    assert steps.target({"name": "web", "replicas": 1}) == steps.Target(
        "apps/v1", "Deployment", "web"
    )


# -- before-images --------------------------------------------------------------------------

OBJ: dict[str, Any] = {
    "metadata": {"name": "web", "labels": {"app": "web"}},
    "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c", "image": "a"}]}}},
}


def test_before_image_records_the_leaves_the_patch_sets() -> None:
    patch = {
        "metadata": {"labels": {"tier": "front", "app": "web2"}},
        "spec": {"replicas": 5, "paused": True},
    }
    assert steps.before_image(OBJ, patch) == [
        Field(("metadata", "labels", "tier"), before=ABSENT),
        Field(("metadata", "labels", "app"), before="web"),
        Field(("spec", "replicas"), before=2),
        Field(("spec", "paused"), before=ABSENT),
    ]


def test_a_new_subtree_is_one_field_and_a_list_is_whole() -> None:
    patch = {
        "metadata": {"annotations": {"a": "1", "b": "2"}},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "b"}]}}},
    }
    assert steps.before_image(OBJ, patch) == [
        Field(("metadata", "annotations"), before=ABSENT),
        Field(
            ("spec", "template", "spec", "containers"),
            before=[{"name": "c", "image": "a"}],
        ),
    ]


def test_a_null_in_the_patch_records_what_it_removes() -> None:
    assert steps.before_image(OBJ, {"spec": {"replicas": None}}) == [
        Field(("spec", "replicas"), before=2)
    ]


def test_restore_patch_puts_back_and_removes() -> None:
    fields = [
        Field(("metadata", "labels", "tier"), before=ABSENT, after="front"),
        Field(("spec", "replicas"), before=2, after=5),
    ]
    assert steps.restore_patch(fields) == {
        "metadata": {"labels": {"tier": None}},
        "spec": {"replicas": 2},
    }


def test_fields_survive_the_wire() -> None:
    fields = [Field(("a", "b"), before=ABSENT, after=1), Field(("c",), before=None, after=2)]
    wire = [f.to_wire() for f in fields]
    assert wire[0] == {"path": ["a", "b"], "field": "a.b", "after": 1}
    assert [Field.from_wire(w) for w in wire] == fields


# -- still what we wrote? -------------------------------------------------------------------


def test_drift_names_the_field_and_both_values() -> None:
    fields = [
        Field(("spec", "replicas"), before=2, after=5),
        Field(("metadata", "labels", "tier"), before=ABSENT, after="front"),
    ]
    now = {"spec": {"replicas": 7}, "metadata": {"labels": {"tier": "front"}}}
    [changed] = steps.drift(now, fields)
    assert str(changed) == "spec.replicas: expected 5 (what this step wrote), found 7"
    gone = {"spec": {"replicas": 5}, "metadata": {}}
    [removed] = steps.drift(gone, fields)
    assert str(removed) == (
        'metadata.labels.tier: expected "front" (what this step wrote), found <absent>'
    )
    assert (
        steps.drift({"spec": {"replicas": 5}, "metadata": {"labels": {"tier": "front"}}}, fields)
        == []
    )


def test_restored_recognises_an_undo_that_ran() -> None:
    fields = [Field(("spec", "replicas"), before=2, after=5), Field(("x",), after=1)]
    assert steps.restored({"spec": {"replicas": 2}}, fields)
    assert not steps.restored({"spec": {"replicas": 2}, "x": 1}, fields)


# -- names and paths ----------------------------------------------------------------------


def test_annotation_keys_fit() -> None:
    assert steps.before_annotation("rec-a", "tune") == "optiinfra.io/before.rec-a.tune"
    long = steps.before_annotation("r" * 200, "s" * 60)
    assert long.startswith("optiinfra.io/before.rrr")
    assert len(long.removeprefix("optiinfra.io/")) <= 63
    assert long != steps.before_annotation("r" * 200, "t" * 60)
    assert len(steps.label_value("p" * 100)) <= 63


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("{.status.observedGeneration}", ("status", "observedGeneration")),
        (".spec.replicas", ("spec", "replicas")),
        ("status.conditions[0].type", ("status", "conditions", 0, "type")),
        (".metadata.annotations['a.b/c']", ("metadata", "annotations", "a.b/c")),
    ],
)
def test_json_paths(text: str, path: tuple[str | int, ...]) -> None:
    assert steps.json_path(text) == path


def test_wait_reads_conditions_and_values() -> None:
    obj = {"status": {"conditions": [{"type": "Available", "status": "False"}], "n": 3}}
    assert steps.condition_seen(obj, "Available") == "False"
    assert steps.condition_seen(obj, "Progressing") is None
    assert steps.condition_seen({}, "Available") is None
    assert steps.text(steps.lookup(obj, ("status", "n"))) == steps.text("3")
    assert steps.text(True) == "true"
    assert steps.lookup(obj, ("status", "missing")) is ABSENT


# -- what a step may touch (issue 22, items 3 and 11) ----------------------------------------

SECRET = {"apiVersion": "v1", "kind": "Secret", "name": "agent-hmac"}


@pytest.mark.parametrize(
    ("s", "field"),
    [
        (
            step("wait", target=SECRET, jsonPath=".data.key", value="x"),
            "spec.steps[2].params.target.kind",
        ),
        (
            step("patch", target=SECRET, patch={"data": {"k": "eA=="}}),
            "spec.steps[2].params.target.kind",
        ),
        (
            step(
                "apply", manifest={"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}
            ),
            "spec.steps[2].params.manifest.kind",
        ),
        (
            step(
                "scale",
                target={"apiVersion": "v1", "kind": "ReplicationController", "name": "r"},
                replicas=1,
            ),
            "spec.steps[2].params.target.kind",
        ),
    ],
)
def test_a_kind_outside_the_allowlist_is_refused_naming_the_field(s: Step, field: str) -> None:
    found = problems(s)
    assert len(found) == 1, found
    assert found[0].startswith(f"{field}: the kubernetes executor may not act on "), found
    assert "--executor-kinds" in found[0]
    assert "Secret" not in ", ".join(sorted(steps.DEFAULT_KINDS))


def test_the_allowlist_is_configurable() -> None:
    kinds = steps.parse_kinds(" Deployment.apps, ConfigMap ,")
    assert kinds == {"Deployment.apps", "ConfigMap"}
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "name": "h"}
    wait = step("wait", target=hpa, jsonPath=".a", value=1)
    assert steps.problems(wait, where="w", namespace="n") == []  # in the default
    assert steps.problems(wait, where="w", namespace="n", kinds=kinds) == [
        "w.params.target.kind: the kubernetes executor may not act on "
        "HorizontalPodAutoscaler.autoscaling (autoscaling/v2 HorizontalPodAutoscaler); it acts "
        "only on ConfigMap, Deployment.apps (coordinator run --executor-kinds)"
    ]
    with pytest.raises(ValueError, match="'deployments' is not a kind"):
        steps.parse_kinds("deployments")


def test_a_default_plan_on_a_kind_outside_the_allowlist_names_spec_target() -> None:
    rec = Recommendation.model_validate(
        builders.recommendation(
            "r",
            namespace="team-a",
            action="scale_down",
            riskLevel="low",
            target={"apiVersion": "v1", "kind": "Secret", "name": "agent-hmac"},
            parameters={"replicas": 1},
        )
    )
    found = admission.step_problems(old=None, new=rec)
    assert len(found) == 1, found
    assert found[0].startswith(
        "spec.target.kind: the default plan of scale_down would act on Secret"
    ), found
    assert rec.spec.target is not None
    target = rec.spec.target.model_copy(update={"api_version": "apps/v1", "kind": "Deployment"})
    deployment = rec.model_copy(update={"spec": rec.spec.model_copy(update={"target": target})})
    assert admission.step_problems(old=None, new=deployment) == []


@pytest.mark.parametrize(
    ("s", "field"),
    [
        (
            step(
                "patch",
                target=TARGET,
                patch={"metadata": {"annotations": {"optiinfra.io/created-by": "p/s/u"}}},
            ),
            "spec.steps[2].params.patch.metadata.annotations['optiinfra.io/created-by']",
        ),
        (
            step(
                "patch", target=TARGET, patch={"metadata": {"labels": {"optiinfra.io/plan": "p"}}}
            ),
            "spec.steps[2].params.patch.metadata.labels['optiinfra.io/plan']",
        ),
        (
            step(
                "apply",
                manifest={
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "c", "annotations": {"x.optiinfra.io/y": "1"}},
                },
            ),
            "spec.steps[2].params.manifest.metadata.annotations['x.optiinfra.io/y']",
        ),
    ],
)
def test_no_step_may_set_the_operators_own_marks(s: Step, field: str) -> None:
    found = problems(s)
    assert [p.partition(":")[0] for p in found] == [field], found


def test_other_labels_and_annotations_may_be_patched() -> None:
    patch = {"metadata": {"annotations": {"example.com/owner": "a", "optiinfra.iox/y": "b"}}}
    assert problems(step("patch", target=TARGET, patch=patch)) == []


def test_apply_is_reviewed_for_create_and_delete() -> None:
    manifest = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}
    accesses = admission.cluster_accesses([step("apply", manifest=manifest)])
    assert [(a.verb, a.kind, a.name) for a in accesses] == [
        ("create", "ConfigMap", "c"),
        ("delete", "ConfigMap", "c"),
    ]


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("3", "3"),
        (True, "true"),
        (None, "null"),
        ({"key": "c2VjcmV0"}, "an object of 1 field"),
        (["a", "b"], "a list of 2 items"),
        ("x" * 100, "x" * 64 + "... (100 characters)"),
    ],
)
def test_what_a_wait_saw_is_shown_without_content(value: Any, shown: str) -> None:
    assert steps.seen(value) == shown
