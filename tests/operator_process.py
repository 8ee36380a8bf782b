"""`coordinator run` started as a user starts it: a process, a kubeconfig, flags."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from tests.support import wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
