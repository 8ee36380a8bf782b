"""GitOps for real: a team commits recommendations (and an ApprovalPolicy) to a Git
repository, Flux (source-controller and kustomize-controller, built from their modules and
run against the local control plane) applies them with `prune: true` and `wait: true`,
the operator decides, a person approves with `kubectl optiinfra`, the plan runs.

Each test has its own repository (served by git's http-backend on 127.0.0.1), its own
GitRepository and Kustomization, and an e2e namespace that the shared operator watches.
A commit is followed by `reconcile.fluxcd.io/requestedAt` (what `flux reconcile` does), and
every wait has a deadline. docs/gitops.md shows the same steps.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import flux as localflux
import kubernetes
import pytest
import yaml

from tests.support import Kubectl, wait_for
from tests.support.builders import deployment, fast_steps, policy, recommendation, scale_step
from tests.support.kube import APPROVALS, PLANS, RECS, Objects, apply, optiinfra, replicas

pytestmark = [pytest.mark.gitops, pytest.mark.usefixtures("plugin_on_path")]

SOURCE = ("source.toolkit.fluxcd.io", "v1", "gitrepositories")
KUSTOMIZATION = ("kustomize.toolkit.fluxcd.io", "v1", "kustomizations")
SYNC = "optimisations"
"""The name of each test's GitRepository and Kustomization."""
FLUX_TIMEOUT = 90.0
"""How long Flux may take to fetch and apply a commit (it is asked at once)."""
HEALTH_TIMEOUT = "30s"
"""The Kustomization's `timeout`: how long its `wait: true` health check waits (30s is
the shortest kustomize-controller takes)."""
PEOPLE_ONLY = policy(
    "people-decide",
    approvals={"required": 1, "approvers": [{"user": "approver"}]},
    autoApprove={"maxRisk": "none"},
)
"""The team's ApprovalPolicy, committed with the recommendations: a person decides all."""


