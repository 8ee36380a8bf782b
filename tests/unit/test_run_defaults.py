"""`coordinator run`'s flags and the operator's Config have one set of defaults
(``api.defaults``): what a flag defaults to is what a Config built without it holds."""

from __future__ import annotations

import argparse
import ast
import inspect
import os
from pathlib import Path

import pytest

from coordinator import app, run, runflags
from coordinator.k8s import lease as lease_
from coordinator.k8s import webhooks as webhooks_


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> argparse.Namespace:
    """The flags as `coordinator run` with none given, out of a cluster."""
    for variable in [v for v in os.environ if v.startswith("COORDINATOR_")]:
        monkeypatch.delenv(variable)
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    monkeypatch.setattr(run, "IN_CLUSTER_NAMESPACE", tmp_path / "absent")
    parser = argparse.ArgumentParser()
    run.configure(parser)
    return parser.parse_args([])


def test_a_flag_left_out_is_the_configs_default(parsed: argparse.Namespace) -> None:
    config = app.Config()
    assert (
        parsed.workers,
        parsed.webhooks,
        parsed.webhook_port,
        parsed.webhook_service,
        parsed.webhook_configuration,
        parsed.shutdown_timeout,
        parsed.notify_expiring_before,
        parsed.executor_kinds,
        run._lease_namespace(parsed),
        lease_.Timing.of(parsed.lease_duration),
    ) == (
        config.workers,
        config.webhooks,
        config.webhook_port,
        config.webhook_service,
        config.webhook_configuration,
        config.shutdown_timeout,
        config.notify_expiring_before,
        config.executor_kinds,
        config.lease_namespace,
        config.lease_timing,
    )
    assert config.lease_timing == lease_.Timing(duration=12.0, renew_deadline=8.0, retry=1.6)
    namespace, name, port = webhooks_.SERVICE
    assert config.webhook_service == f"{namespace}/{name}:{port}"


def test_no_flag_writes_out_a_default_of_the_config_again() -> None:
    fields = {field.name for field in app.Config.__dataclass_fields__.values()}
    tree = ast.parse(inspect.getsource(runflags))
    restated = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument"):
            continue
        flags = [a.value for a in node.args if isinstance(a, ast.Constant)]
        long_flags = [f for f in flags if isinstance(f, str) and f.startswith("--")]
        default = next((k.value for k in node.keywords if k.arg == "default"), None)
        dest = long_flags[0][2:].replace("-", "_") if long_flags else ""
        if dest in fields and isinstance(default, ast.Constant):
            restated.append(f"{long_flags[0]}={default.value!r}")
    assert restated == []


def test_every_flag_takes_its_environment_variable_grouped_or_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """API.md: each flag is also COORDINATOR_<NAME>; a StatefulSet's shards name themselves
    with COORDINATOR_IDENTITY from the pod's name."""
    for variable, value in {
        "COORDINATOR_SHARD": "true",
        "COORDINATOR_RING": "blue",
        "COORDINATOR_IDENTITY": "coordinator-0",
        "COORDINATOR_LEASE_DURATION": "9",
        "COORDINATOR_WEBHOOKS": "off",
    }.items():
        monkeypatch.setenv(variable, value)
    parser = argparse.ArgumentParser()
    run.configure(parser)
    parsed = parser.parse_args([])
    assert (parsed.shard, parsed.ring, parsed.identity, parsed.lease_duration, parsed.webhooks) == (
        True,
        "blue",
        "coordinator-0",
        9.0,
        "off",
    )
    assert parser.parse_args(["--identity=x"]).identity == "x"  # the flag wins
