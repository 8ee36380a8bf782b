"""Fuzz the operator through the local API server: generated and broken objects, counted.

N requests (default 10 000, bounded in time) create and update Recommendations and
Approvals in a fresh namespace with the operator running, its admission webhooks on. The
objects come from the CRD schemas and are broken the ways tests/unit/test_admission_fuzz.py
breaks them (wrong JSON types, lists for objects, huge strings, nesting up to 9 000 levels,
broken annotations); half of the recommendations name the namespace's AgentEndpoint, so
they reach the deeper checks. Each answer is counted as a 2xx, a 4xx with a message, or
bad: anything else (a 5xx, "failed calling webhook", a 4xx without a message, a timeout,
a broken connection). Then: the operator must still be alive, and a known-good
recommendation must still settle.

Usage: ``python bench/fuzz.py [--n 10000] [--seconds 900] [--workers 8]
[--operator-source DIR]`` (another copy of the operator, e.g. a release's) with KUBECONFIG
at the local control plane (``make fuzz``). The last line printed is one JSON object with
the counts; the exit status is 1 if anything was bad.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import os
import random
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Final

import kubernetes
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import e2e
from coordinator.api.common import APPROVALS, GROUP, RECOMMENDATIONS, VERSION

sys.path.insert(0, str(e2e.REPO))
from tests.unit import test_admission_fuzz as fuzz

log = e2e.log
RANDOM: Final = random.Random()
"""Not the module's: hypothesis seeds that while it generates."""
REQUEST_SECONDS: Final = 30.0
SETTLE_SECONDS: Final = 60.0


