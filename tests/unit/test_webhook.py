"""The webhook executor and the reference agent, without a cluster.

The protocol helpers (signing, keys, classification) and the agent backoff directly; the executor
against a fake transport (what it sends, how it waits), against the reference agent
served in-process on 127.0.0.1 (plain and TLS with a caBundle), and against a server
whose answers are too large to read.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pydantic
import pytest
from aiohttp import web

from coordinator.agent import Agent
from coordinator.api import defaults
from coordinator.api.endpoint import AgentEndpointSpec, url_problem
from coordinator.api.plan import Executor, Step
from coordinator.core import addresses
from coordinator.core import webhook as protocol
from coordinator.core.addresses import Policy
from coordinator.executors import StepContext
from coordinator.executors.endpoints import EndpointError, Target
from coordinator.executors.post import AddressRefused, NoAnswerError, aiohttp_post, checked_post
from coordinator.executors.webhook import WebhookExecutor
from coordinator.k8s import certificates as certs_
from tests.support.answers import CHUNK, HUGE, Huge, serving, with_huge

KEY = b"s3cret-hmac-key"
CONTEXT = StepContext(
    namespace="team-a", plan="rec-1", uid="uid-123", recommendation="rec-1", customer_id="acme"
)


def step(**params: Any) -> Step:
    return Step(
        name="resize",
        action="resize_cluster",
        executor=Executor.WEBHOOK,
        params={"endpoint": "agent", **params},
    )


# --- the protocol -----------------------------------------------------------------------


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"a":1}'
    expected = hmac.new(KEY, b"1700000000." + body, hashlib.sha256).hexdigest()
    assert protocol.signature(KEY, 1700000000, body) == f"sha256={expected}"
    headers = protocol.headers(KEY, 1700000000, body)
    assert headers["X-Optiinfra-Timestamp"] == "1700000000"
    assert headers["X-Optiinfra-Signature"] == f"sha256={expected}"


def test_verify_accepts_a_good_request_and_refuses_the_rest() -> None:
    body = b'{"a":1}'
    sig = protocol.signature(KEY, 1000, body)

    def check(**kw: Any) -> str | None:
        args: dict[str, Any] = {"timestamp": "1000", "signature_header": sig, "payload": body}
        return protocol.verify(KEY, **(args | kw), now=kw.pop("now", 1010))

    assert check() is None
    assert check(payload=b'{"a":2}') == "bad signature"
    assert check(signature_header=protocol.signature(b"other", 1000, body)) == "bad signature"
    late = protocol.verify(KEY, timestamp="1000", signature_header=sig, payload=body, now=1301)
    assert "more than 300 s" in (late or "")
    assert check(timestamp=None) is not None
    assert check(timestamp="soon") is not None


def test_verify_compares_bytes_and_refuses_any_header_with_a_reason() -> None:
    body = b'{"a":1}'
    good = protocol.signature(KEY, 1000, body)

    def check(timestamp: str | bytes, signature_header: str | bytes) -> str | None:
        return protocol.verify(
            KEY, timestamp=timestamp, signature_header=signature_header, payload=body, now=1000
        )

    assert check("1000", good) is None
    assert check(b"1000", good.encode()) is None
    for bad in ("sha256=é" + good[8:], good[:-1] + "\u00ff", b"sha256=\xff\xfe", "\udcff"):
        assert check("1000", bad) == "bad signature"
    for stamp in ("\uff11\uff10\uff10\uff10", "1e3", "-1000", "1_000", "9" * 5000, b"\xff"):
        assert check(stamp, good) == "X-Optiinfra-Timestamp is not Unix seconds"


def test_each_purpose_signs_its_own_bytes() -> None:
    body = b'{"a":1}'
    for purpose, signed in [
        (protocol.STEP, b"1000." + body),
        (protocol.NOTIFY, b"notify.1000." + body),
        (protocol.READ, b"read.1000." + body),
    ]:
        mac = hmac.new(KEY, signed, hashlib.sha256).hexdigest()
        assert protocol.signature(KEY, 1000, body, purpose=purpose) == f"sha256={mac}"
    notification = protocol.signature(KEY, 1000, body, purpose=protocol.NOTIFY)
    as_step = protocol.verify(
        KEY, timestamp="1000", signature_header=notification, payload=body, now=1000
    )
    assert as_step == "bad signature"
    assert protocol.read_headers(KEY, 1000, "/applied")[protocol.SIGNATURE_HEADER] == (
        protocol.signature(KEY, 1000, b"/applied", purpose=protocol.READ)
    )


def test_the_idempotency_key_depends_on_plan_step_and_operation_only() -> None:
    key = protocol.idempotency_key("uid-123", "resize", "execute")
    assert key == hashlib.sha256(b"uid-123|resize|execute").hexdigest()
    assert key == protocol.idempotency_key("uid-123", "resize", "execute")
    assert key != protocol.idempotency_key("uid-123", "resize", "undo")
    assert key != protocol.idempotency_key("uid-124", "resize", "execute")


@pytest.mark.parametrize(
    ("status", "answer"),
    [
        (200, protocol.Answer.DONE),
        (202, protocol.Answer.AGAIN),
        (500, protocol.Answer.AGAIN),
        (503, protocol.Answer.AGAIN),
        (None, protocol.Answer.AGAIN),
        (400, protocol.Answer.FAILED),
        (401, protocol.Answer.FAILED),
        (422, protocol.Answer.FAILED),
        (204, protocol.Answer.FAILED),
        (302, protocol.Answer.FAILED),
    ],
)
def test_classify(status: int | None, answer: protocol.Answer) -> None:
    assert protocol.classify(status) is answer


def test_backoff_starts_at_half_a_second_and_doubles_to_five() -> None:
    pauses = defaults.AGENT_RETRY.delays()
    assert [next(pauses) for _ in range(7)] == [0.5, 1, 2, 4, 5, 5, 5]


def test_body_carries_previous_result_for_undo_only() -> None:
    common: dict[str, Any] = {
        "key": "k",
        "namespace": "ns",
        "recommendation": "r",
        "customer_id": "c",
        "plan": "r",
        "step": {"name": "s", "action": "a", "params": {}},
    }
    execute = json.loads(protocol.body(operation="execute", **common))
    undo = json.loads(protocol.body(operation="undo", previous_result={"x": 1}, **common))
    assert "previousResult" not in execute
    assert undo["previousResult"] == {"x": 1}
    assert set(execute) == {
        "operation", "idempotencyKey", "namespace", "recommendation", "customerId", "plan", "step",
        "submitter",
    }  # fmt: skip
    assert execute["submitter"] == {"user": None, "groups": []}  # not stamped: nobody known
    signed = protocol.body(operation="execute", submitter="agent", groups=["agents"], **common)
    assert json.loads(signed)["submitter"] == {"user": "agent", "groups": ["agents"]}


# --- AgentEndpoint ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://agent.example.com/hook",
        "http://127.0.0.1:8080/",
        "http://127.1.2.3/",
        "http://[::1]:9000/x",
        "http://localhost:8080",
        "http://127.0.0.1",
    ],
)
def test_allowed_urls(url: str) -> None:
    assert url_problem(url) is None
    AgentEndpointSpec.model_validate({"url": url, "secretRef": {"name": "s", "key": "k"}})


@pytest.mark.parametrize(
    "url",
    [
        "http://agent.example.com/hook",
        "http://10.0.0.1/",
        "http://127.0.0.1@evil.example.com/",
        "ftp://127.0.0.1/",
        "https://",
        "not a url",
        "http://127.0.0.256/",
        "http://localhost.evil.example.com/",
        "http://127.0.0.1:80@evil.example.com/",
        "https://agent.example.com/\n",
    ],
)
def test_refused_urls(url: str) -> None:
    assert url_problem(url) is not None
    with pytest.raises(pydantic.ValidationError):
        AgentEndpointSpec.model_validate({"url": url, "secretRef": {"name": "s", "key": "k"}})


def test_endpoint_defaults_and_ca_bundle() -> None:
    spec = AgentEndpointSpec.model_validate(
        {"url": "https://a.example", "secretRef": {"name": "s", "key": "k"}}
    )
    assert spec.timeout_seconds == 30
    with pytest.raises(pydantic.ValidationError):
        AgentEndpointSpec.model_validate(
            {"url": "https://a.example", "secretRef": {"name": "s", "key": "k"}, "caBundle": "x"}
        )
    with pytest.raises(pydantic.ValidationError):
        AgentEndpointSpec.model_validate(
            {
                "url": "https://a.example",
                "secretRef": {"name": "s", "key": "k"},
                "timeoutSeconds": 0,
            }
        )


# --- the executor with a fake transport ---------------------------------------------------


class FakeResolver:
    def __init__(self, target: Target | Exception) -> None:
        self.target = target

    async def resolve(self, namespace: str, name: str) -> Target:
        if isinstance(self.target, Exception):
            raise self.target
        return self.target


TARGET = Target(name="agent", url="http://127.0.0.1:1/", key=KEY, timeout_seconds=7)


class Script:
    """A fake transport answering from a script; records requests, a fake clock and sleeps."""

    def __init__(self, *answers: tuple[int, bytes] | None) -> None:
        self.answers = list(answers)
        self.sent: list[tuple[bytes, dict[str, str], float]] = []
        self.sleeps: list[float] = []
        self.now = 1000.0

    async def post(
        self, target: Target, payload: bytes, headers: Mapping[str, str], seconds: float
    ) -> tuple[int, bytes]:
        self.sent.append((payload, dict(headers), seconds))
        answer = self.answers.pop(0) if self.answers else None
        if answer is None:
            self.now += seconds
            raise NoAnswerError("TimeoutError")
        return answer

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def executor(self, resolver: Any = None) -> WebhookExecutor:
        return WebhookExecutor(
            resolver or FakeResolver(TARGET),
            post=self.post,
            sleep=self.sleep,
            clock=lambda: self.now,
            monotonic=lambda: self.now,
        )


def run(coro: Awaitable[Any]) -> Any:
    async def main() -> Any:
        return await coro

    return asyncio.run(main())


def test_accepted_unavailable_and_unanswered_are_asked_again_with_the_same_key() -> None:
    script = Script((202, b""), (503, b"oops"), None, (200, b'{"result": {"nodes": 3}}'))
    outcome = run(script.executor().execute(step(), context=CONTEXT))
    assert outcome.ok, outcome.error
    assert outcome.result == {"nodes": 3}
    assert script.sleeps == [0.5, 1, 2]
    bodies = {payload for payload, _, _ in script.sent}
    assert len(bodies) == 1  # the same request each time
    [payload] = bodies
    document = json.loads(payload)
    assert document["idempotencyKey"] == protocol.idempotency_key("uid-123", "resize", "execute")
    assert document["operation"] == "execute"
    assert document["customerId"] == "acme"
    assert document["recommendation"] == "rec-1"
    expected_step = {"name": "resize", "action": "resize_cluster", "params": {"endpoint": "agent"}}
    assert document["step"] == expected_step
    for payload, headers, seconds in script.sent:
        assert seconds == 7  # the endpoint's timeoutSeconds per request
        stamp = headers["X-Optiinfra-Timestamp"]
        assert headers["X-Optiinfra-Signature"] == protocol.signature(KEY, stamp, payload)
    stamps = [headers["X-Optiinfra-Timestamp"] for _, headers, _ in script.sent]
    assert stamps == sorted(stamps)
    assert len(set(stamps)) > 1


def test_a_4xx_fails_the_step_with_the_agent_message() -> None:
    script = Script((422, b'{"error": "quota exceeded"}'))
    outcome = run(script.executor().execute(step(), context=CONTEXT))
    assert not outcome.ok
    assert outcome.error == "agent endpoint agent refused (422): quota exceeded"
    assert len(script.sent) == 1


def test_the_step_times_out_after_params_timeout_seconds() -> None:
    script = Script(*([(202, b"")] * 100))
    outcome = run(script.executor().execute(step(timeoutSeconds=20), context=CONTEXT))
    assert not outcome.ok
    assert "no final answer to execute of step resize within 20 s" in (outcome.error or "")
    assert "last: 202 accepted" in (outcome.error or "")
    assert script.now <= 1000 + 20 + 1e-9


def test_undo_sends_the_previous_result_under_its_own_key() -> None:
    script = Script((200, b'{"result": {}}'))
    outcome = run(script.executor().undo(step(), result={"change": "c1"}, context=CONTEXT))
    assert outcome.ok
    document = json.loads(script.sent[0][0])
    assert document["operation"] == "undo"
    assert document["previousResult"] == {"change": "c1"}
    assert document["idempotencyKey"] == protocol.idempotency_key("uid-123", "resize", "undo")


def test_a_missing_endpoint_param_or_endpoint_fails_without_a_request() -> None:
    script = Script()
    bare = Step(name="bare", action="x", executor=Executor.WEBHOOK)
    outcome = run(script.executor().execute(bare, context=CONTEXT))
    assert "params.endpoint must name an AgentEndpoint" in (outcome.error or "")
    missing = FakeResolver(EndpointError("AgentEndpoint agent does not exist in namespace team-a"))
    outcome = run(script.executor(missing).execute(step(), context=CONTEXT))
    assert outcome.error == "AgentEndpoint agent does not exist in namespace team-a"
    assert script.sent == []


def test_a_200_without_a_json_result_fails() -> None:
    outcome = run(Script((200, b"<html>")).executor().execute(step(), context=CONTEXT))
    assert not outcome.ok
    assert "without a JSON" in (outcome.error or "")


# --- the executor against the reference agent on 127.0.0.1 --------------------------------


async def get_json(url: str, *, key: bytes = KEY) -> Any:
    """GET one of the agent's read-only endpoints, signed with `key`."""
    signed = protocol.read_headers(key, int(time.time()), urlsplit(url).path)
    async with aiohttp.ClientSession() as session, session.get(url, headers=signed) as response:
        return await response.json()


