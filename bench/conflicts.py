"""Benchmark: conflict detection plus resolution for one customer with N recommendations.

Each recommendation affects 3 resources drawn (seeded) from a pool sized so that about
N/10 pairs share a resource. The indexed method (``conflicts.evaluate`` as the operator
runs it) is timed several times and the median kept; the all-pairs method (the same
``evaluate`` with ``detect_all_pairs``) once, in the same run. Both are timed with the
garbage collector off, as ``timeit`` does; the median with it on goes to stderr. Both
must find the same conflicting pairs and the same verdicts. The last line printed is
one JSON object: ``{"n", "conflicts", "indexed_ms", "pairwise_ms", "ratio"}``.

Usage: ``python bench/conflicts.py [--n 10000] [--repeat 7] [--seed 42]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from coordinator.api.recommendation import ConflictType, Recommendation
from coordinator.core import conflicts

RESOURCES_EACH = 3
ACTIONS = (
    "scale_up",
    "scale_down",
    "migrate_to_spot",
    "migrate_to_on_demand",
    "increase_memory",
    "decrease_memory",
    "optimize_kv_cache",
    "rightsize",
)
RISKS = ("low", "medium", "high", "critical")


def pool_size(n: int) -> int:
    """Resources in the pool so that about n/10 of the n(n-1)/2 pairs share one.

    Two recommendations share a resource with probability about k*k/pool (k = 3), so
    the expected number of such pairs is n*n/2 * 9/pool; n/10 of them gives 45 n.
    """
    return max(RESOURCES_EACH, 5 * RESOURCES_EACH * RESOURCES_EACH * n)


def generate(n: int, *, seed: int) -> list[Recommendation]:
    rng = random.Random(seed)
    pool = pool_size(n)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        Recommendation.model_validate(
            {
                "metadata": {
                    "name": f"rec-{index:06d}",
                    "namespace": "bench",
                    "creationTimestamp": start + timedelta(seconds=rng.randrange(86400)),
                },
                "spec": {
                    "customerId": "customer-1",
                    "agentId": "agent-1",
                    "agentType": "cost",
                    "title": f"Recommendation {index}",
                    "action": rng.choice(ACTIONS),
                    "riskLevel": rng.choice(RISKS),
                    "estimatedSavings": rng.randrange(0, 5000, 250),
                    "priority": rng.randrange(0, 20),
                    "confidence": rng.choice((0.5, 0.75, 0.9, 1.0)),
                    "affectedResources": [
                        f"i-{r}" for r in rng.sample(range(pool), RESOURCES_EACH)
                    ],
                },
            }
        )
        for index in range(n)
    ]


def conflicting_pairs(evaluation: conflicts.Evaluation) -> set[frozenset[str]]:
    """The pairs with a resource conflict, as found in the verdicts."""
    return {
        frozenset((verdict.name, conflict.with_[0]))
        for verdict in evaluation.verdicts.values()
        for conflict in verdict.conflicts
        if conflict.type is ConflictType.RESOURCE
    }


def timed(
    run: Callable[[], conflicts.Evaluation], *, collect_garbage: bool = False
) -> tuple[float, conflicts.Evaluation]:
    """Milliseconds one run took, and its result.

    Like ``timeit``, the garbage collector is off while the run is timed unless
    ``collect_garbage``: a full collection of the 10 000 input objects that happens to
    fall into one run measures the heap, not the algorithm.
    """
    was_enabled = gc.isenabled()
    if not collect_garbage:
        gc.disable()
    try:
        started = time.perf_counter()
        result = run()
        return (time.perf_counter() - started) * 1000, result
    finally:
        if was_enabled:
            gc.enable()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000, help="recommendations (10000)")
    parser.add_argument("--repeat", type=int, default=7, help="indexed runs for the median (7)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (42)")
    args = parser.parse_args(argv)

    recommendations = generate(args.n, seed=args.seed)
    indexed_runs = [timed(lambda: conflicts.evaluate(recommendations)) for _ in range(args.repeat)]
    indexed_ms = statistics.median(ms for ms, _ in indexed_runs)
    indexed = indexed_runs[0][1]
    with_gc_ms = statistics.median(
        timed(lambda: conflicts.evaluate(recommendations), collect_garbage=True)[0]
        for _ in range(args.repeat)
    )
    pairwise_ms, pairwise = timed(
        lambda: conflicts.evaluate(recommendations, detector=conflicts.detect_all_pairs)
    )

    pairs = conflicting_pairs(indexed)
    assert pairs == conflicting_pairs(pairwise), "indexed and all-pairs found different pairs"
    assert indexed == pairwise, "indexed and all-pairs gave different verdicts"
    print(
        f"indexed runs (ms): {', '.join(f'{ms:.1f}' for ms, _ in indexed_runs)}; "
        f"median with the garbage collector on: {with_gc_ms:.1f}",
        file=sys.stderr,
    )
    print(
        json.dumps(
            {
                "n": args.n,
                "conflicts": len(pairs),
                "indexed_ms": round(indexed_ms, 2),
                "pairwise_ms": round(pairwise_ms, 2),
                "ratio": round(pairwise_ms / indexed_ms, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
