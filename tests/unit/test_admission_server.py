"""The admission webhooks' HTTPS server: AdmissionReview in, JSON Patch and verdict out.

The API server's side of it (registration, fail-closed, the stamped identities) is tested
against the local control plane in tests/cluster; these are the wire details, fast.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from coordinator.k8s import certificates
from coordinator.k8s.admission import (
    MAX_DEPTH,
    RefusedError,
    Review,
    Server,
    Verdict,
    application,
    json_patch,
    respond,
)


def _review(obj: dict[str, Any] | None, **request: Any) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "operation": "CREATE",
            "userInfo": {"username": "alice", "groups": ["sre", "system:authenticated"]},
            "object": obj,
            **request,
        },
    }


def _patch(answer: dict[str, Any]) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = json.loads(base64.b64decode(answer["response"]["patch"]))
    return ops


def test_annotations_are_added_escaped_and_removed_only_when_present() -> None:
    obj = {"metadata": {"annotations": {"old/key": "x", "same": "v"}}, "spec": {"a": 1}}
    verdict = Verdict(
        annotations={"optiinfra.io/by": "alice", "old/key": None, "gone": None, "same": "v"}
    )
    assert json_patch(obj, verdict) == [
        {"op": "add", "path": "/metadata/annotations/optiinfra.io~1by", "value": "alice"},
        {"op": "remove", "path": "/metadata/annotations/old~1key"},
    ]


def test_an_object_without_annotations_gets_the_map_first() -> None:
    ops = json_patch({"metadata": {}}, Verdict(annotations={"k": "v"}))
    assert ops == [
        {"op": "add", "path": "/metadata/annotations", "value": {}},
        {"op": "add", "path": "/metadata/annotations/k", "value": "v"},
    ]
    assert json_patch({"metadata": {}}, Verdict(annotations={"k": None})) == []


def test_spec_fields_are_set_when_they_differ() -> None:
    obj = {"spec": {"decision": "Approved", "keep": 1}}
    verdict = Verdict(spec={"decision": "Pending", "keep": 1})
    assert json_patch(obj, verdict) == [{"op": "add", "path": "/spec/decision", "value": "Pending"}]


def test_a_refusal_answers_not_allowed_with_code_and_message_and_no_patch() -> None:
    answer = respond(_review({}), RefusedError("alice may not decide", code=403))
    assert answer["response"] == {
        "uid": "u-1",
        "allowed": False,
        "status": {"code": 403, "message": "alice may not decide"},
    }


def test_an_allowed_request_carries_warnings_and_the_patch() -> None:
    answer = respond(
        _review({"metadata": {"annotations": {}}}),
        Verdict(annotations={"k": "v"}, warnings=["still needed: 1 more of 2"]),
    )
    assert answer["response"]["allowed"] is True
    assert answer["response"]["warnings"] == ["still needed: 1 more of 2"]
    assert answer["response"]["patchType"] == "JSONPatch"
    assert _patch(answer) == [{"op": "add", "path": "/metadata/annotations/k", "value": "v"}]


def test_the_server_answers_over_tls_by_hook_id(tmp_path: Path) -> None:
    certs = certificates.generate(tmp_path, hosts=["127.0.0.1"])
    seen: list[Review] = []

    async def stamp(review: Review) -> Verdict:
        seen.append(review)
        if review.user == "mallory":
            raise RefusedError("mallory is not an approver")
        return Verdict(annotations={"by": review.user})

    async def broken(review: Review) -> Verdict:
        raise KeyError("bug")

    async def test() -> None:
        port = certificates.free_port()
        server = Server(
            {"stamp": stamp, "broken": broken},
            addr="127.0.0.1",
            port=port,
            certfile=certs.cert,
            keyfile=certs.key,
        )
        await server.start()
        context = ssl.create_default_context(cafile=str(certs.ca))
        url = f"https://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as session:

                async def post(path: str, body: Any) -> tuple[int, Any]:
                    async with session.post(url + path, json=body, ssl=context) as response:
                        text = await response.text()
                        if response.content_type == "application/json":
                            return response.status, json.loads(text)
                        return response.status, text

                status, answer = await post("/stamp", _review({"metadata": {}}))
                assert status == 200
                assert _patch(answer)[-1]["value"] == "alice"
                assert seen[0].groups == ["sre", "system:authenticated"]
                mallory = _review({}, userInfo={"username": "mallory"})
                _, answer = await post("/stamp", mallory)
                assert answer["response"]["status"]["message"] == "mallory is not an approver"
                _, answer = await post("/broken", _review({}))
                assert answer["response"]["allowed"] is False  # fails closed, says why
                assert answer["response"]["status"]["code"] == 403
                assert "KeyError('bug')" in answer["response"]["status"]["message"]
                status, text = await post("/nope", _review({}))
                assert status == 404
                assert "nope" in text
                status, answer = await post("/stamp", {"kind": "Nothing"})
                assert status == 200
                assert answer["response"]["status"] == {
                    "code": 400,
                    "message": "not an AdmissionReview: no request",
                }
        finally:
            await server.stop()

    asyncio.run(test())


# --- whatever the body, an AdmissionReview answers it: never a 5xx ------------------------


async def _stamp(review: Review) -> Verdict:
    return Verdict(annotations={"optiinfra.io/submitted-by": review.user})


async def _posted(body: bytes, hook: Any = _stamp) -> tuple[int, dict[str, Any]]:
    """What the admission application answers to `body` (in process, over HTTP)."""
    async with TestClient(TestServer(application({"stamp": hook}))) as client:
        response = await client.post(
            "/stamp", data=body, headers={"Content-Type": "application/json"}
        )
        assert response.content_type == "application/json", await response.text()
        answer: dict[str, Any] = await response.json()
        return response.status, answer


def _nested(levels: int) -> str:
    return '{"a":' * levels + "{}" + "}" * levels


def _raw_review(obj: str, old: str | None = None, operation: str = "CREATE") -> bytes:
    request = f'"uid":"u-1","operation":"{operation}","userInfo":{{"username":"alice"}}'
    request += f',"object":{obj}' + (f',"oldObject":{old}' if old else "")
    return f'{{"apiVersion":"admission.k8s.io/v1","request":{{{request}}}}}'.encode()


def _recommendation(parameters: str, finalizers: str = "[]", title: str = "t") -> str:
    metadata = '{"name":"rec-1","annotations":{"optiinfra.io/submitted-by":"alice"}'
    metadata += f',"finalizers":{finalizers}}}'
    return f'{{"metadata":{metadata},"spec":{{"title":"{title}","parameters":{parameters}}}}}'


@pytest.mark.parametrize("levels", [MAX_DEPTH, 900, 5_000])
def test_an_object_nested_too_deeply_is_refused_naming_where(levels: int) -> None:
    """5 000 levels made json.loads raise RecursionError (an HTTP 500, "failed calling
    webhook"); 900 reached the hooks. Refused with code 400, naming the field."""
    status, answer = asyncio.run(_posted(_raw_review(_recommendation(_nested(levels)))))
    assert status == 200
    assert answer["response"]["uid"] == "u-1"
    assert answer["response"]["allowed"] is False
    assert answer["response"]["status"] == {
        "code": 400,
        "message": f"spec.parameters.a: nested deeper than {MAX_DEPTH} levels",
    }


def test_an_object_nested_within_the_bound_reaches_the_hook() -> None:
    seen: list[Review] = []

    async def hook(review: Review) -> Verdict:
        seen.append(review)
        return Verdict()

    # the object, spec and parameters are 3 of the levels
    body = _raw_review(_recommendation(_nested(MAX_DEPTH - 3)))
    status, answer = asyncio.run(_posted(body, hook))
    assert (status, answer["response"]["allowed"]) == (200, True)
    assert [r.too_deep for r in seen] == [None]


def test_a_deep_object_stored_before_can_lose_its_finalizer_but_not_change() -> None:
    """An object stored that deep (the webhooks were off) must not get stuck: an update
    that leaves its spec and the operator's annotations is allowed, nothing else is."""
    deep = _nested(5_000)
    stored = _recommendation(deep, finalizers='["optiinfra.io/plan"]')
    cases = {
        _recommendation(deep): True,  # the finalizer removed
        _recommendation(deep, title="changed"): False,
        _recommendation(deep.replace('{"a":{}', '{"b":{}', 1)): False,  # deep inside
        stored.replace('"alice"', '"mallory"'): False,  # the submitter's stamp
    }
    for new, allowed in cases.items():
        status, answer = asyncio.run(_posted(_raw_review(new, stored, operation="UPDATE")))
        assert (status, answer["response"]["allowed"]) == (200, allowed), new[:200]
        assert "patch" not in answer["response"]
    # an object that was stored too deep and is now fixed goes through the hook as usual
    status, answer = asyncio.run(
        _posted(_raw_review(_recommendation("{}"), stored, operation="UPDATE"))
    )
    assert (status, answer["response"]["allowed"]) == (200, True)


MALFORMED = {
    b"[1, 2]": "the body must be a JSON object, not list",
    b'{"request": []}': "request: must be an object, not list",
    b'{"request": {"userInfo": []}}': "userInfo: must be an object, not list",
    b'{"request": {"userInfo": {"username": 7}}}': "username: must be a string, not int",
    b'{"request": {"userInfo": {"groups": 7}}}': "groups: must be a list, not int",
    b'{"request": {"userInfo": {"groups": [{}]}}}': "userInfo.groups: must be a list of strings",
    b'{"request": {"object": [1]}}': "object: must be an object, not list",
    b'{"request": {"oldObject": "x"}}': "oldObject: must be an object, not str",
    b'{"request": {"object": {"metadata": []}}}': "metadata: must be an object, not list",
    b'{"request": {"operation": {}}}': "operation: must be a string, not dict",
    b'{"request": {"uid": "\xff': "",
    b"\xff\xfe": "",
    b"[" * 5_000: "the document ends inside a value nested deeper than",
    b"]" + b"[" * 100: "']' at byte 0 closes nothing",
    b"": "",
}


@pytest.mark.parametrize("body", list(MALFORMED))
def test_a_malformed_review_is_refused_with_400_and_what_is_wrong(body: bytes) -> None:
    status, answer = asyncio.run(_posted(body))
    assert status == 200
    assert answer["kind"] == "AdmissionReview"
    assert answer["response"]["allowed"] is False
    assert answer["response"]["status"]["code"] == 400
    message = answer["response"]["status"]["message"]
    assert message.startswith("not an AdmissionReview: ")
    assert MALFORMED[body] in message


def test_an_update_of_the_largest_object_the_api_server_takes_is_read() -> None:
    """An UPDATE carries the old and the new object, each up to the API server's 3 MiB:
    aiohttp's default 1 MiB answered 413, and such an object could not even lose its
    finalizer."""
    big = _recommendation("{}", title="x" * (3 * 1024 * 1024 - 512))
    status, answer = asyncio.run(_posted(_raw_review(big, big, operation="UPDATE")))
    assert (status, answer["response"]["allowed"]) == (200, True)
