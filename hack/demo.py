"""`make demo`: the product's story on the local control plane, narrated with kubectl.

Runs with KUBECONFIG pointing at the cluster and the pinned kubectl first on PATH (the
Makefile sets both). Starts the operator for the demo namespace, applies examples/ in
order, approves and rejects with kubectl patch, shows what happened, stops the operator.
For example 12 it starts a real Prometheus (built on demand, hack/cluster/prometheus.py)
scraping the example's synthetic latencies (hack/cluster/examplemetrics.py), and stops it
after. The cluster stays up afterwards so you can look around.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import kubernetes
import yaml

from coordinator.api.common import GROUP, RECOMMENDATIONS

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "hack" / "cluster"))
import examplemetrics  # noqa: E402
import localproc  # noqa: E402
import prometheus as localprometheus  # noqa: E402

NAMESPACE = "optiinfra-demo"
APPROVER = "kubectl --kubeconfig .cluster/kubeconfig-approver"
"""Whoever submitted a recommendation cannot decide it: the approver is another user."""
BOLD, RESET = ("\033[1m", "\033[0m") if sys.stdout.isatty() else ("", "")


def say(text: str) -> None:
    print(f"\n{BOLD}== {text}{RESET}", flush=True)


def run(command: str, *, show: bool = True, check: bool = True) -> str:
    if show:
        print(f"$ {command}", flush=True)
    proc = subprocess.run(
        shlex.split(command), check=False, cwd=REPO, capture_output=True, text=True
    )
    out = (proc.stdout + proc.stderr).rstrip()
    if show and out:
        print(out, flush=True)
    if check and proc.returncode != 0:
        raise SystemExit(f"demo failed at: {command}\n{out}")
    return out


def wait_phase(kind: str, name: str, phase: str) -> None:
    run(
        f"kubectl wait -n {NAMESPACE} {kind}/{name} --for=jsonpath={{.status.phase}}={phase} "
        "--timeout=60s",
        show=False,
    )


def wait_discovered(resource: str, timeout: float = 30.0) -> None:
    """Established is not yet served: the API server's discovery (which `kubectl explain`
    reads) follows a new CRD a moment later."""
    deadline = time.monotonic() + timeout
    while True:
        names = run("kubectl api-resources --cached=false -o name", show=False, check=False)
        if resource in names.split() or time.monotonic() > deadline:
            return
        time.sleep(0.2)


def start_operator(log: Path) -> localproc.OperatorProcess:
    operator = localproc.OperatorProcess(
        kubeconfig=Path(os.environ["KUBECONFIG"]),
        log=log,
        args=[f"--namespace={NAMESPACE}"],
        fresh_log=True,
    )
    print(f"$ coordinator run --namespace={NAMESPACE} ...   (log: {log.relative_to(REPO)})")
    try:  # healthy, and the API server sends it the admission reviews
        return operator.start()
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None


AGENTS = tuple(
    sorted(
        {
            doc["spec"]["agentId"]
            for path in sorted((REPO / "examples").glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text())
            if doc and doc.get("kind") == "Recommendation"
        }
    )
)
"""The agents of examples/: their default plans are carried out by them, through their
AgentEndpoints (the reference agent, coordinator.agent, plays all of them here)."""


def start_agent(directory: Path) -> localproc.AgentProcess:
    """The reference agent on a free port of 127.0.0.1, with a fresh HMAC key."""
    print(f"$ python -m coordinator.agent ...   (log: {directory.relative_to(REPO)}/agent.log)")
    try:
        return localproc.AgentProcess(directory, os.urandom(32).hex().encode())
    except TimeoutError as exc:
        raise SystemExit(f"the reference agent did not start: {exc}") from None


def register_agents(url: str, key: Path) -> None:
    """What an admin does: the HMAC key in a Secret, one AgentEndpoint per agent."""
    run(f"kubectl -n {NAMESPACE} create secret generic agent-hmac --from-file=hmac={key}")
    endpoints = "\n---\n".join(
        f"""apiVersion: optiinfra.io/v1alpha1
kind: AgentEndpoint
metadata:
  name: {agent}
spec:
  url: {url}
  secretRef: {{name: agent-hmac, key: hmac}}
  timeoutSeconds: 10
  submitters: [{{user: admin}}]   # the demo applies the agents' examples as the admin"""
        for agent in AGENTS
    )
    path = REPO / ".cluster" / "demo-agents.yaml"
    path.write_text(endpoints + "\n")
    run(f"kubectl -n {NAMESPACE} apply -f {path.relative_to(REPO)}", show=False)
    run(f"kubectl -n {NAMESPACE} get agentendpoints")


