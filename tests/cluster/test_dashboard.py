"""The gateway's read-only dashboard, loaded in headless Chromium (Debian's `chromium`)
against the local control plane: the conflict graph, the approval queue, a plan's
timeline with its rollback and one with its verification window (measured by the real
Prometheus), as a viewer's token may read them.

The screenshot goes to the test's temporary directory; with
OPTIINFRA_DASHBOARD_SCREENSHOT=PATH it is also written to PATH (the README's picture
is made so: `docs/dashboard.png`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import kubernetes
import prometheus as localprometheus
import pytest

from tests.support import Kubectl
from tests.support.builders import fast_steps, metric, recommendation, template
from tests.support.gateway import GatewayProcess, service_account_tokens
from tests.support.kube import APPROVALS, PLANS, RECS, Objects, apply

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Elements(HTMLParser):
    """Every element's attributes, and the text of the whole page."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def having(self, attribute: str) -> list[dict[str, str]]:
        return [a for _, a in self.elements if attribute in a]


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--no-first-run", "--disable-dev-shm-usage", "--virtual-time-budget=4000", *args,
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def verified(
    kubectl: Kubectl,
    namespace: str,
    prometheus: tuple[localprometheus.Prometheus, localprometheus.MetricsFixture],
) -> None:
    """rec-verified: a low-risk scale_down of Deployment web-v that runs at once, verified
    by the template `latency` it names (two measurements a second apart of a gauge that holds)."""
    server, gauges = prometheus
    gauges.set("optiinfra_test_latency_seconds", 0.2, namespace=namespace, deployment="web-v")
    series = (
        'optiinfra_test_latency_seconds{namespace="{{namespace}}",deployment="{{target.name}}"}'
    )
    query = f"max({series})"
    apply(
        kubectl,
        namespace,
        template(
            "latency", selector={"customerIds": ["nobody"]},
            provider={"prometheus": {"address": server.url, "timeoutSeconds": 5}},
            baseline={"window": "10s"},
            metrics=[metric("p99", query=query, interval="1s", count=2)],
        ),
        recommendation(
            "rec-verified", action="scale_down", riskLevel="low", autoApprove=True,
            executeNow=True, affectedResources=["web-v"],
            target={"apiVersion": "apps/v1", "kind": "Deployment", "name": "web-v"},
            verification={"templates": ["latency"]},
            steps=[{"name": "shrink", "action": "shrink", "executor": "simulated",
                    "params": {"durationMs": 200}}],
        ),
    )  # fmt: skip


def dump(url: str) -> Elements:
    proc = chromium("--dump-dom", url)
    assert proc.returncode == 0, proc.stderr[-2000:]
    page = Elements()
    page.feed(proc.stdout)
    return page


