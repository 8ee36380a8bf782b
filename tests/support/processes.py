"""Processes the tests start as a user starts them: `coordinator run` (a process, a
kubeconfig, flags: ``OperatorProcess``, shared with bench/ in hack/cluster/localproc.py)
and the reference agent (``python -m coordinator.agent``) on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from localproc import OperatorProcess, free_port

from coordinator.core import webhook as protocol
from tests.support.kube import wait_for

__all__ = ["KEY", "AgentProcess", "OperatorProcess"]


KEY = b"cluster-test-hmac-key"
"""The HMAC key the tests' agents verify with (and the Secrets of their endpoints hold)."""


class AgentProcess:
    """The reference agent on 127.0.0.1, its key in a file, its record in a state file."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        key_file = directory / "hmac.key"
        key_file.write_bytes(KEY)
        self.log = directory / "agent.log"
        command = [sys.executable, "-m", "coordinator.agent", "--port", str(self.port)]
        command += ["--key-file", str(key_file), "--state", str(directory / "state.json")]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        wait_for(self._healthy, what="the reference agent to listen", timeout=30)

    def _get(self, path: str) -> Any:
        """GET `path`, signed (the agent's read-only endpoints want it; /healthz does not)."""
        signed = protocol.read_headers(KEY, int(time.time()), path)
        request = urllib.request.Request(self.url.rstrip("/") + path, headers=signed)
        with urllib.request.urlopen(request, timeout=2) as response:
            return json.loads(response.read()) if path != "/healthz" else response.status

    def _healthy(self) -> bool:
        try:
            return bool(self._get("/healthz") == 200)
        except OSError:
            return False

    def applied(self) -> dict[str, int]:
        found: dict[str, int] = self._get("/applied")
        return found

    def requests(self) -> dict[str, int]:
        found: dict[str, int] = self._get("/requests")
        return found

    def submitters(self) -> dict[str, Any]:
        """On whose behalf each change was applied (the request body's submitter)."""
        found: dict[str, Any] = self._get("/submitters")
        return found

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
