"""Flux on the local control plane, on demand: source-controller and kustomize-controller
built from their Go modules (build-flux.sh, cached like the control plane) and run as
local processes against the local API server, fed by a Git server on 127.0.0.1
(gitserver.py: git's own http-backend). Not started by `make cluster`; the GitOps tests
and `make gitops-demo` start it.

    python hack/cluster/flux.py up      # build (cached) and start; safe to repeat
    python hack/cluster/flux.py down    # stop exactly what `up` started
    python hack/cluster/flux.py repo NAME   # a bare repository; prints its clone URL

The controllers authenticate with client certificates of the local CA (users
flux-source-controller and flux-kustomize-controller, group system:masters: what Flux's
own install grants them, cluster-admin). Their CRDs come from the pinned modules. State
(PIDs, ports, the bare repositories, the artifact storage) lives in .cluster/flux/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import localcluster
import localproc

HERE = Path(__file__).resolve().parent
NAMESPACE = "flux-system"
"""Flux's own namespace (RUNTIME_NAMESPACE: its events and leases)."""
CONTROLLERS = ("source-controller", "kustomize-controller")
GITSERVER = "gitserver"
READY_TIMEOUT = 120.0


@dataclass(frozen=True)
class Flux:
    """Flux and its Git server, running against a local control plane."""

    directory: Path
    git_url: str
    bin_dir: Path

    @property
    def git_root(self) -> Path:
        return self.directory / "git"

    def repository(self, name: str) -> tuple[Path, str]:
        """A bare repository NAME.git (created if new, default branch main): its path on
        disk (commit and push to it) and the URL Flux clones it from."""
        path = self.git_root / f"{name}.git"
        if not path.exists():
            subprocess.run(
                ["git", "init", "--quiet", "--bare", "--initial-branch=main", str(path)],
                check=True,
            )
        return path, f"{self.git_url}/{name}.git"


def flux_dir() -> Path:
    return localcluster.cluster_dir() / "flux"


def build() -> Path:
    """Build (or find cached) the Flux controllers, niced; returns their directory."""
    return localcluster.run_build(["nice", "-n", "10", "bash", str(HERE / "build-flux.sh")], "Flux")


def _state() -> dict[str, object] | None:
    return localcluster.read_state(flux_dir())


def _binary(component: str) -> str:
    return Path(sys.executable).name if component == GITSERVER else component


def running() -> Flux | None:
    """Flux started from this cluster directory, if all of it is up and ready."""
    state = _state()
    if state is None:
        return None
    pids = state["pids"]
    probes = state["probes"]
    assert isinstance(pids, dict)
    assert isinstance(probes, dict)
    if not all(localcluster._alive(int(pid), _binary(c)) for c, pid in pids.items()):
        return None
    if not all(localcluster.answers(str(url)) for url in probes.values()):
        return None
    return Flux(flux_dir(), str(state["git_url"]), Path(str(state["bin_dir"])))


def _kubectl(cluster: localcluster.Cluster, *args: str) -> None:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    subprocess.run(
        [str(cluster.bin_dir / "kubectl"), *args], check=True, env=env, capture_output=True
    )


def up(cluster: localcluster.Cluster) -> Flux:
    """Start Flux and the Git server against `cluster`, or return them running. Idempotent."""
    existing = running()
    if existing is not None:
        return existing
    down(quiet=True)
    bin_dir = build()
    started = time.monotonic()
    d = flux_dir()
    (d / "logs").mkdir(parents=True)
    (d / "git").mkdir()
    (d / "storage").mkdir()
    _kubectl(cluster, "apply", "--server-side", "-f", str(bin_dir.parent / "crds"))
    _kubectl(
        cluster, "wait", "--for=condition=Established", "--timeout=60s",
        "-f", str(bin_dir.parent / "crds"),
    )  # fmt: skip
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    subprocess.run(
        [str(cluster.bin_dir / "kubectl"), "apply", "-f", "-"],
        input=json.dumps(namespace),
        text=True,
        check=True,
        capture_output=True,
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
    )
    git_port, storage_port = localproc.free_port(), localproc.free_port()
    git_url = f"http://127.0.0.1:{git_port}"
    commands: dict[str, list[str]] = {
        GITSERVER: [
            sys.executable, str(HERE / "gitserver.py"),
            f"--root={d / 'git'}", f"--port={git_port}",
        ],
    }  # fmt: skip
    # The Git server's probe: the refs of a repository of its own.
    Flux(d, git_url, bin_dir).repository("health")
    probes = {GITSERVER: f"{git_url}/health.git/info/refs"}
    for controller in CONTROLLERS:
        health = localproc.free_port()
        args = [
            str(bin_dir / controller),
            f"--metrics-addr=127.0.0.1:{localproc.free_port()}",
            f"--health-addr=127.0.0.1:{health}",
            "--events-addr=",
            "--log-level=info",
        ]
        if controller == "source-controller":
            args += [
                f"--storage-path={d / 'storage'}",
                f"--storage-addr=127.0.0.1:{storage_port}",
                f"--storage-adv-addr=127.0.0.1:{storage_port}",
            ]
        commands[controller] = args
        probes[controller] = f"http://127.0.0.1:{health}/readyz"
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for name, command in commands.items():
        env = dict(os.environ)
        if name != GITSERVER:
            user = f"flux-{name}"
            env["KUBECONFIG"] = str(localcluster.mint_user(cluster, user, ("system:masters",)))
            env["RUNTIME_NAMESPACE"] = NAMESPACE
        procs[name] = localcluster._spawn_command(command, d / "logs" / f"{name}.log", env)
    deadline = time.monotonic() + READY_TIMEOUT
    for name, url in probes.items():
        while not localcluster.answers(url):
            if procs[name].poll() is not None or time.monotonic() > deadline:
                for proc in procs.values():
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                log = d / "logs" / f"{name}.log"
                why = f"exited with {procs[name].returncode}" if procs[name].poll() else "hung"
                raise localcluster.ClusterError(
                    f"{name} {why} before it was ready. Last lines of {log}:\n{localproc.tail(log)}"
                )
            time.sleep(0.2)
    state = {
        "git_url": git_url,
        "bin_dir": str(bin_dir),
        "pids": {name: proc.pid for name, proc in procs.items()},
        "probes": probes,
        "started_in_seconds": round(time.monotonic() - started, 1),
    }
    (d / "state.json").write_text(json.dumps(state, indent=2) + "\n")
    return Flux(d, git_url, bin_dir)


def down(*, quiet: bool = False) -> None:
    """Stop exactly the processes `up` started (by PID) and remove .cluster/flux/."""
    state = _state() or {}
    pids = state.get("pids", {})
    assert isinstance(pids, dict)
    for name, pid in pids.items():
        if localcluster.stop_pid(int(pid), _binary(name)) and not quiet:
            print(f"stopped {name} (pid {pid})")
    shutil.rmtree(flux_dir(), ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flux", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("up", "down", "build", "repo"))
    parser.add_argument("name", nargs="?", help="repo: the repository's name")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            print(build())
        elif args.command == "down":
            down()
        else:
            cluster = localcluster.running()
            if cluster is None:
                raise localcluster.ClusterError("no local control plane: run `make cluster`")
            flux = up(cluster)
            if args.command == "repo":
                if not args.name:
                    parser.error("repo needs a NAME")
                path, url = flux.repository(args.name)
                print(f"{path} {url}")
            else:
                state = _state() or {}
                print(
                    f"flux running (started in {state.get('started_in_seconds', '?')}s), "
                    f"git server at {flux.git_url}",
                    file=sys.stderr,
                )
    except localcluster.ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