@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="chromium is not installed (apt-get install chromium); CI installs it and never skips",
)
def test_dashboard_in_headless_chromium(  # noqa: PLR0917 - fixtures are positional
    api: kubernetes.client.ApiClient,
    kubectl: Kubectl,
    e2e_namespace: str,
    objects: Objects,
    served: GatewayProcess,
    tmp_path: Path,
    prometheus: tuple[localprometheus.Prometheus, localprometheus.MetricsFixture],
) -> None:
    tokens = service_account_tokens(api, kubectl, e2e_namespace)
    verified(kubectl, e2e_namespace, prometheus)
    apply(
        kubectl,
        e2e_namespace,
        recommendation("rec-003", priority=10, estimatedSavings=2000, affectedResources=["i-102"]),
        recommendation(
            "rec-004", action="scale_down", priority=8, estimatedSavings=1500,
            affectedResources=["i-102", "i-104"],
        ),
        recommendation(
            "rec-005", action="scale_up", riskLevel="high", priority=12,
            affectedResources=["cluster-a"],
        ),
        recommendation(
            "rec-006", action="scale_down", priority=10, affectedResources=["cluster-a"]
        ),
        recommendation("rec-rollback", steps=fast_steps("three"), affectedResources=["db-1"]),
        recommendation("rec-other", customerId="customer-2", affectedResources=["x-1"]),
    )  # fmt: skip
    objects.wait_phase(RECS, "rec-004", "Superseded")
    objects.wait_phase(RECS, "rec-006", "Superseded")
    objects.wait_phase(APPROVALS, "rec-rollback", "Pending")
    kubectl(
        "patch", "approval", "rec-rollback", "-n", e2e_namespace, "--type", "merge",
        "-p", json.dumps({"spec": {"decision": "Approved"}}), user="approver",
    )  # fmt: skip
    objects.wait_phase(PLANS, "rec-rollback", "Pending")
    kubectl(
        "patch", "executionplan", "rec-rollback", "-n", e2e_namespace, "--type", "merge",
        "-p", json.dumps({"spec": {"suspend": False}}), user="approver",
    )  # fmt: skip
    objects.wait_phase(PLANS, "rec-rollback", "RolledBack")
    for name in ("rec-003", "rec-005", "rec-other"):
        objects.wait_phase(APPROVALS, name, "Pending")
    objects.wait_phase(PLANS, "rec-verified", "Succeeded", timeout=60)

    url = f"{served.url}/?namespace={e2e_namespace}#token={tokens['gw-viewer']}"
    page = dump(url)
    assert any(a.get("data-loaded") == "true" for a in page.having("data-loaded")), "".join(
        page.text
    )[:2000]
    text = " ".join("".join(page.text).split())
    assert f"system:serviceaccount:{e2e_namespace}:gw-viewer in {e2e_namespace}" in text

    # The conflict graph: nodes, edges coloured by type, the winners marked.
    nodes = {a["data-id"]: a for a in page.having("data-id")}
    assert set(nodes) == {
        "rec-003", "rec-004", "rec-005", "rec-006", "rec-rollback", "rec-other", "rec-verified"
    }  # fmt: skip
    assert nodes["rec-003"]["data-winner"] == "true"
    assert nodes["rec-005"]["data-winner"] == "true"
    assert nodes["rec-004"]["data-winner"] == "false"
    assert nodes["rec-004"]["data-phase"] == "Superseded"
    edges = {(a["data-type"], a["data-between"]): a["stroke"] for a in page.having("data-between")}
    assert edges == {
        ("resource", "rec-003 rec-004"): "#e08a00",
        ("resource", "rec-005 rec-006"): "#e08a00",
        ("action", "rec-005 rec-006"): "#c62828",
    }
    customers = [a["data-customer"] for t, a in page.elements if t == "section"]
    assert customers == ["customer-1", "customer-2"]

    # The approval queue, soonest expiry first (high: 24h before medium: 48h), time left.
    queue = [a["data-approval"] for a in page.having("data-approval")]
    assert queue == ["rec-005", "rec-003", "rec-other"]
    assert "23h59m" in text or "23h58m" in text

    # The plan's timeline: the failed step and the two rolled back.
    steps = {a["data-step"]: a["data-status"] for a in page.having("data-step")}
    assert steps == {
        "one": "rolled_back", "two": "rolled_back", "three": "failed", "shrink": "completed"
    }  # fmt: skip
    assert "rec-rollback — rolled_back" in text
    assert text.count("↩ undone") == 2

    # The verified plan's window: its outcome, a mark per measurement, the baseline.
    assert [a["data-verification"] for a in page.having("data-verification")] == ["Successful"]
    marks = [a for a in page.having("data-measurement") if a["data-measurement"] == "latency/p99"]
    assert len(marks) == 2
    assert all("0.2 Successful" in a["title"] for a in marks)
    metrics = {a["data-metric"]: a["data-status"] for a in page.having("data-metric")}
    assert metrics == {"latency/p99": "Successful"}
    assert "latency/p99: Successful" in text
    assert "0.2 Successful, 0.2 Successful" in text

    screenshot = tmp_path / "dashboard.png"
    shot = chromium("--window-size=1280,1500", f"--screenshot={screenshot}", url)
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("OPTIINFRA_DASHBOARD_SCREENSHOT"):
        shutil.copy(screenshot, os.environ["OPTIINFRA_DASHBOARD_SCREENSHOT"])

    # The viewer sees only what RBAC lets it: another namespace is refused, in the page.
    elsewhere = dump(f"{served.url}/?namespace=default#token={tokens['gw-viewer']}")
    said = " ".join("".join(elsewhere.text).split())
    assert "cannot list resource" in said
    assert not elsewhere.having("data-id")
