"""The read-only dashboard: its page, and the state it draws (per customer, the conflict
graph, the approval queue and the plans with their verification), read as the caller."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from aiohttp import web

from coordinator import present, timeline
from coordinator.api.common import APPROVALS, PLANS, RECOMMENDATIONS
from coordinator.gateway import callers, origin
from coordinator.k8s import caller


async def _objects(api: Any, namespace: str) -> tuple[list[Any], list[Any], list[Any]]:
    recs, approvals, plans = await asyncio.gather(
        callers.call(caller.list_, api, namespace, RECOMMENDATIONS),
        callers.call(caller.list_, api, namespace, APPROVALS),
        callers.call(caller.list_, api, namespace, PLANS),
    )
    return recs, approvals, plans


async def page(request: web.Request) -> web.Response:
    page = resources.files("coordinator.gateway").joinpath("dashboard.html").read_text()
    return web.Response(text=page, content_type="text/html")


async def state(request: web.Request) -> web.Response:
    """What the dashboard draws, read as the caller: per customer, the conflict graph,
    the approval queue and the plans."""
    gateway = request.app[callers.GATEWAY]
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
        span, placed = timeline.intervals(plan, now=now)
        shaped["timeline"] = {
            "span_ms": span,
            "steps": {n: {"start": a, "end": b, "undone": c} for n, (a, b, c) in placed.items()},
            "verification": timeline.verification(plan, now=now),
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
