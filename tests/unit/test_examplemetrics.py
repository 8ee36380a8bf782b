"""The synthetic workload metrics the examples ask for (hack/cluster/examplemetrics.py)."""

from __future__ import annotations

import examplemetrics


def test_gauge_lines_are_constants_per_replica_or_for_each_replica() -> None:
    text = (
        "# gauge: latency deployment=checkout 0.4/replicas\n"
        "# gauge: cost deployment=reports 0.05*replicas\n"
        "# gauge: latency deployment=reports 0.1\n"
        "# not a gauge: x 1\n"
    )
    found = examplemetrics.gauges(text)
    assert [(g.name, g.labels, g.value, g.by_replicas) for g in found] == [
        ("latency", {"deployment": "checkout"}, 0.4, "/"),
        ("cost", {"deployment": "reports"}, 0.05, "*"),
        ("latency", {"deployment": "reports"}, 0.1, ""),
    ]
    replicas = {"checkout": 4, "reports": 4}.get
    assert [g.now(replicas) for g in found] == [0.1, 0.2, 0.1]
    assert [g.now(lambda name: None) for g in found] == [None, None, 0.1]  # no Deployment yet
