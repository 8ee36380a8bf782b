"""The ``coordinator`` command: subcommand dispatch only; each subcommand is its own module.

A subcommand module offers ``configure(parser)`` to add its arguments and
``run(arguments) -> int`` to run with them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from coordinator import check, gateway
from coordinator import run as run_command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="coordinator",
        description="Coordinates the changes optimisation agents propose (optiinfra.io).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    running = commands.add_parser(
        "run",
        help="run the operator against the cluster of KUBECONFIG (or in-cluster)",
        description=run_command.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run_command.configure(running)
    running.set_defaults(run=run_command.run)
    checking = commands.add_parser(
        "check",
        help="print what the operator will decide for manifests, without a cluster",
        description=check.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.configure(checking)
    checking.set_defaults(run=check.run)

    serving = commands.add_parser(
        "gateway",
        help="serve the origin document's HTTP API and a read-only dashboard over the objects",
        description=gateway.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gateway.configure(serving)
    serving.set_defaults(run=gateway.run)

    arguments = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], int] = arguments.run
    return run(arguments)