def fast(executor: WebhookExecutor) -> WebhookExecutor:
    """No real waiting between attempts."""

    async def no_wait(_: float) -> None:
        await asyncio.sleep(0)

    executor._sleep = no_wait
    return executor


LOCAL_POST = checked_post(addresses.LOCAL_TESTING)
"""What `coordinator run --allow-loopback-endpoints` sends with: the agent is on 127.0.0.1."""


def local(resolver: FakeResolver) -> WebhookExecutor:
    return WebhookExecutor(resolver, post=LOCAL_POST)


def with_agent(
    tmp_path: Path, test: Callable[[str, Agent], Awaitable[None]], ssl_context: Any = None
) -> None:
    async def main() -> None:
        agent = Agent(KEY, tmp_path / "state.json")
        async with serving(agent, ssl_context) as url:
            await test(url, agent)

    asyncio.run(main())


@pytest.mark.parametrize(
    ("behaviour", "requests"), [("ok", 1), ("accept-then-poll", 3), ("flaky", 3)]
)
def test_the_agent_applies_once_whatever_the_path(
    tmp_path: Path, behaviour: str, requests: int
) -> None:
    async def test(url: str, agent: Agent) -> None:
        executor = fast(local(FakeResolver(Target("agent", url + "/", KEY))))
        outcome = await executor.execute(step(agentBehaviour=behaviour), context=CONTEXT)
        assert outcome.ok, outcome.error
        key = protocol.idempotency_key("uid-123", "resize", "execute")
        assert outcome.result == {"applied": True, "action": "resize_cluster", "change": key[:12]}
        assert await get_json(url + "/applied") == {key: 1}
        assert await get_json(url + "/requests") == {key: requests}
        again = await executor.execute(step(agentBehaviour=behaviour), context=CONTEXT)
        assert again.result == outcome.result  # a repeated key: the same result, not applied
        assert await get_json(url + "/applied") == {key: 1}

    with_agent(tmp_path, test)


