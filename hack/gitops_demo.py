"""`make gitops-demo`: recommendations from Git, applied by Flux, decided by a person.

Runs with KUBECONFIG pointing at the local control plane and the pinned kubectl first on
PATH (the Makefile sets both). Builds (once, cached) and starts Flux and a Git server on
127.0.0.1 (hack/cluster/flux.py), commits an ApprovalPolicy and examples/01 to a
repository, lets Flux apply them, approves with `kubectl optiinfra`, then removes a
recommendation from Git and watches Flux prune it. Flux stays up afterwards
(`make cluster-down` stops it with the control plane). docs/gitops.md explains each step.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

import demo
from coordinator.api.common import API_VERSION

sys.path.insert(0, str(Path(__file__).resolve().parent / "cluster"))
import flux as localflux
import localcluster

REPO = demo.REPO
NAMESPACE = "optiinfra-gitops"
SYNC = "optimisations"
POLICY = {
    "apiVersion": API_VERSION,
    "kind": "ApprovalPolicy",
    "metadata": {"name": "people-decide"},
    "spec": {
        "approvals": {"required": 1, "approvers": [{"user": "approver"}]},
        "autoApprove": {"maxRisk": "none"},
    },
}


def git(work: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "gitops-team",
        "GIT_AUTHOR_EMAIL": "team@example.com",
        "GIT_COMMITTER_NAME": "gitops-team",
        "GIT_COMMITTER_EMAIL": "team@example.com",
    }
    print(f"$ git {' '.join(args)}", flush=True)
    done = subprocess.run(
        ["git", *args], check=False, cwd=work, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"demo failed at: git {' '.join(args)}\n{done.stderr}")
    return done.stdout.strip()


def commit(work: Path, message: str) -> None:
    git(work, "add", "--all")
    git(work, "commit", "--quiet", "--message", message)
    git(work, "push", "--quiet", "origin", "main")
    token = time.strftime("%Y-%m-%dT%H:%M:%S")
    demo.run(
        f"kubectl -n {NAMESPACE} annotate --overwrite gitrepository/{SYNC} "
        f"reconcile.fluxcd.io/requestedAt={token}"
    )


def sync_objects(url: str) -> str:
    docs = [
        {
            "apiVersion": "source.toolkit.fluxcd.io/v1",
            "kind": "GitRepository",
            "metadata": {"name": SYNC, "namespace": NAMESPACE},
            "spec": {"interval": "10s", "url": url, "ref": {"branch": "main"}},
        },
        {
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "kind": "Kustomization",
            "metadata": {"name": SYNC, "namespace": NAMESPACE},
            "spec": {
                "interval": "10s",
                "timeout": "20s",
                "path": "./",
                "prune": True,
                "wait": True,
                "sourceRef": {"kind": "GitRepository", "name": SYNC},
                "targetNamespace": NAMESPACE,
            },
        },
    ]
    return yaml.safe_dump_all(docs)


def main() -> int:
    started = time.monotonic()
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    demo.NAMESPACE = NAMESPACE  # demo's helpers act in this namespace
    cluster = localcluster.running()
    if cluster is None:
        raise SystemExit("no local control plane: run `make cluster` first")

    demo.say("Flux (source-controller, kustomize-controller) and a Git server, on demand")
    flux = localflux.up(cluster)
    print(f"git server at {flux.git_url}; Flux logs in {flux.directory / 'logs'}")
    demo.run("kubectl get crd gitrepositories.source.toolkit.fluxcd.io")

    demo.say("The operator, for the namespace Flux applies into")
    demo.run("kubectl apply -f crds/", show=False)
    demo.run("kubectl wait --for=condition=Established crd --all --timeout=60s", show=False)
    logs = REPO / ".cluster" / "logs"
    operator = demo.start_operator(logs / "operator-gitops-demo.log")
    try:
        demo.run(f"kubectl delete namespace {NAMESPACE} --ignore-not-found --timeout=60s")
        demo.run(f"kubectl create namespace {NAMESPACE}")
        demo.run("kubectl apply -f manifests/user-roles.yaml", show=False)
        demo.run(
            f"kubectl -n {NAMESPACE} create rolebinding approver "
            "--clusterrole=optiinfra-approver --user=approver"
        )
        story(flux)
    finally:
        operator.stop()
    demo.say(f"Done in {time.monotonic() - started:.0f}s. Flux and the cluster are still up:")
    print(f"  kubectl get kustomizations,optiinfra -n {NAMESPACE}")
    print("  make cluster-down   # stops Flux too")
    return 0


def story(flux: localflux.Flux) -> None:
    k = f"kubectl -n {NAMESPACE}"
    bare, url = flux.repository(NAMESPACE)
    work = REPO / ".cluster" / "gitops-demo"
    if work.exists():
        subprocess.run(["rm", "-rf", str(work)], check=True)
    work.mkdir(parents=True)
    demo.say("The team's repository: an ApprovalPolicy and examples/01-no-conflict.yaml")
    git(work, "init", "--quiet", "--initial-branch=main")
    git(work, "remote", "add", "origin", str(bare))
    (work / "policy.yaml").write_text(yaml.safe_dump(POLICY))
    (work / "recommendations.yaml").write_text((REPO / "examples/01-no-conflict.yaml").read_text())
    git(work, "add", "--all")
    git(work, "commit", "--quiet", "--message", "Add the policy and two recommendations")
    git(work, "push", "--quiet", "--force", "origin", "main")  # a new history each run

    demo.say(f"Flux syncs {url} into {NAMESPACE} (prune, wait for health)")
    path = REPO / ".cluster" / "gitops-demo.yaml"
    path.write_text(sync_objects(url))
    demo.run(f"kubectl apply -f {path.relative_to(REPO)}")
    for name in ("rec-001", "rec-002"):  # Flux creates them a moment later
        demo.run(f"{k} wait rec/{name} --for=create --timeout=90s", show=False)
    demo.wait_phase("rec", "rec-001", "AwaitingApproval")
    # The policy from Git: rec-002 is low risk, yet a person decides it too.
    demo.wait_phase("rec", "rec-002", "AwaitingApproval")
    demo.run(f"{k} get gitrepositories,kustomizations")
    demo.run(f"{k} get recommendations,approvals")

    demo.say("A person approves rec-001 with the plugin")
    as_approver = f"kubectl optiinfra --kubeconfig .cluster/kubeconfig-approver -n {NAMESPACE}"
    demo.run(f"{as_approver} approve rec-001 --reason 'reviewed in Git'")
    demo.wait_phase("rec", "rec-001", "Approved")

    demo.say("rec-002 is removed from Git: Flux prunes it, and its approval goes with it")
    docs = [d for d in yaml.safe_load_all((work / "recommendations.yaml").read_text()) if d]
    kept = [d for d in docs if d["metadata"]["name"] != "rec-002"]
    (work / "recommendations.yaml").write_text(yaml.safe_dump_all(kept))
    commit(work, "Drop rec-002")
    demo.run(f"kubectl wait -n {NAMESPACE} rec/rec-002 --for=delete --timeout=90s")
    demo.run(f"{k} get recommendations,approvals")
    demo.run(
        f"{k} get kustomization {SYNC} -o jsonpath="
        + json.dumps("{.status.conditions[?(@.type=='Ready')].message}")
    )


if __name__ == "__main__":
    sys.exit(main())
