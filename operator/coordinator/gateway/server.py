"""The gateway's aiohttp application and its server: the routes, the bounds of a request,
``coordinator gateway``'s serving. Each request is made to the API server with the
caller's bearer token (``callers``, ``coordinator.k8s.caller``), never with an identity of
its own; the endpoints are ``routes`` and ``dashboard``, their errors ``http``."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Final, TypeVar

from aiohttp import web

from coordinator.gateway import callers, dashboard, routes
from coordinator.gateway import http as http_
from coordinator.k8s import caller

T = TypeVar("T")
log = logging.getLogger("coordinator.gateway")

HEADER_SECONDS: Final = 10.0
"""How long a connection may take to send a request's headers (and may stay idle after)."""
MAX_BODY: Final = 4 * 1024 * 1024


def application(gateway: callers.Gateway) -> web.Application:
    app = web.Application(middlewares=[http_.errors], client_max_size=MAX_BODY)
    app[callers.GATEWAY] = gateway
    app.router.add_get("/", dashboard.page)
    app.router.add_get("/dashboard/state", dashboard.state)
    app.router.add_get("/health", routes.health)
    app.router.add_post("/coordination/coordinate", routes.coordinate)
    app.router.add_get("/coordination/approvals", routes.list_approvals)
    app.router.add_post("/coordination/approvals/{id}/approve", routes.approve)
    app.router.add_post("/coordination/approvals/{id}/reject", routes.reject)
    app.router.add_get("/coordination/plans/{id}", routes.get_plan)
    app.router.add_post("/coordination/plans/{id}/execute", routes.execute_plan)
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
    gateway = callers.Gateway(
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
