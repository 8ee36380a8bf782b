"""Chaos: what the operator guarantees when processes die, measured on the local control plane.

Scenarios (each in its own namespace ``chaos-<run>-<scenario>``, deleted at its end; each
prints its figures):

1. **kills**: plans of simulated steps (``params.durationMs`` 300-1500; a quarter of the
   plans have a failing critical step, ``params.fail: true``, and must roll back) while the
   operator is SIGKILLed again and again and restarted at once. Counted: repeated steps (a
   completed step whose record — phase, startedAt, finishedAt — changed afterwards, seen by
   a watch on the plans), wrong final phases (Succeeded when every step succeeds,
   RolledBack when a critical step fails), and for each plan the step Events expected from
   its final status (StepSucceeded, StepFailed, StepRolledBack) that are missing or
   present more than once.
2. **expiry**: critical recommendations under ``--expiry-critical=5s``; the operator is
   SIGKILLed before they expire and restarted after they have: the time from the restart
   to each recommendation's Expired phase.
3. **apiserver**, **etcd**: the component is SIGKILLed and started again
   (``localcluster.restart``) while plans run: the operator stays alive (same PID); the
   time from the API server's /readyz to the next recommendation settling and to the
   running plans moving again; repeated steps; final phases.
4. **replicas**: two replicas with ``--lease`` (the default lease duration); the acting one
   is SIGKILLed while plans run and started again as the new standby, several times: the
   failover time (kill to the other's /readyz answering "acting") and steps executed twice.
5. **bursts**: recommendations created in bursts with a SIGKILL of the operator in the
   middle: how many settled (status.phase set, not Pending), how many were lost, the time.

The operator runs as ``coordinator run`` with the ServiceAccount of manifests/ (a token
from ``kubectl create token``), its webhooks on, watching only the scenario's namespace.

Usage: ``python bench/chaos.py [--scenarios kills,expiry,apiserver,etcd,replicas,bursts]
[--quick]``. A full run writes ``bench/results/chaos.json`` and ``chaos.md``; a partial or
quick one writes to build/chaos/partial.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import json
import os
import random
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import kubernetes

import e2e
from coordinator.api import defaults
from coordinator.api.common import APPROVALS, GROUP, PLANS, RECOMMENDATIONS, VERSION

REPO: Final = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "hack" / "cluster"))
import localcluster  # noqa: E402
import localproc  # noqa: E402
import planwatch  # noqa: E402

ENDED: Final = frozenset({"Succeeded", "Failed", "RolledBack"})
STEP_REASONS: Final = frozenset({"StepSucceeded", "StepFailed", "StepRolledBack", "RollbackFailed"})
EXPECTED_EVENTS: Final[Mapping[str, tuple[str, ...]]] = {
    "Succeeded": ("StepSucceeded",),
    "Failed": ("StepFailed",),
    "RolledBack": ("StepSucceeded", "StepRolledBack"),
    "RollbackFailed": ("StepSucceeded", "RollbackFailed"),
}
"""The step Events a step's final phase implies (a rolled-back step succeeded first)."""
LEASE: Final = ["--lease=optiinfra-coordinator", "--lease-namespace=optiinfra-system"]
SCENARIOS: Final = ("kills", "expiry", "apiserver", "etcd", "replicas", "bursts")
RESULTS: Final = REPO / "bench" / "results"
WORK: Final = REPO / "build" / "chaos"

log = e2e.log


# --- the operator as a process --------------------------------------------------------


class Operator(e2e.OperatorProcess):
    """`coordinator run` watching one namespace, with /readyz; each start logs to its own
    file (NAME-1.log, NAME-2.log, ...), so a killed process's log stays."""

    def __init__(
        self, *, kubeconfig: Path, namespace: str, scope: str, name: str, args: Sequence[str]
    ) -> None:
        super().__init__(
            kubeconfig=kubeconfig,
            namespace=namespace,
            scope=scope,
            log=WORK / f"{name}.log",
            args=args,
        )
        self.name = name
        self.starts = 0

    def start(self, *, timeout: float = 90) -> Operator:
        self.starts += 1
        self.log = WORK / f"{self.name}-{self.starts}.log"
        super().start(timeout=timeout)
        return self

    def acting(self) -> bool:
        return self.readiness() == (200, "acting\n")

    def standing_by(self) -> bool:
        return "standing by" in self.readiness()[1]


