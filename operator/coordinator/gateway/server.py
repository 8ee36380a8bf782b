"""The gateway's aiohttp application: each request is made to the API server with the
caller's bearer token (``coordinator.k8s.caller``), never with an identity of its own."""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import logging
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Final, TypeVar

import urllib3
from aiohttp import web

from coordinator import present, usecases
from coordinator.api.common import APPROVALS, PLANS, RECOMMENDATIONS
from coordinator.gateway import origin
from coordinator.k8s import admission, caller

T = TypeVar("T")
log = logging.getLogger("coordinator.gateway")

CLIENTS: Final = 256
"""API clients kept (one per token, least recently used dropped)."""
IDENTITIES: Final = 1024
"""Identities kept (one per token, least recently used dropped)."""
WHO_SECONDS: Final = 30.0
HEADER_SECONDS: Final = 10.0
"""How long a connection may take to send a request's headers (and may stay idle after)."""
BODY_SECONDS: Final = 10.0
"""How long a request may take to send its body."""
MAX_BODY: Final = 4 * 1024 * 1024
MAX_DEPTH: Final = admission.MAX_DEPTH
"""How deeply a request body may nest."""


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _token(request: web.Request) -> str:
    """The request's bearer token (401 without one)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": "Authorization: Bearer <token> required"}),
            content_type="application/json",
        )
    return token.strip()


def _key(token: str) -> str:
    """What a token is cached under: its hash, never the token itself."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


class Lru(collections.OrderedDict[str, T]):
    """A mapping that keeps its `size` most recently used entries."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def use(self, key: str) -> T | None:
        if key not in self:
            return None
        self.move_to_end(key)
        return self[key]

    def keep(self, key: str, value: T) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


class Gateway:
    """What the handlers share: where the API server is, the default namespace, and
    bounded caches of API clients and identities per token (by its hash)."""

    def __init__(self, *, base: Any, namespace: str, settle_timeout: float) -> None:
        self.base = base
        self.namespace = namespace
        self.settle_timeout = settle_timeout
        self._clients: Lru[Any] = Lru(CLIENTS)
        self._who: Lru[tuple[float, str]] = Lru(IDENTITIES)
        self._anonymous = caller.client(base, token="")

    def client(self, request: web.Request) -> Any:
        token = _token(request)
        key = _key(token)
        api = self._clients.use(key) or caller.client(self.base, token)
        self._clients.keep(key, api)
        return api

    async def who(self, request: web.Request, api: Any) -> str:
        key = _key(_token(request))
        cached = self._who.use(key)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        user, _ = await call(caller.whoami, api)
        self._who.keep(key, (time.monotonic() + WHO_SECONDS, user))
        return user

    def namespace_of(self, request: web.Request) -> str:
        return request.query.get("namespace") or self.namespace


async def call(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`function` (a synchronous call to the API server) in a thread."""
    return await asyncio.to_thread(function, *args, **kwargs)


GATEWAY: Final = web.AppKey("gateway", Gateway)


@web.middleware
async def errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The API server's refusals, as the origin's error shape with its status."""
    try:
        return await handler(request)
    except caller.CallerError as exc:
        if exc.status == 401:
            return _error(401, "the API server did not accept the bearer token")
        if exc.status == 0 or exc.status >= 500:
            return _error(502, f"API server: {exc.message}")
        return _error(exc.status, caller.denied(exc.message))
    except origin.BadRequestError as exc:
        return _error(400, str(exc))
    except (OSError, urllib3.exceptions.HTTPError) as exc:  # refused, reset, timed out
        log.warning("cannot reach the API server: %s", exc)
        return _error(502, "cannot reach the API server")
    except web.HTTPException:
        raise
    except Exception:  # a bug: said as JSON, without details
        log.exception("%s %s failed", request.method, request.path)
        return _error(500, "internal error")


def _refused(exc: usecases.RefusedError, not_found: str) -> web.Response:
    """A use case that did nothing: 404 with the origin's `not_found`, else 409."""
    if exc.why is usecases.Refusal.NOT_FOUND:
        return _error(404, not_found)
    return _error(409, exc.message)


