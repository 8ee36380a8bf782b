"""Shards (``coordinator run --shard``) measured on the local control plane.

1. **memory**: N recommendations over C customers (``e2e.workload``) settled by ONE
   operator (no --shard), then the same workload in a fresh namespace settled by 3 shards
   of one ring (``--shard --ring R --identity shard-i``): each process's RSS at rest,
   after settling and its peak (VmHWM), each shard's over the single operator's, and the
   recommendations settled per second by 1 and by 3 processes (two shared cores: the
   throughput per shard cannot grow here, only the memory per process can fall).
2. **moves**: a 4th shard joins those 3, then leaves gracefully (SIGTERM): the customers
   whose hand-off record (the Lease ``<ring>-customer-<hash>`` labelled
   ``optiinfra.io/handoff=<ring>``) changed holder, against ``core.shards.moves`` for the
   same rings (they must be the same customers), and how long the hand-over took.
3. **kills**: 3 shards of another ring drive plans of slow simulated steps (a quarter
   roll back); a random shard is SIGKILLed K times and started again with its identity
   (as a StatefulSet does): after about 2 s, or (every other kill) after its Lease has
   expired, so that the others claim its customers first. Counted: steps run twice
   (``planwatch.rewritten``), wrong final phases, missing or duplicated step Events, and
   for each kill the time until every running plan of the killed shard's customers moved
   again (and, when the others claim them, until each record had a new holder).

Every operator runs as ``chaos.Operator``: the ServiceAccount of manifests/, webhooks on
(each shard registers them; the last one started serves them), watching one namespace.

Usage: ``python bench/shards.py [--quick] [--phases memory,kills] [--n 10000]
[--customers 100] [--kills 10] [--lease-duration 12]``. A full run writes
``bench/results/shards.json`` and ``shards.md``; a partial or quick one build/shards/partial.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

import kubernetes

import chaos
import e2e
from coordinator.api import defaults
from coordinator.api.common import GROUP, RECOMMENDATIONS, VERSION
from coordinator.api.shardnames import CUSTOMER_ANNOTATION, HANDOFF_LABEL
from coordinator.core import shards

LEASES_NS: Final = "optiinfra-system"
LEASE_S: Final = int(defaults.LEASE_DURATION_SECONDS)
PHASES: Final = ("memory", "kills")
WORK: Final = chaos.REPO / "build" / "shards"
log = e2e.log


class Bench(chaos.Chaos):
    def namespace(self, scenario: str) -> str:
        return e2e.create_namespace(
            self.api, f"shards-{self.run_id}-{scenario}", scope=f"{self.run_id}-{scenario}"
        )

    def shard(
        self, namespace: str, scenario: str, ring: str, identity: str, duration: int
    ) -> chaos.Operator:
        return self.operator(
            namespace, scenario, identity, "--shard", f"--ring={ring}",
            f"--identity={identity}", f"--lease-namespace={LEASES_NS}",
            f"--lease-duration={duration}",
        )  # fmt: skip

    def records(self, ring: str) -> dict[str, str]:
        """customer key ("ns/customerId") -> holder of its hand-off record."""
        leases = kubernetes.client.CoordinationV1Api(self.api).list_namespaced_lease(
            LEASES_NS, label_selector=f"{HANDOFF_LABEL}={ring}"
        )
        return {
            (lease.metadata.annotations or {}).get(
                CUSTOMER_ANNOTATION, ""
            ): lease.spec.holder_identity or ""
            for lease in leases.items
        }

    def forget(self, ring: str) -> None:
        """Delete the ring's hand-off records (the shards delete their own Leases)."""
        with contextlib.suppress(kubernetes.client.ApiException):
            kubernetes.client.CoordinationV1Api(self.api).delete_collection_namespaced_lease(
                LEASES_NS, label_selector=f"{HANDOFF_LABEL}={ring}"
            )