def wait_until(
    probe: Callable[[], Any], *, what: str, timeout: float, interval: float = 0.1
) -> Any:
    """``localproc.wait``, an exception of `probe` counting as not yet (the API server may
    be restarting)."""

    def tolerant() -> Any:
        with contextlib.suppress(Exception):
            return probe()
        return None

    return localproc.wait(tolerant, what=what, timeout=timeout, interval=interval)


def kubectl_binary() -> str:
    state = json.loads((REPO / ".cluster" / "state.json").read_text())
    pinned = Path(state.get("bin_dir", "")) / "kubectl"
    return str(pinned) if pinned.exists() else "kubectl"


def operator_kubeconfig(admin: Path) -> Path:
    """A kubeconfig that authenticates as the operator's ServiceAccount of manifests/, with
    exactly the rights they give it (as tests/cluster/conftest.py's operator_kubeconfig)."""
    return localproc.operator_kubeconfig(
        admin=admin,
        kubectl=kubectl_binary(),
        manifests=REPO / "manifests",
        out=WORK / "operator.kubeconfig",
    )


# --- what the plans went through ------------------------------------------------------


def progress(plans: Mapping[str, dict[str, Any]]) -> dict[str, tuple[tuple[str, str], ...]]:
    """Each plan's steps and their phases: what changes when a plan moves."""
    return {
        name: tuple(
            (s["name"], s.get("phase", "")) for s in (obj.get("status") or {}).get("steps") or ()
        )
        for name, obj in plans.items()
    }


# --- the cluster side -----------------------------------------------------------------


class Chaos:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.admin = Path(args.kubeconfig)
        e2e.local_server(self.admin)
        self.api = kubernetes.config.new_client_from_config(config_file=str(self.admin))
        self.pool_api = e2e.new_api(self.admin)
        self.custom = kubernetes.client.CustomObjectsApi(self.api)
        self.core = kubernetes.client.CoreV1Api(self.api)
        self.run_id = uuid.uuid4().hex[:6]
        WORK.mkdir(parents=True, exist_ok=True)
        e2e.ensure_crds(self.api)
        self.kubeconfig = operator_kubeconfig(self.admin)

    def namespace(self, scenario: str) -> str:
        return e2e.create_namespace(
            self.api, f"chaos-{self.run_id}-{scenario}", scope=f"{self.run_id}-{scenario}"
        )

    def operator(self, namespace: str, scenario: str, name: str, *args: str) -> Operator:
        return Operator(
            kubeconfig=self.kubeconfig,
            namespace=namespace,
            scope=f"{self.run_id}-{scenario}",
            name=f"{scenario}-{name}",
            args=args,
        )

    @contextlib.contextmanager
    def scenario(self, scenario: str) -> Iterator[tuple[str, list[Operator]]]:
        """A fresh namespace and the operators started in it; at the end the namespace is
        deleted while they still run (a running plan holds a finalizer), then they stop."""
        namespace = self.namespace(scenario)
        operators: list[Operator] = []
        try:
            yield namespace, operators
        finally:
            left = e2e.delete_namespaces(self.api, [namespace], timeout=90)
            if left:
                log(f"{scenario}: namespace {namespace} still terminating")
            for operator in operators:
                operator.stop()

    def create(self, namespace: str, body: Mapping[str, Any], *, timeout: float = 60) -> None:
        """Create a recommendation, trying again while the API server or the webhooks are
        not there (a killed operator's webhooks refuse until it is back)."""

        def once() -> bool:
            try:
                self.custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, RECOMMENDATIONS, body
                )
            except kubernetes.client.ApiException as exc:
                if exc.status == 409:
                    return True
                raise
            return True

        wait_until(once, what=f"creating {body['metadata']['name']}", timeout=timeout, interval=0.2)

    def list(self, namespace: str, plural: str) -> dict[str, dict[str, Any]]:
        listed = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)
        return {obj["metadata"]["name"]: obj for obj in listed["items"]}

    def wait_ended(
        self, namespace: str, names: Sequence[str], *, timeout: float
    ) -> dict[str, dict[str, Any]]:
        """Wait until every plan has ended (or the deadline); the plans as they are."""
        deadline = time.monotonic() + timeout
        plans: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                plans = self.list(namespace, PLANS)
            if all(phase_of(plans.get(n)) in ENDED for n in names):
                break
            time.sleep(0.5)
        return plans

    def step_events(self, namespace: str) -> collections.Counter[tuple[str, str, str]]:
        """(plan, step, reason) -> how many times the Event was posted (objects x count)."""
        found: collections.Counter[tuple[str, str, str]] = collections.Counter()
        events = self.core.list_namespaced_event(
            namespace, field_selector="involvedObject.kind=ExecutionPlan"
        )
        for event in events.items:
            if event.reason not in STEP_REASONS:
                continue
            matched = re.match(r"Step (\S+):", event.message or "")
            step = matched.group(1) if matched else "?"
            found[(event.involved_object.name, step, event.reason)] += event.count or 1
        return found

    def settled_events(self, namespace: str, *, quiet_s: float = 3.0, timeout: float = 30) -> None:
        """Wait until no new step Event has appeared for `quiet_s` (they are posted late)."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            total = sum(self.step_events(namespace).values())
            if total != last:
                last, since = total, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return
            time.sleep(0.5)


def phase_of(obj: Mapping[str, Any] | None) -> str | None:
    return ((obj or {}).get("status") or {}).get("phase")


def plan_rec(name: str, steps: list[dict[str, Any]], *, customer: str) -> dict[str, Any]:
    """A low-risk recommendation (approved by policy) whose plan runs at once."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Recommendation",
        "metadata": {"name": name},
        "spec": {
            "customerId": customer,
            "agentId": "chaos",
            "agentType": "cost",
            "title": name,
            "action": "migrate_to_spot",
            "riskLevel": "low",
            "executeNow": True,
            "steps": steps,
        },
    }


