"""The gateway's HTTP server in process (coordinator.gateway.server), against an API server
that is down: what it caches, and what it answers to bad bodies and slow clients. The
answers of a running API server are tested in tests/cluster/test_gateway.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import kubernetes
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from coordinator.gateway import callers, server
from coordinator.gateway import http as http_
from tests.support.net import free_port

COORDINATE = "/coordination/coordinate"
BEARER = {"Authorization": "Bearer s3cret-token"}


def _gateway() -> callers.Gateway:
    """A gateway whose API server is down (nothing listens on its port)."""
    base = kubernetes.client.Configuration(host=f"http://127.0.0.1:{free_port()}")
    base.retries = 0
    return callers.Gateway(base=base, namespace="default", settle_timeout=1.0)


def in_process(test: Callable[[TestClient[Any, Any]], Awaitable[None]]) -> None:
    """Run `test` with a client of the gateway's application, served in process."""

    async def run() -> None:
        async with TestClient(TestServer(server.application(_gateway()))) as client:
            await test(client)

    asyncio.run(run())


def _request(token: str) -> web.Request:
    return make_mocked_request("GET", "/", headers={"Authorization": f"Bearer {token}"})


def test_tokens_are_cached_under_their_hash_and_the_caches_are_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(callers, "CLIENTS", 16)
    monkeypatch.setattr(callers, "IDENTITIES", 32)
    gateway = _gateway()
    tokens = [f"token-{n}" for n in range(callers.CLIENTS + 10)]
    for token in tokens:
        gateway.client(_request(token))
    assert len(gateway._clients) == callers.CLIENTS
    assert not set(tokens) & set(gateway._clients)
    assert callers._key(tokens[-1]) in gateway._clients
    assert callers._key(tokens[0]) not in gateway._clients  # the least recently used went
    gateway.client(_request(tokens[10]))  # used again: kept over those used before it
    for n in range(callers.CLIENTS - 1):
        gateway.client(_request(f"more-{n}"))
    assert callers._key(tokens[10]) in gateway._clients
    assert callers._key(tokens[-1]) not in gateway._clients
    for n in range(callers.IDENTITIES + 5):
        gateway._who.keep(callers._key(f"t{n}"), (time.monotonic() + 30, f"user-{n}"))
    assert len(gateway._who) == callers.IDENTITIES


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"customer_id": "c\xff"}', "body: not UTF-8 (invalid start byte at byte 18)"),
        (b'{"a":' * 5_000 + b"{}" + b"}" * 5_000, "body: nested deeper than 64 levels"),
        (b"[1, 2]", "body: must be a JSON object"),
        (b'"text"', "body: must be a JSON object"),
        (b"{", "body: invalid JSON (Expecting property name enclosed in double quotes"),
    ],
)
def test_a_bad_body_is_a_400_naming_what_is_wrong(body: bytes, message: str) -> None:
    async def test(client: TestClient[Any, Any]) -> None:
        for path in (COORDINATE, "/coordination/approvals/a-1/approve"):
            response = await client.post(path, data=body, headers=BEARER)
            assert response.status == 400, await response.text()
            assert (await response.json())["error"].startswith(message)

    in_process(test)


def test_an_api_server_that_is_down_is_a_502() -> None:
    in_process(_down)


async def _down(client: TestClient[Any, Any]) -> None:
    good = {"customer_id": "c", "recommendations": []}
    for method, path, body in [
        ("POST", COORDINATE, good),
        ("GET", "/coordination/approvals", None),
        ("GET", "/coordination/plans/p-1", None),
        ("POST", "/coordination/approvals/a-1/approve", {}),
    ]:
        response = await client.request(method, path, json=body, headers=BEARER)
        assert response.status == 502, await response.text()
        assert await response.json() == {"error": "cannot reach the API server"}


def test_health_says_only_whether_the_api_server_answers() -> None:
    async def test(client: TestClient[Any, Any]) -> None:
        response = await client.get("/health")
        assert response.status == 503
        assert await response.json() == {"status": "unhealthy"}  # no address, no error text

    in_process(test)


async def _served(gateway: callers.Gateway) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(server.application(gateway), **server.server_options())
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


async def _trickle(writer: asyncio.StreamWriter, reader: asyncio.StreamReader) -> bytes:
    """Send a byte every 0.1 s until the server answers or closes; what it answered."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            return await asyncio.wait_for(reader.read(65536), timeout=0.1)
        except TimeoutError:
            pass
        try:
            writer.write(b"x")
            await writer.drain()
        except ConnectionError:
            return await reader.read(65536)
    raise AssertionError("the server kept a trickling client for 10 s")


def test_a_client_that_trickles_headers_or_body_is_cut_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server, "HEADER_SECONDS", 0.5)
    monkeypatch.setattr(http_, "BODY_SECONDS", 0.5)
    asyncio.run(_slow_clients())


async def _slow_clients() -> None:
    runner, port = await _served(_gateway())
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /coordination/coordinate HTTP/1.1\r\nHost: gw\r\nX-Slow: ")
        started = time.monotonic()
        assert await _trickle(writer, reader) == b""  # closed, nothing answered
        assert time.monotonic() - started < 3
        writer.close()

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /coordination/coordinate HTTP/1.1\r\nHost: gw\r\n"
            b"Authorization: Bearer t\r\nContent-Length: 1000\r\n\r\n{"
        )
        answer = await _trickle(writer, reader)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b'{"error": "body: not received within 0.5s"}' in answer
        writer.close()
        await writer.wait_closed()
    finally:
        await runner.cleanup()
