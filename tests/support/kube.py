"""Talking to the real local control plane: kubectl as a user, reading optiinfra.io
objects back, waiting for a condition with a deadline."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import kubernetes
import localproc
import yaml

from coordinator.api.common import APPROVALS, GROUP, PLANS, RECOMMENDATIONS, VERSION

T = TypeVar("T")

RECS = RECOMMENDATIONS
__all__ = ["APPROVALS", "PLANS", "RECS"]

DEFAULT_TIMEOUT = 30.0


def wait_for(
    probe: Callable[[], T | None],
    *,
    what: str,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.1,
) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` after `timeout`
    (``localproc.wait``, as a failed assertion)."""
    try:
        return localproc.wait(probe, what=what, timeout=timeout, interval=interval)
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None


class Kubectl:
    """The pinned kubectl, run as one of the local users (admin by default)."""

    def __init__(self, *, bin_dir: Path, kubeconfigs: dict[str, Path]) -> None:
        self._binary = str(bin_dir / "kubectl")
        self._kubeconfigs = kubeconfigs

    def __call__(
        self,
        *args: str,
        user: str = "admin",
        stdin: str | None = None,
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(self._kubeconfigs[user])}
        proc = subprocess.run(
            [self._binary, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} (as {user}) failed with {proc.returncode}:\n"
                f"{proc.stderr}{proc.stdout}"
            )
        return proc


def apply(kubectl: Kubectl, namespace: str, *docs: dict[str, Any], user: str = "admin") -> str:
    """`kubectl apply` the documents in `namespace` as `user`; returns what kubectl warned."""
    proc = kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump_all(docs), user=user)
    return proc.stderr


APPROVE = {"spec": {"decision": "Approved"}}


def patch_approval(
    kubectl: Kubectl, namespace: str, name: str, body: dict[str, Any], *, user: str, **kw: Any
) -> Any:
    """`kubectl patch approval` as `user`; returns the completed process (not checked)."""
    return kubectl(
        "patch", "approval", name, "-n", namespace, "--type", "merge",
        "-p", json.dumps(body), user=user, check=False, **kw,
    )  # fmt: skip


def optiinfra(
    kubectl: Kubectl, namespace: str, *args: str, user: str = "approver"
) -> subprocess.CompletedProcess[str]:
    """`kubectl optiinfra ARGS -n NAMESPACE` as `user` (not checked)."""
    return kubectl("optiinfra", *args, "-n", namespace, user=user, check=False)


def replicas(kubectl: Kubectl, namespace: str, name: str) -> int:
    """The replicas a Deployment asks for."""
    out = kubectl("get", "deployment", name, "-n", namespace, "-o", "jsonpath={.spec.replicas}")
    return int(out.stdout)


class Objects:
    """Read optiinfra.io objects of one namespace through the admin client."""

    def __init__(self, api: kubernetes.client.ApiClient, namespace: str) -> None:
        self._custom: Any = kubernetes.client.CustomObjectsApi(api)  # dict bodies
        self.namespace = namespace

    def get(self, plural: str, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self._custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, plural, name
            )
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return found

    def status(self, plural: str, name: str) -> dict[str, Any]:
        obj = self.get(plural, name)
        return (obj or {}).get("status") or {}

    def phase(self, plural: str, name: str) -> str | None:
        phase: str | None = self.status(plural, name).get("phase")
        return phase

    def wait_phase(
        self, plural: str, name: str, phase: str, *, timeout: float = 30
    ) -> dict[str, Any]:
        """Wait until `name` has `phase`; returns the object."""

        def reached() -> dict[str, Any] | None:
            obj = self.get(plural, name)
            return obj if obj and (obj.get("status") or {}).get("phase") == phase else None

        return wait_for(
            reached,
            what=f"{plural}/{name} in {self.namespace} to be {phase} "
            f"(it is {self.phase(plural, name)})",
            timeout=timeout,
        )


def submit(kubectl: Kubectl, namespace: str, *docs: dict[str, Any], user: str = "agent") -> str:
    """What an agent does: apply its recommendations; returns what kubectl warned."""
    return apply(kubectl, namespace, *docs, user=user)