def test_the_agent_refuses_and_the_step_fails(tmp_path: Path) -> None:
    async def test(url: str, agent: Agent) -> None:
        executor = local(FakeResolver(Target("agent", url, KEY)))
        params = {"agentBehaviour": "fail", "agentError": "no capacity in eu-west-1"}
        outcome = await executor.execute(step(**params), context=CONTEXT)
        assert outcome.error == "agent endpoint agent refused (422): no capacity in eu-west-1"
        assert await get_json(url + "/applied") == {}

    with_agent(tmp_path, test)


def test_the_agent_refuses_a_bad_signature(tmp_path: Path) -> None:
    async def test(url: str, agent: Agent) -> None:
        wrong = local(FakeResolver(Target("agent", url, b"not-the-key")))
        outcome = await wrong.execute(step(), context=CONTEXT)
        assert outcome.error == "agent endpoint agent refused (401): bad signature"
        payload = b'{"operation":"execute"}'
        stale = protocol.headers(KEY, int(time.time()) - 600, payload)
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, data=payload, headers=stale) as response,
        ):
            assert response.status == 401
            assert "more than 300 s" in (await response.json())["error"]
        assert await get_json(url + "/applied") == {}

    with_agent(tmp_path, test)


async def raw_post(url: str, headers: bytes, body: bytes) -> int:
    """POST with header bytes as they are (aiohttp's client would not send these): the
    status code of the answer."""
    split = urlsplit(url)
    reader, writer = await asyncio.open_connection(split.hostname, split.port)
    writer.write(
        b"POST / HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n"
        + headers
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    writer.close()
    await writer.wait_closed()
    return status


def test_the_agent_answers_401_to_a_signature_that_is_not_ascii(tmp_path: Path) -> None:
    async def test(url: str, agent: Agent) -> None:
        payload = protocol.body(
            operation="execute",
            key="k1",
            namespace="n",
            recommendation="r",
            customer_id="c",
            plan="p",
            step={"name": "s", "action": "a", "params": {}},
        )
        stamp = f"X-Optiinfra-Timestamp: {int(time.time())}\r\n".encode()
        for signature in ("sha256=é".encode(), "sha256=☃".encode() * 10, b"sha256=\xff"):
            sent = stamp + b"X-Optiinfra-Signature: " + signature + b"\r\n"
            assert await raw_post(url, sent, payload) in (400, 401)  # never a 500
        utf8 = stamp + "X-Optiinfra-Signature: sha256=é\r\n".encode()
        assert await raw_post(url, utf8, payload) == 401
        assert await get_json(url + "/applied") == {}

    with_agent(tmp_path, test)


def test_a_notification_replayed_to_an_agent_is_refused(tmp_path: Path) -> None:
    async def test(url: str, agent: Agent) -> None:
        payload = protocol.body(
            operation="execute",
            key="k1",
            namespace="n",
            recommendation="r",
            customer_id="c",
            plan="p",
            step={"name": "s", "action": "a", "params": {}},
        )
        captured = protocol.headers(KEY, int(time.time()), payload, purpose=protocol.NOTIFY)
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, data=payload, headers=captured) as response,
        ):
            assert response.status == 401
            assert (await response.json())["error"] == "bad signature"
        assert await get_json(url + "/applied") == {}

    with_agent(tmp_path, test)