class Repository:
    """A working copy of one test's repository: write manifests, commit, push."""

    def __init__(self, flux: localflux.Flux, name: str, work: Path) -> None:
        self.bare, self.url = flux.repository(name)
        self.work = work
        self._git("init", "--quiet", "--initial-branch=main", str(work), cwd=work.parent)
        self._git("remote", "add", "origin", str(self.bare))

    def _git(self, *args: str, cwd: Path | None = None) -> str:
        env = {
            **os.environ,
            "GIT_AUTHOR_NAME": "gitops-team",
            "GIT_AUTHOR_EMAIL": "team@example.com",
            "GIT_COMMITTER_NAME": "gitops-team",
            "GIT_COMMITTER_EMAIL": "team@example.com",
        }
        done = subprocess.run(
            ["git", *args],
            cwd=cwd or self.work,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
        return done.stdout.strip()

    def commit(self, message: str, **files: list[dict[str, Any]] | None) -> str:
        """Write (a list of documents) or remove (None) each `file`.yaml; commit and push.
        Returns the commit's SHA."""
        for stem, docs in files.items():
            path = self.work / f"{stem}.yaml"
            if docs is None:
                path.unlink()
            else:
                path.write_text(yaml.safe_dump_all(docs))
        self._git("add", "--all")
        self._git("commit", "--quiet", "--message", message)
        self._git("push", "--quiet", "origin", "main")
        return self._git("rev-parse", "HEAD")


class GitOps:
    """One test's repository and the Flux objects that sync it into its namespace."""

    def __init__(
        self, api: kubernetes.client.ApiClient, kubectl: Kubectl, namespace: str, repo: Repository
    ) -> None:
        self.custom = kubernetes.client.CustomObjectsApi(api)
        self.kubectl = kubectl
        self.namespace = namespace
        self.repo = repo

    def sync(self) -> None:
        """The GitRepository and Kustomization, as the team's platform admin applies them."""
        source = {
            "apiVersion": "source.toolkit.fluxcd.io/v1",
            "kind": "GitRepository",
            "metadata": {"name": SYNC},
            "spec": {"interval": "5s", "timeout": "20s", "url": self.repo.url,
                     "ref": {"branch": "main"}},
        }  # fmt: skip
        kustomization = {
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "kind": "Kustomization",
            "metadata": {"name": SYNC},
            "spec": {
                "interval": "5s",
                "retryInterval": "5s",
                "timeout": HEALTH_TIMEOUT,
                "path": "./",
                "prune": True,
                "wait": True,
                "sourceRef": {"kind": "GitRepository", "name": SYNC},
                "targetNamespace": self.namespace,
            },
        }
        apply(self.kubectl, self.namespace, source, kustomization)

    def get(self, what: tuple[str, str, str]) -> dict[str, Any]:
        found: dict[str, Any] = self.custom.get_namespaced_custom_object(
            *what[:2], self.namespace, what[2], SYNC
        )
        return found

    def ready(self) -> dict[str, Any]:
        """The Kustomization's Ready condition (empty before its first reconcile)."""
        conditions = (self.get(KUSTOMIZATION).get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == "Ready"), {})

    def reconcile(self, what: tuple[str, str, str] = SOURCE) -> str:
        """Ask Flux to reconcile now (as `flux reconcile` does); the token it answers with."""
        token = datetime.now(UTC).isoformat()
        self.custom.patch_namespaced_custom_object(
            *what[:2], self.namespace, what[2], SYNC,
            {"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": token}}},
        )  # fmt: skip
        return token

    def settled(self) -> dict[str, Any]:
        """The Kustomization's status once its current attempt has ended (Ready True or
        False, not Unknown); empty while it is still at work."""
        status: dict[str, Any] = self.get(KUSTOMIZATION).get("status") or {}
        ready = self.ready()
        return status if ready.get("status") in {"True", "False"} else {}

    def applied(self, revision: str) -> bool:
        """Flux has applied `revision`: its attempt ended, or it is checking health (what
        it applied is in the cluster; with `wait: true` it then waits for it, up to 30s,
        its shortest timeout, when a recommendation is in progress)."""
        status = self.get(KUSTOMIZATION).get("status") or {}
        if status.get("lastAttemptedRevision") != revision:
            return False
        message = self.ready().get("message", "")
        return bool(self.settled()) or f"Running health checks for revision {revision}" in message

    def push(self, message: str, **files: list[dict[str, Any]] | None) -> str:
        """Commit and push, ask Flux to fetch, and wait until it has applied the commit."""
        sha = self.repo.commit(message, **files)
        self.reconcile()
        revision = f"main@sha1:{sha}"
        wait_for(
            lambda: self.applied(revision),
            what=f"Flux to apply {revision} (Ready: {self.ready()})",
            timeout=FLUX_TIMEOUT,
        )
        return sha

    def reconciled(self) -> None:
        """One more reconcile of the Kustomization, waited for until Flux has handled it."""
        token = self.reconcile(KUSTOMIZATION)
        wait_for(
            lambda: self.settled().get("lastHandledReconcileAt") == token,
            what="Flux to handle the reconcile request",
            timeout=FLUX_TIMEOUT,
        )

    def remove(self) -> None:
        """Delete the Kustomization (Flux prunes what it applied) and the GitRepository."""
        for plural in (KUSTOMIZATION, SOURCE):
            self.kubectl("delete", plural[2], SYNC, "-n", self.namespace, "--wait=false")
        wait_for(
            lambda: (
                not self.custom.list_namespaced_custom_object(
                    *KUSTOMIZATION[:2], self.namespace, KUSTOMIZATION[2]
                )["items"]
            ),
            what="Flux to let its Kustomization go",
            timeout=FLUX_TIMEOUT,
        )


@pytest.fixture
def gitops(
    flux: localflux.Flux,
    api: kubernetes.client.ApiClient,
    kubectl: Kubectl,
    e2e_namespace: str,
    tmp_path: Path,
) -> Iterator[GitOps]:
    """A fresh repository synced by Flux into the test's e2e namespace."""
    work = tmp_path / "repo"
    work.mkdir()
    ops = GitOps(api, kubectl, e2e_namespace, Repository(flux, e2e_namespace, work))
    ops.sync()
    yield ops
    ops.remove()


def approve(kubectl: Kubectl, namespace: str, name: str) -> None:
    done = optiinfra(kubectl, namespace, "approve", name, "--reason", "reviewed in Git")
    assert done.returncode == 0, done.stderr


