"""Benchmark: the HTTP gateway (``coordinator gateway``) on the local control plane.

What it measures, in one run on the same machine (the API server shares the cores):

1. **writes**: one Recommendation per write, sequentially, three ways: ``kubectl apply``
   (a process per write, as a shell script of an agent would do), the ``kubernetes``
   client (one process, a kept-alive connection), and ``POST /coordination/coordinate``
   through the gateway (one recommendation per request, ``--settle-timeout 0``: the
   write and the read-back of its status, without waiting for an operator). The
   gateway's overhead is its latency over the client's, and its ratio to kubectl's.
2. **throughput**: requests per second against the gateway with C concurrent callers,
   for ``POST /coordination/coordinate`` (as above) and ``GET /coordination/approvals``.
3. **settled**: with an operator watching the namespace and the default settle timeout,
   the origin document's conflict request (a pair with a resource conflict) sent again
   and again with fresh ids: the latency until the gateway answers with the operator's
   decision (p50 / p95).

Every request carries a ServiceAccount's bearer token (the gateway acts as the caller).
Results: the last line printed is one JSON object; ``bench/results/gateway.json`` and
the table ``gateway.md``.

Usage (after ``make cluster``; KUBECONFIG and the pinned kubectl on PATH, as ``make
bench`` sets them): ``python bench/gateway.py [--writes 100] [--kubectl-writes 30]
[--concurrency 8] [--seconds 10] [--settled 20]``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import kubernetes
import yaml

from coordinator.api.common import API_VERSION, GROUP, RECOMMENDATIONS, VERSION

REPO: Final = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "hack" / "cluster"))
import localproc  # noqa: E402

RESULTS: Final = REPO / "bench" / "results"
SCOPE_LABEL: Final = "optiinfra.io/bench-gateway"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def kubectl(*args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        ["kubectl", *args], input=stdin, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def spec(customer: str, agent: str = "cost-agent-1", **extra: Any) -> dict[str, Any]:
    return {
        "customerId": customer,
        "agentId": agent,
        "agentType": "cost",
        "title": "bench",
        "action": "migrate_to_spot",
        "riskLevel": "medium",
        "affectedResources": [f"i-{uuid.uuid4().hex[:8]}"],
        **extra,
    }


def origin_rec(rec_id: str, customer: str) -> dict[str, Any]:
    return {
        "id": rec_id,
        "agent_id": "cost-agent-1",
        "agent_type": "cost",
        "title": "bench",
        "action": "migrate_to_spot",
        "risk_level": "medium",
        "affected_resources": [f"i-{rec_id}"],
    }


class Caller:
    """HTTP requests with a bearer token, one kept-alive connection per thread."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token

    def __call__(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as response:
                return int(response.status), json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), json.loads(exc.read() or b"null")


@contextmanager
def process(command: list[str], log_path: Path, ready: Callable[[], bool]) -> Iterator[None]:
    out = log_path.open("ab")
    proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{command[3]} did not start; see {log_path}")
            time.sleep(0.2)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        out.close()


def up(url: str) -> bool:
    return localproc.get(url)[0] == 200


def setup(namespace: str) -> str:
    """The namespace, the user roles, a ServiceAccount that may submit and decide, the
    agents' endpoints (admission wants them); its token."""
    kubectl("apply", "-f", str(REPO / "crds"))
    kubectl("apply", "-f", str(REPO / "manifests" / "user-roles.yaml"))
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "labels": {SCOPE_LABEL: "true"}},
        },
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "bench"}},
    ]
    for role in ("optiinfra-agent", "optiinfra-approver"):
        docs.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": f"bench-{role}"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": role,
                },
                "subjects": [{"kind": "ServiceAccount", "name": "bench", "namespace": namespace}],
            }
        )
    for agent in ("cost-agent-1", "resource-agent-1"):
        docs.append(
            {
                "apiVersion": API_VERSION,
                "kind": "AgentEndpoint",
                "metadata": {"name": agent},
                "spec": {
                    "url": "http://127.0.0.1:9/unused",
                    "secretRef": {"name": "unused", "key": "hmac"},
                },
            }
        )
    kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump_all(docs[:1]))
    kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump_all(docs[1:]))
    return kubectl("create", "token", "bench", "-n", namespace, "--duration=2h").strip()


