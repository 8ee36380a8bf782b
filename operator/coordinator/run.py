"""``coordinator run``: the operator, on the cluster of KUBECONFIG or the in-cluster config.

Every flag can also be set with an environment variable ``COORDINATOR_<FLAG>``
(``--expiry-critical`` is ``COORDINATOR_EXPIRY_CRITICAL``; the repeatable
``--namespace`` takes a comma-separated list). Flags win over the environment. The flags
themselves are ``coordinator.runflags``; this module checks them at start and runs kopf.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import ipaddress
import logging
import os
import signal
import socket
import urllib.parse
from pathlib import Path
from typing import Any

from coordinator import policyflags, runflags
from coordinator.api import defaults
from coordinator.core import addresses


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``coordinator run`` to ``parser``."""
    added: list[tuple[argparse.Action, str | None]] = []
    add_argument = parser.add_argument

    def recording(*flags: Any, **kwargs: Any) -> argparse.Action:
        action = add_argument(*flags, **kwargs)
        added.append((action, kwargs.get("action")))
        return action

    add_group = parser.add_argument_group

    def recording_group(*args: Any, **kwargs: Any) -> Any:
        group = add_group(*args, **kwargs)
        add_to_group = group.add_argument

        def recording_in_group(*flags: Any, **kwargs: Any) -> argparse.Action:
            action = add_to_group(*flags, **kwargs)
            added.append((action, kwargs.get("action")))
            return action

        group.add_argument = recording_in_group  # type: ignore[method-assign]
        return group

    parser.add_argument = recording  # type: ignore[method-assign]
    parser.add_argument_group = recording_group  # type: ignore[method-assign]
    try:
        runflags.add_arguments(parser)
    finally:
        del parser.add_argument
        del parser.add_argument_group
    _environment_defaults(parser, added)


def _environment_defaults(
    parser: argparse.ArgumentParser, added: list[tuple[argparse.Action, str | None]]
) -> None:
    """Take each flag's default from COORDINATOR_<FLAG> when that variable is set (`added`:
    the flags, with the kind of action each was added as)."""
    for action, kind in added:
        long_flags = [o for o in action.option_strings if o.startswith("--")]
        if not long_flags or action.dest == "help":
            continue
        variable = "COORDINATOR_" + long_flags[0][2:].upper().replace("-", "_")
        raw = os.environ.get(variable)
        if raw is None:
            continue
        value: object
        if kind == "append":
            value = [part.strip() for part in raw.split(",") if part.strip()]
        elif kind == "store_true":
            value = raw.lower() in ("1", "true", "yes", "on")
        elif action.type is not None and callable(action.type):
            try:
                value = action.type(raw)
            except (argparse.ArgumentTypeError, ValueError) as error:
                parser.error(f"{variable}={raw!r}: {error}")
        else:
            value = raw
        parser.set_defaults(**{action.dest: value})


class StartupError(Exception):
    """The operator cannot start as configured; the message is one line naming the cause."""


def _endpoint(flag: str, url: str) -> tuple[str, int, str]:
    """(host, port, path) of an endpoint flag such as --liveness."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or not parts.port:
        raise StartupError(f"{flag}={url}: expected http://HOST:PORT/PATH")
    return parts.hostname, parts.port, parts.path or "/"


def _check_free(flag: str, host: str, port: int) -> None:
    """Fail now, naming the flag, if `port` is taken (rather than deep inside kopf)."""
    if port == 0:
        return
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise StartupError(f"{flag}: cannot listen on {host}:{port}: {exc.strerror}") from None


def _address_policy(arguments: argparse.Namespace) -> addresses.Policy:
    """--allow-loopback-endpoints and --deny-cidr as the executors' address policy."""
    deny = []
    for text in arguments.deny_cidr or ():
        try:
            deny.append(ipaddress.ip_network(text, strict=False))
        except ValueError as exc:
            raise StartupError(f"--deny-cidr={text}: {exc}") from None
    return addresses.Policy(allow_loopback=arguments.allow_loopback_endpoints, deny=tuple(deny))


def _lease_namespace(arguments: argparse.Namespace) -> str:
    if arguments.lease_namespace:
        return str(arguments.lease_namespace)
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return IN_CLUSTER_NAMESPACE.read_text().strip()
    except OSError:
        return defaults.LEASE_NAMESPACE


IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def run(arguments: argparse.Namespace) -> int:
    """Run the operator until it is stopped (SIGINT/SIGTERM).

    Exit status 0 after a stop, 1 when it cannot start or fails, 2 for a bad flag; the
    reason is one line on stderr.
    """
    log = logging.getLogger("coordinator")
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 PID` prints every thread's stack
    try:
        return _run(arguments)
    except StartupError as exc:
        logging.basicConfig(format="%(message)s")
        log.error("coordinator run: %s", exc)
        return 1


def _run(arguments: argparse.Namespace) -> int:
    # Only `run` needs kopf and the client; `check` stays light.
    import kopf  # noqa: PLC0415
    import kubernetes  # noqa: PLC0415

    from coordinator import app, handlers, metrics  # noqa: PLC0415
    from coordinator.k8s import access  # noqa: PLC0415
    from coordinator.k8s import lease as lease_  # noqa: PLC0415
    from coordinator.parts import signals  # noqa: PLC0415

    lease = arguments.lease or arguments.peering
    if arguments.peering and not arguments.lease:
        logging.getLogger(__name__).warning(
            "--peering is now leader election with a Lease: use --lease=%s", arguments.peering
        )
    if arguments.shard and lease:
        raise StartupError("--shard and --lease exclude each other: shards are all active")
    endpoints = []
    for flag, url in (("--liveness", arguments.liveness), ("--readiness", arguments.readiness)):
        if url:
            endpoints.append((flag, *_endpoint(flag, url)))
    for flag, host, port, _ in endpoints:
        _check_free(flag, host, port)
    if arguments.webhook_port:
        _check_free("--webhook-port", "127.0.0.1", arguments.webhook_port)
    readiness = next((e for e in endpoints if e[0] == "--readiness"), None)
    if readiness is not None and readiness[3] != "/readyz":
        raise StartupError(f"--readiness={arguments.readiness}: the path must be /readyz")

    duration = arguments.lease_duration
    endpoint_addresses = _address_policy(arguments)
    if endpoint_addresses.allow_loopback:
        logging.getLogger(__name__).warning(
            "--allow-loopback-endpoints: AgentEndpoints may reach loopback (local testing only)"
        )
    try:
        operator = app.Operator(
            app.Config(
                policy=policyflags.policy_from(arguments),
                workers=arguments.workers,
                namespaces=tuple(arguments.namespace or ()),
                watch=arguments.watch,
                webhooks=arguments.webhooks,
                webhook_port=arguments.webhook_port,
                webhook_cert_dir=arguments.webhook_cert_dir,
                webhook_service=arguments.webhook_service,
                webhook_configuration=arguments.webhook_configuration,
                webhook_namespace_labels=arguments.webhook_namespace_labels,
                lease=lease,
                lease_namespace=_lease_namespace(arguments),
                lease_timing=lease_.Timing.of(duration),
                shard=arguments.shard,
                ring=arguments.ring,
                identity=arguments.identity,
                readiness_host=readiness[1] if readiness else "",
                readiness_port=readiness[2] if readiness else 0,
                shutdown_timeout=arguments.shutdown_timeout,
                notify_expiring_before=arguments.notify_expiring_before,
                endpoint_addresses=endpoint_addresses,
                executor_kinds=arguments.executor_kinds,
            )
        )
    except kubernetes.config.ConfigException as exc:
        raise StartupError(f"no cluster to talk to (KUBECONFIG or in-cluster): {exc}") from None
    mode = operator.webhooks_mode()
    if mode == "service" and arguments.webhook_cert_dir is None:
        logging.getLogger(__name__).error(
            "--webhooks=service needs --webhook-cert-dir (tls.crt, tls.key, ca.crt)"
        )
        return 2
    problem = access.preflight(
        operator.api,
        namespaces=tuple(arguments.namespace or ()),
        webhooks=mode != "off",
        local_webhooks=mode == "local",
        lease=(operator.config.lease_namespace, lease) if lease else None,
        shards=operator.config.lease_namespace if arguments.shard else None,
    )
    if problem:
        raise StartupError(problem)
    if arguments.metrics_port:
        try:
            metrics.serve(arguments.metrics_port, operator.state)
        except OSError as exc:
            raise StartupError(
                f"--metrics-port: cannot listen on port {arguments.metrics_port}: {exc.strerror}"
            ) from None

    kopf.configure(verbose=arguments.verbose, log_format=kopf.LogFormat.PLAIN)
    if not arguments.verbose:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        # One line per admission request (two per write) is a log of the API server's work.
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if mode != "off":
        operator.admission_hooks.update(handlers.admission(operator.facts))
    namespaces = arguments.namespace or []
    # kopf hosts the operator on a loop whose SIGTERM/SIGINT are the operator's: one
    # handler, in place before kopf runs, sets the stop flag kopf is given (parts.signals).
    try:
        with asyncio.Runner(loop_factory=signals.Loop) as runner:
            loop = runner.get_loop()
            assert isinstance(loop, signals.Loop)
            operator.signals.install(loop)
            with contextlib.suppress(asyncio.CancelledError):  # as kopf.run
                runner.run(
                    kopf.operator(
                        clusterwide=not namespaces,
                        namespaces=namespaces,
                        standalone=True,  # a Lease (--lease) elects the leader, not kopf peering
                        liveness_endpoint=arguments.liveness or None,
                        stop_flag=operator.stop_flag,  # set by the one signal handler
                        memo=kopf.Memo(operator=operator),
                        registry=handlers.registry(operator),
                    )
                )
    except Exception as exc:  # a failed start (kopf retried nothing: errors are permanent)
        raise StartupError(f"stopped: {_cause(exc)}") from None
    return 0


def _cause(exc: BaseException) -> str:
    """The innermost message of a chain of errors, on one line."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return " ".join(f"{type(exc).__name__}: {exc}".split())
