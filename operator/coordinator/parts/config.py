"""What ``coordinator run`` was told: the one Config every part reads its settings from."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from coordinator.api import defaults
from coordinator.api.shardnames import DEFAULT_RING
from coordinator.core import addresses
from coordinator.core import approval as policy_
from coordinator.core import steps as steps_
from coordinator.k8s import lease as lease_


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """What `coordinator run` was told (flags or COORDINATOR_* environment variables); the
    defaults are the flags' (``api.defaults``)."""

    policy: policy_.ApprovalPolicy = dataclasses.field(default_factory=policy_.ApprovalPolicy)
    workers: int = defaults.WORKERS
    namespaces: tuple[str, ...] = ()
    watch: str = defaults.WATCH  # informer | kopf
    webhooks: str = defaults.WEBHOOKS  # auto | local | service | off
    webhook_port: int = defaults.WEBHOOK_PORT  # 0: a free port (local) or 9443 (service)
    webhook_cert_dir: Path | None = None  # tls.crt, tls.key, ca.crt; generated when local
    webhook_service: str = defaults.WEBHOOK_SERVICE
    webhook_configuration: str = defaults.OPERATOR_NAME  # the two configurations' name
    webhook_namespace_labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    lease: str | None = None  # leader election with this Lease; None: a single replica
    lease_namespace: str = defaults.LEASE_NAMESPACE
    lease_timing: lease_.Timing = dataclasses.field(default_factory=lease_.Timing.of)
    shard: bool = False  # one of N active shards (parts.shards), with its Lease in lease_namespace
    ring: str = DEFAULT_RING  # the shards' ring (the label of their Leases)
    identity: str | None = None  # this replica's, unique among the live ones; None: generated
    readiness_port: int = 0  # 0: no readiness endpoint
    readiness_host: str = "0.0.0.0"
    shutdown_timeout: float = defaults.SHUTDOWN_TIMEOUT_SECONDS  # then the process leaves
    notify_expiring_before: float = defaults.NOTIFY_EXPIRING_BEFORE_SECONDS
    endpoint_addresses: addresses.Policy = addresses.STRICT  # what AgentEndpoints may reach
    executor_kinds: frozenset[str] = steps_.DEFAULT_KINDS  # what kubernetes steps may touch
