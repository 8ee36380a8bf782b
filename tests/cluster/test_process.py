"""The operator as a process: who it runs as, how it starts, how it stops, how replicas share.

Every operator here runs as the ServiceAccount of manifests/ (``own_operator``). A start
that cannot work ends at once with one line naming why; a stop ends within the bound
whatever is in flight; webhooks left by a dead process are replaced; with ``--lease``
one replica acts, the others stand by and take over.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes
import localcluster
import planwatch
import pytest
import yaml

from coordinator.k8s import webhooks
from tests.support import Kubectl, wait_for
from tests.support.builders import recommendation
from tests.support.kube import Objects, apply
from tests.support.net import free_port
from tests.support.processes import OperatorProcess

PLANS = "executionplans"
LEASE = ["--lease=optiinfra-coordinator", "--lease-namespace=optiinfra-system"]
"""The Lease the manifests' Role lets the operator's ServiceAccount use."""
SHUTDOWN_BOUND = 10.0
"""--shutdown-timeout's default: the process is gone this long after SIGTERM."""
RUN_NOW = {"riskLevel": "low", "executeNow": True}
"""Approved by policy and started at once (with the recommendation's own simulated steps)."""


def sim(name: str, ms: int | None = None) -> dict[str, Any]:
    """A simulated step (nothing changes), lasting `ms`."""
    step: dict[str, Any] = {"name": name, "action": name, "executor": "simulated"}
    if ms is not None:
        step["params"] = {"durationMs": ms}
    return step


def start_failing(
    kubeconfig: Path, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `coordinator run` expecting it to end by itself."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable,
        "-m",
        "coordinator",
        "run",
        f"--liveness=http://127.0.0.1:{free_port()}/healthz",
        f"--readiness=http://127.0.0.1:{free_port()}/readyz",
        *args,
    ]
    return subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


def webhooks_of(api: kubernetes.client.ApiClient) -> dict[str, str]:
    """name -> URL of every webhook in the shared configurations."""
    admission = kubernetes.client.AdmissionregistrationV1Api(api)
    found = {}
    for read in (
        admission.list_validating_webhook_configuration,
        admission.list_mutating_webhook_configuration,
    ):
        for config in read().items:
            for hook in config.webhooks or ():
                found[hook.name] = hook.client_config.url or ""
    return found


def ours(api: kubernetes.client.ApiClient, namespace: str) -> dict[str, str]:
    """The webhooks of the operators that watch `namespace` only (one per hook)."""
    scope = webhooks.local_scope([namespace], webhooks.namespace_selector([namespace], {}))
    return {n: u for n, u in webhooks_of(api).items() if f".{scope}." in n}


# --- identity: least privilege, checked at start ------------------------------------------


@pytest.fixture
def nobody_kubeconfig(
    cluster: localcluster.Cluster, kubectl: Kubectl, own_namespace: str, tmp_path: Path
) -> Path:
    """A ServiceAccount with no rights at all."""
    kubectl("create", "serviceaccount", "nobody", "-n", own_namespace)
    token = kubectl("create", "token", "nobody", "-n", own_namespace).stdout.strip()
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    config["users"] = [{"name": "nobody", "user": {"token": token}}]
    for context in config["contexts"]:
        context["context"]["user"] = "nobody"
    path = tmp_path / "nobody.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def test_without_its_rights_the_operator_refuses_to_start_with_one_line(
    nobody_kubeconfig: Path, own_namespace: str
) -> None:
    done = start_failing(nobody_kubeconfig, f"--namespace={own_namespace}", "--metrics-port=0")
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(
        f"coordinator run: system:serviceaccount:{own_namespace}:nobody may not list "
        f"recommendations.optiinfra.io in namespace {own_namespace}"
    ), lines[0]
    assert "manifests/operator-rbac.yaml" in lines[0]