def main() -> int:
    started = time.monotonic()
    # `coordinator` and kubectl's plugin kubectl-optiinfra are the ones installed beside
    # this Python (first: not an older install elsewhere on PATH; it holds no kubectl, so
    # the pinned kubectl the Makefile put first is still the one found).
    bindir = str(Path(sys.executable).parent)
    os.environ["PATH"] = os.pathsep.join([bindir, os.environ.get("PATH", "")])
    say("The three kinds, generated from the pydantic models")
    run("kubectl apply -f crds/")
    run("kubectl wait --for=condition=Established crd --all --timeout=60s", show=False)
    wait_discovered(f"{RECOMMENDATIONS}.{GROUP}")
    run("kubectl explain recommendation.spec.riskLevel")

    say("What the operator will decide, without a cluster (what a GitOps pipeline runs)")
    run("coordinator check -f examples/")

    say("Start the operator, and the reference agent that carries out the agents' steps")
    logs = REPO / ".cluster" / "logs"
    operator = start_operator(logs / "operator-demo.log")
    agent = start_agent(logs / "agent-demo")
    try:
        # A previous run's objects go first, while the operator can release them.
        run(f"kubectl delete namespace {NAMESPACE} --ignore-not-found --timeout=60s", show=False)
        run(f"kubectl create namespace {NAMESPACE}")
        say("People: the user 'approver' may decide (roles from manifests/user-roles.yaml)")
        run("kubectl apply -f manifests/user-roles.yaml")
        run(
            f"kubectl -n {NAMESPACE} create rolebinding approver "
            "--clusterrole=optiinfra-approver --user=approver"
        )
        say("Workloads: the namespace lets plans change them (manifests/executor-role.yaml)")
        run("kubectl apply -f manifests/executor-role.yaml")
        run(
            f"kubectl -n {NAMESPACE} create rolebinding optiinfra-executor "
            "--clusterrole=optiinfra-executor "
            "--serviceaccount=optiinfra-system:optiinfra-coordinator"
        )
        say("Agents: an admin registers where each agent is reached (never a URL in a rec)")
        register_agents(agent.url, agent.key_file)
        story(agent)
    finally:
        operator.stop()
        agent.stop()
    say(f"Done in {time.monotonic() - started:.0f}s. The cluster is still up; look around:")
    print(f"  export KUBECONFIG={os.environ.get('KUBECONFIG', '')}")
    kubectl = shutil.which("kubectl")
    print(f'  export PATH="{Path(kubectl).parent if kubectl else ""}:$PATH"  # the pinned kubectl')
    print(f"  kubectl get optiinfra -n {NAMESPACE}")
    print("  make cluster-down   # when finished")
    return 0


def story(agent: localproc.AgentProcess) -> None:
    k = f"kubectl -n {NAMESPACE}"
    say("01: two recommendations without conflict")
    run(f"{k} apply -f examples/01-no-conflict.yaml")
    wait_phase("rec", "rec-001", "AwaitingApproval")
    wait_phase("rec", "rec-002", "Approved")
    run(f"{k} get recommendations,approvals")

    say("02 and 03: conflicts are resolved by priority, then savings, confidence, risk")
    run(f"{k} apply -f examples/02-resource-conflict.yaml -f examples/03-action-conflict.yaml")
    wait_phase("rec", "rec-004", "Superseded")
    wait_phase("rec", "rec-005", "Superseded")
    run(f"{k} get rec rec-003 rec-004 rec-005 rec-006 -o wide")
    run(
        f"{k} get rec rec-005 -o custom-columns="
        "TYPE:.status.conflicts[*].type,DESCRIPTION:.status.conflicts[*].description"
    )
    say("Why rec-005 lost, in words (the kubectl plugin, kubectl-optiinfra)")
    run(f"kubectl optiinfra -n {NAMESPACE} why rec-005")

    say("The approver approves rec-003 with kubectl patch; it gets a suspended plan")
    approve = '{"spec":{"decision":"Approved"}}'
    run(f"{APPROVER} -n {NAMESPACE} patch approval rec-003 --type merge -p {shlex.quote(approve)}")
    wait_phase("rec", "rec-003", "Approved")
    run(f"{k} get approval/rec-003 executionplan/rec-003")

    say("04: reject a high-risk change, with a reason")
    run(f"{k} apply -f examples/04-reject.yaml")
    wait_phase("rec", "rec-007", "AwaitingApproval")  # its Approval exists by then
    as_approver = f"kubectl optiinfra --kubeconfig .cluster/kubeconfig-approver -n {NAMESPACE}"
    run(f"{as_approver} queue")
    run(f"{as_approver} reject rec-007 --reason 'Too risky during peak hours'")
    wait_phase("rec", "rec-007", "Rejected")
    run(f"{k} get approval rec-007 -o wide")

    say("05 to 08, 10, 11: plans run step by step, for real; a failing critical step rolls back")
    names = (
        "05-execute-now", "06-rollback", "07-dependency-chain", "08-scale-deployment",
        "10-autoscaling", "11-real-rollback",
    )  # fmt: skip
    for name in names:
        run(f"{k} apply -f examples/{name}.yaml")
    for name, phase in (
        ("rec-008", "Succeeded"),
        ("rec-010", "RolledBack"),
        ("rec-013", "Succeeded"),
        ("rec-014", "Succeeded"),
        ("rec-017", "Succeeded"),
        ("rec-018", "RolledBack"),
    ):
        wait_phase("rec", name, phase)
    run(f"{k} get executionplans")
    say("08: web was scaled from 2 to 4, and its pods became Ready (kwok plays the kubelet)")
    run(f"{k} get deployment web")
    say("10: the HorizontalPodAutoscaler the plan applied")
    run(f"{k} get hpa web")
    say("11: the patch of api was undone when the wait timed out (a real rollback)")
    run(
        f"{k} get plan rec-018 -o custom-columns="
        "STEP:.status.steps[*].name,PHASE:.status.steps[*].phase,"
        "ROLLED-BACK-AT:.status.steps[*].rolledBackAt"
    )
    run(f"{k} get deployment api -o jsonpath={{.spec.template.spec.containers[0].resources}}")
    run(f"kubectl optiinfra -n {NAMESPACE} plan rec-018")
    run(
        f"{k} get plan rec-010 -o custom-columns="
        "STEP:.status.steps[*].name,PHASE:.status.steps[*].phase,"
        "ROLLED-BACK-AT:.status.steps[*].rolledBackAt"
    )
    say("Steps the agents carried out (the reference agent's record: each key applied once)")
    print(json.dumps(agent.applied()), flush=True)  # a signed read, as the agent requires

    say("09: a circular dependency blocks both until it is broken")
    run(f"{k} apply -f examples/09-circular-dependency.yaml")
    wait_phase("rec", "rec-015", "Blocked")
    run(f"{k} get rec rec-015 rec-016 -o custom-columns=NAME:.metadata.name,WHY:.status.message")
    run(f"kubectl optiinfra -n {NAMESPACE} why rec-015")

    verified(k)

    say("Everything at a glance")
    run(f"{k} get optiinfra")
    run(f"{k} describe rec rec-010")


