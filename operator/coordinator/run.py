"""``coordinator run``: the operator, on the cluster of KUBECONFIG or the in-cluster config.

Every flag can also be set with an environment variable ``COORDINATOR_<FLAG>``
(``--expiry-critical`` is ``COORDINATOR_EXPIRY_CRITICAL``; the repeatable
``--namespace`` takes a comma-separated list). Flags win over the environment.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
from pathlib import Path

from coordinator import check


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``coordinator run`` to ``parser``."""
    check.add_policy_arguments(parser)
    parser.add_argument(
        "-n",
        "--namespace",
        dest="namespace",
        action="append",
        metavar="NAMESPACE",
        help="watch only this namespace (repeatable; glob patterns such as team-* work); "
        "default: all namespaces",
    )
    parser.add_argument(
        "--peering",
        metavar="NAME",
        help="coordinate replicas through this kopf peering object so that only one acts "
        "(default: standalone, for a single replica)",
    )
    parser.add_argument(
        "--priority",
        type=int,
        help="peering priority of this replica: the highest acts, the others stand by "
        "(default: random, so that replicas never tie)",
    )
    parser.add_argument(
        "--liveness",
        metavar="URL",
        default="http://0.0.0.0:8080/healthz",
        help="health endpoint for probes (default %(default)s; empty to disable)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=9090,
        metavar="PORT",
        help="serve Prometheus metrics on this port (default %(default)s; 0 to disable)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=16,
        help="customer groups reconciled at once, and API calls in flight (default %(default)s)",
    )
    webhooks = parser.add_argument_group("admission webhooks")
    webhooks.add_argument(
        "--webhooks",
        choices=("auto", "local", "service", "off"),
        default="auto",
        help="how the API server reaches the webhooks: local (https://127.0.0.1, certificates "
        "generated at start), service (in a cluster: the Service and --webhook-cert-dir), off; "
        "auto picks local against a control plane on 127.0.0.1, service in a cluster when "
        "--webhook-cert-dir is given (default %(default)s)",
    )
    webhooks.add_argument(
        "--webhook-port", type=int, default=0, help="port to serve on (default: free / 9443)"
    )
    webhooks.add_argument(
        "--webhook-cert-dir",
        type=Path,
        metavar="DIR",
        help="tls.crt, tls.key and ca.crt to serve with (a Secret shared by the replicas)",
    )
    webhooks.add_argument(
        "--webhook-service",
        default="optiinfra-system/optiinfra-coordinator:443",
        metavar="NS/NAME:PORT",
        help="the Service in front of the replicas (default %(default)s)",
    )
    webhooks.add_argument(
        "--webhook-namespace-labels",
        type=_labels,
        default={},
        metavar="KEY=VALUE,...",
        help="apply the webhooks only in namespaces with these labels (default: the "
        "namespaces watched, or all)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every handler call")
    _environment_defaults(parser)


def _labels(text: str) -> dict[str, str]:
    labels = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {item!r}")
        labels[key.strip()] = value.strip()
    return labels


def _environment_defaults(parser: argparse.ArgumentParser) -> None:
    """Take each flag's default from COORDINATOR_<FLAG> when that variable is set."""
    for action in parser._actions:
        long_flags = [o for o in action.option_strings if o.startswith("--")]
        if not long_flags or action.dest == "help":
            continue
        variable = "COORDINATOR_" + long_flags[0][2:].upper().replace("-", "_")
        raw = os.environ.get(variable)
        if raw is None:
            continue
        value: object
        if isinstance(action, argparse._AppendAction):
            value = [part.strip() for part in raw.split(",") if part.strip()]
        elif isinstance(action, argparse._StoreTrueAction):
            value = raw.lower() in ("1", "true", "yes", "on")
        elif action.type is not None and callable(action.type):
            try:
                value = action.type(raw)
            except (argparse.ArgumentTypeError, ValueError) as error:
                parser.error(f"{variable}={raw!r}: {error}")
        else:
            value = raw
        parser.set_defaults(**{action.dest: value})


def run(arguments: argparse.Namespace) -> int:
    """Run the operator until it is stopped (SIGINT/SIGTERM)."""
    import kopf  # noqa: PLC0415 - only `run` needs kopf; `check` stays light

    from coordinator import app, handlers, kopfpatch  # noqa: PLC0415 - registers the handlers

    kopfpatch.install()

    kopf.configure(verbose=arguments.verbose, log_format=kopf.LogFormat.PLAIN)
    if not arguments.verbose:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        # One line per admission request (two per write) is a log of the API server's work.
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    operator = app.Operator(
        app.Config(
            policy=check.policy_from(arguments),
            workers=arguments.workers,
            metrics_port=arguments.metrics_port,
            namespaces=tuple(arguments.namespace or ()),
            webhooks=arguments.webhooks,
            webhook_port=arguments.webhook_port,
            webhook_cert_dir=arguments.webhook_cert_dir,
            webhook_service=arguments.webhook_service,
            webhook_namespace_labels=arguments.webhook_namespace_labels,
        )
    )
    mode = operator.webhooks_mode()
    if mode == "service" and arguments.webhook_cert_dir is None:
        logging.getLogger(__name__).error(
            "--webhooks=service needs --webhook-cert-dir (tls.crt, tls.key, ca.crt)"
        )
        return 2
    if mode != "off":
        handlers.register_admission(kopf.get_default_registry())
    namespaces = arguments.namespace or []
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=arguments.peering is None,
        peering_name=arguments.peering,
        priority=random.randint(1, 1_000_000) if arguments.priority is None else arguments.priority,
        liveness_endpoint=arguments.liveness or None,
        memo=kopf.Memo(operator=operator),
    )
    return 0
