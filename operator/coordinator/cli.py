"""The ``coordinator`` command: subcommand dispatch only; each subcommand is its own module.

A subcommand module offers ``configure(parser)`` to add its arguments and
``run(arguments) -> int`` to run with them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, Final

from coordinator import check, gateway
from coordinator import run as run_command

SUBCOMMANDS: Final[tuple[tuple[str, Any, str], ...]] = (
    ("run", run_command, "run the operator against the cluster of KUBECONFIG (or in-cluster)"),
    ("check", check, "print what the operator will decide for manifests, without a cluster"),
    (
        "gateway",
        gateway,
        "serve the origin document's HTTP API and a read-only dashboard over the objects",
    ),
)
"""The subcommands: name, module (``configure`` and ``run``), the line ``--help`` shows."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="coordinator",
        description="Coordinates the changes optimisation agents propose (optiinfra.io).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module, summary in SUBCOMMANDS:
        sub = commands.add_parser(
            name,
            help=summary,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.configure(sub)
        sub.set_defaults(run=module.run)
    arguments = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], int] = arguments.run
    return run(arguments)