def acting(operator: chaos.Operator) -> bool:
    status, text = operator.readiness()
    return status == 200 and text.startswith("acting for")


def start_all(operators: Sequence[chaos.Operator]) -> None:
    for operator in operators:
        operator.start()
    for operator in operators:
        chaos.wait_until(lambda o=operator: acting(o), what=f"{operator.name} to act", timeout=60)


def fill(bench: Bench, namespace: str, *, n: int, customers: int) -> dict[str, Any]:
    """Create `n` recommendations at once (16 threads) and wait until all have settled."""
    manifests = e2e.workload(n, customers=customers)
    names = [m["metadata"]["name"] for m in manifests]
    with (
        e2e.watching(bench.pool_api, namespace, (RECOMMENDATIONS,)) as tracker,
        concurrent.futures.ThreadPoolExecutor(16) as pool,
    ):
        custom = kubernetes.client.CustomObjectsApi(bench.pool_api)

        def create(body: Mapping[str, Any]) -> None:
            for _ in range(100):
                try:
                    custom.create_namespaced_custom_object(
                        GROUP, VERSION, namespace, RECOMMENDATIONS, body
                    )
                except kubernetes.client.ApiException as exc:
                    if exc.status != 409:
                        time.sleep(0.2)
                        continue
                break
            tracker.created(RECOMMENDATIONS, body["metadata"]["name"], time.monotonic())

        started_at = time.monotonic()
        list(pool.map(create, manifests))
        created_s = time.monotonic() - started_at
        deadline = started_at + bench.args.timeout * max(1, n // 1000)
        while time.monotonic() < deadline:
            if tracker.all_phased(RECOMMENDATIONS, names, e2e.settled):
                break
            time.sleep(0.5)
        done = [tracker.get(RECOMMENDATIONS, x).first_phase(e2e.settled) for x in names]
    times = [t for t in done if t is not None]
    settle = (max(times) - started_at) if times else float("nan")
    return {
        "n": n,
        "customers": customers,
        "settled": len(times),
        "created_s": round(created_s, 1),
        "settle_s": round(settle, 1),
        "settled_per_s": round(len(times) / settle, 1) if times else None,
    }


def rss(operator: chaos.Operator, idle: float) -> dict[str, float]:
    now = e2e.memory_mb(operator.pid)
    return {
        "idle_mb": round(idle, 1),
        "rss_mb": round(now["VmRSS"], 1),
        "peak_mb": round(now["VmHWM"], 1),
    }


def memory_and_moves(bench: Bench, *, n: int, customers: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        namespace, operators = stack.enter_context(bench.scenario("single"))
        single = bench.operator(namespace, "single", "op")
        operators.append(single.start())
        idle, cpu = e2e.memory_mb(single.pid)["VmRSS"], e2e.cpu_seconds(single.pid)
        log(f"memory: one operator, {n} recommendations over {customers} customers")
        out["single"] = fill(bench, namespace, n=n, customers=customers)
        time.sleep(2.0)
        out["single"] |= rss(single, idle) | {"cpu_s": round(e2e.cpu_seconds(single.pid) - cpu, 1)}
        log(f"memory: single {out['single']}")
        single.stop()

        ring = f"bench-{bench.run_id}"
        stack.callback(bench.forget, ring)
        namespace, operators = stack.enter_context(bench.scenario("shards"))
        names = [f"shard-{i}" for i in range(4)]
        procs = [bench.shard(namespace, "shards", ring, x, LEASE_S) for x in names]
        operators += procs
        start_all(procs[:3])
        idles = [e2e.memory_mb(p.pid)["VmRSS"] for p in procs[:3]]
        cpus = [e2e.cpu_seconds(p.pid) for p in procs[:3]]
        log(f"memory: 3 shards of ring {ring}, the same workload")
        out["shards"] = fill(bench, namespace, n=n, customers=customers)
        time.sleep(2.0)
        per = {}
        for x, p, idle_, cpu_ in zip(names, procs[:3], idles, cpus, strict=False):
            per[x] = rss(p, idle_) | {
                "customers": e2e.OperatorProcess.metric(p, "optiinfra_shard_customers"),
                "cpu_s": round(e2e.cpu_seconds(p.pid) - cpu_, 1),
            }
            for key in ("rss_mb", "peak_mb"):
                per[x][f"{key}_ratio"] = round(per[x][key] / out["single"][key], 2)
            per[x]["above_idle_ratio"] = round(
                (per[x]["rss_mb"] - idle_) / (out["single"]["rss_mb"] - out["single"]["idle_mb"]), 2
            )
        out["shards"]["per_shard"] = per
        out["shards"]["cpu_s"] = round(sum(s["cpu_s"] for s in per.values()), 1)
        out["ratio_peak_max"] = max(s["peak_mb_ratio"] for s in per.values())
        out["ratio_rss_max"] = max(s["rss_mb_ratio"] for s in per.values())
        log(f"memory: shards {out['shards']}")
        out["moves"] = moves(
            bench, ring, namespace, dict(zip(names, procs, strict=True)), customers
        )
    return out


def follow(bench: Bench, ring: str, want: Mapping[str, str], timeout: float) -> float:
    """Wait until every record's holder is the one `want` names; the seconds waited."""
    began = time.monotonic()
    chaos.wait_until(
        lambda: all(bench.records(ring).get(c) == o for c, o in want.items()),
        what="the records to follow the ring", timeout=timeout, interval=0.25,
    )  # fmt: skip
    return round(time.monotonic() - began, 1)


def moves(
    bench: Bench, ring: str, namespace: str, procs: Mapping[str, chaos.Operator], n: int
) -> dict[str, Any]:
    """3 -> 4 -> 3 shards: records that changed holder against ``core.shards.moves``."""
    customers = [(namespace, f"customer-{i:04d}") for i in range(n)]
    keys = {c: shards.customer_key(*c) for c in customers}
    names = list(procs)
    rings = [shards.ring(names[:3]), shards.ring(names)]
    owners = [{keys[c]: shards.owner(r, *c) or "" for c in customers} for r in rings]
    follow(bench, ring, owners[0], 60)
    before = bench.records(ring)
    expected = {
        shards.customer_key(*m.customer) for m in shards.moves(rings[0], rings[1], customers)
    }
    began = time.monotonic()
    start_all([procs[names[3]]])
    acting_s = round(time.monotonic() - began, 1)
    joined = follow(bench, ring, owners[1], 90)
    after = bench.records(ring)
    moved = {c for c in keys.values() if before.get(c) != after.get(c)}
    rss_after = {x: round(e2e.memory_mb(p.pid)["VmRSS"], 1) for x, p in procs.items()}
    stopped_s = round(procs[names[3]].terminate(), 1)
    left = follow(bench, ring, owners[0], 90)
    back = {c for c in keys.values() if after.get(c) != bench.records(ring).get(c)}
    out = {
        "customers": n,
        "moved_3_to_4": len(moved),
        "fraction": round(len(moved) / n, 3),
        "expected_by_ring": len(expected),
        "same_customers_as_ring": moved == expected,
        "all_to_the_new_shard": all(after.get(c) == names[3] for c in moved),
        "start_to_acting_s": acting_s,
        "acting_to_claimed_s": joined,
        "moved_back_4_to_3": len(back),
        "back_same_customers": back == expected,
        "sigterm_to_exit_s": stopped_s,
        "exit_to_claimed_s": left,
        "rss_mb_with_4": rss_after,
    }
    log(f"moves: {out}")
    return out


def kills(bench: Bench, *, count: int, per_wave: int, steps: int, duration: int) -> dict[str, Any]:
    rng = random.Random(11)
    ring = f"bench-{bench.run_id}-k"
    names = [f"shard-{i}" for i in range(3)]
    recs: list[dict[str, Any]] = []
    per_kill: list[dict[str, Any]] = []
    with bench.scenario("kills") as (namespace, operators):
        procs = {x: bench.shard(namespace, "kills", ring, x, duration) for x in names}
        operators.extend(procs.values())
        start_all(list(procs.values()))
        watch = chaos.planwatch.PlanWatch(bench.api, namespace)
        watch.start()
        restarter = concurrent.futures.ThreadPoolExecutor(1)
        try:
            for k in range(count):
                wave = [
                    chaos.plan_rec(
                        f"p{k:02d}-{i:02d}",
                        chaos.plan_steps(
                            rng,
                            count=steps,
                            fail_at=steps - 2 if i % 4 == 3 else None,
                            low=500,
                            high=1000,
                        ),
                        customer=f"k{k:02d}-c{i:02d}",
                    )
                    for i in range(per_wave)
                ]
                for rec in wave:
                    bench.create(namespace, rec)
                recs += wave
                chaos.wait_until(
                    lambda wave=wave: all(
                        (watch.latest.get(r["metadata"]["name"], {}).get("status") or {}).get(
                            "currentStep", 0
                        ) >= 1
                        for r in wave
                    ),
                    what="the wave's plans to be under way", timeout=120,
                )  # fmt: skip
                per_kill.append(
                    one_kill(
                        bench,
                        ring=ring,
                        namespace=namespace,
                        procs=procs,
                        watch=watch,
                        rng=rng,
                        restarter=restarter,
                        k=k,
                        duration=duration,
                    )
                )
            final = bench.wait_ended(
                namespace, [r["metadata"]["name"] for r in recs], timeout=bench.args.timeout
            )
        finally:
            restarter.shutdown()
            watch.stop()
            bench.forget(ring)
        figures = chaos.verdict(bench, namespace, recs, final, watch, events=True)
    by_mode = {
        mode: [x for x in per_kill if x["restart"] == mode] for mode in ("at once", "after expiry")
    }
    return {
        "kills": count,
        "lease_duration_s": duration,
        "steps": sum(len(r["spec"]["steps"]) for r in recs),
        "per_kill": per_kill,
        **{
            f"moving_again_max_s_{m.replace(' ', '_')}": max(
                (x["moving_again_max_s"] or 0 for x in xs), default=None
            )
            for m, xs in by_mode.items()
        },
        "claimed_max_s_after_expiry": max(
            (x["claimed_s"] or 0 for x in by_mode["after expiry"]), default=None
        ),
        **figures,
    }


def one_kill(
    bench: Bench,
    *,
    ring: str,
    namespace: str,
    procs: Mapping[str, chaos.Operator],
    watch: chaos.planwatch.PlanWatch,
    rng: random.Random,
    restarter: concurrent.futures.ThreadPoolExecutor,
    k: int,
    duration: int,
) -> dict[str, Any]:
    """SIGKILL a random shard, start it again after 2 s or after its Lease expired; when
    each running plan of its customers moved again."""
    victim = rng.choice(sorted(procs))
    running = watch.running_steps()
    procs[victim].kill()
    killed = time.monotonic()
    held = bench.records(ring)
    plans = dict(watch.latest)
    before = chaos.progress(plans)
    mine = [
        name
        for name, plan in plans.items()
        if chaos.phase_of(plan) not in chaos.ENDED
        and held.get(shards.customer_key(namespace, plan["spec"].get("customerId", ""))) == victim
    ]
    customers = {n: shards.customer_key(namespace, plans[n]["spec"]["customerId"]) for n in mine}
    late = k % 2 == 1
    restart_after = duration + 3 if late else 2.0
    restarted: concurrent.futures.Future[Any] | None = None
    moved: dict[str, float] = {}
    claimed: float | None = None
    while time.monotonic() - killed < 120 and (
        len(moved) < len(mine) or (late and claimed is None and restarted is None and mine)
    ):
        if restarted is None and time.monotonic() - killed >= restart_after:
            restarted = restarter.submit(lambda: procs[victim].start() and time.monotonic())
        now = chaos.progress(dict(watch.latest))
        for name in mine:
            if name not in moved and now.get(name) != before.get(name):
                moved[name] = time.monotonic() - killed
        if late and claimed is None:
            records = bench.records(ring)
            if all(records.get(c) not in (victim, None) for c in customers.values()):
                claimed = time.monotonic() - killed
        time.sleep(0.2)
    if restarted is None:
        time.sleep(max(0.0, restart_after - (time.monotonic() - killed)))
        restarted = restarter.submit(lambda: procs[victim].start() and time.monotonic())
    healthy = restarted.result(timeout=120) - killed
    chaos.wait_until(lambda: acting(procs[victim]), what=f"{victim} to act again", timeout=60)
    figures = {
        "victim": victim,
        "restart": "after expiry" if late else "at once",
        "steps_running": running,
        "plans_of_its_customers": len(mine),
        "moved_again": len(moved),
        "kill_to_restarted_healthy_s": round(healthy, 1),
        "moving_again_max_s": round(max(moved.values()), 1) if moved else None,
        "claimed_s": round(claimed, 1) if claimed is not None else None,
    }
    log(f"kills: {k + 1}: {figures}")
    return figures


def run(args: argparse.Namespace) -> dict[str, Any]:
    bench = Bench(args)
    result: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
            cwd=chaos.REPO, check=False,
        ).stdout.strip(),
        "cpus": os.cpu_count(),
        "quick": args.quick,
    }  # fmt: skip
    runs = {
        "memory": lambda: memory_and_moves(bench, n=args.n, customers=args.customers),
        "kills": lambda: kills(
            bench, count=args.kills, per_wave=args.per_wave, steps=args.steps,
            duration=args.lease_duration,
        ),
    }  # fmt: skip
    for name in PHASES:
        if name not in args.phases:
            continue
        began = time.monotonic()
        try:
            figures = runs[name]()
        except Exception as exc:  # one phase's failure is a figure too; the other runs
            log(f"{name}: FAILED: {type(exc).__name__}: {exc}")
            figures = {"error": f"{type(exc).__name__}: {exc}"}
        figures["phase_s"] = round(time.monotonic() - began, 1)
        result[name] = figures
        log(f"{name}: {json.dumps(figures)}")
    return result