def test_the_agent_shows_what_it_applied_only_to_a_signed_read(tmp_path: Path) -> None:
    async def test(url: str, agent: Agent) -> None:
        await WebhookExecutor(FakeResolver(Target("agent", url, KEY)), post=LOCAL_POST).execute(
            step(), context=CONTEXT
        )
        key = protocol.idempotency_key("uid-123", "resize", "execute")
        assert await get_json(url + "/applied") == {key: 1}
        assert await get_json(url + "/requests") == {key: 1}
        as_step = protocol.headers(KEY, int(time.time()), b"/applied")  # not signed to read
        async with aiohttp.ClientSession() as session:
            for path, headers in [
                ("/applied", {}),
                ("/requests", {}),
                ("/applied", protocol.read_headers(b"not-the-key", int(time.time()), "/applied")),
                ("/requests", protocol.read_headers(KEY, int(time.time()), "/applied")),
                ("/applied", as_step),
            ]:
                async with session.get(url + path, headers=headers) as response:
                    assert response.status == 401, (path, headers)
                    assert key not in await response.text()
            async with session.get(url + "/healthz") as response:
                assert (response.status, await response.text()) == (200, "ok\n")

    with_agent(tmp_path, test)


def test_the_agent_remembers_applied_keys_across_its_restart(tmp_path: Path) -> None:
    key = protocol.idempotency_key("uid-123", "resize", "execute")

    async def first(url: str, agent: Agent) -> None:
        outcome = await local(FakeResolver(Target("agent", url, KEY))).execute(
            step(), context=CONTEXT
        )
        assert outcome.ok

    async def second(url: str, agent: Agent) -> None:
        assert await get_json(url + "/applied") == {key: 1}
        outcome = await local(FakeResolver(Target("agent", url, KEY))).execute(
            step(), context=CONTEXT
        )
        assert outcome.ok
        assert await get_json(url + "/applied") == {key: 1}
        assert await get_json(url + "/requests") == {key: 2}

    with_agent(tmp_path, first)
    with_agent(tmp_path, second)