class Sender:
    """Sends raw JSON bodies to the API server (the client's serialiser would recurse on
    deep bodies) and counts the answers."""

    def __init__(self, api: kubernetes.client.ApiClient, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self.counts: collections.Counter[str] = collections.Counter()
        self.bad: list[str] = []
        self.names: dict[str, list[str]] = {RECOMMENDATIONS: [], APPROVALS: []}
        self.lock = threading.Lock()

    def _url(self, plural: str, name: str = "") -> str:
        base = f"{self.api.configuration.host}/apis/{GROUP}/{VERSION}"
        return f"{base}/namespaces/{self.namespace}/{plural}" + (f"/{name}" if name else "")

    def _request(self, method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        self.api.update_params_for_auth(headers, [], ["BearerToken"], url, method, None)
        response = self.api.rest_client.pool_manager.request(
            method, url, body=body, headers=headers, timeout=REQUEST_SECONDS, retries=False
        )
        return int(response.status), bytes(response.data)

    def count(self, what: str, status: int, data: bytes) -> None:
        try:
            message = str(json.loads(data).get("message") or "")
        except (ValueError, AttributeError):
            message = ""
        if 200 <= status < 300:
            kind = "2xx"
        elif 400 <= status < 500 and message and "failed calling webhook" not in message:
            kind = "4xx with a message"
        else:
            kind = "bad"
        with self.lock:
            self.counts[kind] += 1
            if kind == "bad" and len(self.bad) < 20:
                self.bad.append(f"{what}: {status} {message or data[:200]!r}")

    def send(self, plural: str, obj: dict[str, Any], *, update: bool) -> None:
        """Create `obj`, or put it in place of one created before (its name and version)."""
        what = f"{'update' if update else 'create'} {plural}"
        try:
            if update and self.names[plural]:
                name = RANDOM.choice(self.names[plural])
                status, data = self._request("GET", self._url(plural, name))
                if status != 200:
                    return  # gone (deleted with its recommendation): nothing sent
                if isinstance(obj.get("metadata"), dict):
                    version = json.loads(data)["metadata"]["resourceVersion"]
                    obj["metadata"] |= {"name": name, "resourceVersion": version}
                status, data = self._request("PUT", self._url(plural, name), _body(obj))
            else:
                status, data = self._request("POST", self._url(plural), _body(obj))
                if 200 <= status < 300:
                    with self.lock:
                        self.names[plural].append(json.loads(data)["metadata"]["name"])
        except Exception as exc:  # a timeout, a broken connection: bad
            with self.lock:
                self.counts["bad"] += 1
                if len(self.bad) < 20:
                    self.bad.append(f"{what}: {type(exc).__name__}: {exc}")
            return
        self.count(what, status, data)


def _body(obj: dict[str, Any]) -> bytes:
    """An object as the fuzz tests send it: a deep value stands as a marker until here."""
    levels = RANDOM.randint(50, 9_000)
    nested = '{"a":' * levels + "{}" + "}" * levels
    return json.dumps(obj).replace(json.dumps(fuzz.DEEP), nested).encode()


def fuzzing(sender: Sender, n: int, seconds: float, workers: int) -> int:
    """Generate and send `n` requests (fewer if `seconds` run out); how many were sent."""
    deadline = time.monotonic() + seconds
    sent = 0
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
    pending: set[concurrent.futures.Future[None]] = set()

    @settings(
        max_examples=n,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(
        plural=st.sampled_from([RECOMMENDATIONS, APPROVALS]),
        data=st.data(),
        update=st.booleans(),
        endpoint=st.booleans(),
    )
    def one(plural: str, data: st.DataObject, update: bool, endpoint: bool) -> None:
        nonlocal sent, pending
        if time.monotonic() > deadline:
            return
        obj = data.draw(fuzz._mutated(data.draw(fuzz.OBJECTS[plural])))
        obj.pop("status", None)
        if isinstance(obj.get("metadata"), dict):
            obj["metadata"].pop("namespace", None)
            obj["metadata"]["name"] = f"f-{uuid.uuid4().hex[:10]}"
        if endpoint and plural == RECOMMENDATIONS and isinstance(obj.get("spec"), dict):
            obj["spec"]["agentId"] = e2e.AGENT
        if len(pending) >= workers * 4:
            _, pending = concurrent.futures.wait(
                pending, return_when=concurrent.futures.FIRST_COMPLETED
            )
        pending.add(pool.submit(sender.send, plural, obj, update=update))
        sent += 1
        if sent % 500 == 0:
            log(f"{sent} sent: {dict(sender.counts)}")

    one()
    concurrent.futures.wait(pending)
    pool.shutdown()
    return sent


def settles(api: kubernetes.client.ApiClient, namespace: str) -> bool:
    """Whether a known-good recommendation (the benchmark's) is admitted and settles."""
    [manifest] = e2e.workload(1, customers=1, prefix="known-good")
    custom = kubernetes.client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, RECOMMENDATIONS, manifest)
    name = manifest["metadata"]["name"]
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline:
        found = custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, RECOMMENDATIONS, name
        )
        if e2e.settled(str((found.get("status") or {}).get("phase") or "Pending")):
            return True
        time.sleep(0.5)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="requests (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=900, help="at most (default %(default)s)")
    parser.add_argument("--workers", type=int, default=8, help="concurrent requests")
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG", ""))
    parser.add_argument(
        "--operator-source",
        type=Path,
        default=e2e.REPO / "operator",
        help="the directory holding the coordinator package to run (this repository's)",
    )
    args = parser.parse_args(argv)
    kubeconfig = Path(args.kubeconfig)
    e2e.local_server(kubeconfig)
    api = e2e.new_api(kubeconfig)
    e2e.ensure_crds(api)
    run = uuid.uuid4().hex[:6]
    scope = f"fuzz-{run}"
    namespace = e2e.create_namespace(api, f"fuzz-{run}", scope=scope)
    logs = e2e.REPO / "build" / "fuzz"
    logs.mkdir(parents=True, exist_ok=True)
    operator = e2e.OperatorProcess(
        kubeconfig=kubeconfig, namespace=namespace, scope=scope,
        log=logs / "operator.log", args=[], source=args.operator_source,
    )  # fmt: skip
    try:
        operator.start()
        sender = Sender(api, namespace)
        started = time.monotonic()
        log(f"fuzzing {namespace}: {args.n} requests, at most {args.seconds:.0f}s")
        sent = fuzzing(sender, args.n, args.seconds, args.workers)
        alive = operator.proc is not None and operator.proc.poll() is None and operator.healthy()
        good = alive and settles(api, namespace)
        result = {
            "sent": sent,
            "seconds": round(time.monotonic() - started, 1),
            **{k: sender.counts[k] for k in ("2xx", "4xx with a message", "bad")},
            "operator_alive": alive,
            "known_good_settled": good,
        }
    finally:
        operator.stop()
        e2e.delete_namespaces(api, [namespace], timeout=e2e.CLEANUP_SECONDS)
    for line in sender.bad:
        print(f"bad: {line}")
    print(json.dumps(result))
    return 0 if result["bad"] == 0 and result["operator_alive"] and good else 1


if __name__ == "__main__":
    sys.exit(main())