def table(result: Mapping[str, Any]) -> str:
    lines = [
        "# Shards on the local control plane",
        "",
        f"Run {result['when']} at {result['commit']} on {result['cpus']} CPUs"
        f"{' (quick)' if result.get('quick') else ''}: `make bench-shards` (bench/shards.py).",
        "",
        "| figure | target | measured |",
        "|---|---|---|",
    ]

    def row(what: str, target: str, value: Any) -> None:
        lines.append(f"| {what} | {target} | {value} |")

    m = result.get("memory")
    if m and "error" in m:
        row("memory", "", m["error"])
    elif m:
        one, three = m["single"], m["shards"]
        row(
            f"one operator, {one['n']} recommendations / {one['customers']} customers: "
            "RSS idle / settled / peak", "",
            f"{one['idle_mb']} / {one['rss_mb']} / {one['peak_mb']} MB",
        )  # fmt: skip
        for shard, s in three["per_shard"].items():
            row(
                f"{shard} ({s['customers']:.0f} customers): RSS idle / settled / peak, over one",
                "peak ≤ 0.45",
                f"{s['idle_mb']} / {s['rss_mb']} / {s['peak_mb']} MB "
                f"(**{s['rss_mb_ratio']} / {s['peak_mb_ratio']}**)",
            )
        row(
            "settled per second, 1 process / 3 shards (2 shared cores)", "reported",
            f"{one['settled_per_s']}/s in {one['settle_s']} s / {three['settled_per_s']}/s in "
            f"{three['settle_s']} s; operator CPU {one['cpu_s']} s / {three['cpu_s']} s (sum)",
        )  # fmt: skip
        mv = m["moves"]
        row(
            "3 → 4 shards: customers whose record changed holder", "≈ 1/4, ≤ 1/3",
            f"**{mv['moved_3_to_4']}/{mv['customers']} ({mv['fraction']})**; ring says "
            f"{mv['expected_by_ring']}, same customers: {mv['same_customers_as_ring']}; "
            f"acting {mv['start_to_acting_s']} s after its start, all claimed "
            f"{mv['acting_to_claimed_s']} s later",
        )  # fmt: skip
        row(
            "4 → 3 (SIGTERM): moved back", "the same",
            f"{mv['moved_back_4_to_3']}, same customers: {mv['back_same_customers']}; "
            f"exited {mv['sigterm_to_exit_s']} s after SIGTERM, all claimed "
            f"{mv['exit_to_claimed_s']} s later",
        )  # fmt: skip
    k = result.get("kills")
    if k and "error" in k:
        row("kills", "", k["error"])
    elif k:
        row("SIGKILLs / plans / steps", "≥ 10", f"{k['kills']} / {k['plans']} / {k['steps']}")
        row("steps run twice", "0", f"**{k['repeated_steps']}**")
        row("wrong final phases", "0", f"**{k['wrong_final_phases']}** ({k['final_phases']})")
        row(
            "step Events missing / duplicated", "0 / 0",
            f"{k['events_missing']} / {k['events_duplicated']} (of {k['events_expected']})",
        )  # fmt: skip
        row(
            "kill to every plan of its customers moving again, max: restarted at once / "
            f"after its Lease ({k['lease_duration_s']} s) expired", "≤ 15 s",
            f"**{k['moving_again_max_s_at_once']} s / {k['moving_again_max_s_after_expiry']} s**"
            f" (others claimed all its records after {k['claimed_max_s_after_expiry']} s)",
        )  # fmt: skip
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (about 3 minutes)")
    parser.add_argument(
        "--phases",
        type=lambda s: {p.strip() for p in s.split(",") if p.strip()},
        default=set(PHASES),
        help=f"comma-separated ({','.join(PHASES)})",
    )
    parser.add_argument("--n", type=int, help="recommendations (10000; quick 1000)")
    parser.add_argument("--customers", type=int, default=100, help="customers (100)")
    parser.add_argument("--kills", type=int, help="SIGKILLs (10; quick 3)")
    parser.add_argument("--per-wave", type=int, help="plans started before each kill (9; quick 6)")
    parser.add_argument("--steps", type=int, default=12, help="steps per plan (12)")
    parser.add_argument(
        "--lease-duration", type=int, default=LEASE_S, help=f"kills: the shards' Lease ({LEASE_S})"
    )
    parser.add_argument("--timeout", type=float, default=240, help="deadline per wait, s (240)")
    parser.add_argument(
        "--kubeconfig", default=str(chaos.REPO / ".cluster" / "kubeconfig"), help="admin kubeconfig"
    )
    args = parser.parse_args(argv)
    args.n = args.n or (1000 if args.quick else 10000)
    args.kills = args.kills or (3 if args.quick else 10)
    args.per_wave = args.per_wave or (6 if args.quick else 9)
    if args.phases - set(PHASES):
        parser.error(f"unknown phases: {', '.join(sorted(args.phases - set(PHASES)))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    partial = args.quick or args.phases != set(PHASES)
    out = WORK / "partial" if partial else chaos.RESULTS
    out.mkdir(parents=True, exist_ok=True)
    (out / "shards.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "shards.md").write_text(table(result))
    print(table(result))
    print(f"written to {out}/shards.json and shards.md", file=sys.stderr)
    return 1 if any(isinstance(v, dict) and "error" in v for v in result.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
