"""Processes on 127.0.0.1 that the tests, the benchmarks and the demo start: a free port,
an HTTP probe, the last lines of a log, `coordinator run` as a user starts it and the
reference agent.

tests/support/processes.py, bench/ and hack/demo.py use this module (pytest has
hack/cluster on its path; the scripts put it there, as they do for localcluster.py), so
that the operator and the agent are started, probed and stopped one way. It is not part
of the operator's package, which ships without development tools.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

import yaml

from coordinator.core import webhook as protocol

T = TypeVar("T")

OPERATOR_SA = ("optiinfra-system", "optiinfra-coordinator")
"""The operator's ServiceAccount in manifests/ (namespace, name)."""
OPERATOR_MANIFESTS = (
    "namespace.yaml",
    "serviceaccount.yaml",
    "operator-rbac.yaml",
    "executor-role.yaml",
    "local-webhooks-role.yaml",
    "../manifests-shards/shard-role.yaml",
)
"""What an operator run outside the cluster is granted: the ServiceAccount's rights of
manifests/, (it serves its webhooks from 127.0.0.1) local-webhooks-role.yaml, and the
shards' Leases (manifests-shards/shard-role.yaml, for the shards' cluster tests)."""


def operator_kubeconfig(*, admin: Path, kubectl: Path | str, manifests: Path, out: Path) -> Path:
    """Write `out`: a kubeconfig that authenticates as the operator's ServiceAccount (a
    token from `kubectl create token`) with exactly the rights manifests/ gives it
    (OPERATOR_MANIFESTS, applied as `admin`), so that the tests, chaos and the benchmarks
    prove the ClusterRole by running the operator under it."""
    env = {**os.environ, "KUBECONFIG": str(admin)}

    def run(*args: str) -> str:
        done = subprocess.run(
            [str(kubectl), *args], check=True, env=env, capture_output=True, text=True
        )
        return done.stdout

    for name in OPERATOR_MANIFESTS:
        run("apply", "-f", str(manifests / name))
    namespace, account = OPERATOR_SA
    token = run("create", "token", account, "-n", namespace, "--duration=24h").strip()
    config = yaml.safe_load(admin.read_text())
    user = f"system:serviceaccount:{namespace}:{account}"
    config["users"] = [{"name": user, "user": {"token": token}}]
    for context in config["contexts"]:
        context["context"]["user"] = user
    out.write_text(yaml.safe_dump(config))
    out.chmod(0o600)
    return out


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, *, timeout: float = 1) -> tuple[int, str]:
    """(status, text) of a GET of `url`; (0, why) when it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def tail(path: Path, lines: int = 25) -> str:
    """The last `lines` lines of a log file ("(no log)" when it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait(probe: Callable[[], T | None], *, what: str, timeout: float, interval: float = 0.1) -> T:
    """Poll `probe` until it returns something truthy, and return that; TimeoutError
    naming `what` (and the last answer) after `timeout`."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


class OperatorProcess:
    """One `coordinator run` process with its log file and its own ports (liveness,
    readiness, metrics); start, kill, terminate, stop."""

    def __init__(
        self,
        *,
        kubeconfig: Path,
        log: Path,
        args: list[str],
        env: Mapping[str, str] | None = None,
        fresh_log: bool = False,
    ) -> None:
        """`args` follow the ports' flags; `env` is added to this process's environment;
        the log is appended to, or written afresh each start with `fresh_log`."""
        self.kubeconfig = kubeconfig
        self.log = log
        self.args = args
        self.env = dict(env or {})
        self.fresh_log = fresh_log
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

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def healthy(self) -> bool:
        return get(f"http://127.0.0.1:{self.health_port}/healthz")[0] == 200

    def readiness(self) -> tuple[int, str]:
        """(status, text) of /readyz; (0, why) when it does not answer."""
        return get(f"http://127.0.0.1:{self.ready_port}/readyz")

    def environment(self) -> dict[str, str]:
        """The COORDINATOR_* variables that give a `coordinator run` typed by hand (no
        flags) this object's ports, so that `healthy` and `readiness` ask it."""
        return {
            "COORDINATOR_LIVENESS": f"http://127.0.0.1:{self.health_port}/healthz",
            "COORDINATOR_READINESS": f"http://127.0.0.1:{self.ready_port}/readyz",
            "COORDINATOR_METRICS_PORT": str(self.metrics_port),
        }

    def start(self, *, timeout: float = 60) -> OperatorProcess:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        return self.start_command(self.command, env=env, timeout=timeout)

    def start_command(
        self,
        command: list[str],
        *,
        env: dict[str, str],
        cwd: Path | None = None,
        timeout: float = 60,
    ) -> OperatorProcess:
        """Start `command` (this operator, however it is spelled) and wait until it is
        healthy and its webhooks are registered; a process that does not get there is
        stopped (RuntimeError, with the log's last lines)."""
        self._out = self.log.open("wb" if self.fresh_log else "ab")
        self.proc = subprocess.Popen(
            command, stdout=self._out, stderr=subprocess.STDOUT, env=env, cwd=cwd
        )

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"the operator exited ({self.log}):\n{self.tail()}")
            return self.healthy() and (
                "--webhooks=off" in self.args  # registered once its webhook server listens
                or self.webhooks_registered()
            )

        try:
            wait(up, what="the operator's health endpoint and webhooks", timeout=timeout)
        except TimeoutError as exc:
            self.stop()  # nobody else holds it yet: it would outlive its caller
            raise RuntimeError(f"{exc} ({self.log}):\n{self.tail()}") from None
        return self

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def webhooks_registered(self) -> bool:
        return "admission webhooks registered" in self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no clean-up, as a node failure would."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        if self._out is not None:
            self._out.close()

    def terminate(self, *, timeout: float = 30) -> float:
        """SIGTERM, and wait up to `timeout` for the exit; the seconds it took."""
        assert self.proc is not None
        began = time.monotonic()
        self.proc.terminate()
        self.proc.wait(timeout=timeout)
        return time.monotonic() - began

    def stop(self) -> None:
        """SIGTERM; a process still there after 30 s writes its stacks into the log
        (SIGUSR1, SIGUSR2) and is killed."""
        if self.alive():
            assert self.proc is not None
            try:
                self.terminate()
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGUSR1)
                self.proc.send_signal(signal.SIGUSR2)
                time.sleep(1)  # the stacks are written by the process, not awaited here
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._out is not None:
            self._out.close()

    def tail(self, lines: int = 40) -> str:
        return tail(self.log, lines)


class AgentProcess:
    """The reference agent (``python -m coordinator.agent``) on 127.0.0.1 with `key`: in
    `directory` its key file (hmac.key, what an endpoint's Secret holds), its record
    (state.json) and its log (agent.log); its read-only endpoints asked with signed GETs."""

    def __init__(self, directory: Path, key: bytes) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.key = key
        self.key_file = directory / "hmac.key"
        self.key_file.write_bytes(key)
        self.log = directory / "agent.log"
        command = [sys.executable, "-m", "coordinator.agent", "--port", str(self.port)]
        command += ["--key-file", str(self.key_file), "--state", str(directory / "state.json")]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        wait(self._healthy, what="the reference agent to listen", timeout=30)

    def _get(self, path: str) -> Any:
        """GET `path`, signed (the agent's read-only endpoints want it; /healthz does not)."""
        signed = protocol.read_headers(self.key, int(time.time()), path)
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
