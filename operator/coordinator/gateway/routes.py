"""The origin document's endpoints: coordinate, the approval queue and its decisions,
a plan and its start; each made to the API server as the caller (``callers``)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from coordinator import usecases
from coordinator.api.common import APPROVALS, PLANS, RECOMMENDATIONS
from coordinator.gateway import callers, origin
from coordinator.gateway import http as http_
from coordinator.k8s import caller

log = logging.getLogger("coordinator.gateway")


async def health(request: web.Request) -> web.Response:
    """Whether the gateway can reach the API server, and nothing more (anyone may ask:
    what the API server said, its version or an address, is only logged)."""
    gateway = request.app[callers.GATEWAY]
    ok, said = await callers.call(caller.reachable, gateway.anonymous)
    if not ok:
        log.warning("health: the API server is not reachable: %s", said)
    return web.json_response(
        {"status": "healthy" if ok else "unhealthy"}, status=200 if ok else 503
    )


async def _fetch(
    api: Any, namespace: str, names: list[str]
) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    """The named recommendations (those that exist), and the Approvals and plans their
    status names, each read by name (concurrently), never by listing the namespace."""
    found = await asyncio.gather(
        *(callers.call(caller.get, api, namespace, RECOMMENDATIONS, n) for n in names)
    )
    recs = [r for r in found if r is not None]
    approvals = sorted(
        {str(s["approval"]) for r in recs if (s := r.get("status") or {}).get("approval")}
    )
    plans = sorted({str(s["plan"]) for r in recs if (s := r.get("status") or {}).get("plan")})
    children = await asyncio.gather(
        *(callers.call(caller.get, api, namespace, APPROVALS, n) for n in approvals),
        *(callers.call(caller.get, api, namespace, PLANS, n) for n in plans),
    )
    return (
        recs,
        {n: c for n, c in zip(approvals, children[: len(approvals)], strict=True) if c},
        {n: c for n, c in zip(plans, children[len(approvals) :], strict=True) if c},
    )


async def coordinate(request: web.Request) -> web.Response:
    gateway = request.app[callers.GATEWAY]
    api = gateway.client(request)
    namespace = gateway.namespace_of(request)
    _, objects = origin.coordinate_request(await http_.read_json(request))
    await gateway.who(request, api)  # a token the API server refuses gets 401, even for []
    for index, obj in enumerate(objects):
        name = obj["metadata"]["name"]
        try:
            await callers.call(caller.put_recommendation, api, namespace, obj)
        except caller.CallerError as exc:
            if exc.status in (401,) or exc.status >= 500 or exc.status == 0:
                raise
            said = caller.denied(exc.message)
            return http_.error(exc.status, f"recommendations[{index}] ({name}): {said}")
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
    gateway = request.app[callers.GATEWAY]
    api = gateway.client(request)
    customer = request.query.get("customer_id")
    wanted = request.query.get("status", "pending")
    items = await callers.call(caller.list_, api, gateway.namespace_of(request), APPROVALS)
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
    gateway = request.app[callers.GATEWAY]
    api = gateway.client(request)
    namespace = gateway.namespace_of(request)
    name = request.match_info["id"]
    user_id, reason = origin.decision_request(
        await http_.read_json(request, optional=True), reject=reject
    )
    user = await gateway.who(request, api)
    if user_id is not None and user_id != user:
        return http_.error(
            403,
            f"user_id {user_id} is not the caller: the bearer token is {user}, and decisions "
            "are recorded as the authenticated caller",
        )
    decision = "Rejected" if reject else "Approved"
    try:
        done = await callers.call(
            usecases.decide, api, namespace, name, decision, reason, timeout=gateway.settle_timeout
        )
    except usecases.RefusedError as exc:
        return http_.refused(exc, "Approval not found")
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
    gateway = request.app[callers.GATEWAY]
    api = gateway.client(request)
    found = await callers.call(
        caller.get, api, gateway.namespace_of(request), PLANS, request.match_info["id"]
    )
    if found is None:
        return http_.error(404, "Plan not found")
    return web.json_response(origin.plan(found))


async def execute_plan(request: web.Request) -> web.Response:
    gateway = request.app[callers.GATEWAY]
    api = gateway.client(request)
    namespace = gateway.namespace_of(request)
    name = request.match_info["id"]
    try:
        updated = await callers.call(usecases.start, api, namespace, name)
    except usecases.RefusedError as exc:
        return http_.refused(exc, "Plan not found")
    return web.json_response({"message": "Plan execution started", "plan": origin.plan(updated)})