def test_a_taken_port_or_a_bad_flag_ends_the_start_naming_the_flag(
    operator_kubeconfig: Path, own_namespace: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = start_failing(
            operator_kubeconfig, f"--namespace={own_namespace}", f"--metrics-port={port}"
        )
        assert done.returncode == 1, done.stderr
        assert done.stderr.strip().splitlines() == [
            f"coordinator run: --metrics-port: cannot listen on port {port}: Address already in use"
        ]
        health = start_failing(
            operator_kubeconfig,
            f"--namespace={own_namespace}",
            f"--liveness=http://127.0.0.1:{port}/healthz",
        )
        assert health.returncode == 1
        assert health.stderr.strip().startswith(
            f"coordinator run: --liveness: cannot listen on 127.0.0.1:{port}"
        )
    bad = start_failing(operator_kubeconfig, "--workers=0")
    assert bad.returncode == 2
    assert "--workers: expected a whole number >= 1, got '0'" in bad.stderr


# --- stopping: bounded, and the webhooks go with the process -------------------------------


def test_sigterm_mid_step_ends_the_process_in_bounded_time_and_the_plan_resumes(
    api: kubernetes.client.ApiClient,
    kubectl: Kubectl,
    own_namespace: str,
    own_operator: Callable[..., OperatorProcess],
) -> None:
    objects = Objects(api, own_namespace)
    process = own_operator("first")
    assert len(ours(api, own_namespace)) == len(webhooks.HOOKS), webhooks_of(api)
    steps = [
        sim("long", 60_000),
        sim("after", 50),
    ]
    apply(kubectl, own_namespace, recommendation("rec-term", steps=steps, **RUN_NOW))
    wait_for(
        lambda: (
            (objects.status(PLANS, "rec-term").get("steps") or [{}])[0].get("phase") == "Running"
        ),
        what="the long step to run",
    )
    took = process.terminate(timeout=SHUTDOWN_BOUND + 20)
    assert process.proc is not None
    assert process.proc.returncode == 0, process.tail()
    assert took < SHUTDOWN_BOUND, f"took {took:.1f}s to exit\n{process.tail()}"
    assert ours(api, own_namespace) == {}, "the webhooks stayed behind at a closed port"
    # The step in flight was left as it was recorded; the next start runs it again.
    assert objects.status(PLANS, "rec-term")["steps"][0]["phase"] == "Running"


def test_webhooks_left_by_a_killed_process_are_replaced_at_start(
    api: kubernetes.client.ApiClient,
    kubectl: Kubectl,
    own_namespace: str,
    own_operator: Callable[..., OperatorProcess],
) -> None:
    objects = Objects(api, own_namespace)
    first = own_operator("first")
    before = ours(api, own_namespace)
    first.kill()
    assert ours(api, own_namespace) == before  # left behind, failing closed
    refused = kubectl(
        "apply", "-n", own_namespace, "-f", "-", check=False,
        stdin=yaml.safe_dump(recommendation("rec-after", steps=[sim("s")], **RUN_NOW)),
    )  # fmt: skip
    assert refused.returncode != 0
    assert "connection refused" in refused.stderr, refused.stderr
    own_operator("second")
    after = ours(api, own_namespace)
    assert set(after) == set(before)
    assert after != before
    apply(kubectl, own_namespace, recommendation("rec-after", steps=[sim("s")], **RUN_NOW))
    objects.wait_phase(PLANS, "rec-after", "Succeeded")


def test_a_write_the_moment_a_start_reports_webhooks_registered_is_stamped(
    api: kubernetes.client.ApiClient,
    kubectl: Kubectl,
    own_namespace: str,
    own_operator: Callable[..., OperatorProcess],
) -> None:
    """Issue 22: after a stop took the webhooks out, a start's "admission webhooks
    registered" once came seconds before the API server applied them, and writes in that
    window were admitted unstamped. The start now reports it only after a server-side
    dry-run came back stamped, so a write at once, on every start, is stamped."""
    objects = Objects(api, own_namespace)
    for start in range(3):
        process = own_operator(f"start-{start}")
        apply(kubectl, own_namespace, recommendation(f"rec-at-once-{start}", riskLevel="low"))
        created = objects.get("recommendations", f"rec-at-once-{start}")
        assert created is not None
        annotations = created["metadata"].get("annotations") or {}
        assert "optiinfra.io/submitted-by" in annotations, (start, annotations)
        process.stop()  # a graceful stop takes the webhooks out: the next start's window


def test_an_unstamped_recommendation_is_not_trusted_until_it_is_updated(
    api: kubernetes.client.ApiClient,
    kubectl: Kubectl,
    own_namespace: str,
    own_operator: Callable[..., OperatorProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Written while no webhook covered its namespace, a recommendation has no submitter
    stamp: no policy approves it, a person's decision on it is refused naming the remedy,
    and a condition says so; after the remedy (an update: a `kubectl apply` of the same
    file sends nothing), it is stamped."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    objects = Objects(api, own_namespace)
    document = recommendation("rec-unstamped", riskLevel="medium")
    apply(kubectl, own_namespace, document)  # no operator, no webhooks here yet
    own_operator("op")

    def admitted() -> dict[str, Any] | None:
        rec = objects.get("recommendations", "rec-unstamped") or {}
        conditions = rec.get("status", {}).get("conditions", [])
        return next((c for c in conditions if c["type"] == "Admitted"), None)

    condition = wait_for(admitted, what="the Admitted condition")
    assert (condition["status"], condition["reason"]) == ("False", "NotStamped")
    remedy = "kubectl annotate recommendation rec-unstamped optiinfra.io/resubmitted=1 --overwrite"
    assert remedy in condition["message"]
    objects.wait_phase("approvals", "rec-unstamped", "Pending")
    refused = kubectl("optiinfra", "approve", "rec-unstamped", "-n", own_namespace, check=False)
    assert refused.returncode != 0
    assert remedy in refused.stderr, refused.stderr
    assert objects.phase("approvals", "rec-unstamped") == "Pending"
    stored = objects.get("recommendations", "rec-unstamped") or {}
    assert "optiinfra.io/submitted-by" not in (stored["metadata"].get("annotations") or {})

    kubectl(*remedy.split()[1:], "-n", own_namespace)  # the remedy the messages name
    wait_for(
        lambda: (admitted() or {}).get("reason") == "Stamped",
        what="the recommendation stamped after it was applied again",
    )
    stamped = objects.get("recommendations", "rec-unstamped") or {}
    assert stamped["metadata"]["annotations"]["optiinfra.io/submitted-by"]
    objects.wait_phase("approvals", "rec-unstamped", "Pending")  # a person still decides


# --- replicas: one acts, the other stands by and takes over --------------------------------


def test_with_a_lease_one_replica_acts_and_the_other_takes_over_without_a_step_twice(
    api: kubernetes.client.ApiClient,
    kubectl: Kubectl,
    own_namespace: str,
    own_operator: Callable[..., OperatorProcess],
) -> None:
    objects = Objects(api, own_namespace)
    lease = [*LEASE, "--lease-duration=6"]
    first = own_operator("first", *lease)
    wait_for(lambda: first.readiness() == (200, "acting\n"), what="the first replica to lead")
    second = own_operator("second", *lease)
    wait_for(
        lambda: second.readiness()[0] == 200 and "standing by" in second.readiness()[1],
        what="the second replica to stand by",
    )
    watch = planwatch.PlanWatch(api, own_namespace)
    watch.start()
    try:
        steps = [sim(f"s{i}", 700) for i in range(8)]
        for i in range(3):
            apply(kubectl, own_namespace, recommendation(f"rec-ha-{i}", steps=steps, **RUN_NOW))
        wait_for(
            lambda: all(
                objects.status(PLANS, f"rec-ha-{i}").get("currentStep", 0) >= 2 for i in range(3)
            ),
            what="the plans to be under way",
        )
        killed_at = time.monotonic()
        first.kill()
        wait_for(
            lambda: second.readiness() == (200, "acting\n"), what="the standby to lead", timeout=30
        )
        failover = time.monotonic() - killed_at
        assert failover < 6 + 3 + 2, f"failover took {failover:.1f}s"
        for i in range(3):
            objects.wait_phase(PLANS, f"rec-ha-{i}", "Succeeded", timeout=60)
    finally:
        watch.stop()
    assert watch.seen, "the watch saw nothing"
    assert planwatch.rewritten(watch.seen) == []


def test_a_replica_that_stops_hands_over_at_once(
    own_operator: Callable[..., OperatorProcess],
) -> None:
    lease = [*LEASE, "--lease-duration=30"]
    first = own_operator("first", *lease)
    wait_for(lambda: first.readiness() == (200, "acting\n"), what="the first replica to lead")
    second = own_operator("second", *lease)
    wait_for(lambda: "standing by" in second.readiness()[1], what="the second to stand by")
    first.terminate()
    # Released, not left to expire (30 s): the standby takes it at its next try (4 s).
    wait_for(lambda: second.readiness() == (200, "acting\n"), what="the hand-over", timeout=10)


def test_peering_with_a_namespace_no_longer_freezes_it_elects_with_a_lease(
    api: kubernetes.client.ApiClient,
    kubectl: Kubectl,
    operator_kubeconfig: Path,
    own_namespace: str,
    own_operator: Callable[..., OperatorProcess],
) -> None:
    """kopf peering with --namespace looked for a KopfPeering in each namespace and, finding
    none, did nothing and said nothing. --peering is now the Lease: where the operator may
    not hold it, the start says so; where it may, it acts."""
    refused = start_failing(
        operator_kubeconfig, "--peering=optiinfra-coordinator", f"--namespace={own_namespace}"
    )
    assert refused.returncode == 1
    assert (
        "may not create leases.coordination.k8s.io in namespace default, needed for leader "
        "election (--lease)"
    ) in refused.stderr, refused.stderr
    process = own_operator(
        "peering", "--peering=optiinfra-coordinator", "--lease-namespace=optiinfra-system"
    )
    assert "use --lease=optiinfra-coordinator" in process.log.read_text()
    wait_for(lambda: process.readiness() == (200, "acting\n"), what="the operator to lead")
    apply(kubectl, own_namespace, recommendation("rec-peering", steps=[sim("s")], **RUN_NOW))
    Objects(api, own_namespace).wait_phase(PLANS, "rec-peering", "Succeeded")
