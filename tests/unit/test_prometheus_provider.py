"""The Prometheus provider against a local aiohttp server on 127.0.0.1: what each kind of
answer becomes (a value, no data, an error naming why), the token from its Secret, and the
bounds (body size, nesting, timeout, redirects, addresses). The real Prometheus is in
tests/cluster/test_prometheus.py."""

from __future__ import annotations

import asyncio
import json
import math
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from coordinator.api.verification import PrometheusProvider, SecretKeyRef
from coordinator.core import addresses
from coordinator.core.verification import Reading
from coordinator.k8s import certificates as certs_
from coordinator.k8s.client import ApiException
from coordinator.providers import prometheus
from tests.support.answers import CHUNK, HUGE, serving

TOKEN = SecretKeyRef(name="prom-token", key="token")
QUERY = 'sum(rate(http_requests_total{namespace="shop"}[1m]))'


def vector(*values: str) -> dict[str, Any]:
    result = [
        {"metric": {"pod": f"p{i}"}, "value": [1700000000.5, v]} for i, v in enumerate(values)
    ]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def error_of(found: Reading) -> str:
    """The error of a Reading that must be one (no value)."""
    assert found.value is None
    assert found.error is not None
    return found.error


class Server:
    """Answers /api/v1/query with `answer` (a handler), recording each request."""

    def __init__(self, answer: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> None:
        self.answer = answer
        self.requests: list[web.Request] = []
        self.took = 0.0
        """How long the query took, in seconds."""

    def app(self) -> web.Application:
        async def handle(request: web.Request) -> web.StreamResponse:
            self.requests.append(request)
            return await self.answer(request)

        app = web.Application()
        app.router.add_get("/api/v1/query", handle)
        app.router.add_get("/prefix/api/v1/query", handle)
        return app


def json_answer(body: Any, status: int = 200) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def answer(_: web.Request) -> web.Response:
        return web.json_response(body, status=status)

    return answer


def raw_answer(body: bytes, status: int = 200) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def answer(_: web.Request) -> web.Response:
        return web.Response(body=body, status=status, content_type="application/json")

    return answer


class Secrets:
    """The operator's Secret reads: a mapping, or an ApiException to raise."""

    def __init__(self, data: dict[tuple[str, str], dict[str, bytes]] | None = None) -> None:
        self.data = data or {}
        self.error: ApiException | None = None
        self.reads: list[tuple[str, str, str]] = []

    async def read(self, namespace: str, name: str, key: str) -> bytes | None:
        self.reads.append((namespace, name, key))
        if self.error is not None:
            raise self.error
        found = self.data.get((namespace, name))
        if found is None:
            raise ApiException(status=404, reason="Not Found")
        return found.get(key)


def ask(
    answer: Callable[[web.Request], Awaitable[web.StreamResponse]],
    *,
    secrets: Secrets | None = None,
    policy: addresses.Policy = addresses.LOCAL_TESTING,
    path: str = "",
    tls: ssl.SSLContext | None = None,
    **provider: Any,
) -> tuple[Reading, Server]:
    server = Server(answer)

    async def main() -> Reading:
        async with serving(server.app(), tls) as url:
            spec = PrometheusProvider(address=url + path, **provider)
            client = prometheus.Prometheus((secrets or Secrets()).read, policy=policy)
            began = time.monotonic()
            try:
                return await client.query(spec, QUERY, namespace="shop", template="latency")
            finally:
                server.took = time.monotonic() - began

    return asyncio.run(main()), server


def test_one_sample_is_its_value_and_the_query_is_sent_with_its_timeout() -> None:
    found, server = ask(json_answer(vector("0.25")), timeout_seconds=7)
    assert found == Reading(value=0.25)
    (request,) = server.requests
    assert request.query["query"] == QUERY
    assert request.query["timeout"] == "7s"
    assert "Authorization" not in request.headers


def test_an_address_with_a_path_prefix_keeps_it() -> None:
    found, server = ask(json_answer(vector("3")), path="/prefix/")
    assert found == Reading(value=3.0)
    assert server.requests[0].path == "/prefix/api/v1/query"


def test_a_scalar_is_its_value_and_nan_stays_nan_for_the_machine_to_call_no_data() -> None:
    scalar = {"status": "success", "data": {"resultType": "scalar", "result": [1.0, "42.5"]}}
    assert ask(json_answer(scalar))[0] == Reading(value=42.5)
    nan = ask(json_answer(vector("NaN")))[0]
    assert nan.error is None
    assert nan.value is not None
    assert math.isnan(nan.value)


def test_no_sample_is_no_data_never_a_value() -> None:
    found, _ = ask(json_answer(vector()))
    assert found == Reading(value=None, error=None)


def test_several_samples_are_an_error_asking_for_an_aggregation() -> None:
    found, _ = ask(json_answer(vector("1", "2")))
    assert "2 series" in error_of(found)
    assert "sum(" in error_of(found)


@pytest.mark.parametrize(
    ("kind", "result"),
    [("matrix", [{"metric": {}, "values": [[1, "1"]]}]), ("string", [1, "x"])],
)
def test_a_range_vector_or_a_string_is_an_error(kind: str, result: Any) -> None:
    body = {"status": "success", "data": {"resultType": kind, "result": result}}
    found, _ = ask(json_answer(body))
    assert f"a {kind}" in error_of(found)


def test_a_sample_that_is_not_a_number_is_an_error() -> None:
    found, _ = ask(json_answer(vector("fast")))
    assert "not [time" in error_of(found)


def test_prometheus_errors_are_named() -> None:
    body = {"status": "error", "errorType": "bad_data", "error": 'parse error: unexpected "}"'}
    found, _ = ask(json_answer(body, status=400))
    assert "answered 400: bad_data: parse error" in error_of(found)
    assert "VerificationTemplate shop/latency" in error_of(found)


def test_a_500_without_json_is_an_error_with_its_status() -> None:
    found, _ = ask(raw_answer(b"<html>upstream down</html>", status=500))
    assert "answered 500 without a JSON object" in error_of(found)


def test_bad_json_is_an_error() -> None:
    found, _ = ask(raw_answer(b'{"status": "success", "data": '))
    assert "without a JSON object" in error_of(found)


def test_deep_nesting_is_refused_before_it_is_parsed() -> None:
    found, _ = ask(raw_answer(b"[" * 5000 + b"]" * 5000))
    assert f"deeper than {prometheus.MAX_DEPTH}" in error_of(found)


def test_a_huge_body_is_not_read_beyond_the_limit() -> None:
    sent = 0

    async def stream(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for _ in range(HUGE):
                await response.write(CHUNK)
                sent += len(CHUNK)
        except (ConnectionError, RuntimeError):
            return response
        await response.write_eof()
        return response

    found, _ = ask(stream)
    assert "64 KiB" in error_of(found)
    assert sent < HUGE * len(CHUNK)


def test_no_answer_within_the_timeout_is_an_error_in_about_the_timeout() -> None:
    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(4)
        return web.json_response(vector("1"))

    found, server = ask(slow, timeout_seconds=1)
    assert "no answer within 1 s" in error_of(found)
    assert server.took < 3


def test_a_redirect_is_not_followed() -> None:
    async def moved(_: web.Request) -> web.Response:
        raise web.HTTPFound("http://169.254.169.254/latest/meta-data")

    found, server = ask(moved)
    assert "answered 302" in error_of(found)
    assert len(server.requests) == 1


def test_loopback_is_refused_unless_allowed() -> None:
    found, server = ask(json_answer(vector("1")), policy=addresses.STRICT)
    assert "loopback address" in error_of(found)
    assert server.requests == []


def test_https_is_trusted_with_the_ca_bundle_and_only_with_it(tmp_path: Path) -> None:
    certs = certs_.generate(tmp_path / "certs", hosts=["127.0.0.1"])
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(certs.cert, certs.key)
    trusted, _ = ask(json_answer(vector("5")), tls=tls, ca_bundle=certs.ca.read_text())
    assert trusted == Reading(value=5.0)
    untrusted, server = ask(json_answer(vector("5")), tls=tls)
    assert "certificate" in error_of(untrusted).lower()
    assert server.requests == []


def test_the_token_comes_from_the_secret_the_template_names() -> None:
    secrets = Secrets({("shop", "prom-token"): {"token": b"s3cret\n"}})
    found, server = ask(
        json_answer(vector("1")),
        secrets=secrets,
        secret_ref=SecretKeyRef(name="prom-token", key="token"),
    )
    assert found == Reading(value=1.0)
    assert server.requests[0].headers["Authorization"] == "Bearer s3cret"
    assert secrets.reads == [("shop", "prom-token", "token")]


@pytest.mark.parametrize(
    ("data", "error", "expected"),
    [
        (
            {},
            None,
            "prom-token (the Prometheus token of VerificationTemplate latency) does not exist",
        ),
        ({("shop", "prom-token"): {}}, None, "has no key 'token'"),
        ({("shop", "prom-token"): {"token": b"a b"}}, None, "not a bearer token"),
        ({}, ApiException(status=403, reason="Forbidden"), "Role optiinfra-endpoint-secrets"),
    ],
)
def test_a_token_that_cannot_be_read_is_an_error_and_nothing_is_sent(
    data: dict[tuple[str, str], dict[str, bytes]], error: ApiException | None, expected: str
) -> None:
    secrets = Secrets(data)
    secrets.error = error
    found, server = ask(
        json_answer(vector("1")),
        secrets=secrets,
        secret_ref=SecretKeyRef(name="prom-token", key="token"),
    )
    assert expected in error_of(found)
    assert server.requests == []


def test_an_unreachable_api_server_is_raised_not_measured() -> None:
    secrets = Secrets()
    secrets.error = ApiException(status=503, reason="Service Unavailable")
    with pytest.raises(ApiException):
        ask(json_answer(vector("1")), secrets=secrets, secret_ref=SecretKeyRef(name="t", key="t"))


def test_reading_is_pure_over_status_and_body() -> None:
    body = json.dumps(vector("2")).encode()
    assert prometheus.reading(200, body, name="p") == Reading(value=2.0)
    assert prometheus.reading(503, body, name="p").error == "p answered 503: error: no message"


def test_a_refused_connection_is_an_error_that_says_so() -> None:
    async def main() -> Reading:
        client = prometheus.Prometheus(Secrets().read, policy=addresses.LOCAL_TESTING)
        spec = PrometheusProvider(address="http://127.0.0.1:1")
        return await client.query(spec, QUERY, namespace="shop", template="latency")

    error = error_of(asyncio.run(main()))
    assert "no answer (" in error
    assert "Connect call failed" in error
