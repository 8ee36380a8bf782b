"""The client's calls from the event loop (k8s/http.py): the credentials and the errors
of the kubernetes client's configuration, against a local HTTP server. (Against the API
server every cluster test makes them, as the operator's ServiceAccount.)"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import kubernetes
import pytest
from aiohttp import web

from coordinator.k8s import certificates
from coordinator.k8s.client import Client, transient


def test_calls_carry_the_configuration_token_and_fail_as_the_client_does() -> None:
    seen: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.text()
        seen.append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "authorization": request.headers.get("Authorization"),
                "content_type": request.headers.get("Content-Type"),
                "body": json.loads(body) if body else None,
            }
        )
        if request.path.endswith("/missing"):
            return web.json_response({"kind": "Status", "code": 404}, status=404)
        if request.path.endswith("/status"):
            return web.json_response({"kind": "Status", "message": "overloaded"}, status=503)
        return web.json_response({"metadata": {"name": "a", "resourceVersion": "7"}})

    async def test() -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        port = certificates.free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        configuration = kubernetes.client.Configuration()
        configuration.host = f"http://127.0.0.1:{port}"
        configuration.api_key = {"authorization": "Bearer s3cret"}
        client = Client(kubernetes.client.ApiClient(configuration), workers=2)
        try:
            created = await client.create("approvals", "ns", {"metadata": {"name": "a"}})
            assert created["metadata"]["resourceVersion"] == "7"
            assert await client.get("approvals", "ns", "missing") is None
            with pytest.raises(kubernetes.client.ApiException) as failed:
                await client.patch_status("approvals", "ns", "a", {"phase": "x"})
            assert failed.value.status == 503
            assert "overloaded" in failed.value.body
            assert transient(failed.value)
        finally:
            await client.aclose()
            await runner.cleanup()
        create = seen[0]
        assert create["method"] == "POST"
        assert create["path"] == "/apis/optiinfra.io/v1alpha1/namespaces/ns/approvals"
        assert create["query"] == {"fieldManager": "optiinfra-coordinator"}
        assert create["authorization"] == "Bearer s3cret"
        patch = seen[2]
        assert patch["content_type"] == "application/merge-patch+json"
        assert patch["body"] == {"status": {"phase": "x"}}

    asyncio.run(test())