def plan_steps(
    rng: random.Random, *, count: int, fail_at: int | None, low: int = 300, high: int = 1500
) -> list[dict[str, Any]]:
    steps = []
    for j in range(count):
        params: dict[str, Any] = {"durationMs": rng.randint(low, high)}
        if j == fail_at:
            params["fail"] = True
        steps.append(
            {
                "name": f"s{j}",
                "action": f"step_{j}",
                "executor": "simulated",
                "critical": True,
                "params": params,
            }
        )
    return steps


def expected_phase(rec: Mapping[str, Any]) -> str:
    failing = any(s["params"].get("fail") and s.get("critical", True) for s in rec["spec"]["steps"])
    return "RolledBack" if failing else "Succeeded"


def verdict(
    chaos: Chaos,
    namespace: str,
    recs: Sequence[Mapping[str, Any]],
    plans: Mapping[str, dict[str, Any]],
    watch: planwatch.PlanWatch,
    *,
    events: bool,
) -> dict[str, Any]:
    """Repeated steps, wrong final phases and (with `events`) missing/duplicated Events."""
    repeated = planwatch.rewritten(watch.seen)
    wrong = {}
    for rec in recs:
        name = rec["metadata"]["name"]
        want, got = expected_phase(rec), phase_of(plans.get(name))
        if want != got:
            wrong[name] = {"expected": want, "got": got}
    out: dict[str, Any] = {
        "plans": len(recs),
        "final_phases": dict(
            collections.Counter(phase_of(plans.get(r["metadata"]["name"])) or "none" for r in recs)
        ),
        "repeated_steps": len(repeated),
        "repeated_examples": repeated[:3],
        "wrong_final_phases": len(wrong),
        "wrong_examples": dict(list(wrong.items())[:5]),
        "watch_versions": len(watch.seen),
    }
    if events:
        chaos.settled_events(namespace)
        present = chaos.step_events(namespace)
        expected = set()
        for rec in recs:
            name = rec["metadata"]["name"]
            for step in (plans.get(name, {}).get("status") or {}).get("steps") or ():
                for reason in EXPECTED_EVENTS.get(step.get("phase", ""), ()):
                    expected.add((name, step["name"], reason))
        missing = sorted(expected - set(present))
        duplicated = {key: n for key, n in present.items() if key in expected and n > 1}
        unexpected = {key: n for key, n in present.items() if key not in expected}
        out |= {
            "events_expected": len(expected),
            "events_missing": len(missing),
            "events_missing_examples": ["/".join(k) for k in missing[:5]],
            "events_duplicated": sum(n - 1 for n in duplicated.values()),
            "events_duplicated_examples": {"/".join(k): n for k, n in list(duplicated.items())[:5]},
            "events_unexpected": sum(unexpected.values()),
        }
    return out


# --- the scenarios --------------------------------------------------------------------


