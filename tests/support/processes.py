"""Processes the tests start as a user starts them: `coordinator run` (a process, a
kubeconfig, flags) and the reference agent (``python -m coordinator.agent``) on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

from coordinator.core import webhook as protocol
from tests.support.kube import wait_for
from tests.support.net import free_port


class OperatorProcess:
    """One `coordinator run` process with its log file; start, kill, stop."""

    def __init__(self, *, kubeconfig: Path, log: Path, args: list[str]) -> None:
        self.kubeconfig = kubeconfig
        self.log = log
        self.args = args
        self.health_port = free_port()
        self.ready_port = free_port()
        self.metrics_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None

    @property
    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "coordinator",
            "run",
            f"--liveness=http://127.0.0.1:{self.health_port}/healthz",
            f"--readiness=http://127.0.0.1:{self.ready_port}/readyz",
            f"--metrics-port={self.metrics_port}",
            "--allow-loopback-endpoints",  # the reference agents listen on 127.0.0.1
            *self.args,
        ]

    def healthy(self) -> bool:
        url = f"http://127.0.0.1:{self.health_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def readiness(self) -> tuple[int, str]:
        """(status, text) of /readyz; (0, why) when it does not answer."""
        url = f"http://127.0.0.1:{self.ready_port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode()
        except OSError as exc:
            return 0, str(exc)

    def environment(self) -> dict[str, str]:
        """The COORDINATOR_* variables that give a `coordinator run` typed by hand (no
        flags) this object's ports, so that `healthy` and `readiness` ask it."""
        return {
            "COORDINATOR_LIVENESS": f"http://127.0.0.1:{self.health_port}/healthz",
            "COORDINATOR_READINESS": f"http://127.0.0.1:{self.ready_port}/readyz",
            "COORDINATOR_METRICS_PORT": str(self.metrics_port),
        }

    def start(self) -> OperatorProcess:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PYTHONUNBUFFERED": "1"}
        return self.start_command(self.command, env=env)

    def start_command(
        self, command: list[str], *, env: dict[str, str], cwd: Path | None = None
    ) -> OperatorProcess:
        """Start `command` (this operator, however it is spelled) and wait until it is
        healthy and its webhooks are registered."""
        self._out = self.log.open("ab")
        self.proc = subprocess.Popen(
            command, stdout=self._out, stderr=subprocess.STDOUT, env=env, cwd=cwd
        )

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"the operator exited:\n{self.tail()}")
            return self.healthy()

        wait_for(up, what="the operator's health endpoint", timeout=60)
        if "--webhooks=off" not in self.args:  # registered once its webhook server listens
            wait_for(self.webhooks_registered, what="the operator's webhooks", timeout=60)
        return self

    def webhooks_registered(self) -> bool:
        return "admission webhooks registered" in self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no cleanup, as a node failure would."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def terminate(self, *, timeout: float = 30) -> float:
        """SIGTERM, and wait up to `timeout` for the exit; the seconds it took."""
        assert self.proc is not None
        began = time.monotonic()
        self.proc.terminate()
        self.proc.wait(timeout=timeout)
        return time.monotonic() - began

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.terminate()
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGUSR1)  # its stacks into the log, then kill
                self.proc.send_signal(signal.SIGUSR2)
                time.sleep(1)
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._out is not None:
            self._out.close()

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


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
