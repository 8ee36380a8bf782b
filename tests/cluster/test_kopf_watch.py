"""``coordinator run --watch=kopf``: kopf's watching feeds the Store as the informer does."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Callable

import kubernetes

from coordinator.api.common import APPROVALS, GROUP, RECOMMENDATIONS, VERSION
from tests.support import wait_for
from tests.support.builders import recommendation
from tests.support.kube import Objects
from tests.support.processes import OperatorProcess

PRESENT = 30
"""Recommendations that exist before the operator starts: its listing."""


def stored_recommendations(process: OperatorProcess) -> float:
    """The recommendations in the operator's Store (its metrics)."""
    url = f"http://127.0.0.1:{process.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("optiinfra_store_objects{") and f'kind="{RECOMMENDATIONS}"' in line
    )


def test_kopf_watching_lists_before_ready_decides_and_forgets_deletions(
    api: kubernetes.client.ApiClient,
    own_namespace: str,
    own_operator: Callable[..., OperatorProcess],
) -> None:
    custom = kubernetes.client.CustomObjectsApi(api)
    objects = Objects(api, own_namespace)
    for i in range(PRESENT):
        custom.create_namespaced_custom_object(
            GROUP,
            VERSION,
            own_namespace,
            RECOMMENDATIONS,
            recommendation(f"before-{i}", customerId=f"customer-before-{i}"),
        )

    process = own_operator("operator", "--watch=kopf")

    # Ready, and acting, only once everything listed was in the Store.
    wait_for(lambda: process.readiness()[0] == 200, what="the operator to be ready")
    listed = re.search(r"listed (\d+) objects in", process.log.read_text(errors="replace"))
    assert listed is not None, process.tail()
    assert int(listed.group(1)) >= PRESENT
    objects.wait_phase(RECOMMENDATIONS, f"before-{PRESENT - 1}", "AwaitingApproval")

    # A new recommendation is decided: it awaits its approval, which exists.
    custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        own_namespace,
        RECOMMENDATIONS,
        recommendation("after", customerId="customer-after"),
    )
    decided = objects.wait_phase(RECOMMENDATIONS, "after", "AwaitingApproval")
    approval = objects.get(APPROVALS, decided["status"]["approval"])
    assert approval is not None
    assert approval["spec"]["recommendation"] == "after"
    wait_for(
        lambda: stored_recommendations(process) == PRESENT + 1,
        what=f"{PRESENT + 1} recommendations in the Store",
    )

    # A deletion leaves the Store.
    custom.delete_namespaced_custom_object(GROUP, VERSION, own_namespace, RECOMMENDATIONS, "after")
    wait_for(
        lambda: stored_recommendations(process) == PRESENT,
        what=f"the deleted recommendation to leave the Store ({PRESENT} left)",
    )
    assert "Traceback" not in process.log.read_text(errors="replace"), process.tail()
