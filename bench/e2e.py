"""Benchmark: the operator end to end on the local control plane, against the API server's floor.

What it measures, in one run on the same machine (the API server shares the cores):

1. **floor**: a bare client — the operator's own ``coordinator.k8s.client.Client``, the
   official ``kubernetes`` client in a pool of 16 threads under asyncio — makes exactly the
   writes the operator needs for the workload: each recommendation's create and status,
   each approval's create and status, each plan's create and first status. What to
   write is computed offline by ``core.lifecycle``, so no decision is made at run time.
   The operator is not watching that namespace.
2. **burst**: N recommendations over C customers (about 5% of the customers have
   conflicting pairs; the others' recommendations need a person's approval or are
   approved by policy) are created at once; the time until every one has settled (its
   status.phase is set and not Pending) and each one's latency from creation to settled.
   ``ratio_to_floor`` is the burst time over the floor time.
3. **load**: R recommendations per second for D seconds, latency p50/p95/p99; a sweep of
   other rates for the plot of latency against load.
4. **approval to plan**: K recommendations await approval; all K approvals are approved at
   once (a merge patch of spec.decision, as ``kubectl patch`` does); the latency from each
   approval to its plan being created, and (executeNow) Running.
5. **memory**: the operator's peak RSS (VmHWM of /proc/PID/status) after the burst of N,
   and of a second operator process that settles 10000 recommendations.

Every time is taken by this process on one monotonic clock: a recommendation is created
when its create call returns or the watch shows it, whichever is first; it settles when
a watch on the namespace first shows its phase. The watches run in their own threads
and connections. Each phase uses a fresh namespace ``bench-<run>-...``; all of them are
deleted at the end while the operators still run.

The last line printed is one JSON object with every figure; ``bench/results/`` gets
``e2e.json``, the table ``e2e.md`` and the plot ``latency.png``.

Usage: ``python bench/e2e.py [--n 1000] [--customers 50] [--rate 20] [--duration 60]
[--approvals 50] [--memory-n 10000] [--phases burst,load,approve,memory] [--quick]
[--profile]``. A run of some phases only (or --quick) writes to build/bench/partial.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import functools
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import kubernetes
import yaml

from coordinator import app
from coordinator.api.common import (
    API_VERSION,
    APPROVALS,
    ENDPOINTS,
    GROUP,
    PLANS,
    RECOMMENDATIONS,
    VERSION,
)
from coordinator.api.meta import ObjectMeta
from coordinator.api.recommendation import Recommendation
from coordinator.core import approval as policy_
from coordinator.core import lifecycle
from coordinator.core import plan as plan_
from coordinator.k8s import client as client_
from coordinator.k8s import registrar as registrar_
from coordinator.k8s import webhooks as webhooks_

REPO: Final = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "hack" / "cluster"))
import localproc  # noqa: E402

RESULTS: Final = REPO / "bench" / "results"
KINDS: Final = (RECOMMENDATIONS, APPROVALS, PLANS)
STARTED: Final = frozenset({"Running", "Succeeded", "Failed", "RollingBack", "RolledBack"})
CONFLICTING_SHARE: Final = 0.05
SCOPE_LABEL: Final = "optiinfra.io/bench"
"""On every bench namespace; an operator's admission webhooks apply where it has its value."""
APPROVER: Final = "approver"
CLEANUP_SECONDS: Final = 90
WATCH_SECONDS: Final = 5
"""Each watch request lasts this long and is renewed from its resourceVersion: a stopped
watcher thread notices within this time."""

TARGETS: Final[Mapping[str, tuple[float, str]]] = {
    "ratio_to_floor": (2.0, "burst time / floor time, N=1000"),
    "load_p99_ms": (1000.0, "settled latency p99 at 20/s"),
    "approval_to_plan_p50_ms": (200.0, "approval to plan started, p50"),
    "peak_rss_10000_mb": (150.0, "operator peak RSS, 10000 recommendations"),
}