def test_flux_applies_what_the_team_commits_and_a_person_approves_it(
    kubectl: Kubectl, gitops: GitOps, objects: Objects
) -> None:
    rec = recommendation("rec-flux", riskLevel="low", executeNow=True, steps=fast_steps())
    sha = gitops.push(
        "Add the policy and a first recommendation", policy=[PEOPLE_ONLY], recommendations=[rec]
    )
    applied = objects.get(RECS, "rec-flux")
    assert applied is not None
    labels = applied["metadata"]["labels"]
    assert labels["kustomize.toolkit.fluxcd.io/name"] == SYNC
    # Low risk, yet the committed policy says a person decides: the policy came from Git.
    waiting = objects.wait_phase(RECS, "rec-flux", "AwaitingApproval")
    assert waiting["status"]["policies"] == ["people-decide"]
    objects.wait_phase(APPROVALS, "rec-flux", "Pending")

    approve(kubectl, gitops.namespace, "rec-flux")
    approval = objects.wait_phase(APPROVALS, "rec-flux", "Approved")["status"]
    assert approval["decidedBy"] == "approver"
    assert approval["reason"] == "reviewed in Git"
    objects.wait_phase(PLANS, "rec-flux", "Succeeded")
    objects.wait_phase(RECS, "rec-flux", "Succeeded")

    gitops.reconciled()
    ready = gitops.ready()
    assert (ready["status"], ready["reason"]) == ("True", "ReconciliationSucceeded"), ready
    assert ready["message"] == f"Applied revision: main@sha1:{sha}"


def test_a_committed_spec_change_withdraws_the_pending_approval_and_asks_again(
    kubectl: Kubectl, gitops: GitOps, objects: Objects
) -> None:
    gitops.push(
        "Propose a migration",
        policy=[PEOPLE_ONLY],
        recommendations=[recommendation("rec-edit", estimatedSavings=100)],
    )
    first = objects.wait_phase(APPROVALS, "rec-edit", "Pending")
    assert first["spec"]["recommendationGeneration"] == 1

    gitops.push(
        "Raise the estimate",
        recommendations=[recommendation("rec-edit", estimatedSavings=900)],
    )
    renewed = wait_for(
        lambda: (
            (a := objects.get(APPROVALS, "rec-edit"))
            and a["spec"]["recommendationGeneration"] == 2
            and (a.get("status") or {}).get("phase") == "Pending"
            and a
        ),
        what="a new approval for generation 2",
    )
    (record,) = renewed["status"]["history"]
    assert (record["generation"], record["phase"]) == (1, "Withdrawn")
    rec = objects.wait_phase(RECS, "rec-edit", "AwaitingApproval")
    assert rec["metadata"]["generation"] == 2
    assert rec["status"]["observedGeneration"] == 2

    approve(kubectl, gitops.namespace, "rec-edit")
    objects.wait_phase(APPROVALS, "rec-edit", "Approved")


def test_a_recommendation_removed_from_git_is_pruned_and_its_running_plan_rolled_back(
    kubectl: Kubectl, gitops: GitOps, objects: Objects
) -> None:
    apply(kubectl, gitops.namespace, deployment("api", 3))  # the workload, not in this repo
    # The soak outlasts Flux's turn to prune: up to 30s of health checks of the first
    # commit (the recommendations are in progress) before it takes the second.
    steps = [
        scale_step("api", 1),
        {"name": "soak", "action": "soak", "executor": "simulated",
         "params": {"durationMs": 90_000}},
    ]  # fmt: skip
    rec = recommendation("rec-prune", executeNow=True, steps=steps)
    kept = recommendation("rec-kept")
    gitops.push("Scale api down", policy=[PEOPLE_ONLY], recommendations=[rec, kept])
    objects.wait_phase(APPROVALS, "rec-prune", "Pending")
    approve(kubectl, gitops.namespace, "rec-prune")
    objects.wait_phase(PLANS, "rec-prune", "Running")
    wait_for(lambda: replicas(kubectl, gitops.namespace, "api") == 1, what="api scaled to 1")

    gitops.push("Drop the scale-down", recommendations=[kept])
    wait_for(
        lambda: all(objects.get(p, "rec-prune") is None for p in (RECS, APPROVALS, PLANS)),
        what="the pruned recommendation, its approval and its plan to go",
        timeout=FLUX_TIMEOUT + 90,  # the rollback waits for the soak step to end
    )
    assert replicas(kubectl, gitops.namespace, "api") == 3  # rolled back before it went
    assert objects.phase(RECS, "rec-kept") == "AwaitingApproval"