def test_tls_with_the_ca_bundle(tmp_path: Path) -> None:
    import ssl  # noqa: PLC0415

    certs = certs_.generate(tmp_path / "certs", hosts=["127.0.0.1"])
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(certs.cert, certs.key)
    ca_pem = certs.ca.read_text()

    async def test(url: str, agent: Agent) -> None:
        trusted = local(FakeResolver(Target("agent", url, KEY, ca_pem=ca_pem)))
        outcome = await trusted.execute(step(), context=CONTEXT)
        assert outcome.ok, outcome.error
        # Without the bundle the agent's certificate is not trusted: no answer (asked again).
        payload = b"{}"
        with pytest.raises(NoAnswerError, match=r"(?i)certificate"):
            await LOCAL_POST(Target("agent", url, KEY), payload, {}, 30)

    with_agent(tmp_path, test, ssl_context=server)
    spec = AgentEndpointSpec.model_validate(
        {
            "url": "https://127.0.0.1:1",
            "secretRef": {"name": "s", "key": "k"},
            "caBundle": base64.b64encode(ca_pem.encode()).decode(),
        }
    )
    assert spec.ca_pem() == ca_pem


# --- the addresses the executor may call (server-side request forgery) ---------------------


def test_a_name_that_resolves_to_loopback_is_refused_unless_allowed(tmp_path: Path) -> None:
    """A real agent on 127.0.0.1, reached as `localhost`: the operator's default transport
    (no --allow-loopback-endpoints) refuses after resolving, before connecting; the step
    fails at once (no second request, no wait) naming the endpoint, host, address and
    class. With the local-testing allowance the same call goes through."""

    async def test(url: str, agent: Agent) -> None:
        by_name = url.replace("127.0.0.1", "localhost") + "/"
        sleeps: list[float] = []

        async def sleep(seconds: float) -> None:
            sleeps.append(seconds)

        strict = WebhookExecutor(FakeResolver(Target("agent", by_name, KEY)), sleep=sleep)
        outcome = await strict.execute(step(), context=CONTEXT)
        assert not outcome.ok
        error = outcome.error or ""
        assert error.startswith("AgentEndpoint agent: host localhost resolves to ")
        assert "(loopback address): refused" in error
        assert sleeps == []
        assert await get_json(url + "/requests") == {}
        with pytest.raises(AddressRefused, match="host localhost resolves to"):
            await aiohttp_post(Target("agent", by_name, KEY), b"{}", {}, 5)
        allowed = await local(FakeResolver(Target("agent", by_name, KEY))).execute(
            step(), context=CONTEXT
        )
        assert allowed.ok, allowed.error
        assert len(await get_json(url + "/requests")) == 1

    with_agent(tmp_path, test)