async def _json(request: web.Request, *, optional: bool = False) -> Any:
    """The request's JSON body, read within `BODY_SECONDS`; 400 naming what is wrong."""
    try:
        async with asyncio.timeout(BODY_SECONDS):
            raw = await request.read()
    except TimeoutError:
        raise web.HTTPRequestTimeout(
            text=json.dumps({"error": f"body: not received within {BODY_SECONDS:g}s"}),
            content_type="application/json",
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise origin.BadRequestError(
            f"body: not UTF-8 ({exc.reason} at byte {exc.start})"
        ) from None
    if not text.strip() and optional:
        return None
    if admission.deeper_than(raw, MAX_DEPTH):
        raise origin.BadRequestError(f"body: nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise origin.BadRequestError(f"body: invalid JSON ({exc})") from None


async def health(request: web.Request) -> web.Response:
    """Whether the gateway can reach the API server, and nothing more (anyone may ask:
    what the API server said, its version or an address, is only logged)."""
    gateway = request.app[GATEWAY]
    ok, said = await call(caller.reachable, gateway._anonymous)
    if not ok:
        log.warning("health: the API server is not reachable: %s", said)
    return web.json_response(
        {"status": "healthy" if ok else "unhealthy"}, status=200 if ok else 503
    )


async def _objects(api: Any, namespace: str) -> tuple[list[Any], list[Any], list[Any]]:
    recs, approvals, plans = await asyncio.gather(
        call(caller.list_, api, namespace, RECOMMENDATIONS),
        call(caller.list_, api, namespace, APPROVALS),
        call(caller.list_, api, namespace, PLANS),
    )
    return recs, approvals, plans


async def _fetch(
    api: Any, namespace: str, names: list[str]
) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    """The named recommendations (those that exist), and the Approvals and plans their
    status names, each read by name (concurrently), never by listing the namespace."""
    found = await asyncio.gather(
        *(call(caller.get, api, namespace, RECOMMENDATIONS, n) for n in names)
    )
    recs = [r for r in found if r is not None]
    approvals = sorted(
        {str(s["approval"]) for r in recs if (s := r.get("status") or {}).get("approval")}
    )
    plans = sorted({str(s["plan"]) for r in recs if (s := r.get("status") or {}).get("plan")})
    children = await asyncio.gather(
        *(call(caller.get, api, namespace, APPROVALS, n) for n in approvals),
        *(call(caller.get, api, namespace, PLANS, n) for n in plans),
    )
    return (
        recs,
        {n: c for n, c in zip(approvals, children[: len(approvals)], strict=True) if c},
        {n: c for n, c in zip(plans, children[len(approvals) :], strict=True) if c},
    )


async def coordinate(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    api = gateway.client(request)
    namespace = gateway.namespace_of(request)
    _, objects = origin.coordinate_request(await _json(request))
    await gateway.who(request, api)  # a token the API server refuses gets 401, even for []
    for index, obj in enumerate(objects):
        name = obj["metadata"]["name"]
        try:
            await call(caller.put_recommendation, api, namespace, obj)
        except caller.CallerError as exc:
            if exc.status in (401,) or exc.status >= 500 or exc.status == 0:
                raise
            said = caller.denied(exc.message)
            return _error(exc.status, f"recommendations[{index}] ({name}): {said}")
    names = [o["metadata"]["name"] for o in objects]
    deadline = time.monotonic() + gateway.settle_timeout
    previous: tuple[str, ...] | None = None
    while True:
        mine, by_appr, by_plan = await _fetch(api, namespace, names)
        done = len(mine) == len(names) and all(
            origin.settled(
                r,
                by_appr.get(str((r.get("status") or {}).get("approval"))),
                by_plan.get(str((r.get("status") or {}).get("plan"))),
            )
            for r in mine
        )
        versions = tuple(
            str(o["metadata"].get("resourceVersion"))
            for o in [*mine, *by_appr.values(), *by_plan.values()]
        )
        if (done and versions == previous) or time.monotonic() > deadline:
            break
        previous = versions if done else None
        await asyncio.sleep(usecases.POLL)
    answer = origin.summary(
        coordination_id=f"coord-{uuid.uuid4().hex[:12]}",
        recs=mine,
        approvals=by_appr,
        plans=by_plan,
        now=datetime.now(UTC),
        settled_=done,
    )
    return web.json_response(answer)


async def list_approvals(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    api = gateway.client(request)
    customer = request.query.get("customer_id")
    wanted = request.query.get("status", "pending")
    items = await call(caller.list_, api, gateway.namespace_of(request), APPROVALS)
    shaped = [origin.approval(a) for a in items]
    shaped = [
        a
        for a in shaped
        if (not customer or a["customer_id"] == customer)
        and (wanted == "all" or a["status"] == wanted)
    ]
    shaped.sort(key=lambda a: (str(a["expires_at"]), str(a["id"])))
    return web.json_response({"approvals": shaped, "count": len(shaped)})


async def _decide(request: web.Request, *, reject: bool) -> web.Response:
    gateway = request.app[GATEWAY]
    api = gateway.client(request)
    namespace = gateway.namespace_of(request)
    name = request.match_info["id"]
    user_id, reason = origin.decision_request(await _json(request, optional=True), reject=reject)
    user = await gateway.who(request, api)
    if user_id is not None and user_id != user:
        return _error(
            403,
            f"user_id {user_id} is not the caller: the bearer token is {user}, and decisions "
            "are recorded as the authenticated caller",
        )
    decision = "Rejected" if reject else "Approved"
    try:
        done = await call(
            usecases.decide, api, namespace, name, decision, reason, timeout=gateway.settle_timeout
        )
    except usecases.RefusedError as exc:
        return _refused(exc, "Approval not found")
    log.info("approval %s/%s %s by %s", namespace, name, decision, user)
    return web.json_response(
        {
            "message": "Recommendation rejected" if reject else "Recommendation approved",
            "approval": origin.approval(done.approval),
        }
    )


async def approve(request: web.Request) -> web.Response:
    return await _decide(request, reject=False)


async def reject(request: web.Request) -> web.Response:
    return await _decide(request, reject=True)


async def get_plan(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    api = gateway.client(request)
    found = await call(
        caller.get, api, gateway.namespace_of(request), PLANS, request.match_info["id"]
    )
    if found is None:
        return _error(404, "Plan not found")
    return web.json_response(origin.plan(found))


async def execute_plan(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    api = gateway.client(request)
    namespace = gateway.namespace_of(request)
    name = request.match_info["id"]
    try:
        updated = await call(usecases.start, api, namespace, name)
    except usecases.RefusedError as exc:
        return _refused(exc, "Plan not found")
    return web.json_response({"message": "Plan execution started", "plan": origin.plan(updated)})


async def dashboard(request: web.Request) -> web.Response:
    page = resources.files("coordinator.gateway").joinpath("dashboard.html").read_text()
    return web.Response(text=page, content_type="text/html")


async def dashboard_state(request: web.Request) -> web.Response:
    """What the dashboard draws, read as the caller: per customer, the conflict graph,
    the approval queue and the plans."""
    gateway = request.app[GATEWAY]
    api = gateway.client(request)
    namespace = gateway.namespace_of(request)
    user = await gateway.who(request, api)
    recs, approvals, plans = await _objects(api, namespace)
    now = datetime.now(UTC)
    customers: dict[str, dict[str, Any]] = {}

    def group(customer: str) -> dict[str, Any]:
        return customers.setdefault(
            customer, {"customer": customer, "nodes": [], "edges": [], "queue": [], "plans": []}
        )

    for customer in sorted({str((r.get("spec") or {}).get("customerId")) for r in recs}):
        mine = [r for r in recs if (r.get("spec") or {}).get("customerId") == customer]
        winners = {
            str((r.get("status") or {}).get("supersededBy"))
            for r in mine
            if (r.get("status") or {}).get("supersededBy")
        }
        nodes = group(customer)["nodes"]
        for rec in sorted(mine, key=lambda r: str(r["metadata"]["name"])):
            shaped = origin.recommendation(rec)
            shaped["phase"] = present.phase(rec)
            shaped["winner"] = shaped["id"] in winners
            nodes.append(shaped)
        group(customer)["edges"] = origin.conflicts(mine)
    for row in present.queue(approvals, now=now):
        group(str(row["customer"]))["queue"].append(row)
    for plan in sorted(plans, key=lambda p: str(p["metadata"]["name"])):
        shaped = origin.plan(plan)
        span, placed = present.intervals(plan, now=now)
        shaped["timeline"] = {
            "span_ms": span,
            "steps": {n: {"start": a, "end": b, "undone": c} for n, (a, b, c) in placed.items()},
        }
        group(str((plan.get("spec") or {}).get("customerId")))["plans"].append(shaped)
    return web.json_response(
        {
            "namespace": namespace,
            "user": user,
            "now": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "customers": [customers[c] for c in sorted(customers)],
        }
    )


def application(gateway: Gateway) -> web.Application:
    app = web.Application(middlewares=[errors], client_max_size=MAX_BODY)
    app[GATEWAY] = gateway
    app.router.add_get("/", dashboard)
    app.router.add_get("/dashboard/state", dashboard_state)
    app.router.add_get("/health", health)
    app.router.add_post("/coordination/coordinate", coordinate)
    app.router.add_get("/coordination/approvals", list_approvals)
    app.router.add_post("/coordination/approvals/{id}/approve", approve)
    app.router.add_post("/coordination/approvals/{id}/reject", reject)
    app.router.add_get("/coordination/plans/{id}", get_plan)
    app.router.add_post("/coordination/plans/{id}/execute", execute_plan)
    return app


def server_options() -> dict[str, Any]:
    """How the gateway's HTTP server runs: a connection that has not sent a whole request's
    headers within `HEADER_SECONDS` (a client trickling bytes) is closed."""
    return {"keepalive_timeout": HEADER_SECONDS, "access_log": None}


def serve(arguments: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    host, _, port = str(arguments.listen).rpartition(":")
    if not host or not port.isdigit():
        print(
            f"coordinator gateway: --listen {arguments.listen}: expected HOST:PORT", file=sys.stderr
        )
        return 2
    try:
        base = caller.configuration(arguments.kubeconfig)
    except Exception as exc:  # one line, whatever the kubeconfig's fault
        print(f"coordinator gateway: no cluster configuration: {exc}", file=sys.stderr)
        return 1
    gateway = Gateway(
        base=base, namespace=arguments.namespace, settle_timeout=arguments.settle_timeout
    )
    try:
        web.run_app(
            application(gateway),
            host=host.strip("[]"),
            port=int(port),
            print=lambda _: log.info("serving on http://%s", arguments.listen),
            **server_options(),
        )
    except OSError as exc:
        print(f"coordinator gateway: --listen {arguments.listen}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0
