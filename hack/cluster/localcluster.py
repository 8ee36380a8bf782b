"""A real Kubernetes control plane on 127.0.0.1, started the way envtest does.

    python hack/cluster/localcluster.py up      # build (cached) and start; safe to repeat
    python hack/cluster/localcluster.py down    # stop exactly what `up` started, clean up
    python hack/cluster/localcluster.py status
    python hack/cluster/localcluster.py restart kube-apiserver   # SIGKILL it, start it again
    python hack/cluster/localcluster.py up --kind   # a kind cluster instead (needs Docker)

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok are built
from their upstream Go modules by build.sh and run as local processes on free
loopback ports. The API server serves TLS, authenticates clients by certificate
(a CA made here), authorises with RBAC and signs service-account tokens. kwok
plays the kubelet of one fake Node, kwok-node-0: pods scheduled there become
Running and Ready (nothing runs), and pods deleted there go away. The state
lives in .cluster/ (or $OPTIINFRA_CLUSTER_DIR): kubeconfigs, certificates, logs,
PIDs.

Kubeconfigs written: kubeconfig (user `admin`, group system:masters) and
kubeconfig-agent / -approver / -viewer for ordinary users with no rights until
something binds them.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import localproc
import pki

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
USERS = ("agent", "approver", "viewer")
READY_TIMEOUT = 120.0
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
# The fake node that kwok manages: no taints, so ordinary pods land there.
KWOK_NODE = "kwok-node-0"
KWOK_SELECTOR = ("kwok.x-k8s.io/node", "fake")
KCM_CONTROLLERS = (
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "clusterrole-aggregation-controller",
)


class ClusterError(RuntimeError):
    pass


@dataclass(frozen=True)
class Cluster:
    """A running control plane, as the tests and tools see it."""

    directory: Path
    server: str
    bin_dir: Path

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    def user_kubeconfig(self, user: str) -> Path:
        return self.directory / f"kubeconfig-{user}"


def cluster_dir() -> Path:
    return Path(os.environ.get("OPTIINFRA_CLUSTER_DIR", REPO / ".cluster")).resolve()


def build() -> Path:
    """Build (or find cached) binaries; returns their directory."""
    return run_build(["bash", str(HERE / "build.sh")], "the control plane")


def run_build(command: list[str], what: str) -> Path:
    """Run a build script of hack/cluster/ (it prints its bin directory last; the go
    output goes to stderr); returns that directory, ClusterError naming `what` if it fails."""
    out = subprocess.run(command, check=False, stdout=subprocess.PIPE, text=True)
    if out.returncode != 0:
        raise ClusterError(f"building {what} failed (see the go output above)")
    return Path(out.stdout.strip().splitlines()[-1])


def answers(url: str) -> bool:
    """Whether `url` answers 200 within 2 s (a readiness probe)."""
    return localproc.get(url, timeout=2)[0] == 200


# The names hack/cluster/prometheus.py calls.
_free_port = localproc.free_port
_tail = localproc.tail


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Go listens
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _ports(command: list[str]) -> list[int]:
    """The loopback ports a component's command line listens on."""
    ports = []
    for arg in command:
        flag, _, value = arg.partition("=")
        if flag == "--secure-port":
            ports.append(int(value))
        elif flag in ("--listen-client-urls", "--listen-peer-urls"):
            ports.extend(int(url.rsplit(":", 1)[1]) for url in value.split(","))
    return ports


def _alive(pid: int, binary: str) -> bool:
    """True if `pid` runs and is really our `binary` (guards against recycled PIDs)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return False
    return cmdline.decode(errors="replace").endswith("/" + binary)


def stop_pid(pid: int, binary: str) -> bool:
    """SIGTERM process `pid` if it is still our `binary` (`_alive`), SIGKILL if it is still
    there 10 s later; whether it was running."""
    if not _alive(pid, binary):
        return False
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        if not _alive(pid, binary):
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return True


def _ready(server: str, ca: Path, cert: Path, key: Path) -> bool:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    try:
        with urllib.request.urlopen(f"{server}/readyz", context=ctx, timeout=3) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _request(
    server: str, pk: Path, method: str, path: str, body: object | None = None
) -> dict[str, object]:
    """One call to the API server as the admin probe (system:masters); the JSON answer."""
    ctx = ssl.create_default_context(cafile=str(pk / "ca.crt"))
    ctx.load_cert_chain(str(pk / "admin-probe.crt"), str(pk / "admin-probe.key"))
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"{server}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
        answer = json.loads(r.read())
    assert isinstance(answer, dict)
    return answer


def _kwok_node() -> dict[str, object]:
    """The Node that kwok plays the kubelet of (its annotation is kwok's selector)."""
    resources = {"cpu": "32", "memory": "256Gi", "pods": "110"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": KWOK_NODE,
            "annotations": {KWOK_SELECTOR[0]: KWOK_SELECTOR[1]},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": KWOK_NODE,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
            },
        },
        "spec": {},
        "status": {"allocatable": resources, "capacity": resources},
    }