@pytest.mark.parametrize(
    ("url", "address", "kind"),
    [
        ("http://169.254.169.254/latest/meta-data/", "host 169.254.169.254", "link-local"),
        ("https://[::ffff:169.254.169.254]/", "host ::ffff:a9fe:a9fe", "link-local"),
        ("https://2852039166/", "host 2852039166 resolves to 169.254.169.254", "IPv4 address"),
        ("https://[fd00:ec2::254]/", "host fd00:ec2::254", "cloud metadata"),
        ("https://0.0.0.0:8443/", "host 0.0.0.0", "unspecified"),
        ("http://[::1]:1/", "host ::1", "loopback"),
    ],
)
def test_literal_addresses_are_refused_before_any_connection(
    url: str, address: str, kind: str
) -> None:
    """aiohttp connects to a literal address without asking the resolver: the executor
    judges it first, even with the local-testing allowance for everything but loopback."""
    policy = addresses.STRICT if kind == "loopback" else addresses.LOCAL_TESTING
    script = Script()
    outcome = run(
        WebhookExecutor(
            FakeResolver(Target("metadata", url, KEY)),
            post=checked_post(policy),
            sleep=script.sleep,
        ).execute(step(), context=CONTEXT)
    )
    assert not outcome.ok
    assert (outcome.error or "").startswith(f"AgentEndpoint metadata: {address} ({kind}")
    assert script.sleeps == []


