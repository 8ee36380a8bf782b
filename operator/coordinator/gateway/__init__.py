"""``coordinator gateway``: the origin document's HTTP API over the objects, and a
read-only dashboard at ``/``.

Agents that speak the origin document's API (``POST /coordination/coordinate``, the
approval and plan endpoints) work against the operator unchanged, plus an
``Authorization: Bearer`` header: the gateway acts as the caller, with the caller's
token, so RBAC decides and the admission webhooks record the real user. It holds no
rights of its own beyond reaching the API server.

``origin`` maps requests and responses (pure); ``server`` is the aiohttp application
and its serving; ``routes`` the origin's endpoints, ``dashboard`` the dashboard's (its
page is ``dashboard.html``); ``callers`` who calls (token, API client, identity);
``http`` the bounds of a request body and the error answers.
"""

from __future__ import annotations

import argparse
import os


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``coordinator gateway`` to ``parser``."""
    parser.add_argument(
        "--listen",
        default=os.environ.get("COORDINATOR_LISTEN", "127.0.0.1:8080"),
        metavar="HOST:PORT",
        help="where to serve (default %(default)s)",
    )
    parser.add_argument(
        "-n",
        "--namespace",
        default=os.environ.get("COORDINATOR_NAMESPACE", "default"),
        help="the namespace of requests without ?namespace= (default %(default)s)",
    )
    parser.add_argument(
        "--kubeconfig",
        default=os.environ.get("KUBECONFIG") or None,
        help="where the API server is and its CA (its user is not used: callers bring "
        "their own token); default KUBECONFIG, else the in-cluster config",
    )
    parser.add_argument(
        "--settle-timeout",
        type=float,
        default=float(os.environ.get("COORDINATOR_SETTLE_TIMEOUT", "5")),
        metavar="SECONDS",
        help="how long POST /coordination/coordinate waits for the operator to settle the "
        "recommendations before it answers with what stands (default %(default)s)",
    )


def run(arguments: argparse.Namespace) -> int:
    from coordinator.gateway import server  # noqa: PLC0415 - aiohttp only when serving

    return server.serve(arguments)