def kills(chaos: Chaos, *, plans: int, kills: int) -> dict[str, Any]:
    """SIGKILLs of the operator while plans run; each restarted at once."""
    rng = random.Random(9)
    recs = []
    for i in range(plans):
        count = rng.randint(3, 6)
        fail_at = rng.randint(1, count - 1) if i % 4 == 3 else None
        recs.append(
            plan_rec(
                f"plan-{i:02d}", plan_steps(rng, count=count, fail_at=fail_at), customer=f"c{i:02d}"
            )
        )
    # The plans arrive over the first half of the kills, so that kills hit plans at every stage.
    waves = max(1, kills // 2)
    per_wave = -(-plans // waves)
    with chaos.scenario("kills") as (namespace, operators):
        operator = chaos.operator(namespace, "kills", "op")
        operators.append(operator.start())
        watch = planwatch.PlanWatch(chaos.api, namespace)
        watch.start()
        restarts, in_flight = [], []
        queue = list(recs)
        started_at = time.monotonic()
        try:
            for k in range(kills):
                for rec in queue[:per_wave]:
                    chaos.create(namespace, rec)
                queue = queue[per_wave:]
                time.sleep(rng.uniform(0.5, 2.5))
                in_flight.append(watch.running_steps())
                operator.kill()
                began = time.monotonic()
                operator.start()
                restarts.append(time.monotonic() - began)
                log(f"kills: {k + 1}/{kills} ({in_flight[-1]} steps running at the kill)")
            for rec in queue:
                chaos.create(namespace, rec)
            names = [r["metadata"]["name"] for r in recs]
            final = chaos.wait_ended(namespace, names, timeout=chaos.args.timeout)
            ended_s = time.monotonic() - started_at
        finally:
            watch.stop()
        figures = verdict(chaos, namespace, recs, final, watch, events=True)
    return {
        "kills": kills,
        "steps": sum(len(r["spec"]["steps"]) for r in recs),
        "plans_with_failing_critical_step": sum(expected_phase(r) == "RolledBack" for r in recs),
        "steps_running_at_kills": sum(in_flight),
        "restart_to_healthy_s": e2e.percentiles(restarts)
        | {"mean_s": round(sum(restarts) / len(restarts), 2)},
        "all_ended_s": round(ended_s, 1),
        **figures,
    }


def expiry(chaos: Chaos, *, n: int, downtime: float) -> dict[str, Any]:
    """Critical approvals that expire while the operator is down."""
    with chaos.scenario("expiry") as (namespace, operators):
        operator = chaos.operator(namespace, "expiry", "op", "--expiry-critical=5s")
        operators.append(operator.start())
        names = [f"crit-{i}" for i in range(n)]
        for i, name in enumerate(names):
            body = plan_rec(
                name, [{"name": "s", "action": "s", "executor": "simulated"}], customer=f"c{i}"
            )
            body["spec"] |= {"riskLevel": "critical", "executeNow": False}
            chaos.create(namespace, body)
        wait_until(
            lambda: (
                all(
                    phase_of(r) == "AwaitingApproval"
                    for r in chaos.list(namespace, RECOMMENDATIONS).values()
                )
                and len(chaos.list(namespace, RECOMMENDATIONS)) == n
            ),
            what="the recommendations to await approval",
            timeout=60,
        )
        approvals = chaos.list(namespace, APPROVALS)
        expires = [
            datetime.fromisoformat(a["spec"]["expiresAt"].replace("Z", "+00:00"))
            for a in approvals.values()
        ]
        operator.kill()
        killed = time.monotonic()
        left = min(e - datetime.now(UTC) for e in expires).total_seconds()
        log(
            f"expiry: operator killed {left:.1f} s before the first expiry; "
            f"down for {downtime:.0f} s"
        )
        time.sleep(max(0.0, downtime - (time.monotonic() - killed)))
        overdue = min(datetime.now(UTC) - e for e in expires).total_seconds()
        restarted = time.monotonic()
        # Watch for Expired while the operator starts: it may act before it reports healthy.
        starting = concurrent.futures.ThreadPoolExecutor(1)
        started = starting.submit(lambda: operator.start() and time.monotonic() - restarted)
        expired: dict[str, float] = {}
        deadline = restarted + 120
        while len(expired) < n and time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                for name, rec in chaos.list(namespace, RECOMMENDATIONS).items():
                    if phase_of(rec) == "Expired" and name not in expired:
                        expired[name] = time.monotonic() - restarted
            time.sleep(0.1)
        healthy = started.result(timeout=120)
        starting.shutdown()
        approval_phases = collections.Counter(
            phase_of(a) for a in chaos.list(namespace, APPROVALS).values()
        )
    times = sorted(expired.values())
    return {
        "recommendations": n,
        "killed_before_expiry_s": round(left, 1),
        "downtime_s": round(downtime, 1),
        "expired_for_s_at_restart": round(overdue, 1),
        "restart_to_healthy_s": round(healthy, 2),
        "expired": len(expired),
        "restart_to_expired_s": {"min": round(times[0], 2), "max": round(times[-1], 2)}
        if times
        else None,
        "approval_phases": dict(approval_phases),
    }


def control_plane(chaos: Chaos, component: str, *, plans: int, steps: int) -> dict[str, Any]:
    """SIGKILL and restart of kube-apiserver or etcd while plans run."""
    key = component.removeprefix("kube-")
    rng = random.Random(3)
    recs = [
        plan_rec(
            f"plan-{i:02d}",
            plan_steps(
                rng, count=steps, fail_at=steps - 2 if i % 3 == 2 else None, low=600, high=1000
            ),
            customer=f"c{i}",
        )
        for i in range(plans)
    ]
    with chaos.scenario(key) as (namespace, operators):
        operator = chaos.operator(namespace, key, "op")
        operators.append(operator.start())
        pid = operator.pid
        watch = planwatch.PlanWatch(chaos.api, namespace)
        watch.start()
        try:
            for rec in recs:
                chaos.create(namespace, rec)
            names = [r["metadata"]["name"] for r in recs]
            wait_until(
                lambda: all(
                    any(
                        s.get("phase") == "Succeeded"
                        for s in (p.get("status") or {}).get("steps") or ()
                    )
                    for p in (chaos.list(namespace, PLANS).get(n, {}) for n in names)
                ),
                what="the plans to be under way",
                timeout=60,
            )
            at_kill = chaos.list(namespace, PLANS)
            before = progress(at_kill)
            log(f"{key}: SIGKILL with {watch.running_steps()} steps running")
            timing = localcluster.restart(component)
            ready = time.monotonic()
            log(f"{key}: restarted, API server ready {timing['ready_s']} s after the kill")
            probe = plan_rec(
                "probe", [{"name": "s", "action": "s", "executor": "simulated"}], customer="probe"
            )
            probe["spec"]["executeNow"] = False
            chaos.create(namespace, probe)
            created = time.monotonic() - ready
            settled = wait_until(
                lambda: (
                    phase_of(
                        chaos.custom.get_namespaced_custom_object(
                            GROUP, VERSION, namespace, RECOMMENDATIONS, "probe"
                        )
                    )
                    not in (None, "Pending")
                    and time.monotonic()
                ),
                what="the probe to settle",
                timeout=chaos.args.timeout,
            )
            # Each plan still running at the kill: when its steps first changed after ready.
            running = [n for n in names if phase_of(at_kill.get(n)) not in ENDED]
            moves: dict[str, float] = {}
            deadline = ready + chaos.args.timeout
            while len(moves) < len(running) and time.monotonic() < deadline:
                with contextlib.suppress(Exception):
                    now = progress(chaos.list(namespace, PLANS))
                    for name in running:
                        if name not in moves and now.get(name) != before.get(name):
                            moves[name] = time.monotonic() - ready
                time.sleep(0.1)
            final = chaos.wait_ended(namespace, names, timeout=chaos.args.timeout)
            ended = time.monotonic() - ready
        finally:
            watch.stop()
        alive = operator.alive() and operator.pid == pid
        figures = verdict(chaos, namespace, recs, final, watch, events=False)
    return {
        "plans": plans,
        "steps_per_plan": steps,
        "kill_to_restart_s": timing["restarted_s"],
        "kill_to_ready_s": timing["ready_s"],
        "operator_alive_same_pid": alive,
        "ready_to_probe_created_s": round(created, 2),
        "ready_to_next_recommendation_settled_s": round(settled - ready, 2),
        "plans_running_at_kill": len(running),
        "plans_moved_again": len(moves),
        "ready_to_plans_moving_s": round(min(moves.values()), 2) if moves else None,
        "ready_to_every_plan_moving_s": round(max(moves.values()), 2) if moves else None,
        "ready_to_plan_moving_s": {n: round(t, 2) for n, t in sorted(moves.items())},
        "ready_to_all_plans_ended_s": round(ended, 1),
        "watch_reconnects": watch.reconnects,
        **figures,
    }


def moved(before: Mapping[str, Any], now: Mapping[str, Any], names: Sequence[str]) -> bool:
    """Whether a plan's steps changed since `before`."""
    return any(before.get(name) != now.get(name) for name in names)


def replicas(chaos: Chaos, *, kills: int, per_wave: int) -> dict[str, Any]:
    """Two replicas with a Lease; the acting one SIGKILLed, then started as the standby."""
    rng = random.Random(5)
    recs: list[dict[str, Any]] = []
    failovers = []
    with chaos.scenario("replicas") as (namespace, operators):
        a = chaos.operator(namespace, "replicas", "a", *LEASE)
        b = chaos.operator(namespace, "replicas", "b", *LEASE)
        operators += [a, b]
        a.start()
        wait_until(a.acting, what="the first replica to act", timeout=60)
        b.start()
        wait_until(b.standing_by, what="the second replica to stand by", timeout=60)
        watch = planwatch.PlanWatch(chaos.api, namespace)
        watch.start()
        try:
            for k in range(kills):
                wave = []
                for i in range(per_wave):
                    index = k * per_wave + i
                    fail_at = 4 if index % 4 == 3 else None
                    wave.append(
                        plan_rec(
                            f"plan-{index:02d}",
                            plan_steps(rng, count=6, fail_at=fail_at, low=600, high=1200),
                            customer=f"c{index}",
                        )
                    )
                for rec in wave:
                    chaos.create(namespace, rec)
                recs += wave
                names = [r["metadata"]["name"] for r in wave]
                wait_until(
                    lambda names=names: all(
                        (p.get("status") or {}).get("currentStep", 0) >= 1
                        for p in (chaos.list(namespace, PLANS).get(n, {}) for n in names)
                    ),
                    what="the wave's plans to be under way",
                    timeout=60,
                )
                active, standby = (a, b) if a.acting() else (b, a)
                running = watch.running_steps()
                killed = time.monotonic()
                active.kill()
                wait_until(standby.acting, what="the standby to act", timeout=120, interval=0.05)
                failovers.append(time.monotonic() - killed)
                log(
                    f"replicas: kill {k + 1}/{kills}: {active.name} killed with {running} steps "
                    f"running, {standby.name} acting after {failovers[-1]:.1f} s"
                )
                active.start()
                wait_until(active.standing_by, what="the restarted replica to stand by", timeout=60)
            names = [r["metadata"]["name"] for r in recs]
            final = chaos.wait_ended(namespace, names, timeout=chaos.args.timeout)
        finally:
            watch.stop()
        figures = verdict(chaos, namespace, recs, final, watch, events=True)
    return {
        "kills": kills,
        "lease_duration_s": defaults.LEASE_DURATION_SECONDS,  # the default: chaos passes none
        "failover_s": [round(f, 1) for f in failovers],
        "failover_max_s": round(max(failovers), 1),
        "double_execution": figures["repeated_steps"],
        **figures,
    }


def bursts(chaos: Chaos, *, n: int, count: int) -> dict[str, Any]:
    """`n` recommendations in `count` bursts; the operator SIGKILLed after the middle one."""
    manifests = e2e.workload(n, customers=50, prefix="burst")
    names = [m["metadata"]["name"] for m in manifests]
    chunk = -(-n // count)
    errors: collections.Counter[str] = collections.Counter()
    with chaos.scenario("bursts") as (namespace, operators):
        operator = chaos.operator(namespace, "bursts", "op")
        operators.append(operator.start())
        with (
            e2e.watching(chaos.pool_api, namespace, (RECOMMENDATIONS,)) as tracker,
            concurrent.futures.ThreadPoolExecutor(16) as pool,
        ):
            custom = kubernetes.client.CustomObjectsApi(chaos.pool_api)

            def create(body: Mapping[str, Any]) -> None:
                for _ in range(100):
                    try:
                        custom.create_namespaced_custom_object(
                            GROUP, VERSION, namespace, RECOMMENDATIONS, body
                        )
                    except kubernetes.client.ApiException as exc:
                        if exc.status == 409:
                            break
                        errors[str(exc.status)] += 1
                        time.sleep(0.2)
                        continue
                    break
                tracker.created(RECOMMENDATIONS, body["metadata"]["name"], time.monotonic())

            started_at = time.monotonic()
            burst_times = []
            killed = {}
            for b in range(count):
                burst = manifests[b * chunk : (b + 1) * chunk]
                t = time.monotonic()
                list(pool.map(create, burst))
                burst_times.append(round(time.monotonic() - t, 1))
                log(f"bursts: burst {b + 1}/{count}: {len(burst)} created in {burst_times[-1]} s")
                if b == count // 2 - 1:
                    pending = sum(
                        tracker.get(RECOMMENDATIONS, x).first_phase(e2e.settled) is None
                        for x in names[: (b + 1) * chunk]
                    )
                    killed_at = time.monotonic()
                    operator.kill()
                    operator.start()
                    killed = {
                        "unsettled_at_kill": pending,
                        "restart_s": round(time.monotonic() - killed_at, 1),
                    }
                    log(
                        f"bursts: operator killed with {pending} unsettled, "
                        f"back in {killed['restart_s']} s"
                    )
            deadline = time.monotonic() + chaos.args.timeout
            while time.monotonic() < deadline:
                if all(
                    tracker.get(RECOMMENDATIONS, x).first_phase(e2e.settled) is not None
                    for x in names
                ):
                    break
                time.sleep(0.5)
            done = [tracker.get(RECOMMENDATIONS, x).first_phase(e2e.settled) for x in names]
        # What the API server holds, whatever the watch saw.
        stored = chaos.list(namespace, RECOMMENDATIONS)
        with_phase = sum(phase_of(obj) not in (None, "Pending") for obj in stored.values())
        settled_times = [t for t in done if t is not None]
    return {
        "recommendations": n,
        "bursts": count,
        "created_per_burst_s": burst_times,
        "create_errors_retried": dict(errors),
        **killed,
        "settled": with_phase,
        "lost": n - with_phase,
        "stored": len(stored),
        "settle_s": round(max(settled_times) - started_at, 1) if settled_times else None,
        "phases": dict(collections.Counter(phase_of(o) or "none" for o in stored.values())),
    }


# --- the run --------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    chaos = Chaos(args)
    quick = args.quick
    result: dict[str, Any] = {
        "when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=REPO,
            check=False,
        ).stdout.strip(),
        "cpus": os.cpu_count(),
        "quick": quick,
    }
    runs: dict[str, Callable[[], dict[str, Any]]] = {
        "kills": lambda: kills(chaos, plans=5 if quick else 30, kills=3 if quick else 20),
        "expiry": lambda: expiry(chaos, n=2 if quick else 5, downtime=10 if quick else 25),
        "apiserver": lambda: control_plane(
            chaos, "kube-apiserver", plans=3 if quick else 6, steps=8
        ),
        "etcd": lambda: control_plane(chaos, "etcd", plans=3 if quick else 6, steps=8),
        "replicas": lambda: replicas(chaos, kills=2 if quick else 5, per_wave=2 if quick else 3),
        "bursts": lambda: bursts(chaos, n=200 if quick else 2000, count=4),
    }
    for name in SCENARIOS:
        if name not in args.scenarios:
            continue
        log(f"{name}: start")
        began = time.monotonic()
        try:
            figures = runs[name]()
        except Exception as exc:  # one scenario's failure is a figure too; the others run
            log(f"{name}: FAILED: {type(exc).__name__}: {exc}")
            figures = {"error": f"{type(exc).__name__}: {exc}"}
        figures["scenario_s"] = round(time.monotonic() - began, 1)
        result[name] = figures
        log(f"{name}: {json.dumps(figures)}")
    return result


def table(result: Mapping[str, Any]) -> str:
    """The figures as Markdown."""
    lines = [
        "# Chaos: the operator under SIGKILL, on the local control plane",
        "",
        f"Run {result['when']} at {result['commit']} on {result['cpus']} CPUs"
        f"{' (quick)' if result.get('quick') else ''}: `make chaos` (bench/chaos.py).",
        "",
        "| scenario | figure | measured |",
        "|---|---|---|",
    ]

    def row(scenario: str, what: str, value: Any) -> None:
        lines.append(f"| {scenario} | {what} | {value} |")

    if "kills" in result:
        k = result["kills"]
        if "error" in k:
            row("kills", "error", k["error"])
        else:
            row(
                "kills",
                "SIGKILLs / plans / steps",
                f"{k['kills']} / {k['plans']} / {k['steps']} "
                f"({k['plans_with_failing_critical_step']} plans roll back)",
            )
            row("kills", "steps running at the kills", k["steps_running_at_kills"])
            row("kills", "repeated steps", f"**{k['repeated_steps']}**")
            row(
                "kills",
                "wrong final phases",
                f"**{k['wrong_final_phases']}** ({k['final_phases']})",
            )
            row(
                "kills",
                "step Events missing / duplicated (of expected)",
                f"**{k['events_missing']} / {k['events_duplicated']}** (of {k['events_expected']})",
            )
            row(
                "kills",
                "restart to healthy, mean / max",
                f"{k['restart_to_healthy_s']['mean_s']} s / "
                f"{k['restart_to_healthy_s']['max_ms'] / 1000:.1f} s",
            )
    if "expiry" in result:
        x = result["expiry"]
        if "error" in x:
            row("expiry", "error", x["error"])
        else:
            spread = x["restart_to_expired_s"] or {}
            row(
                "expiry",
                "expired across downtime",
                f"{x['expired']}/{x['recommendations']} "
                f"(down {x['downtime_s']} s, killed {x['killed_before_expiry_s']} s before expiry)",
            )
            row(
                "expiry",
                "restart to Expired",
                f"**{spread.get('min')} to {spread.get('max')} s** "
                f"(healthy after {x['restart_to_healthy_s']} s)",
            )
    for key in ("apiserver", "etcd"):
        if key in result:
            c = result[key]
            if "error" in c:
                row(key, "error", c["error"])
                continue
            row(key, "kill to API server ready", f"{c['kill_to_ready_s']} s")
            row(key, "operator alive, same PID", c["operator_alive_same_pid"])
            row(
                key,
                "ready to next recommendation settled",
                f"**{c['ready_to_next_recommendation_settled_s']} s**",
            )
            row(
                key,
                "ready to plans moving again: the first / every one",
                f"**{c['ready_to_plans_moving_s']} s / {c['ready_to_every_plan_moving_s']} s** "
                f"({c['plans_moved_again']} of {c['plans_running_at_kill']} running at the kill)",
            )
            row(key, "ready to all plans ended", f"{c['ready_to_all_plans_ended_s']} s")
            row(
                key,
                "repeated steps / wrong final phases",
                f"**{c['repeated_steps']} / {c['wrong_final_phases']}** ({c['final_phases']})",
            )
    if "replicas" in result:
        r = result["replicas"]
        if "error" in r:
            row("replicas", "error", r["error"])
        else:
            row(
                "replicas",
                "failover (kill to the other acting), per kill",
                f"**{', '.join(f'{f} s' for f in r['failover_s'])}** "
                f"(lease {r['lease_duration_s']} s)",
            )
            row(
                "replicas",
                "steps executed twice / wrong final phases",
                f"**{r['double_execution']} / {r['wrong_final_phases']}** ({r['plans']} plans)",
            )
            row(
                "replicas",
                "step Events missing / duplicated (of expected)",
                f"{r['events_missing']} / {r['events_duplicated']} (of {r['events_expected']})",
            )
    if "bursts" in result:
        b = result["bursts"]
        if "error" in b:
            row("bursts", "error", b["error"])
        else:
            row(
                "bursts",
                "settled / lost",
                f"**{b['settled']}/{b['recommendations']} / {b['lost']}** "
                f"in {b['bursts']} bursts, kill after burst {b['bursts'] // 2} "
                f"({b.get('unsettled_at_kill')} unsettled at the kill)",
            )
            row("bursts", "first create to all settled", f"**{b['settle_s']} s**")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scenarios",
        type=lambda s: {p.strip() for p in s.split(",") if p.strip()},
        default=set(SCENARIOS),
        help=f"the scenarios to run, comma-separated ({','.join(SCENARIOS)})",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the harness")
    parser.add_argument("--timeout", type=float, default=240, help="deadline per wait, s (240)")
    parser.add_argument(
        "--kubeconfig", default=str(REPO / ".cluster" / "kubeconfig"), help="admin kubeconfig"
    )
    args = parser.parse_args(argv)
    unknown = args.scenarios - set(SCENARIOS)
    if unknown:
        parser.error(
            f"unknown scenarios: {', '.join(sorted(unknown))} (known: {', '.join(SCENARIOS)})"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    partial = args.quick or args.scenarios != set(SCENARIOS)
    out = WORK / "partial" if partial else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    (out / "chaos.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "chaos.md").write_text(table(result))
    print(table(result))
    print(f"written to {out}/chaos.json and chaos.md", file=sys.stderr)
    return 1 if any(isinstance(v, dict) and "error" in v for v in result.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
