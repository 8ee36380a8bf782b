"""A real Prometheus beside the local control plane, on demand: the server built from its
Go module (build-prometheus.sh, cached like the control plane) and run as a local process
on 127.0.0.1, scraping a small metrics fixture every second (`MetricsFixture`: an HTTP
/metrics on 127.0.0.1 whose gauges the tests set). The workload metrics are synthetic;
Prometheus, its storage, its scrape and PromQL are real. Not started by `make cluster`;
the verification tests (the `prometheus` fixture of tests/cluster/) start their own.

    python hack/cluster/prometheus.py up [--target HOST:PORT ...]   # build (cached), start
    python hack/cluster/prometheus.py down    # stop exactly what `up` started (by PID)
    python hack/cluster/prometheus.py build   # build only; prints the bin directory

State (PID, URL, configuration, storage, log) lives in .cluster/prometheus/ for the
command line, in a directory of the caller's for `start`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import localcluster

HERE = Path(__file__).resolve().parent
BINARY = "prometheus"
READY_TIMEOUT = 60.0
SCRAPE_INTERVAL = "1s"


@dataclass(frozen=True)
class Prometheus:
    """A Prometheus process started by `start`: its base URL, PID and directory."""

    url: str
    pid: int
    directory: Path

    def alive(self) -> bool:
        return localcluster._alive(self.pid, BINARY)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s: this PID only, if it is still our binary."""
        if not self.alive():
            return
        os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


class MetricsFixture:
    """/metrics on 127.0.0.1 (a thread of this process): the gauges `set` wrote, in the
    text exposition format. `target` is what Prometheus scrapes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        fixture = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = fixture.exposition().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._gauges[(name, tuple(sorted(labels.items())))] = value

    def remove(self, name: str, **labels: str) -> None:
        with self._lock:
            self._gauges.pop((name, tuple(sorted(labels.items()))), None)

    def exposition(self) -> str:
        with self._lock:
            gauges = sorted(self._gauges.items())
        lines: list[str] = []
        for name in dict.fromkeys(n for (n, _), _ in gauges):
            lines.append(f"# TYPE {name} gauge")
            for (n, labels), value in gauges:
                if n == name:
                    inner = ",".join(f'{k}="{v}"' for k, v in labels)
                    lines.append(f"{name}{{{inner}}} {value!r}" if inner else f"{name} {value!r}")
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def build() -> Path:
    """Build (or find cached) the Prometheus server, niced; returns its directory."""
    command = ["nice", "-n", "10", "bash", str(HERE / "build-prometheus.sh")]
    return localcluster.run_build(command, "Prometheus")


def config(targets: list[str], *, interval: str = SCRAPE_INTERVAL) -> str:
    """The configuration: one static scrape job of `targets` every `interval` (JSON is
    YAML)."""
    job = {"job_name": "fixture", "static_configs": [{"targets": targets}]}
    return json.dumps(
        {
            "global": {"scrape_interval": interval, "scrape_timeout": interval},
            "scrape_configs": [job] if targets else [],
        },
        indent=2,
    )


def start(directory: Path, targets: list[str], *, interval: str = SCRAPE_INTERVAL) -> Prometheus:
    """Start Prometheus on a free port of 127.0.0.1 with its storage in `directory`,
    scraping `targets`; returns once /-/ready answers (ClusterError after
    ``READY_TIMEOUT``, the process killed, with its log's last lines)."""
    bin_dir = build()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "prometheus.yml").write_text(config(targets, interval=interval))
    port = localcluster._free_port()
    url = f"http://127.0.0.1:{port}"
    log = directory / "prometheus.log"
    proc = localcluster._spawn(
        bin_dir / BINARY,
        [
            f"--config.file={directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        log,
    )
    deadline = time.monotonic() + READY_TIMEOUT
    while not localcluster.answers(f"{url}/-/ready"):
        if proc.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            why = f"exited with {proc.returncode}" if proc.poll() is not None else "hung"
            raise localcluster.ClusterError(
                f"prometheus {why} before it was ready. Last lines of {log}:\n"
                f"{localcluster._tail(log)}"
            )
        time.sleep(0.2)
    return Prometheus(url=url, pid=proc.pid, directory=directory)


@contextlib.contextmanager
def serving(directory: Path) -> Iterator[tuple[Prometheus, MetricsFixture]]:
    """A metrics fixture and a Prometheus scraping it (storage in `directory`); both
    stopped on leaving (Prometheus by its PID)."""
    metrics = MetricsFixture()
    try:
        started = start(directory, [metrics.target])
        try:
            yield started, metrics
        finally:
            started.stop()
    finally:
        metrics.close()


def prometheus_dir() -> Path:
    return localcluster.cluster_dir() / "prometheus"


def running() -> Prometheus | None:
    """The Prometheus `up` started, if it runs and is ready."""
    try:
        state = json.loads((prometheus_dir() / "state.json").read_text())
    except (OSError, ValueError):
        return None
    found = Prometheus(url=str(state["url"]), pid=int(state["pid"]), directory=prometheus_dir())
    return found if found.alive() and localcluster.answers(f"{found.url}/-/ready") else None


def up(targets: list[str]) -> Prometheus:
    """Start (or find running) the command line's Prometheus in .cluster/prometheus/."""
    found = running()
    if found is not None:
        return found
    down(quiet=True)
    started = start(prometheus_dir(), targets)
    state = {"url": started.url, "pid": started.pid, "targets": targets}
    (prometheus_dir() / "state.json").write_text(json.dumps(state, indent=2) + "\n")
    return started


def down(*, quiet: bool = False) -> None:
    """Stop exactly the process `up` started (by PID) and remove .cluster/prometheus/."""
    try:
        state = json.loads((prometheus_dir() / "state.json").read_text())
    except (OSError, ValueError):
        state = None
    if state is not None:
        found = Prometheus(url=str(state["url"]), pid=int(state["pid"]), directory=prometheus_dir())
        if found.alive():
            found.stop()
            if not quiet:
                print(f"stopped prometheus (pid {found.pid})")
    shutil.rmtree(prometheus_dir(), ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="prometheus", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("up", "down", "build"))
    parser.add_argument("--target", action="append", default=[], help="up: HOST:PORT to scrape")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            print(build())
        elif args.command == "up":
            print(up(args.target).url)
        else:
            down()
    except localcluster.ClusterError as exc:
        sys.exit(f"error: {exc}")  # on stderr, status 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
