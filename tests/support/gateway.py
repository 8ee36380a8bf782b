"""`coordinator gateway` started as a user starts it, and callers with bearer tokens."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kubernetes

from tests.support.kube import Kubectl, wait_for
from tests.support.net import free_port


class GatewayProcess:
    def __init__(self, *, kubeconfig: Path, namespace: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._out = log.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "coordinator", "gateway",
                f"--listen=127.0.0.1:{self.port}", f"--namespace={namespace}",
                f"--kubeconfig={kubeconfig}",
            ],
            stdout=self._out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        wait_for(self._up, what="the gateway's /health", timeout=30)

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"the gateway exited:\n{self.log.read_text()}")
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)
        self._out.close()


@contextmanager
def gateway(kubeconfig: Path, namespace: str, log: Path) -> Iterator[GatewayProcess]:
    process = GatewayProcess(kubeconfig=kubeconfig, namespace=namespace, log=log)
    try:
        yield process
    finally:
        process.stop()


ROLES = {"gw-agent": "optiinfra-agent", "gw-approver": "optiinfra-approver"}
ROLES |= {"gw-viewer": "optiinfra-viewer"}


def service_account_tokens(
    api: kubernetes.client.ApiClient, kubectl: Kubectl, namespace: str
) -> dict[str, str]:
    """ServiceAccounts gw-agent, gw-approver and gw-viewer in `namespace`, bound to the
    user roles there; their tokens (what agents and people send as bearer tokens)."""
    core: Any = kubernetes.client.CoreV1Api(api)  # dict bodies
    rbac: Any = kubernetes.client.RbacAuthorizationV1Api(api)
    tokens = {}
    for account, role in ROLES.items():
        core.create_namespaced_service_account(namespace, {"metadata": {"name": account}})
        rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": account},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": role,
                },
                "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
            },
        )
        tokens[account] = kubectl("create", "token", account, "-n", namespace).stdout.strip()
    return tokens


def curl(
    method: str, url: str, *, token: str | None = None, body: str | None = None
) -> tuple[int, Any]:
    """The request as the origin document's validation steps send it, with curl (plus an
    Authorization header); (HTTP status, parsed JSON)."""
    command = ["curl", "-sS", "-X", method, url, "-w", "\n%{http_code}"]
    if token:
        command += ["-H", f"Authorization: Bearer {token}"]
    if body is not None:
        command += ["-H", "Content-Type: application/json", "-d", body]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    text, _, code = proc.stdout.rpartition("\n")
    return int(code), json.loads(text) if text.strip() else None


def request(
    method: str, url: str, *, token: str | None = None, body: Any = None
) -> tuple[int, Any]:
    """The same with urllib (for the many small requests of a test)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return int(response.status), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read() or b"null")
