"""A reference agent: the other side of the webhook executor, small enough to read.

    python -m coordinator.agent --port 8443 --key-file hmac.key [--state agent-state.json]
                                [--host 127.0.0.1] [--tls-cert F --tls-key F]

It shows what an agent implements (see docs/concepts/executors.md, "The webhook
executor"), and the tests and the demo use it:

- every request is verified: ``X-Optiinfra-Signature`` is the HMAC-SHA256 of
  ``"<timestamp>.<body>"`` with the key, and ``X-Optiinfra-Timestamp`` is within 5
  minutes of the agent's clock; otherwise 401 ``{"error": ...}`` (the signature is
  compared as bytes: a header that is not ASCII is a 401 too). A notification's
  signature (``"notify.<timestamp>.<body>"``) is not a step's: replayed here, it is a 401;
- each ``idempotencyKey`` is applied at most once: the agent records the key and the
  result in a JSON file (``--state``, written before it answers, so the record survives
  a restart of the agent) and answers a repeated key with the same result;
- ``params.agentBehaviour`` of the step exercises the protocol:
  ``ok`` (default) applies and answers 200 ``{"result": ...}``;
  ``accept-then-poll`` answers 202 twice, then applies and answers 200;
  ``flaky`` answers 503 twice, then applies and answers 200;
  ``fail`` answers 422 ``{"error": ...}`` (``params.agentError``), never applies;
  ``hold`` applies, then holds the first answer ``params.holdSeconds`` (default 3) before
  answering 200 (a caller killed meanwhile asks again with the same key);
  ``hold-then-accept`` the same, but the held answer is 202.
  Undo requests follow ``params.agentUndoBehaviour`` (default ``ok``).
- ``GET /applied``: ``{key: applications}`` (1 at most, if the agent is right);
  ``GET /requests``: ``{key: requests received}``. They tell who asked for what, so
  they are signed too: the signature of ``"read.<timestamp>.<path>"``
  (``core.webhook.read_headers``), else 401. ``GET /healthz`` answers anyone (``ok``).

Not part of the operator: it imports only the pure protocol (``coordinator.core.webhook``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import sys
import time
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from coordinator.core import webhook as protocol

DEFAULT_HOLD_SECONDS: Final = 3.0
REPEATS: Final = 2
"""How many times accept-then-poll and flaky answer 202 / 503 before they are done."""


def _json(status: int, document: Any) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(document, sort_keys=True), content_type="application/json"
    )


class Agent:
    def __init__(self, key: bytes, state: Path) -> None:
        self.key = key
        self.state = state
        self.applied: dict[str, dict[str, Any]] = {}  # key -> {"count", "result"}
        self.requests: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        if state.exists():
            saved = json.loads(state.read_text())
            self.applied = saved.get("applied", {})
            self.requests = saved.get("requests", {})

    def _save(self) -> None:
        temporary = self.state.with_name(self.state.name + ".tmp")
        temporary.write_text(json.dumps({"applied": self.applied, "requests": self.requests}))
        os.replace(temporary, self.state)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/", self.handle)
        app.router.add_post("/{tail:.*}", self.handle)
        app.router.add_get("/applied", self.show_applied)
        app.router.add_get("/requests", self.show_requests)
        app.router.add_get("/submitters", self.show_submitters)
        app.router.add_get("/healthz", self.healthz)
        return app

    async def healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    def _refusal(self, request: web.Request, payload: bytes, purpose: str) -> str | None:
        return protocol.verify(
            self.key,
            timestamp=request.headers.get(protocol.TIMESTAMP_HEADER),
            signature_header=request.headers.get(protocol.SIGNATURE_HEADER),
            payload=payload,
            now=time.time(),
            purpose=purpose,
        )

    async def show_applied(self, request: web.Request) -> web.Response:
        if problem := self._refusal(request, protocol.read_payload(request.path), protocol.READ):
            return _json(401, {"error": problem})
        return _json(200, {key: record["count"] for key, record in self.applied.items()})

    async def show_submitters(self, request: web.Request) -> web.Response:
        """On whose behalf each change was applied (the body's submitter)."""
        if problem := self._refusal(request, protocol.read_payload(request.path), protocol.READ):
            return _json(401, {"error": problem})
        return _json(200, {key: record.get("submitter") for key, record in self.applied.items()})

    async def show_requests(self, request: web.Request) -> web.Response:
        if problem := self._refusal(request, protocol.read_payload(request.path), protocol.READ):
            return _json(401, {"error": problem})
        return _json(200, self.requests)

    async def handle(self, request: web.Request) -> web.Response:
        payload = await request.read()
        if problem := self._refusal(request, payload, protocol.STEP):
            return _json(401, {"error": problem})
        try:
            document = json.loads(payload)
            key = document["idempotencyKey"]
            operation = document["operation"]
            step = document["step"]
            params = step.get("params") or {}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return _json(400, {"error": f"not a webhook request: {exc!r}"})
        if operation not in (protocol.EXECUTE, protocol.UNDO):
            return _json(400, {"error": f"unknown operation {operation!r}"})
        field = "agentBehaviour" if operation == protocol.EXECUTE else "agentUndoBehaviour"
        behaviour = str(params.get(field) or "ok")
        async with self._locks.setdefault(key, asyncio.Lock()):
            seen = self.requests.get(key, 0)
            self.requests[key] = seen + 1
            self._save()
            if behaviour == "fail":
                message = params.get("agentError") or f"agent refused to {step.get('action')}"
                return _json(422, {"error": str(message)})
            if behaviour in ("accept-then-poll", "flaky") and seen < REPEATS:
                if behaviour == "flaky":
                    return _json(503, {"error": "temporarily unavailable (flaky)"})
                return _json(202, {"status": "accepted"})
            fresh = key not in self.applied
            result = self._apply(key, operation, document)
        if behaviour in ("hold", "hold-then-accept") and fresh:
            await asyncio.sleep(float(params.get("holdSeconds", DEFAULT_HOLD_SECONDS)))
            if behaviour == "hold-then-accept":
                return _json(202, {"status": "accepted"})
        return _json(200, {"result": result})

    def _apply(self, key: str, operation: str, document: dict[str, Any]) -> dict[str, Any]:
        """Apply the change of `key` once (here: record it); the same result ever after."""
        record = self.applied.get(key)
        if record is None:
            step = document["step"]
            if operation == protocol.EXECUTE:
                result = {"applied": True, "action": step.get("action"), "change": key[:12]}
            else:
                previous = document.get("previousResult") or {}
                result = {"undone": True, "change": previous.get("change")}
            record = {"count": 1, "result": result, "submitter": document.get("submitter")}
            self.applied[key] = record
            self._save()  # recorded before the answer: a restart does not apply it again
        return dict(record["result"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="coordinator.agent", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--key-file", type=Path, required=True, help="the HMAC key (raw bytes)")
    parser.add_argument("--state", type=Path, default=Path("agent-state.json"))
    parser.add_argument("--tls-cert", type=Path, help="serve https with this certificate")
    parser.add_argument("--tls-key", type=Path, help="... and this key")
    args = parser.parse_args(argv)
    key = args.key_file.read_bytes()  # the exact bytes, as in the Secret
    if not key:
        parser.error(f"{args.key_file} is empty")
    context = None
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
    agent = Agent(key, args.state)
    print(f"agent listening on {args.host}:{args.port}", flush=True)
    web.run_app(agent.app(), host=args.host, port=args.port, ssl_context=context, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