def test_the_address_checked_is_the_address_connected_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One lookup per request: a name whose DNS answer changes after the check (rebinding:
    a harmless address, then a denied one) is connected to at the address checked."""
    denied = Policy(allow_loopback=True, deny=(ipaddress.ip_network("127.0.0.2/32"),))
    looked_up: list[str] = []

    async def test(url: str, agent: Agent) -> None:
        loop = asyncio.get_running_loop()
        real = loop.getaddrinfo

        async def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            looked_up.append(host)
            answer = "127.0.0.1" if len(looked_up) == 1 else "127.0.0.2"
            return await real(answer, port, *args, **kwargs)

        monkeypatch.setattr(loop, "getaddrinfo", rebinding)
        target = Target("agent", url.replace("127.0.0.1", "agent.test") + "/", KEY)
        outcome = await WebhookExecutor(FakeResolver(target), post=checked_post(denied)).execute(
            step(), context=CONTEXT
        )
        assert outcome.ok, outcome.error
        assert looked_up == ["agent.test"]
        again = await WebhookExecutor(FakeResolver(target), post=checked_post(denied)).execute(
            step(), context=CONTEXT
        )
        assert "resolves to 127.0.0.2 (address in a denied range (127.0.0.2/32" in (
            again.error or ""
        )

    with_agent(tmp_path, test)


# --- answers too large to read -----------------------------------------------------------


@pytest.mark.parametrize("status", [200, 202, 503])
@pytest.mark.parametrize("path", ["/stream", "/announced"])
def test_an_answer_over_64_kib_fails_the_step_unread(status: int, path: str) -> None:
    async def test(url: str, huge: Huge) -> None:
        executor = fast(
            WebhookExecutor(FakeResolver(Target("agent", url + path, KEY)), post=LOCAL_POST)
        )
        began = time.monotonic()
        outcome = await executor.execute(step(timeoutSeconds=20), context=CONTEXT)
        assert not outcome.ok
        assert outcome.error == (
            f"agent endpoint agent answered {status} with a body larger than 65536 bytes "
            "(the most the operator reads of an answer: 64 KiB); not asked again"
        )
        assert huge.requests == 1  # failed at once, not sent again
        assert time.monotonic() - began < 10
        # It stopped reading: the agent could not send it all (socket buffers took some).
        assert huge.sent < HUGE * len(CHUNK) // 4, huge.sent

    with_huge(status, test)


def test_an_answer_of_exactly_64_kib_is_read() -> None:
    async def test(url: str, huge: Huge) -> None:
        executor = WebhookExecutor(
            FakeResolver(Target("agent", url + "/at-limit", KEY)), post=LOCAL_POST
        )
        outcome = await executor.execute(step(), context=CONTEXT)
        assert outcome.ok, outcome.error
        assert len(outcome.result["pad"]) > 65000

    with_huge(200, test)


def test_a_compressed_answer_is_not_inflated() -> None:
    import gzip  # noqa: PLC0415

    bomb = gzip.compress(b'{"result": {"pad": "' + b"0" * (8 << 20) + b'"}}')
    assert len(bomb) < protocol.MAX_ANSWER_BYTES  # 8 MiB that fit in 64 KiB compressed

    async def answer(request: web.Request) -> web.Response:
        assert request.headers["Accept-Encoding"] == "identity"
        return web.Response(body=bomb, headers={"Content-Encoding": "gzip"})

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/", answer)
        async with serving(app) as url:
            status, body = await LOCAL_POST(Target("agent", url + "/", KEY), b"{}", {}, 10)
        assert (status, body) == (200, bomb)  # as sent: the executor finds no JSON in it

    asyncio.run(main())


def test_a_result_nested_too_deep_fails_the_step_without_a_crash() -> None:
    deep = b'{"result": ' + b"[" * 60000 + b"]" * 60000 + b"}"
    outcome = run(Script((200, deep)).executor().execute(step(), context=CONTEXT))
    assert not outcome.ok
    assert "without a JSON" in (outcome.error or "")
    refused = run(Script((422, b"[" * 60000)).executor().execute(step(), context=CONTEXT))
    assert (refused.error or "").startswith("agent endpoint agent refused (422): [[[")