def test_ten_reconciles_of_an_unchanged_repository_write_nothing(
    api: kubernetes.client.ApiClient, kubectl: Kubectl, gitops: GitOps, objects: Objects
) -> None:
    """Flux re-applies the unchanged manifests (server-side apply, its dry-run diff, the
    admission webhooks on every request) ten times: no recommendation, approval or plan is
    written. The recommendations have ended (Succeeded: current for `wait: true`), so that
    each reconcile is over in a second rather than a 30s health-check timeout."""
    done = [
        recommendation(name, riskLevel="low", executeNow=True, steps=fast_steps())
        for name in ("rec-done-1", "rec-done-2")
    ]
    gitops.push("Two recommendations", recommendations=done)
    for rec in done:
        objects.wait_phase(RECS, rec["metadata"]["name"], "Succeeded")
    gitops.reconciled()  # settled: whatever the first apply and the operator wrote is done

    custom = kubernetes.client.CustomObjectsApi(api)

    def versions() -> dict[tuple[str, str], tuple[int, str]]:
        """(generation, resourceVersion) of each object: any write, even one undone
        later (a status that flaps), moves the resourceVersion."""
        return {
            (plural, o["metadata"]["name"]): (
                o["metadata"]["generation"],
                o["metadata"]["resourceVersion"],
            )
            for plural in (RECS, APPROVALS, PLANS)
            for o in custom.list_namespaced_custom_object(
                "optiinfra.io", "v1alpha1", gitops.namespace, plural
            )["items"]
        }

    before = versions()
    assert len(before) == 6  # two recommendations, their approvals and plans
    for _ in range(10):
        gitops.reconciled()
    after = versions()
    written = {
        key: (before[key], after.get(key)) for key in before if after.get(key) != before[key]
    }
    assert written == {}, written  # no write at all: no spec, no status, no flapping
    assert after.keys() == before.keys()


def test_flux_health_checks_report_each_phase(
    kubectl: Kubectl, gitops: GitOps, objects: Objects
) -> None:
    """`wait: true` judges the recommendations by kstatus: one awaiting a person is in
    progress (the Kustomization not Ready, naming it), a succeeded one current (Ready), a
    rejected one failed (not Ready, at once, naming it)."""
    ns = gitops.namespace
    rec = recommendation("rec-h1", executeNow=True, steps=fast_steps())
    gitops.push("Awaiting a person", policy=[PEOPLE_ONLY], recommendations=[rec])
    objects.wait_phase(RECS, "rec-h1", "AwaitingApproval")
    wait_for(
        lambda: (
            gitops.ready().get("status") == "False"
            and f"Recommendation/{ns}/rec-h1" in gitops.ready().get("message", "")
            and "InProgress" in gitops.ready()["message"]
        ),
        what="the Kustomization to report rec-h1 in progress",
        timeout=FLUX_TIMEOUT,
    )

    approve(kubectl, ns, "rec-h1")
    objects.wait_phase(RECS, "rec-h1", "Succeeded")
    gitops.reconciled()
    assert gitops.ready()["status"] == "True", gitops.ready()

    rejected = recommendation("rec-h2")
    gitops.push("A second one", recommendations=[rec, rejected])
    objects.wait_phase(APPROVALS, "rec-h2", "Pending")
    refused = optiinfra(kubectl, ns, "reject", "rec-h2", "--reason", "not now")
    assert refused.returncode == 0, refused.stderr
    objects.wait_phase(RECS, "rec-h2", "Rejected")
    gitops.reconciled()
    ready = gitops.ready()
    assert ready["status"] == "False", ready
    assert f"Recommendation/{ns}/rec-h2 status: 'Failed'" in ready["message"]
