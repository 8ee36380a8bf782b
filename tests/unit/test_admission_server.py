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

from coordinator.k8s import webhooks
from coordinator.k8s.admission import RefusedError, Review, Server, Verdict, json_patch, respond


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
    certs = webhooks.generate(tmp_path, hosts=["127.0.0.1"])
    seen: list[Review] = []

    async def stamp(review: Review) -> Verdict:
        seen.append(review)
        if review.user == "mallory":
            raise RefusedError("mallory is not an approver")
        return Verdict(annotations={"by": review.user})

    async def broken(review: Review) -> Verdict:
        raise KeyError("bug")

    async def test() -> None:
        port = webhooks.free_port()
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
                assert answer["response"]["status"]["code"] == 500
                status, text = await post("/nope", _review({}))
                assert status == 404
                assert "nope" in text
                status, text = await post("/stamp", {"kind": "Nothing"})
                assert status == 400
        finally:
            await server.stop()

    asyncio.run(test())