def verified(k: str) -> None:
    """Example 12: two scale_downs verified against a real Prometheus; one regresses, the
    other holds and records the savings it realised."""
    say("12: every change checked against its metrics; a regression rolls back by itself")
    example = REPO / "examples" / "12-verified-scale-down.yaml"
    text = example.read_text()
    apps = kubernetes.client.AppsV1Api(
        kubernetes.config.new_client_from_config(config_file=os.environ["KUBECONFIG"])
    )

    def asked(name: str) -> int | None:
        try:
            found: int | None = apps.read_namespaced_deployment(name, NAMESPACE).spec.replicas
        except kubernetes.client.ApiException:
            return None
        return found

    directory = REPO / ".cluster" / "prometheus-demo"
    shutil.rmtree(directory, ignore_errors=True)
    print("$ prometheus --config.file=... (a real Prometheus; the latencies are synthetic)")
    wanted = examplemetrics.gauges(text)
    with (
        localprometheus.serving(directory) as (server, fixture),
        examplemetrics.feeding(fixture, wanted, namespace=NAMESPACE, replicas=asked),
    ):
        copy = REPO / ".cluster" / "demo-12-verified-scale-down.yaml"
        copy.write_text(examplemetrics.with_address(text, server.url))
        print(f"   (at {server.url}: the example's 127.0.0.1:9090 is replaced by it)")
        run(f"{k} apply -f {copy.relative_to(REPO)}")
        run(f"{k} get verificationtemplates")
        wait_phase("rec", "rec-020", "RolledBack")
        wait_phase("rec", "rec-021", "Succeeded")
        run(f"kubectl optiinfra -n {NAMESPACE} plan rec-020")
        run(f"kubectl optiinfra -n {NAMESPACE} plan rec-021")
        run(f"{k} get deployment checkout reports")
        run(
            f"kubectl wait -n {NAMESPACE} rec/rec-021 "
            "--for=jsonpath={.status.realisedSavings.realisedMonthly} --timeout=60s",
            show=False,
        )
        run(f"kubectl optiinfra -n {NAMESPACE} why rec-021")
        say("12: the outcomes")
        for name in ("rec-020", "rec-021"):
            path = "{.status.phase}: {.status.message}"
            print(f"{name} {run(f'{k} get rec {name} -o jsonpath={path!r}', show=False)}")
        path = "{.status.realisedSavings.realisedMonthly}"
        found = run(f"{k} get rec rec-021 -o jsonpath={path!r}", show=False)
        print(f"rec-021 realised {found} USD a month of the 110 estimated")


if __name__ == "__main__":
    sys.exit(main())
