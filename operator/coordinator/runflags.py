"""The flags of ``coordinator run``: their names, help, types and defaults.

The defaults are ``api.defaults``' (the operator's ``Config`` takes the same); ``run``
adds the ``COORDINATOR_<FLAG>`` environment variables over them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from coordinator import policyflags
from coordinator.api import defaults
from coordinator.api.shardnames import DEFAULT_RING
from coordinator.core import steps


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the flags of ``coordinator run`` to ``parser``."""
    policyflags.add_policy_arguments(parser)
    parser.add_argument(
        "-n",
        "--namespace",
        dest="namespace",
        action="append",
        metavar="NAMESPACE",
        help="watch only this namespace (repeatable; glob patterns such as team-* work); "
        "default: all namespaces",
    )
    parser.add_argument(  # benchmark-only: docs/design.md, "Watching"
        "--watch",
        choices=("informer", "kopf"),
        default=defaults.WATCH,
        help=argparse.SUPPRESS,
    )
    election = parser.add_argument_group("replicas (leader election)")
    election.add_argument(
        "--lease",
        metavar="NAME",
        help="run as one of several replicas: the holder of this coordination.k8s.io Lease "
        "acts, the others watch and stand by, ready to take over (default: none, a single "
        "replica that always acts)",
    )
    election.add_argument(
        "--lease-namespace",
        metavar="NAMESPACE",
        help="the namespace of the Lease (default: the pod's namespace in a cluster, else "
        f"{defaults.LEASE_NAMESPACE})",
    )
    election.add_argument(
        "--lease-duration",
        type=_seconds,
        default=defaults.LEASE_DURATION_SECONDS,
        metavar="SECONDS",
        help="a standby replica takes over once the Lease has not been renewed for this "
        "long (default %(default)s); the leader renews every --lease-duration/7.5 seconds "
        "and stops acting after 2/3 of it without a renewal",
    )
    election.add_argument(
        "--shard",
        action="store_true",
        help="run as one of N active shards instead: each replica holds its own Lease in the "
        "--lease-namespace and drives only the customers the ring of live Leases gives it "
        "by consistent hashing (excludes --lease)",
    )
    election.add_argument(
        "--ring",
        default=DEFAULT_RING,
        metavar="NAME",
        help="with --shard: the ring the replica joins (default %(default)s)",
    )
    election.add_argument(
        "--identity",
        metavar="ID",
        help="this replica's name in the Lease or the ring, unique among the live replicas "
        "(default: the host name and a random part; in a StatefulSet, the pod's name)",
    )
    election.add_argument(
        "--peering",
        metavar="NAME",
        help=argparse.SUPPRESS,  # before leases: kopf peering; now the same as --lease
    )
    parser.add_argument(
        "--liveness",
        metavar="URL",
        default="http://0.0.0.0:8080/healthz",
        help="health endpoint for probes (default %(default)s; empty to disable)",
    )
    parser.add_argument(
        "--readiness",
        metavar="URL",
        default="http://0.0.0.0:8081/readyz",
        help="readiness endpoint: 200 once started and while this replica acts, 503 with the "
        "reason while it stands by (default %(default)s; empty to disable)",
    )
    parser.add_argument(
        "--notify-expiring-before",
        type=_seconds,
        default=defaults.NOTIFY_EXPIRING_BEFORE_SECONDS,
        metavar="SECONDS",
        help="how long before its expiry a pending approval is notified as "
        "ApprovalExpiringSoon to the ApprovalPolicies' notify endpoints (default %(default)s)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=_seconds,
        default=defaults.SHUTDOWN_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help="after SIGTERM the process exits within this time whatever the API server "
        "answers (a step in flight is finished or left to the next start) "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--metrics-port",
        type=_port,
        default=9090,
        metavar="PORT",
        help="serve Prometheus metrics on this port (default %(default)s; 0 to disable)",
    )
    parser.add_argument(
        "--workers",
        type=_positive,
        default=defaults.WORKERS,
        help="customer groups reconciled at once, and API calls in flight (default %(default)s)",
    )
    parser.add_argument(
        "--executor-kinds",
        type=_kinds,
        default=steps.DEFAULT_KINDS,
        metavar="KIND.GROUP,...",
        help="the only kinds the kubernetes executor may touch; a step on any other is refused "
        "at admission and when it runs (default: "
        + ",".join(sorted(steps.DEFAULT_KINDS))
        + "; never add Secret: a wait or patch would copy it into a plan's status)",
    )
    webhooks = parser.add_argument_group("admission webhooks")
    webhooks.add_argument(
        "--webhooks",
        choices=("auto", "local", "service", "off"),
        default=defaults.WEBHOOKS,
        help="how the API server reaches the webhooks: local (https://127.0.0.1, certificates "
        "generated at start), service (in a cluster: the Service and --webhook-cert-dir), off; "
        "auto picks local against a control plane on 127.0.0.1, service in a cluster when "
        "--webhook-cert-dir is given (default %(default)s)",
    )
    webhooks.add_argument(
        "--webhook-port",
        type=_port,
        default=defaults.WEBHOOK_PORT,
        help="port to serve on (default: free / 9443)",
    )
    webhooks.add_argument(
        "--webhook-cert-dir",
        type=Path,
        metavar="DIR",
        help="tls.crt, tls.key and ca.crt to serve with (a Secret shared by the replicas)",
    )
    webhooks.add_argument(
        "--webhook-service",
        default=defaults.WEBHOOK_SERVICE,
        metavar="NS/NAME:PORT",
        help="the Service in front of the replicas (default %(default)s)",
    )
    webhooks.add_argument(
        "--webhook-configuration",
        default=defaults.OPERATOR_NAME,
        metavar="NAME",
        help="the name of the validating and mutating webhook configurations the webhooks "
        "are kept in (default %(default)s; the Helm chart passes <namePrefix>-coordinator)",
    )
    webhooks.add_argument(
        "--webhook-namespace-labels",
        type=_labels,
        default={},
        metavar="KEY=VALUE,...",
        help="apply the webhooks only in namespaces with these labels (default: the "
        "namespaces watched, or all)",
    )
    # Every flag, in a group or not, takes its COORDINATOR_* default (run.configure).
    parser.add_argument(
        "--allow-loopback-endpoints",
        action="store_true",
        help="let AgentEndpoints reach loopback (127.0.0.0/8, ::1, localhost): for local "
        "testing only, an agent on the operator's own machine (the tests, the demo); "
        "never in a cluster, where loopback is the operator's own pod",
    )
    parser.add_argument(
        "--deny-cidr",
        dest="deny_cidr",
        action="append",
        metavar="CIDR",
        help="never call an AgentEndpoint whose address lies in this range (repeatable): "
        "the cluster's service and pod ranges, e.g. 10.96.0.0/12, when agents run outside "
        "the cluster (default: none; link-local, metadata, unspecified and multicast "
        "addresses are always refused)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every handler call")


def _kinds(text: str) -> frozenset[str]:
    try:
        return steps.parse_kinds(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port 0-65535, got {text!r}")
    return value


def _labels(text: str) -> dict[str, str]:
    labels = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {item!r}")
        labels[key.strip()] = value.strip()
    return labels
