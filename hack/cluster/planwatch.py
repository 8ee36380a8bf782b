"""What the plans of a namespace went through, for the tests and bench/ that kill and
restart the operator: every version of every plan's steps as the API server stored them
(``PlanWatch``), and the steps whose completed record changed afterwards (``rewritten``:
a step run or recorded twice). tests/cluster/test_process.py and bench/chaos.py use it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import kubernetes

from coordinator.api.common import GROUP, PLANS, VERSION


class PlanWatch(threading.Thread):
    """Every version of every plan in a namespace, as the API server stored them; the
    watch resumes from its last resourceVersion when the API server goes away."""

    def __init__(self, api: kubernetes.client.ApiClient, namespace: str) -> None:
        super().__init__(name="watch-plans", daemon=True)
        self._custom = kubernetes.client.CustomObjectsApi(api)
        self.namespace = namespace
        self.seen: list[tuple[str, str, dict[str, Any]]] = []
        self.latest: dict[str, dict[str, Any]] = {}
        self.stopping = threading.Event()
        self.reconnects = 0
        self._lock = threading.Lock()

    def run(self) -> None:
        version = ""
        while not self.stopping.is_set():
            watch = kubernetes.watch.Watch()
            try:
                for event in watch.stream(
                    self._custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self.namespace,
                    PLANS,
                    resource_version=version,
                    timeout_seconds=5,
                ):
                    obj = event["object"]
                    if event["type"] == "ERROR":
                        version = ""
                        break
                    version = obj["metadata"]["resourceVersion"]
                    name = obj["metadata"]["name"]
                    with self._lock:
                        self.latest[name] = obj
                        for step in (obj.get("status") or {}).get("steps") or ():
                            self.seen.append((name, version, step))
                    if self.stopping.is_set():
                        break
            except kubernetes.client.ApiException as exc:
                if exc.status == 410:
                    version = ""
                self.reconnects += 1
                time.sleep(0.2)
            except Exception:  # the API server is down: try again from where it was
                self.reconnects += 1
                time.sleep(0.2)
            finally:
                watch.stop()

    def running_steps(self) -> int:
        with self._lock:
            return sum(
                1
                for obj in self.latest.values()
                for step in (obj.get("status") or {}).get("steps") or ()
                if step.get("phase") == "Running"
            )

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)


def rewritten(seen: Sequence[tuple[str, str, dict[str, Any]]]) -> list[str]:
    """Steps whose completed record (phase, startedAt, finishedAt) changed afterwards: a
    step run or recorded twice."""
    done: dict[tuple[str, str], dict[str, Any]] = {}
    problems = []
    for plan, _, step in seen:
        key = (plan, step["name"])
        if step["phase"] in ("Succeeded", "Failed") and key not in done:
            done[key] = step
        elif key in done and step["phase"] in ("Succeeded", "Failed", "Running", "Pending"):
            first = done[key]
            if (step.get("startedAt"), step.get("finishedAt"), step["phase"]) != (
                first.get("startedAt"),
                first.get("finishedAt"),
                first["phase"],
            ):
                problems.append(f"{plan}/{step['name']}: {first} then {step}")
    return problems