CLIENT_THREADS: Final = app.Config().workers
"""The operator's default (--workers): reconciles, API threads and connections."""
PHASES: Final = ("burst", "load", "approve", "memory")
SOURCES: Final = frozenset({"informer", "kopf"})
"""What `coordinator run --watch` lists and watches with."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the workload ---------------------------------------------------------------------


def workload(
    n: int, *, customers: int, prefix: str = "rec", execute_now: bool = False
) -> list[dict[str, Any]]:
    """N recommendation manifests spread round-robin over `customers`.

    The first ``ceil(5%)`` customers get their recommendations in pairs that share a
    resource (one of each pair wins, the other is Superseded); in the other customers
    every recommendation has its own resource and alternates between low risk with
    autoApprove (approved by policy, a suspended plan is made) and medium risk (an
    Approval waits for a person).
    """
    conflicting = max(1, math.ceil(customers * CONFLICTING_SHARE)) if customers > 1 else 0
    manifests = []
    for index in range(n):
        customer = index % customers
        slot = index // customers  # position of this recommendation within its customer
        spec: dict[str, Any] = {
            "customerId": f"customer-{customer:04d}",
            "agentId": AGENT,
            "agentType": "cost",
            "title": f"Benchmark recommendation {index}",
            "action": ("migrate_to_spot", "rightsize", "optimize_kv_cache")[index % 3],
            "estimatedSavings": 100 + index % 900,
            "confidence": 0.9,
            "executeNow": execute_now,
        }
        if customer < conflicting:
            pair = slot // 2
            spec |= {
                "action": "migrate_to_spot",
                "riskLevel": "medium",
                "priority": 10 if slot % 2 == 0 else 5,
                "affectedResources": [f"i-{customer}-shared-{pair}"],
            }
        else:
            spec |= {
                "riskLevel": "low" if slot % 2 == 0 else "medium",
                "autoApprove": True,
                "affectedResources": [f"i-{customer}-{index}"],
            }
        manifests.append(
            {
                "apiVersion": API_VERSION,
                "kind": "Recommendation",
                "metadata": {"name": f"{prefix}-{index:05d}"},
                "spec": spec,
            }
        )
    return manifests


def desired_writes(
    manifests: Sequence[Mapping[str, Any]], *, namespace: str
) -> dict[str, lifecycle.Desired]:
    """What the operator decides for each recommendation, computed offline by the core."""
    now = datetime.now(UTC)
    recs = [
        Recommendation.model_validate(
            {
                **m,
                "metadata": {
                    "name": m["metadata"]["name"],
                    "namespace": namespace,
                    "generation": 1,
                    "uid": str(uuid.uuid4()),
                    "creationTimestamp": now,
                },
            }
        )
        for m in manifests
    ]
    groups: dict[str, list[Recommendation]] = collections.defaultdict(list)
    for rec in recs:
        groups[rec.spec.customer_id].append(rec)
    desired: dict[str, lifecycle.Desired] = {}
    for group in groups.values():
        desired |= lifecycle.evaluate(
            [lifecycle.Observed(recommendation=r) for r in group],
            namespace=recs,
            policy=policy_.DEFAULT_POLICY,
            now=now,
        )
    return desired


def child_body(
    kind: str, metadata: ObjectMeta, spec: Mapping[str, Any], owner: Mapping[str, Any]
) -> dict[str, Any]:
    """A child (Approval or ExecutionPlan) as the reconciler creates it."""
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {
            "name": metadata.name,
            "namespace": owner["metadata"]["namespace"],
            "annotations": dict(metadata.annotations),
            "ownerReferences": [client_.owner_reference(owner)],
        },
        "spec": dict(spec),
    }


# --- what the watches see -------------------------------------------------------------


@dataclasses.dataclass
class Seen:
    """One object as the watch saw it: when it appeared and when each phase first showed."""

    created: float | None = None
    writes: int = 0
    phases: dict[str, float] = dataclasses.field(default_factory=dict)
    decisions: dict[str, float] = dataclasses.field(default_factory=dict)

    def first_phase(self, accept: Callable[[str], bool]) -> float | None:
        times = [t for phase, t in self.phases.items() if accept(phase)]
        return min(times) if times else None


def settled(phase: str) -> bool:
    return phase != "Pending"


def started(phase: str) -> bool:
    return phase in STARTED


class Tracker:
    """Everything the watches saw, by (plural, name); safe to share between threads."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.closed = False
        self.objects: dict[str, dict[str, Seen]] = {plural: {} for plural in KINDS}

    def _seen(self, plural: str, name: str) -> Seen:
        return self.objects[plural].setdefault(name, Seen())

    def created(self, plural: str, name: str, at: float) -> None:
        with self._cond:
            seen = self._seen(plural, name)
            if seen.created is None or at < seen.created:
                seen.created = at
            self._cond.notify_all()

    def event(self, plural: str, kind: str, obj: Mapping[str, Any], at: float) -> None:
        name = obj["metadata"]["name"]
        with self._cond:
            seen = self._seen(plural, name)
            if kind in ("ADDED", "MODIFIED"):
                seen.writes += 1
            if seen.created is None:
                seen.created = at
            phase = (obj.get("status") or {}).get("phase")
            if phase is not None:
                seen.phases.setdefault(phase, at)
            decision = (obj.get("spec") or {}).get("decision")
            if decision is not None:
                seen.decisions.setdefault(decision, at)
            self._cond.notify_all()

    def get(self, plural: str, name: str) -> Seen:
        with self._cond:
            return dataclasses.replace(self._seen(plural, name))

    def writes(self, plural: str) -> int:
        with self._cond:
            return sum(seen.writes for seen in self.objects[plural].values())

    async def wait(self, done: Callable[[], bool], *, limit_s: float) -> bool:
        """Wait until `done()` holds (checked on every watch event), at most `limit_s` s."""

        deadline = time.monotonic() + limit_s

        def block() -> bool:
            with self._cond:
                while not done():
                    left = deadline - time.monotonic()
                    if left <= 0 or self.closed:
                        return False
                    self._cond.wait(min(left, 1.0))
                return True

        return await asyncio.to_thread(block)

    def close(self) -> None:
        """Release the waits (the watches stopped)."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def all_phased(self, plural: str, names: Iterable[str], accept: Callable[[str], bool]) -> bool:
        """(Call with the lock held, from `wait`.) Every name has a phase `accept` takes."""
        objects = self.objects[plural]
        return all(
            name in objects and objects[name].first_phase(accept) is not None for name in names
        )


class Watcher(threading.Thread):
    """A watch on one kind in one namespace, on its own connection, feeding the tracker."""

    def __init__(
        self, api: kubernetes.client.ApiClient, namespace: str, plural: str, tracker: Tracker
    ) -> None:
        super().__init__(name=f"watch-{plural}", daemon=True)
        self._custom = kubernetes.client.CustomObjectsApi(api)
        self.namespace = namespace
        self.plural = plural
        self.tracker = tracker
        self.stopping = threading.Event()
        self.ready = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._watch()
        except BaseException as exc:  # reported by the phase that waits on it
            self.error = exc
            self.ready.set()

    def _watch(self) -> None:
        listed: dict[str, Any] = self._custom.list_namespaced_custom_object(  # type: ignore[assignment]
            GROUP, VERSION, self.namespace, self.plural
        )
        version = listed["metadata"]["resourceVersion"]
        self.ready.set()
        while not self.stopping.is_set():
            stream = kubernetes.watch.Watch().stream(  # type: ignore[no-untyped-call]
                self._custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                self.plural,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=WATCH_SECONDS,
            )
            for event in stream:
                at = time.monotonic()
                kind, obj = event["type"], event["object"]
                if kind == "ERROR":
                    raise RuntimeError(f"watch of {self.plural} failed: {obj}")
                version = obj["metadata"]["resourceVersion"]
                if kind != "BOOKMARK":
                    self.tracker.event(self.plural, kind, obj, at)


@contextlib.contextmanager
def watching(
    api: kubernetes.client.ApiClient, namespace: str, plurals: Iterable[str] = KINDS
) -> Iterator[Tracker]:
    tracker = Tracker()
    watchers = [Watcher(api, namespace, plural, tracker) for plural in plurals]
    for watcher in watchers:
        watcher.start()
    for watcher in watchers:
        watcher.ready.wait(30)
        if watcher.error is not None:
            raise watcher.error
    try:
        yield tracker
    finally:
        tracker.close()
        for watcher in watchers:
            watcher.stopping.set()
        for watcher in watchers:
            watcher.join(WATCH_SECONDS + 5)


# --- processes: the operator, the control plane ---------------------------------------


free_port = localproc.free_port


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_mb(pid: int) -> dict[str, float]:
    """VmHWM (peak RSS) and VmRSS of a process, in MB (MiB)."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            values[key] = int(rest.split()[0]) / 1024
    return values