def token_kubeconfig(path: Path, token: str) -> Path:
    config = yaml.safe_load(Path(os.environ["KUBECONFIG"]).read_text())
    config["users"] = [{"name": "bench", "user": {"token": token}}]
    for context in config["contexts"]:
        context["context"]["user"] = "bench"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def timed(function: Callable[[], Any]) -> float:
    began = time.perf_counter()
    function()
    return (time.perf_counter() - began) * 1000


def throughput(call: Callable[[], tuple[int, Any]], *, threads: int, seconds: float) -> float:
    """Requests per second that `threads` callers complete in `seconds` (all must be 2xx)."""
    deadline = time.monotonic() + seconds

    def worker() -> int:
        done = 0
        while time.monotonic() < deadline:
            status, answer = call()
            if status >= 300:
                raise SystemExit(f"the gateway answered {status}: {answer}")
            done += 1
        return done

    began = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(lambda _: worker(), range(threads)))
    return total / (time.monotonic() - began)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=100)
    parser.add_argument("--kubectl-writes", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--settled", type=int, default=20)
    options = parser.parse_args(argv)
    run = uuid.uuid4().hex[:6]
    namespace = f"bench-gw-{run}"
    settled_namespace = f"bench-gw-{run}-settled"
    work = REPO / "build" / "bench"
    work.mkdir(parents=True, exist_ok=True)
    token = setup(namespace)
    kubeconfig = token_kubeconfig(work / f"gateway-{run}.kubeconfig", token)
    figures: dict[str, Any] = {"namespace": namespace, "concurrency": options.concurrency}
    try:
        # 1. writes, sequentially: kubectl, the client, the gateway.
        log(f"{options.kubectl_writes} writes with kubectl apply")
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}

        def kubectl_write(i: int) -> None:
            body = {
                "apiVersion": API_VERSION,
                "kind": "Recommendation",
                "metadata": {"name": f"k-{i}", "namespace": namespace},
                "spec": spec("kubectl"),
            }
            subprocess.run(
                ["kubectl", "apply", "-f", "-"],
                input=json.dumps(body), env=env, capture_output=True, check=True, text=True,
            )  # fmt: skip

        kubectl_ms = [timed(lambda i=i: kubectl_write(i)) for i in range(options.kubectl_writes)]
        api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        custom = kubernetes.client.CustomObjectsApi(api)
        log(f"{options.writes} writes with the kubernetes client")

        def client_write(i: int) -> None:
            custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, RECOMMENDATIONS,
                {
                    "apiVersion": API_VERSION,
                    "kind": "Recommendation",
                    "metadata": {"name": f"c-{i}"},
                    "spec": spec("client"),
                },
            )  # fmt: skip

        client_ms = [timed(lambda i=i: client_write(i)) for i in range(options.writes)]
        port = localproc.free_port()
        url = f"http://127.0.0.1:{port}"
        gateway = [
            sys.executable, "-m", "coordinator", "gateway", f"--listen=127.0.0.1:{port}",
            f"--namespace={namespace}", "--settle-timeout=0",
        ]  # fmt: skip
        with process(gateway, work / f"gateway-{run}.log", lambda: up(f"{url}/health")):
            call = Caller(url, token)
            log(f"{options.writes} writes through the gateway")
            counter = iter(range(10**9))

            def gateway_write() -> tuple[int, Any]:
                rec_id = f"g-{next(counter)}"
                return call(
                    "POST",
                    "/coordination/coordinate",
                    {"customer_id": "gateway", "recommendations": [origin_rec(rec_id, "gateway")]},
                )

            gateway_ms = [timed(gateway_write) for _ in range(options.writes)]
            log(f"throughput with {options.concurrency} callers, {options.seconds:.0f} s each")
            figures["coordinate_rps"] = throughput(
                gateway_write, threads=options.concurrency, seconds=options.seconds
            )
            figures["approvals_rps"] = throughput(
                lambda: call("GET", "/coordination/approvals?customer_id=gateway"),
                threads=options.concurrency,
                seconds=options.seconds,
            )
            figures["health_rps"] = throughput(
                lambda: call("GET", "/health"), threads=options.concurrency, seconds=options.seconds
            )
        figures |= {
            "kubectl_write_p50_ms": statistics.median(kubectl_ms),
            "client_write_p50_ms": statistics.median(client_ms),
            "gateway_write_p50_ms": statistics.median(gateway_ms),
            "gateway_write_p95_ms": percentile(gateway_ms, 95),
        }
        figures["gateway_overhead_over_client_ms"] = (
            figures["gateway_write_p50_ms"] - figures["client_write_p50_ms"]
        )
        figures["gateway_to_kubectl_ratio"] = (
            figures["gateway_write_p50_ms"] / figures["kubectl_write_p50_ms"]
        )

        # 3. settled answers, with an operator watching a fresh namespace (only the pairs).
        namespace, token = settled_namespace, setup(settled_namespace)
        operator = localproc.OperatorProcess(
            kubeconfig=Path(os.environ["KUBECONFIG"]),
            log=work / f"operator-{run}.log",
            args=[f"--namespace={namespace}", f"--webhook-namespace-labels={SCOPE_LABEL}=true"],
        )
        port = localproc.free_port()
        url = f"http://127.0.0.1:{port}"
        gateway = [
            sys.executable, "-m", "coordinator", "gateway", f"--listen=127.0.0.1:{port}",
            f"--namespace={namespace}",
        ]  # fmt: skip
        with (
            operator,
            process(gateway, work / f"gateway-settled-{run}.log", lambda: up(f"{url}/health")),
        ):  # fmt: skip
            call = Caller(url, token)
            log(f"{options.settled} conflicting pairs, each answered once settled")
            settled_ms = []
            for i in range(options.settled):
                pair = [origin_rec(f"s-{i}-a", "settled"), origin_rec(f"s-{i}-b", "settled")]
                pair[1]["affected_resources"] = pair[0]["affected_resources"]
                pair[0]["priority"] = 10
                body = {"customer_id": f"settled-{i}", "recommendations": pair}
                began = time.perf_counter()
                status, answer = call("POST", "/coordination/coordinate", body)
                settled_ms.append((time.perf_counter() - began) * 1000)
                if status != 200 or not answer["settled"] or answer["conflicts_detected"] != 1:
                    raise SystemExit(f"unexpected answer {status}: {answer}")
            figures["settled_p50_ms"] = statistics.median(settled_ms)
            figures["settled_p95_ms"] = percentile(settled_ms, 95)
    finally:
        kubectl("delete", "namespace", f"bench-gw-{run}", "--wait=false", "--ignore-not-found")
        kubectl("delete", "namespace", settled_namespace, "--wait=false", "--ignore-not-found")
    write(figures, options)
    print(json.dumps(figures))
    return 0