def _node_ready(server: str, pk: Path) -> bool:
    try:
        node = _request(server, pk, "GET", f"/api/v1/nodes/{KWOK_NODE}")
    except (OSError, ValueError):
        return False
    status = node.get("status")
    conditions = status.get("conditions", []) if isinstance(status, dict) else []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _etcd_healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
            return bool(r.status == 200) and b'"true"' in r.read()
    except OSError:
        return False


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _kubeconfig(server: str, ca_pem: bytes, user: str, pair: pki.KeyPair) -> str:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "optiinfra-local",
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(pair.cert_pem),
                    "client-key-data": _b64(pair.key_pem),
                },
            }
        ],
        "contexts": [
            {
                "name": f"{user}@optiinfra-local",
                "context": {"cluster": "optiinfra-local", "user": user, "namespace": "default"},
            }
        ],
        "current-context": f"{user}@optiinfra-local",
    }
    return json.dumps(config, indent=2) + "\n"  # JSON is YAML: kubectl reads it as is


def _write_kubeconfigs(d: Path, server: str, ca: pki.KeyPair) -> None:
    admin = pki.issue(ca, common_name="admin", organizations=("system:masters",))
    (d / "kubeconfig").write_text(_kubeconfig(server, ca.cert_pem, "admin", admin))
    for user in USERS:
        pair = pki.issue(ca, common_name=user)
        (d / f"kubeconfig-{user}").write_text(_kubeconfig(server, ca.cert_pem, user, pair))
    for path in d.glob("kubeconfig*"):
        path.chmod(0o600)


def mint_user(cluster: Cluster, user: str, groups: tuple[str, ...] = ()) -> Path:
    """A kubeconfig for `user` in `groups` (the certificate's organisations), signed by the
    local control plane's CA: the API server authenticates them with those groups."""
    ca = pki.load(cluster.directory / "pki", "ca")
    pair = pki.issue(ca, common_name=user, organizations=groups)
    path = cluster.directory / f"kubeconfig-{user}"
    path.write_text(_kubeconfig(cluster.server, ca.cert_pem, user, pair))
    path.chmod(0o600)
    return path


