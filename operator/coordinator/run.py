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
        default=4,
        help="customer groups reconciled at once (default %(default)s)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every handler call")
    _environment_defaults(parser)


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

    from coordinator import app, handlers  # noqa: F401, PLC0415 - registers the handlers

    kopf.configure(verbose=arguments.verbose, log_format=kopf.LogFormat.PLAIN)
    if not arguments.verbose:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    operator = app.Operator(
        app.Config(
            policy=check.policy_from(arguments),
            workers=arguments.workers,
            metrics_port=arguments.metrics_port,
        )
    )
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