def write(figures: dict[str, Any], options: argparse.Namespace) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "gateway.json").write_text(json.dumps(figures, indent=2) + "\n")
    c, f = options.concurrency, figures
    rows = [
        ("write: kubectl apply, one process per write, p50", f"{f['kubectl_write_p50_ms']:.0f} ms"),
        ("write: kubernetes client, p50", f"{figures['client_write_p50_ms']:.1f} ms"),
        (
            "write: POST /coordination/coordinate (1 rec, no settle wait), p50 / p95",
            f"{figures['gateway_write_p50_ms']:.1f} / {figures['gateway_write_p95_ms']:.1f} ms",
        ),
        ("gateway overhead over the client, p50", f"{f['gateway_overhead_over_client_ms']:.1f} ms"),
        ("gateway write time / kubectl write time, p50", f"{f['gateway_to_kubectl_ratio']:.2f}"),
        (f"POST /coordination/coordinate, {c} callers", f"{figures['coordinate_rps']:.0f} req/s"),
        (f"GET /coordination/approvals, {c} callers", f"{figures['approvals_rps']:.0f} req/s"),
        (f"GET /health, {c} callers", f"{figures['health_rps']:.0f} req/s"),
        (
            "a conflicting pair, answered once the operator settled it, p50 / p95",
            f"{figures['settled_p50_ms']:.0f} / {figures['settled_p95_ms']:.0f} ms",
        ),
    ]  # fmt: skip
    table = ["| measure | value |", "|---|---|", *(f"| {m} | {v} |" for m, v in rows)]
    (RESULTS / "gateway.md").write_text("\n".join(table) + "\n")


if __name__ == "__main__":
    sys.exit(main())