def read_state(d: Path) -> dict[str, object] | None:
    """The state.json an `up` wrote in `d`; None when there is none (or it is unreadable)."""
    try:
        data = json.loads((d / "state.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def running() -> Cluster | None:
    """The control plane started from this directory, if it is up and ready."""
    d = cluster_dir()
    state = read_state(d)
    if state is None or state.get("mode") != "local":
        return _kind_cluster(d, state)
    pids = state.get("pids", {})
    assert isinstance(pids, dict)
    if not all(_alive(int(pids.get(c, 0)), c) for c in COMPONENTS):
        return None
    server = str(state["server"])
    pk = d / "pki"
    if not _ready(server, pk / "ca.crt", pk / "admin-probe.crt", pk / "admin-probe.key"):
        return None
    return Cluster(d, server, Path(str(state["bin_dir"])))


def _kind_cluster(d: Path, state: dict[str, object] | None) -> Cluster | None:
    if state is None or state.get("mode") != "kind":
        return None
    return Cluster(d, str(state["server"]), Path(str(state["bin_dir"])))


def _spawn(
    binary: Path, args: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    return _spawn_command([str(binary), *args], log, env)


def _spawn_command(
    command: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # outlives `make cluster`; stopped by `down`
        )


def _component_kubeconfig(d: Path, server: str, ca: pki.KeyPair, user: str) -> Path:
    """A kubeconfig for a control-plane component: a client certificate in system:masters."""
    path = d / f"kubeconfig-{user.removeprefix('system:')}"
    pair = pki.issue(ca, common_name=user, organizations=("system:masters",))
    path.write_text(_kubeconfig(server, ca.cert_pem, user, pair))
    path.chmod(0o600)
    return path


def up() -> Cluster:
    """Start the control plane, or return the one already running. Idempotent."""
    existing = running()
    if existing is not None:
        return existing
    d = cluster_dir()
    if d.exists():
        down(quiet=True)
    bin_dir = build()
    started = time.monotonic()
    (d / "logs").mkdir(parents=True)
    pk = d / "pki"
    pk.mkdir()

    ca = pki.make_ca()
    pki.write(ca, pk, "ca")
    serving = pki.issue(
        ca,
        common_name="kube-apiserver",
        dns_names=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
        ip_addresses=("127.0.0.1", "10.0.0.1"),
        server=True,
    )
    pki.write(serving, pk, "apiserver")
    pki.write(
        pki.issue(ca, common_name="admin", organizations=("system:masters",)), pk, "admin-probe"
    )
    sa = pki.service_account_keys()
    pki.write(sa, pk, "sa")

    etcd_port, etcd_peer, api_port, kcm_port, sched_port = (localproc.free_port() for _ in range(5))
    server = f"https://127.0.0.1:{api_port}"
    logs = d / "logs"
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def fail(component: str, why: str) -> ClusterError:
        for proc in procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        log = logs / f"{component}.log"
        return ClusterError(f"{component} {why}. Last lines of {log}:\n{localproc.tail(log)}")

    procs["etcd"] = _spawn(
        bin_dir / "etcd",
        [
            f"--data-dir={d / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-cluster=default=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync",  # a throwaway test store: durability is not the point
            "--log-level=warn",
        ],
        logs / "etcd.log",
    )
    procs["kube-apiserver"] = _spawn(
        bin_dir / "kube-apiserver",
        [
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={api_port}",
            f"--cert-dir={pk}",
            f"--tls-cert-file={pk / 'apiserver.crt'}",
            f"--tls-private-key-file={pk / 'apiserver.key'}",
            f"--client-ca-file={pk / 'ca.crt'}",
            "--authorization-mode=RBAC",
            f"--service-account-key-file={pk / 'sa.crt'}",
            f"--service-account-signing-key-file={pk / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            # No node-lifecycle controller runs to lift the not-ready taint this plugin
            # puts on a new Node; kwok's node is Ready within a second anyway.
            "--disable-admission-plugins=TaintNodesByCondition",
            "--v=1",
        ],
        logs / "kube-apiserver.log",
    )
    kcm_kubeconfig = _component_kubeconfig(d, server, ca, "system:kube-controller-manager")
    sched_kubeconfig = _component_kubeconfig(d, server, ca, "system:kube-scheduler")
    kwok_kubeconfig = _component_kubeconfig(d, server, ca, "kwok")
    deadline = time.monotonic() + READY_TIMEOUT
    while not _ready(server, pk / "ca.crt", pk / "admin-probe.crt", pk / "admin-probe.key"):
        for name in ("etcd", "kube-apiserver"):
            if procs[name].poll() is not None:
                raise fail(name, f"exited with status {procs[name].returncode}")
        if time.monotonic() > deadline:
            raise fail("kube-apiserver", f"was not ready after {READY_TIMEOUT:.0f}s")
        time.sleep(0.25)
    ready_in = time.monotonic() - started
    procs["kube-controller-manager"] = _spawn(
        bin_dir / "kube-controller-manager",
        [
            f"--kubeconfig={kcm_kubeconfig}",
            f"--authentication-kubeconfig={kcm_kubeconfig}",
            f"--authorization-kubeconfig={kcm_kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={kcm_port}",
            f"--cert-dir={pk / 'kcm'}",
            f"--controllers={','.join(KCM_CONTROLLERS)}",
            f"--service-account-private-key-file={pk / 'sa.key'}",
            f"--root-ca-file={pk / 'ca.crt'}",
            "--leader-elect=false",
            "--authentication-skip-lookup=true",
            "--v=1",
        ],
        logs / "kube-controller-manager.log",
    )
    procs["kube-scheduler"] = _spawn(
        bin_dir / "kube-scheduler",
        [
            f"--kubeconfig={sched_kubeconfig}",
            f"--authentication-kubeconfig={sched_kubeconfig}",
            f"--authorization-kubeconfig={sched_kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={sched_port}",
            f"--cert-dir={pk / 'scheduler'}",
            "--leader-elect=false",
            "--authentication-skip-lookup=true",
            "--v=1",
        ],
        logs / "kube-scheduler.log",
    )
    kwok_home = d / "kwok"  # kwok also reads ~/.kwok/kwok.yaml: keep the user's out
    kwok_home.mkdir()
    procs["kwok"] = _spawn(
        bin_dir / "kwok",
        [
            f"--kubeconfig={kwok_kubeconfig}",
            f"--config={bin_dir.parent / 'kwok-stages.yaml'}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={'='.join(KWOK_SELECTOR)}",
            "--node-lease-duration-seconds=40",
            "--cidr=10.244.0.0/16",
        ],
        logs / "kwok.log",
        env={**os.environ, "HOME": str(kwok_home)},
    )
    try:
        _request(server, pk, "POST", "/api/v1/nodes", _kwok_node())
    except (OSError, ValueError) as exc:
        raise fail("kube-apiserver", f"did not create node {KWOK_NODE} ({exc})") from exc
    while not _node_ready(server, pk):
        for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
            if procs[name].poll() is not None:
                raise fail(name, f"exited with status {procs[name].returncode}")
        if time.monotonic() > deadline:
            raise fail("kwok", f"had not made node {KWOK_NODE} Ready after {READY_TIMEOUT:.0f}s")
        time.sleep(0.1)
    for name in ("kube-controller-manager", "kube-scheduler"):
        if procs[name].poll() is not None:
            raise fail(name, "exited at start")
    _write_kubeconfigs(d, server, ca)
    state = {
        "mode": "local",
        "server": server,
        "bin_dir": str(bin_dir),
        "pids": {name: proc.pid for name, proc in procs.items()},
        "ready_in_seconds": round(ready_in, 1),
        "commands": {name: [str(a) for a in proc.args] for name, proc in procs.items()},
        "started_in_seconds": round(time.monotonic() - started, 1),
    }
    (d / "state.json").write_text(json.dumps(state, indent=2) + "\n")
    return Cluster(d, server, bin_dir)


def restart(component: str, *, down_for: float = 0.0) -> dict[str, float]:
    """SIGKILL one component of the running control plane (a crash, no shutdown) and start
    it again with the same command line, after `down_for` seconds; the state file gets the
    new PID. Returns seconds from the kill to the restart and to a ready API server."""
    if component not in COMPONENTS:
        raise ClusterError(f"unknown component {component} (known: {', '.join(COMPONENTS)})")
    d = cluster_dir()
    state = read_state(d)
    if state is None or state.get("mode") != "local":
        raise ClusterError(f"no local control plane in {d}")
    pids = state.get("pids", {})
    commands = state.get("commands", {})
    assert isinstance(pids, dict)
    assert isinstance(commands, dict)
    pid = int(pids.get(component, 0))
    command = commands.get(component)
    if command is None and _alive(pid, component):  # a state file from before "commands"
        raw = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        command = [part.decode() for part in raw]
    if not command:
        raise ClusterError(f"{component} is not running and its command line is not recorded")
    killed = time.monotonic()
    if _alive(pid, component):
        os.kill(pid, signal.SIGKILL)
    # Gone, and its ports free again: the new process binds the same ones.
    for _ in range(200):
        if not _alive(pid, component) and all(map(_port_free, _ports(command))):
            break
        time.sleep(0.05)
    time.sleep(down_for)
    proc = _spawn_command(list(command), d / "logs" / f"{component}.log")
    restarted = time.monotonic()
    pids[component] = proc.pid
    state["pids"] = pids
    commands[component] = list(command)
    state["commands"] = commands
    (d / "state.json").write_text(json.dumps(state, indent=2) + "\n")
    server = str(state["server"])
    pk = d / "pki"
    deadline = restarted + READY_TIMEOUT
    # The API server may still answer ready from before it noticed etcd was gone: wait for
    # etcd itself first.
    etcd = next((a.split("=", 1)[1] for a in command if a.startswith("--listen-client-urls=")), "")
    while component == "etcd" and not _etcd_healthy(etcd):
        if proc.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    while not _ready(server, pk / "ca.crt", pk / "admin-probe.crt", pk / "admin-probe.key"):
        if proc.poll() is not None:
            log = d / "logs" / f"{component}.log"
            raise ClusterError(
                f"{component} exited with status {proc.returncode} after its restart. "
                f"Last lines of {log}:\n{localproc.tail(log)}"
            )
        if time.monotonic() > deadline:
            raise ClusterError(
                f"the API server was not ready {READY_TIMEOUT:.0f}s after the restart"
            )
        time.sleep(0.05)
    return {
        "restarted_s": round(restarted - killed, 3),
        "ready_s": round(time.monotonic() - killed, 3),
    }


def up_kind(name: str = "optiinfra") -> Cluster:
    """A kind cluster (needs a Docker engine) with the same kubeconfig files."""
    d = cluster_dir()
    d.mkdir(parents=True, exist_ok=True)
    bin_dir = build()
    node = f"{name}-control-plane"
    clusters = subprocess.run(
        ["kind", "get", "clusters"], check=False, capture_output=True, text=True
    )
    if name not in clusters.stdout.split():
        subprocess.run(["kind", "create", "cluster", "--name", name], check=True)
    raw = subprocess.run(
        ["kind", "get", "kubeconfig", "--name", name], check=True, capture_output=True, text=True
    ).stdout
    server = next(line.split()[-1] for line in raw.splitlines() if "server:" in line)
    ca = pki.KeyPair(
        *(
            subprocess.run(
                ["docker", "exec", node, "cat", f"/etc/kubernetes/pki/ca.{ext}"],
                check=True,
                capture_output=True,
            ).stdout
            for ext in ("crt", "key")
        )
    )
    _write_kubeconfigs(d, server, ca)
    (d / "state.json").write_text(
        json.dumps({"mode": "kind", "server": server, "bin_dir": str(bin_dir), "name": name})
    )
    return Cluster(d, server, bin_dir)


def down(*, quiet: bool = False) -> None:
    """Stop exactly the processes `up` started (by PID) and remove the state directory."""
    d = cluster_dir()
    if (d / "flux").exists():  # Flux (flux.py) runs against this control plane: it goes first
        import flux  # noqa: PLC0415 - flux imports this module

        flux.down(quiet=quiet)
    state = read_state(d) or {}
    if state.get("mode") == "kind":
        subprocess.run(["kind", "delete", "cluster", "--name", str(state["name"])], check=False)
    pids = state.get("pids", {})
    assert isinstance(pids, dict)
    for component in reversed(COMPONENTS):
        pid = int(pids.get(component, 0))
        if pid and stop_pid(pid, component) and not quiet:
            print(f"stopped {component} (pid {pid})")
    shutil.rmtree(d, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="localcluster", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("up", "down", "status", "build", "restart"))
    parser.add_argument(
        "component", nargs="?", choices=COMPONENTS, help="restart: the component to SIGKILL"
    )
    parser.add_argument("--kind", action="store_true", help="create a kind cluster instead")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            print(build())
        elif args.command == "down":
            down()
        elif args.command == "restart":
            if args.component is None:
                parser.error(f"restart needs a component ({', '.join(COMPONENTS)})")
            print(json.dumps(restart(args.component)))
        elif args.command == "status":
            cluster = running()
            print(f"running at {cluster.server}" if cluster else "not running")
            return 0 if cluster else 1
        else:
            was_running = running() is not None
            cluster = up_kind() if args.kind else up()
            state = read_state(cluster.directory) or {}
            how = (
                "already running"
                if was_running
                else f"started in {state.get('started_in_seconds', '?')}s"
                f" (/readyz after {state.get('ready_in_seconds', '?')}s)"
            )
            print(f"control plane {how} at {cluster.server}", file=sys.stderr)
            print(f"export KUBECONFIG={cluster.kubeconfig}")
            # The pinned kubectl first; then, when run from a virtual environment (the
            # Makefile's .venv), its commands: coordinator and kubectl's plugin.
            venv = [str(Path(sys.executable).parent)] if sys.prefix != sys.base_prefix else []
            print(f'export PATH="{os.pathsep.join([str(cluster.bin_dir), *venv])}:$PATH"')
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