class OperatorProcess(localproc.OperatorProcess):
    """`coordinator run` as a user starts it, watching the namespaces that match a glob,
    its admission webhooks where the namespace label SCOPE_LABEL has the value `scope`;
    the operator's source comes first, whichever copy the environment has installed."""

    def __init__(
        self,
        *,
        kubeconfig: Path,
        namespace: str,
        scope: str,
        log: Path,
        args: Sequence[str],
        source: Path = REPO / "operator",
    ) -> None:
        path = os.pathsep.join(p for p in (str(source), os.environ.get("PYTHONPATH")) if p)
        super().__init__(
            kubeconfig=kubeconfig,
            log=log,
            args=[
                f"--namespace={namespace}",
                f"--webhook-namespace-labels={SCOPE_LABEL}={scope}",
                *args,
            ],
            env={"PYTHONPATH": path},
            fresh_log=True,
        )
        self.namespace = namespace
        self.scope = scope

    def drop_webhooks(self, api: kubernetes.client.ApiClient) -> None:
        """Unregister this operator's admission webhooks (a diagnostic: --no-webhooks)."""
        selector = webhooks_.namespace_selector((self.namespace,), {SCOPE_LABEL: self.scope})
        registrar_.Registrar(api).remove(webhooks_.local_name((self.namespace,), selector))

    def metric(self, name: str) -> float:
        """The sum of a Prometheus metric's samples (NaN when it cannot be read)."""
        try:
            url = f"http://127.0.0.1:{self.metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode()
        except OSError:
            return math.nan
        values = [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{")
        ]
        return sum(values) if values else math.nan


class Profiler:
    """py-spy recording one process while a phase runs (with --profile)."""

    def __init__(self, pid: int | None, out: Path) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        if pid is None:
            return
        self.proc = subprocess.Popen(
            ["py-spy", "record", "--pid", str(pid), "--rate", "200", "--format", "raw", "--gil",
             "--output", str(out), "--nonblocking"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


class Cpu:
    """CPU seconds used by the operator and by the control plane over a phase."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = {name: pid for name, pid in pids.items() if Path(f"/proc/{pid}").exists()}
        self.start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.wall = time.monotonic()

    def used(self) -> dict[str, float]:
        used = {
            f"{name}_cpu_s": round(cpu_seconds(pid) - self.start[name], 2)
            for name, pid in self.pids.items()
        }
        used["wall_s"] = round(time.monotonic() - self.wall, 2)
        return used


def control_plane_pids() -> dict[str, int]:
    try:
        state = json.loads((REPO / ".cluster" / "state.json").read_text())
    except (OSError, ValueError):
        return {}
    pids = state.get("pids") or {}
    return {
        name.replace("kube-", ""): int(pid)
        for name, pid in pids.items()
        if name != "kube-controller-manager"
    }


# --- the client and the namespaces ----------------------------------------------------


def new_api(kubeconfig: Path) -> kubernetes.client.ApiClient:
    """A client as the operator makes one: as many connections as its client has threads."""
    return app.api_client(CLIENT_THREADS, config_file=str(kubeconfig))


def ensure_crds(api: kubernetes.client.ApiClient) -> None:
    """Apply crds/ (server-side, idempotent) and wait until the three kinds are served."""
    ext = kubernetes.client.ApiextensionsV1Api(api)
    for path in sorted((REPO / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        ext.patch_custom_resource_definition(
            crd["metadata"]["name"],
            crd,
            field_manager="optiinfra-bench",
            force=True,
            _content_type="application/apply-patch+yaml",
        )
    custom = kubernetes.client.CustomObjectsApi(api)
    deadline = time.monotonic() + 60
    for plural in KINDS:
        while True:
            try:
                custom.list_cluster_custom_object(GROUP, VERSION, plural, limit=1)
                break
            except kubernetes.client.ApiException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


AGENT: Final = "bench-agent"
"""The agent of the workload's recommendations."""


def create_namespace(api: kubernetes.client.ApiClient, name: str, *, scope: str) -> str:
    """A namespace labelled with its scope: the operator whose webhooks apply there, with
    the AgentEndpoint of the workload's agent registered (the default plans of its
    recommendations are carried out by that agent, so admission looks it up; the benchmark
    never starts those plans, so nothing listens behind it)."""
    core = kubernetes.client.CoreV1Api(api)
    body = {"metadata": {"name": name, "labels": {SCOPE_LABEL: scope}}}
    core.create_namespace(body)  # type: ignore[arg-type]
    endpoint = {
        "apiVersion": API_VERSION,
        "kind": "AgentEndpoint",
        "metadata": {"name": AGENT},
        "spec": {"url": "http://127.0.0.1:9/", "secretRef": {"name": f"{AGENT}-hmac", "key": "k"}},
    }
    kubernetes.client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, name, ENDPOINTS, endpoint
    )
    return name


def delete_namespaces(
    api: kubernetes.client.ApiClient, names: Iterable[str], *, timeout: float
) -> list[str]:
    """Delete the namespaces and wait until they are gone; the ones left at the deadline."""
    core = kubernetes.client.CoreV1Api(api)
    left = set(names)
    for name in left:
        with contextlib.suppress(kubernetes.client.ApiException):
            core.delete_namespace(name)
    deadline = time.monotonic() + timeout
    while left and time.monotonic() < deadline:
        for name in list(left):
            try:
                core.read_namespace(name)
            except kubernetes.client.ApiException as exc:
                if exc.status == 404:
                    left.discard(name)
        if left:
            time.sleep(1)
    return sorted(left)


# --- figures --------------------------------------------------------------------------


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50, p95, p99 and max of latencies in seconds, as milliseconds."""
    if not values:
        return {"p50_ms": math.nan, "p95_ms": math.nan, "p99_ms": math.nan, "max_ms": math.nan}
    if len(values) == 1:
        q = [values[0]] * 99
    else:
        q = statistics.quantiles(values, n=100, method="inclusive")
    return {
        "p50_ms": round(q[49] * 1000, 1),
        "p95_ms": round(q[94] * 1000, 1),
        "p99_ms": round(q[98] * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
    }


def latencies(
    tracker: Tracker, plural: str, names: Iterable[str], accept: Callable[[str], bool]
) -> list[float]:
    out = []
    for name in names:
        seen = tracker.get(plural, name)
        reached = seen.first_phase(accept)
        if seen.created is not None and reached is not None:
            out.append(max(0.0, reached - seen.created))
    return out


# --- the phases -----------------------------------------------------------------------


@dataclasses.dataclass
class Bench:
    args: argparse.Namespace
    kubeconfig: Path
    api: kubernetes.client.ApiClient
    client: client_.Client
    run_id: str
    namespaces: list[str] = dataclasses.field(default_factory=list)
    operator: OperatorProcess | None = None
    """The operator whose idleness `settle` waits for."""

    async def settle(self, *, limit_s: float = 60) -> float:
        """Wait until the operator has been idle (under 5% of a core) for 0.5 s; seconds waited."""
        started_at = time.monotonic()
        if self.operator is None:
            return 0.0
        pid = self.operator.pid
        while time.monotonic() - started_at < limit_s:
            before = cpu_seconds(pid)
            await asyncio.sleep(0.5)
            if cpu_seconds(pid) - before < 0.025:
                break
        return round(time.monotonic() - started_at, 2)

    def scope(self, suffix: str) -> str:
        """The label value of the namespaces of one operator (`op-*` ones share one)."""
        return f"{self.run_id}-{suffix.split('-', maxsplit=1)[0]}"

    def namespace(self, suffix: str) -> str:
        name = f"bench-{self.run_id}-{suffix}"
        create_namespace(self.api, name, scope=self.scope(suffix))
        self.namespaces.append(name)
        return name

    async def create_all(
        self, namespace: str, manifests: Sequence[Mapping[str, Any]], tracker: Tracker | None
    ) -> list[dict[str, Any]]:
        async def one(manifest: Mapping[str, Any]) -> dict[str, Any]:
            created = await self.client.create(RECOMMENDATIONS, namespace, manifest)
            if tracker is not None:
                tracker.created(RECOMMENDATIONS, manifest["metadata"]["name"], time.monotonic())
            return created

        return await asyncio.gather(*(one(m) for m in manifests))


async def floor(
    bench: Bench, namespace: str, manifests: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """The writes the operator needs for `manifests`, by a bare client, timed."""
    desired = desired_writes(manifests, namespace=namespace)
    client = bench.client
    writes: collections.Counter[str] = collections.Counter()

    async def chain(manifest: Mapping[str, Any]) -> None:
        name = manifest["metadata"]["name"]
        want = desired[name]
        owner = await client.create(RECOMMENDATIONS, namespace, manifest)
        writes["recommendation creates"] += 1
        if want.create_approval is not None:
            approval = want.create_approval
            await client.create(
                APPROVALS,
                namespace,
                child_body("Approval", approval.metadata, approval.spec.to_wire(), owner),
            )
            assert approval.status is not None
            await client.patch_status(APPROVALS, namespace, name, approval.status.to_wire())
            writes["approval creates"] += 1
            writes["approval status writes"] += 1
        if want.create_plan is not None:
            plan = want.create_plan
            await client.create(
                PLANS,
                namespace,
                child_body("ExecutionPlan", plan.metadata, plan.spec.to_wire(), owner),
            )
            status = plan_.initial_status(plan.spec).to_wire()
            await client.patch_status(PLANS, namespace, name, status)
            writes["plan creates"] += 1
            writes["plan status writes"] += 1
        await client.patch_status(RECOMMENDATIONS, namespace, name, want.status.to_wire())
        writes["recommendation status writes"] += 1

    started_at = time.monotonic()
    await asyncio.gather(*(chain(m) for m in manifests))
    elapsed = time.monotonic() - started_at
    total = sum(writes.values())
    return {
        "floor_s": round(elapsed, 3),
        "floor_writes": total,
        "floor_writes_per_s": round(total / elapsed, 1),
        "floor_write_mix": dict(writes),
    }


async def burst(
    bench: Bench, namespace: str, manifests: Sequence[dict[str, Any]], *, limit_s: float
) -> dict[str, Any]:
    """Create all `manifests` at once; time until every one has settled."""
    names = [m["metadata"]["name"] for m in manifests]
    with watching(bench.api, namespace) as tracker:
        started_at = time.monotonic()
        await bench.create_all(namespace, manifests, tracker)
        created_at = time.monotonic()
        done = await tracker.wait(
            lambda: tracker.all_phased(RECOMMENDATIONS, names, settled), limit_s=limit_s
        )
        if not done:
            missing = [
                n for n in names if tracker.get(RECOMMENDATIONS, n).first_phase(settled) is None
            ]
            raise RuntimeError(
                f"{len(missing)} recommendations did not settle in {limit_s:.0f}s: {missing[:5]}"
            )
        last = max(tracker.get(RECOMMENDATIONS, n).first_phase(settled) or 0.0 for n in names)
        lat = latencies(tracker, RECOMMENDATIONS, names, settled)
        phases = collections.Counter(
            min(tracker.get(RECOMMENDATIONS, n).phases.items(), key=lambda kv: kv[1])[0]
            for n in names
        )
        await asyncio.sleep(1.0)  # let the writes that follow settling (plan status) show
        operator_writes = {
            RECOMMENDATIONS: tracker.writes(RECOMMENDATIONS) - len(names),
            APPROVALS: tracker.writes(APPROVALS),
            PLANS: tracker.writes(PLANS),
        }
    elapsed = last - started_at
    return {
        "operator_s": round(elapsed, 3),
        "create_s": round(created_at - started_at, 3),
        "latency": percentiles(lat),
        "settled_phases": dict(phases),
        "operator_writes": operator_writes,
    }


async def load(
    bench: Bench, namespace: str, *, rate: float, duration: float, customers: int, limit_s: float
) -> dict[str, Any]:
    """`rate` recommendations a second for `duration` seconds; latency to settled."""
    n = max(1, round(rate * duration))
    manifests = workload(n, customers=customers)
    names = [m["metadata"]["name"] for m in manifests]
    with watching(bench.api, namespace, (RECOMMENDATIONS,)) as tracker:
        tasks = []
        started_at = time.monotonic()
        for index, manifest in enumerate(manifests):
            delay = started_at + index / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(bench.create_all(namespace, [manifest], tracker)))
        await asyncio.gather(*tasks)
        offered_s = time.monotonic() - started_at
        done = await tracker.wait(
            lambda: tracker.all_phased(RECOMMENDATIONS, names, settled), limit_s=limit_s
        )
        lat = latencies(tracker, RECOMMENDATIONS, names, settled)
    return {
        "rate": rate,
        "duration_s": duration,
        "n": n,
        "achieved_rate": round(n / offered_s, 1),
        "settled": len(lat),
        "all_settled": done,
        **percentiles(lat),
    }


def let_approve(api: kubernetes.client.ApiClient, namespace: str, user: str) -> None:
    """Let `user` read and decide the approvals of `namespace` (a Role and its binding)."""
    rbac = kubernetes.client.RbacAuthorizationV1Api(api)
    role = {
        "metadata": {"name": "bench-approver"},
        "rules": [
            {
                "apiGroups": [GROUP],
                "resources": [APPROVALS],
                "verbs": ["get", "list", "watch", "patch", "update"],
            }
        ],
    }
    binding = {
        "metadata": {"name": "bench-approver"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "bench-approver",
        },
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }
    rbac.create_namespaced_role(namespace, role)  # type: ignore[arg-type]
    rbac.create_namespaced_role_binding(namespace, binding)  # type: ignore[arg-type]


async def approvals(
    bench: Bench,
    namespace: str,
    *,
    k: int,
    rounds: int,
    singles: int,
    customers: int,
    limit_s: float,
) -> dict[str, Any]:
    """K approvals approved at once (`rounds` times, one batch after the other, the
    latencies pooled), then `singles` one at a time, by another person: the latency from
    each approval to its plan being created and Running.

    The recommendations are created by the admin and decided by the user ``approver``
    (.cluster/kubeconfig-approver), as the operator's policy wants: whoever submitted a
    recommendation does not decide it. An approval's time is when the API server accepted
    the patch (its response, or the watch showing the decision, whichever came first).
    """
    let_approve(bench.api, namespace, APPROVER)
    approver = client_.Client(
        new_api(Path(bench.args.kubeconfig).with_name(f"kubeconfig-{APPROVER}")),
        workers=CLIENT_THREADS,
    )
    total = k * rounds + singles
    manifests = workload(
        total, customers=max(1, min(customers, total)), prefix="appr", execute_now=True
    )
    for manifest in manifests:  # all need a person; quick plans
        manifest["spec"] |= {
            "riskLevel": "medium",
            "affectedResources": [f"i-{manifest['metadata']['name']}"],
            "steps": [
                {
                    "name": "one",
                    "action": "do_one",
                    "executor": "simulated",
                    "params": {"durationMs": 50},
                }
            ],
        }
    names = [m["metadata"]["name"] for m in manifests]
    batches = [names[i * k : (i + 1) * k] for i in range(rounds)]
    one_by_one = names[k * rounds :]
    approved: dict[str, float] = {}

    async def approve(name: str) -> None:
        await approver.patch(APPROVALS, namespace, name, {"spec": {"decision": "Approved"}})
        approved[name] = time.monotonic()

    def figures(tracker: Tracker, chosen: Sequence[str]) -> dict[str, Any]:
        created, running = [], []
        for name in chosen:
            decided = tracker.get(APPROVALS, name).decisions.get("Approved", math.inf)
            at = min(approved[name], decided)
            plan = tracker.get(PLANS, name)
            if plan.created is not None:
                created.append(max(0.0, plan.created - at))
            first = plan.first_phase(started)
            if first is not None:
                running.append(max(0.0, first - at))
        return {"created": percentiles(created), "started": percentiles(running)}

    try:
        with watching(bench.api, namespace) as tracker:
            await bench.create_all(namespace, manifests, tracker)
            waiting = await tracker.wait(
                lambda: (
                    tracker.all_phased(APPROVALS, names, lambda p: p == "Pending")
                    and tracker.all_phased(
                        RECOMMENDATIONS, names, lambda p: p == "AwaitingApproval"
                    )
                ),
                limit_s=limit_s,
            )
            if not waiting:
                raise RuntimeError("the approvals were not all requested")
            done, per_round = True, []
            for batch in batches:
                await bench.settle()
                await asyncio.gather(*(approve(n) for n in batch))
                done = done and await tracker.wait(
                    functools.partial(tracker.all_phased, PLANS, batch, started), limit_s=limit_s
                )
                per_round.append(figures(tracker, batch)["started"]["p50_ms"])
            result: dict[str, Any] = {
                "k": k,
                "rounds": rounds,
                "all_started": done,
                **figures(tracker, [n for batch in batches for n in batch]),
                "started_p50_ms_per_round": per_round,
            }
            await bench.settle()
            for name in one_by_one:
                await approve(name)
                await tracker.wait(
                    functools.partial(tracker.all_phased, PLANS, [name], started), limit_s=30
                )
                await bench.settle()
            if one_by_one:
                result["single"] = {"n": len(one_by_one), **figures(tracker, one_by_one)}
    finally:
        await approver.aclose()
    return result


async def memory(
    bench: Bench,
    operator: OperatorProcess,
    namespace: str,
    *,
    n: int,
    customers: int,
    limit_s: float,
) -> dict[str, Any]:
    """`n` recommendations settled by a fresh operator: its peak RSS, and how long it took."""
    manifests = workload(n, customers=customers)
    names = [m["metadata"]["name"] for m in manifests]
    before = memory_mb(operator.pid)
    with watching(bench.api, namespace, (RECOMMENDATIONS,)) as tracker:
        started_at = time.monotonic()
        await bench.create_all(namespace, manifests, tracker)
        done = await tracker.wait(
            lambda: tracker.all_phased(RECOMMENDATIONS, names, settled), limit_s=limit_s
        )
        last = max((tracker.get(RECOMMENDATIONS, m).first_phase(settled) or 0.0) for m in names)
    await asyncio.sleep(2.0)  # the plans' status writes and the events that follow
    after = memory_mb(operator.pid)
    return {
        "n": n,
        "customers": customers,
        "all_settled": done,
        "settle_s": round(last - started_at, 1),
        "idle_rss_mb": round(before["VmRSS"], 1),
        "peak_rss_mb": round(after["VmHWM"], 1),
        "rss_mb": round(after["VmRSS"], 1),
    }


async def restart(
    bench: Bench, operator: OperatorProcess, namespace: str, *, limit_s: float
) -> dict[str, Any]:
    """Start `operator` where many objects exist; a recommendation created right after
    it is healthy settles once kopf has listed and indexed them all."""
    started_at = time.monotonic()
    operator.start()
    healthy_at = time.monotonic()
    probe = workload(1, customers=1, prefix="probe")[0]
    await bench.client.create(RECOMMENDATIONS, namespace, probe)
    name = probe["metadata"]["name"]
    settled_at = None
    while time.monotonic() - started_at < limit_s:
        raw = await bench.client.get(RECOMMENDATIONS, namespace, name)
        if settled(((raw or {}).get("status") or {}).get("phase") or "Pending"):
            settled_at = time.monotonic()
            break
        await asyncio.sleep(0.25)
    return {
        "healthy_s": round(healthy_at - started_at, 1),
        "first_reconcile_s": None if settled_at is None else round(settled_at - started_at, 1),
        "peak_rss_mb": round(memory_mb(operator.pid)["VmHWM"], 1),
    }


async def measured_load(
    bench: Bench,
    operator: OperatorProcess,
    suffix: str,
    *,
    rate: float,
    duration: float,
    control_plane: Mapping[str, int],
    profile: Path | None = None,
) -> dict[str, Any]:
    """The load phase in a fresh namespace `suffix`, with the operator's CPU seconds and
    reconciles over it, and the tail until it is idle."""
    cpu = Cpu({"operator": operator.pid, **control_plane})
    profiler = Profiler(operator.pid if profile else None, profile or Path())
    reconciles = operator.metric("optiinfra_reconciles_total")
    figures = await load(
        bench, bench.namespace(suffix), rate=rate, duration=duration,
        customers=bench.args.customers, limit_s=bench.args.timeout,
    )  # fmt: skip
    profiler.stop()
    figures["cpu"] = cpu.used()
    figures["tail_s"] = await bench.settle()
    figures["reconciles"] = operator.metric("optiinfra_reconciles_total") - reconciles
    return figures


async def memory_and_restart(
    bench: Bench,
    suffix: str,
    operators: list[OperatorProcess],
    *,
    control_plane: Mapping[str, int],
    args: Sequence[str],
) -> dict[str, Any]:
    """--memory-n recommendations settled by a fresh operator (flags `args`) in namespace
    `suffix`: its peak RSS; then a new operator started with them present."""
    n, logs = bench.args.memory_n, REPO / "build" / "bench"
    mem_ns = bench.namespace(suffix)

    def operator(name: str) -> OperatorProcess:
        return OperatorProcess(
            kubeconfig=bench.kubeconfig, namespace=mem_ns, scope=bench.scope(suffix),
            log=logs / f"operator-{name}.log", args=args, source=bench.args.operator_source,
        )  # fmt: skip

    mem_operator = operator(suffix.replace("mem", "memory"))
    operators.append(mem_operator.start())
    if bench.args.no_webhooks:
        mem_operator.drop_webhooks(bench.api)
    customers = max(1, n * bench.args.customers // bench.args.n)
    log(f"memory: {n} recommendations over {customers} customers ({' '.join(args)})")
    cpu = Cpu({"operator": mem_operator.pid, **control_plane})
    limit_s = bench.args.timeout * n / bench.args.n
    figures = await memory(bench, mem_operator, mem_ns, n=n, customers=customers, limit_s=limit_s)
    figures["cpu"] = cpu.used()
    log(f"memory: {figures}")

    mem_operator.stop()
    restarted = operator(suffix.replace("mem", "restart"))
    operators.append(restarted)
    log(f"restart: a new operator with {n} recommendations present")
    again = await restart(bench, restarted, mem_ns, limit_s=limit_s)
    log(f"restart: {again}")
    return {"memory": figures, f"peak_rss_{n}_mb": figures["peak_rss_mb"], "restart": again}


async def compare_source(
    bench: Bench, source: str, operators: list[OperatorProcess], *, control_plane: Mapping[str, int]
) -> dict[str, Any]:
    """One event source (``coordinator run --watch=SOURCE``): the load phase at --rate with
    its CPU seconds per recommendation, then memory and restart as phases 5 and 6."""
    args = [*bench.args.operator_args, f"--watch={source}"]
    operator = OperatorProcess(
        kubeconfig=bench.kubeconfig, namespace=f"bench-{bench.run_id}-{source}-*",
        scope=bench.scope(source), log=REPO / "build" / "bench" / f"operator-{source}.log",
        args=args, source=bench.args.operator_source,
    )  # fmt: skip
    operators.append(operator.start())
    if bench.args.no_webhooks:
        operator.drop_webhooks(bench.api)
    bench.operator = operator
    rate = bench.args.rate
    log(f"{source}: load {rate}/s for {bench.args.duration} s")
    figures = await measured_load(
        bench, operator, f"{source}-load", rate=rate, duration=bench.args.duration,
        control_plane=control_plane,
    )  # fmt: skip
    figures["operator_cpu_s_per_recommendation"] = round(
        figures["cpu"]["operator_cpu_s"] / figures["n"], 4
    )
    log(f"{source}: load p99 {figures['p99_ms']} ms, {figures['cpu']}")
    operator.stop()
    bench.operator = None
    found: dict[str, Any] = {"load": figures}
    if bench.args.memory_n:
        found |= await memory_and_restart(
            bench, f"{source}mem", operators, control_plane=control_plane, args=args
        )
        operators[-1].stop()  # the restarted operator: the next source runs alone
    return found


def local_server(kubeconfig: Path) -> str:
    """The API server of `kubeconfig`; only a control plane on 127.0.0.1 is benchmarked."""
    config = yaml.safe_load(kubeconfig.read_text())
    server = str(config["clusters"][0]["cluster"]["server"])
    host = server.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
    if host not in ("127.0.0.1", "localhost"):
        raise SystemExit(f"{kubeconfig} points at {server}: the benchmark runs on 127.0.0.1 only")
    return server


async def run(args: argparse.Namespace) -> dict[str, Any]:
    kubeconfig = Path(args.kubeconfig)
    local_server(kubeconfig)
    api = new_api(kubeconfig)
    ensure_crds(api)
    run_id = uuid.uuid4().hex[:6]
    bench = Bench(
        args=args,
        kubeconfig=kubeconfig,
        api=api,
        client=client_.Client(new_api(kubeconfig), workers=CLIENT_THREADS),
        run_id=run_id,
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    logs = REPO / "build" / "bench"
    logs.mkdir(parents=True, exist_ok=True)
    profile = logs if args.profile else None
    control_plane = control_plane_pids()
    result: dict[str, Any] = {
        "n": args.n,
        "customers": args.customers,
        "conflicting_customers": max(1, math.ceil(args.customers * CONFLICTING_SHARE)),
        "cpus": os.cpu_count(),
    }
    operators: list[OperatorProcess] = []
    try:
        manifests = workload(args.n, customers=args.customers)
        if "burst" in args.phases:
            # 1. The floor, with no operator running.
            log(f"floor: the writes for {args.n} recommendations by a bare client")
            cpu = Cpu(control_plane)
            result |= await floor(bench, bench.namespace("floor"), manifests)
            result["floor_cpu"] = cpu.used()
            log(f"floor: {result['floor_s']} s for {result['floor_writes']} writes")

        # The operator of phases 2-4.
        operator = OperatorProcess(
            kubeconfig=kubeconfig, namespace=f"bench-{run_id}-op-*", scope=bench.scope("op"),
            log=logs / "operator.log", args=args.operator_args, source=args.operator_source,
        )  # fmt: skip
        if args.phases & {"burst", "load", "approve"}:
            operators.append(operator.start())
            bench.operator = operator
            if args.no_webhooks:
                operator.drop_webhooks(api)

        if "burst" in args.phases:
            # 2. The burst.
            cpu = Cpu({"operator": operator.pid, **control_plane})
            profiler = Profiler(operator.pid if profile else None, logs / "profile-burst.txt")
            log(f"burst: {args.n} recommendations over {args.customers} customers at once")
            reconciles = operator.metric("optiinfra_reconciles_total")
            figures = await burst(
                bench, bench.namespace("op-burst"), manifests, limit_s=args.timeout
            )
            profiler.stop()
            result["burst_cpu"] = cpu.used()
            figures["reconciles"] = operator.metric("optiinfra_reconciles_total") - reconciles
            result |= figures
            result["ratio_to_floor"] = round(result["operator_s"] / result["floor_s"], 2)
            result["peak_rss_1000_mb" if args.n == 1000 else f"peak_rss_{args.n}_mb"] = round(
                memory_mb(operator.pid)["VmHWM"], 1
            )
            log(f"burst: {result['operator_s']} s, ratio to floor {result['ratio_to_floor']}")
            result["burst_tail_s"] = await bench.settle(limit_s=120)
            log(f"burst: the operator was busy {result['burst_tail_s']} s more")

        if "load" in args.phases:
            # 3. Steady load, and the sweep for the plot.
            sweep = []
            for rate, duration in [(args.rate, args.duration)] + [
                (r, args.sweep_duration) for r in args.sweep if r != args.rate
            ]:
                log(f"load: {rate}/s for {duration} s")
                figures = await measured_load(
                    bench, operator, f"op-load-{rate:g}".replace(".", "-"), rate=rate,
                    duration=duration, control_plane=control_plane,
                    profile=logs / "profile-load.txt" if profile and rate == args.rate else None,
                )  # fmt: skip
                sweep.append(figures)
                log(f"load: {rate}/s: p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms")
            result["load"] = sweep[0]
            result["sweep"] = sorted(sweep, key=lambda f: float(f["rate"]))

        if "approve" in args.phases:
            # 4. Approval to plan start: K at once (the target), one at a time, and a larger batch.
            for suffix, k, rounds, singles in (
                ("approve", args.approvals, args.approval_rounds, args.singles),
                ("approve-large", args.approvals_large, 1, 0),
            ):
                if k <= 0:
                    continue
                log(
                    f"approvals: {k} approved at once, {rounds} time(s)"
                    + (f", then {singles} one by one" if singles else "")
                )
                profiler = Profiler(
                    operator.pid if profile else None, logs / f"profile-{suffix}.txt"
                )
                figures = await approvals(
                    bench, bench.namespace(f"op-{suffix}"), k=k, rounds=rounds, singles=singles,
                    customers=args.customers, limit_s=args.timeout,
                )  # fmt: skip
                profiler.stop()
                await bench.settle()  # their plans run on: let them end before the next phase
                result["approval_to_plan" if suffix == "approve" else "approval_to_plan_large"] = (
                    figures
                )
                log(f"approvals: {figures}")

        # 5. Memory with many recommendations, in a fresh operator, and 6. its restart.
        if args.memory_n and "memory" in args.phases:
            result |= await memory_and_restart(
                bench, "mem", operators, control_plane=control_plane, args=args.operator_args
            )

        # 7. The two event sources side by side (--sources).
        for source in args.sources:
            result.setdefault("sources", {})[source] = await compare_source(
                bench, source, operators, control_plane=control_plane
            )
    finally:
        log(f"cleanup: deleting {', '.join(bench.namespaces)}")
        try:
            # Only running plans hold a finalizer of the operator (the approval phase's, a few
            # seconds long): wait for their namespaces; the large ones go on terminating
            # after the operators stop, with nothing of theirs left to release.
            left = delete_namespaces(api, bench.namespaces, timeout=CLEANUP_SECONDS)
            held = [ns for ns in left if "-approve" in ns]
            if held:
                left = delete_namespaces(api, held, timeout=120) + [
                    n for n in left if n not in held
                ]
            if left:
                log(f"cleanup: left to the namespace controller: {', '.join(left)}")
        finally:
            for operator in operators:
                operator.stop()
            await bench.client.aclose()
    result["targets"] = targets(result, args)
    return result


def targets(result: Mapping[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    values = {
        "ratio_to_floor": result.get("ratio_to_floor"),
        "load_p99_ms": result.get("load", {}).get("p99_ms"),
        "approval_to_plan_p50_ms": result.get("approval_to_plan", {})
        .get("started", {})
        .get("p50_ms"),
        "peak_rss_10000_mb": result.get("peak_rss_10000_mb"),
    }
    return {
        name: {
            "target": limit,
            "value": values[name],
            "met": values[name] is not None and values[name] <= limit,
        }
        for name, (limit, _) in TARGETS.items()
    }


# --- the report -----------------------------------------------------------------------


def _ms(figures: Mapping[str, Any], *keys: str) -> str:
    return " / ".join(f"{figures[k]:.0f}" for k in keys) + " ms"


def _rounds(figures: Mapping[str, Any]) -> str:
    rounds = figures.get("rounds", 1)
    return f" ({rounds} rounds, pooled)" if rounds > 1 else ""


def table(result: Mapping[str, Any]) -> str:
    """The figures as a markdown table, next to the targets."""
    targets = result["targets"]

    def verdict(name: str) -> str:
        t = targets[name]
        return f"{TARGETS[name][1]}: <= {t['target']:g} ({'met' if t['met'] else 'MISSED'})"

    rows = []
    if "ratio_to_floor" in result:
        rows += [
            (
                f"floor: the writes for {result['n']} recommendations, bare client",
                f"{result['floor_s']:.1f} s ({result['floor_writes']} writes, "
                f"{result['floor_writes_per_s']:.0f}/s)",
                "",
            ),
            (
                f"burst: {result['n']} recommendations over {result['customers']} customers, "
                "all settled",
                f"{result['operator_s']:.1f} s",
                "",
            ),
            ("ratio to floor", f"{result['ratio_to_floor']:.2f}", verdict("ratio_to_floor")),
            (
                "burst: creation to settled, p50 / p95 / p99",
                _ms(result["latency"], "p50_ms", "p95_ms", "p99_ms"),
                "",
            ),
        ]
    main_rate = result.get("load", {}).get("rate")
    for point in result.get("sweep", []):
        rows.append(
            (
                f"load {point['rate']:g}/s for {point['duration_s']:g} s: p50 / p95 / p99",
                _ms(point, "p50_ms", "p95_ms", "p99_ms")
                + ("" if point["all_settled"] else " (not all settled)"),
                verdict("load_p99_ms") if point["rate"] == main_rate else "",
            )
        )
    appr = result.get("approval_to_plan")
    if appr:
        rows += [
            (
                f"{appr['k']} approvals at once{_rounds(appr)}: to plan created, p50 / p99",
                _ms(appr["created"], "p50_ms", "p99_ms"),
                "",
            ),
            (
                f"{appr['k']} approvals at once{_rounds(appr)}: to plan Running, p50 / p99",
                _ms(appr["started"], "p50_ms", "p99_ms"),
                verdict("approval_to_plan_p50_ms"),
            ),
        ]
        if "single" in appr:
            rows.append(
                (
                    f"one approval at a time ({appr['single']['n']}): to plan Running, p50 / max",
                    _ms(appr["single"]["started"], "p50_ms", "max_ms"),
                    "",
                )
            )
    large = result.get("approval_to_plan_large")
    if large:
        rows.append(
            (
                f"{large['k']} approvals at once: to plan Running, p50 / p99",
                _ms(large["started"], "p50_ms", "p99_ms"),
                "",
            )
        )
    for key in sorted((k for k in result if k.startswith("peak_rss_")), key=len):
        n = key.removeprefix("peak_rss_").removesuffix("_mb")
        rows.append(
            (
                f"operator peak RSS, {n} recommendations",
                f"{result[key]:.0f} MB",
                verdict("peak_rss_10000_mb") if n == "10000" else "",
            )
        )
    if "memory" in result:
        mem = result["memory"]
        rows.append(
            (
                f"{mem['n']} recommendations ({mem['customers']} customers) settled in",
                f"{mem['settle_s']:.0f} s",
                "",
            )
        )
    if result.get("restart"):
        again = result["restart"]
        n = result["memory"]["n"]
        rows.append(
            (
                f"restart with {n} recommendations present: healthy / first reconcile / peak RSS",
                f"{again['healthy_s']:.1f} s / {again['first_reconcile_s']} s / "
                f"{again['peak_rss_mb']:.0f} MB",
                "",
            )
        )
    for source, found in result.get("sources", {}).items():
        rows.append(
            (
                f"{source}: load {found['load']['rate']:g}/s, p99 / CPU s per recommendation",
                f"{found['load']['p99_ms']:.0f} ms / "
                f"{found['load']['operator_cpu_s_per_recommendation']:.4f} s",
                "",
            )
        )
        if "memory" in found:
            again = found["restart"]
            rows.append(
                (
                    f"{source}: {found['memory']['n']} recommendations: peak RSS / settled in; "
                    "restart: healthy / first reconcile / peak RSS",
                    f"{found['memory']['peak_rss_mb']:.0f} MB / {found['memory']['settle_s']:.0f}"
                    f" s; {again['healthy_s']:.1f} s / {again['first_reconcile_s']} s / "
                    f"{again['peak_rss_mb']:.0f} MB",
                    "",
                )
            )
    lines = ["| measure | value | target |", "|---|---|---|"]
    lines += [f"| {m} | {v} | {t} |" for m, v, t in rows]
    return "\n".join(lines) + "\n"


def plot(result: Mapping[str, Any], path: Path) -> None:
    """Latency against offered load (the sweep), with the burst for reference."""
    points = result.get("sweep")
    if not points:  # a run without the load phase
        return
    import matplotlib  # noqa: PLC0415 - only the report needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    rates = [p["rate"] for p in points]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for key, style in (("p50_ms", "o-"), ("p95_ms", "s--"), ("p99_ms", "^-")):
        ax.plot(rates, [p[key] for p in points], style, label=key.removesuffix("_ms"))
    ax.axhline(1000, color="grey", linestyle=":", label="target p99 at 20/s")
    ax.set_xlabel("offered load (recommendations created per second)")
    ax.set_ylabel("creation to settled (ms)")
    ax.set_yscale("log")
    ax.set_title(
        f"optiinfra-coordinator on the local control plane ({result['cpus']} cores shared)"
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="recommendations in the burst (1000)")
    parser.add_argument("--customers", type=int, default=50, help="customers (50)")
    parser.add_argument("--rate", type=float, default=20, help="steady load per second (20)")
    parser.add_argument("--duration", type=float, default=60, help="steady load seconds (60)")
    parser.add_argument(
        "--sweep",
        type=lambda s: [float(x) for x in s.split(",") if x],
        default=[5.0, 10.0, 40.0, 60.0],
        help="other rates for the plot, comma-separated (5,10,40,60)",
    )
    parser.add_argument(
        "--sweep-duration", type=float, default=15, help="seconds per sweep rate (15)"
    )
    parser.add_argument("--approvals", type=int, default=20, help="approvals at once (20)")
    parser.add_argument(
        "--approvals-large", type=int, default=50, help="a larger batch, for scale (50; 0: skip)"
    )
    parser.add_argument(
        "--approval-rounds",
        type=int,
        default=5,
        help="batches of --approvals, one after the other, latencies pooled (5)",
    )
    parser.add_argument(
        "--singles", type=int, default=10, help="approvals one at a time, after those (10)"
    )
    parser.add_argument(
        "--memory-n", type=int, default=10000, help="recommendations for peak RSS (10000; 0: skip)"
    )
    parser.add_argument("--timeout", type=float, default=300, help="deadline per phase, s (300)")
    parser.add_argument(
        "--phases",
        type=lambda s: {p.strip() for p in s.split(",") if p.strip()},
        default=None,
        help=f"the phases to run, comma-separated ({','.join(PHASES)}; burst includes its floor)",
    )
    parser.add_argument(
        "--sources",
        type=lambda s: [p.strip() for p in s.split(",") if p.strip()],
        default=[],
        help="event sources to measure side by side, back to back (informer,kopf: each the "
        "load at --rate with CPU seconds per recommendation, then memory and restart with "
        "--memory-n); alone, no other phase runs unless --phases names it",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a small run to check it works (N=200, 10 s load; results in build/bench/partial)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the operator (build/bench/profile-*.txt)"
    )
    parser.add_argument(
        "--no-webhooks",
        action="store_true",
        help="diagnostic: unregister the operators' admission webhooks once they run",
    )
    parser.add_argument(
        "--operator-arg",
        dest="operator_args",
        action="append",
        default=[],
        help="extra flag for `coordinator run` (repeatable)",
    )
    parser.add_argument(
        "--operator-source",
        type=Path,
        default=REPO / "operator",
        help="the directory holding the coordinator package to run (this repository's)",
    )
    parser.add_argument(
        "--kubeconfig", default=str(REPO / ".cluster" / "kubeconfig"), help="admin kubeconfig"
    )
    args = parser.parse_args(argv)
    if args.phases is None:
        args.phases = set() if args.sources else set(PHASES)
    if set(args.sources) - SOURCES:
        parser.error(f"unknown sources: {args.sources} (known: {', '.join(sorted(SOURCES))})")
    unknown = args.phases - set(PHASES)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))} (known: {', '.join(PHASES)})")
    if args.quick:
        args.n, args.duration, args.sweep, args.sweep_duration = 200, 10, [40.0], 5
        args.approvals, args.approval_rounds, args.singles, args.approvals_large = 20, 1, 5, 0
        args.memory_n, args.timeout = 0, 120
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(run(args))
    partial = args.quick or args.phases != set(PHASES)
    out = REPO / "build" / "bench" / "partial" if partial else RESULTS  # a check, not figures
    out.mkdir(parents=True, exist_ok=True)
    (out / "e2e.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "e2e.md").write_text(table(result))
    plot(result, out / "latency.png")
    print(table(result))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
