"""The admission hooks fuzzed in process: objects generated from the CRDs' schemas
(crds/*.yaml), valid and then mutated (deep nesting, huge strings, wrong JSON types, lists
for objects, broken userInfo), sent as AdmissionReviews to the real admission application
with the operator's hooks. Every answer is a 200 with a well-formed AdmissionReview:
allowed, or refused with a 4xx code and a message. Never a 5xx."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from coordinator import handlers
from coordinator.api.recommendation import Recommendation
from coordinator.core import admission as admission_
from coordinator.core import catalogue
from coordinator.k8s.admission import application
from coordinator.parts.facts import Facts

CRDS = Path(__file__).parents[2] / "crds"
EXAMPLES = 250
"""Per hook: four hooks, about 1 000 reviews in all."""


def spec_schema(plural: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / f"optiinfra.io_{plural}.yaml").read_text())
    [version] = [v for v in crd["spec"]["versions"] if v.get("storage")]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return schema


ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


def valid(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values valid for a CRD's structural schema. Objects and lists are composed here (a
    few entries each, for speed); each scalar comes from hypothesis-jsonschema (patterns,
    formats, bounds). CEL rules (x-kubernetes-validations) are the API server's."""
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties")
        if properties:
            required = set(schema.get("required") or ())
            return st.fixed_dictionaries(
                {k: valid(v) for k, v in properties.items() if k in required},
                optional={k: valid(v) for k, v in properties.items() if k not in required},
            )
        values = schema.get("additionalProperties")
        if isinstance(values, dict):
            return st.dictionaries(st.text(min_size=1, max_size=8), valid(values), max_size=3)
        return st.dictionaries(st.text(max_size=8), ANY_JSON, max_size=3)
    if kind == "array":
        low = schema.get("minItems", 0)
        lists = st.lists(valid(schema["items"]), min_size=low, max_size=max(low, 3))
        return lists.filter(lambda xs: len(xs) <= schema.get("maxItems", len(xs)))
    if kind is None:
        return ANY_JSON
    leaf = {k: v for k, v in schema.items() if not k.startswith("x-kubernetes")}
    return from_schema(leaf)


class FakeOperator:
    """What the hooks ask the operator, answered without a cluster (the pure parts as the
    operator computes them)."""

    async def submitter(self, namespace: str, name: str) -> str | None:
        return "alice" if len(name) % 2 else None

    async def submitter_may_not(self, user: Any, rec: Recommendation) -> str | None:
        try:
            steps = catalogue.plan_steps(rec.spec)
        except catalogue.NoDefaultPlanError:
            return None
        accesses = admission_.cluster_accesses(steps)
        return f"may not {accesses[0]}" if accesses and len(user) % 2 else None

    async def endpoint_problem(self, rec: Recommendation) -> str | None:
        steps = catalogue.plan_steps(rec.spec)
        return admission_.endpoint_problem(rec, steps, existing=set())

    async def existing(self, namespace: str, names: Any) -> set[str]:
        return {"rec-1", "rec-2"} & set(names)


HOOKS = {
    "recommendation-stamp": "recommendations",
    "recommendation-check": "recommendations",
    "approval-stamp": "approvals",
    "approval-check": "approvals",
    "template-check": "verificationtemplates",
}
KINDS = {
    "recommendations": "Recommendation",
    "approvals": "Approval",
    "verificationtemplates": "VerificationTemplate",
}


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[asyncio.AbstractEventLoop, TestClient[Any, Any]]]:
    loop = asyncio.new_event_loop()
    app = application(handlers.admission(cast(Facts, FakeOperator())))
    client: TestClient[Any, Any] = TestClient(TestServer(app), loop=loop)
    loop.run_until_complete(client.start_server())
    yield loop, client
    loop.run_until_complete(client.close())
    loop.close()


# --- what is sent: a valid object, then perhaps broken --------------------------------

DEEP = "__nested__"
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


def _objects(plural: str) -> st.SearchStrategy[dict[str, Any]]:
    metadata = st.fixed_dictionaries(
        {
            "name": st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True),
            "namespace": st.just("ns"),
        },
        optional={
            "annotations": st.dictionaries(
                st.sampled_from([admission_.SUBMITTED_BY_ANNOTATION, "x", "optiinfra.io/y"]),
                st.text(max_size=10),
                max_size=2,
            ),
            "finalizers": st.lists(st.just("optiinfra.io/plan"), max_size=1),
            "generation": st.integers(1, 5),
        },
    )
    kind = KINDS[plural]
    return st.fixed_dictionaries(
        {
            "apiVersion": st.just("optiinfra.io/v1alpha1"),
            "kind": st.just(kind),
            "metadata": metadata,
            "spec": valid(spec_schema(plural)),
        }
    )


@st.composite
def _mutated(draw: st.DrawFn, obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` as sent, or broken in one way: a field of the wrong JSON type, a list for an
    object, a huge string, deep nesting (put in by `body`)."""
    how = draw(st.sampled_from(["valid", "valid", "type", "list", "huge", "deep", "meta"]))
    obj = json.loads(json.dumps(obj))
    spec = obj["spec"]
    if how == "type":
        field = draw(st.sampled_from(sorted(spec) or ["title"]))
        spec[field] = draw(JUNK)
    elif how == "list":
        target = draw(st.sampled_from(["spec", "metadata"]))
        obj[target] = [obj[target]]
    elif how == "huge":
        field = draw(st.sampled_from(["title", "description", "parameters", "reason"]))
        spec[field] = "x" * draw(st.integers(100_000, 400_000))
    elif how == "deep":
        spec[draw(st.sampled_from(["parameters", "title", "steps"]))] = DEEP
    elif how == "meta":
        obj["metadata"]["annotations"] = draw(JUNK)
    return obj


OBJECTS = {plural: _objects(plural) for plural in set(HOOKS.values())}
USERS = st.one_of(
    st.fixed_dictionaries(
        {"username": st.sampled_from(["alice", "bob", "system:serviceaccount:ns:agent"])},
        optional={"groups": st.lists(st.sampled_from(["sre", "system:authenticated"]))},
    ),
    JUNK,  # broken userInfo
    st.fixed_dictionaries({"username": JUNK, "groups": JUNK}),
)


@st.composite
def bodies(draw: st.DrawFn, hook: str) -> bytes:
    plural = HOOKS[hook]
    valid_ = draw(OBJECTS[plural])
    new = draw(_mutated(valid_))
    request: dict[str, Any] = {
        "uid": "u-fuzz",
        "operation": draw(st.sampled_from(["CREATE", "UPDATE"])),
        "userInfo": draw(USERS),
        "object": new,
        "dryRun": draw(st.booleans()),
    }
    if request["operation"] == "UPDATE":
        same = draw(st.booleans())
        request["oldObject"] = new if same else draw(_mutated(valid_))
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    levels = draw(st.integers(50, 9_000))
    nested = '{"a":' * levels + "{}" + "}" * levels
    return json.dumps(review).replace(json.dumps(DEEP), nested).encode()


def _well_formed(status: int, answer: Any) -> None:
    assert status == 200, answer
    assert answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert response["uid"] == "u-fuzz"
    assert isinstance(response["allowed"], bool)
    if response["allowed"]:
        if "patch" in response:
            assert response["patchType"] == "JSONPatch"
            assert isinstance(json.loads(base64.b64decode(response["patch"])), list)
    else:
        assert 400 <= response["status"]["code"] < 500, response
        assert response["status"]["message"], response


@pytest.mark.parametrize("hook", list(HOOKS))
def test_every_review_is_answered_with_an_admission_review_never_a_5xx(
    served: tuple[asyncio.AbstractEventLoop, TestClient[Any, Any]], hook: str
) -> None:
    loop, client = served

    async def post(body: bytes) -> tuple[int, Any]:
        response = await client.post(f"/{hook}", data=body)
        return response.status, await response.json()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(bodies(hook))
    def fuzz(body: bytes) -> None:
        _well_formed(*loop.run_until_complete(post(body)))

    fuzz()
