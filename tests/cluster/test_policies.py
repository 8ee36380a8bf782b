"""ApprovalPolicies on the real control plane: N-of-M votes recorded from the authenticated
request (users and groups from client certificates), change windows, budgets, and several
policies combined. Everything is asserted through the API."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kubernetes
import localcluster
import pytest

from coordinator.core import webhook as protocol
from tests.support import Kubectl, wait_for
from tests.support.builders import endpoint, fast_steps, policy, recommendation
from tests.support.kube import APPROVALS, APPROVE, PLANS, RECS, Objects, apply, patch_approval
from tests.support.net import free_port
from tests.support.processes import KEY, OperatorProcess

PEOPLE = {"alice": (), "bob": ("sre",), "carol": ()}
"""Users minted for these tests: bob is in group sre (his certificate's organisation)."""


@pytest.fixture(scope="module")
def people(cluster: localcluster.Cluster, kubectl: Kubectl) -> Kubectl:
    """kubectl as admin, agent, approver, viewer, alice, bob (group sre) and carol."""
    users = {"admin": cluster.kubeconfig}
    users |= {u: cluster.user_kubeconfig(u) for u in localcluster.USERS}
    for user, groups in PEOPLE.items():
        users[user] = localcluster.mint_user(cluster, user, groups)
    return Kubectl(bin_dir=cluster.bin_dir, kubeconfigs=users)


@pytest.fixture
def deciders(api: kubernetes.client.ApiClient, e2e_namespace: str) -> None:
    """The approver role for alice, carol and the group sre; alice may also submit."""
    rbac = kubernetes.client.RbacAuthorizationV1Api(api)
    bindings = {
        "policy-approvers": (
            "optiinfra-approver",
            [("User", "alice"), ("User", "carol"), ("Group", "sre")],
        ),
        "policy-agents": ("optiinfra-agent", [("User", "alice")]),
    }
    for name, (role, subjects) in bindings.items():
        rbac.create_namespaced_role_binding(
            e2e_namespace,
            {
                "metadata": {"name": name},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": role,
                },
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": who}
                    for kind, who in subjects
                ],
            },
        )


TWO_OF_THREE = policy(
    "two-of-three",
    approvals={
        "required": 2,
        "approvers": [{"user": "alice"}, {"user": "approver"}, {"group": "sre"}],
    },
)


def wait_policies(objects: Objects, name: str, expected: list[str]) -> dict[str, Any]:
    return wait_for(
        lambda: (
            (objects.get(RECS, name) or {}).get("status", {}).get("policies") == expected
            and objects.get(RECS, name)
        ),
        what=f"recommendation {name} to name the policies {expected}",
    )


def test_two_of_three_with_users_and_a_group(
    people: Kubectl, e2e_namespace: str, objects: Objects, deciders: None
) -> None:
    ns = e2e_namespace
    apply(people, ns, TWO_OF_THREE)
    apply(people, ns, recommendation("rec-p1"), user="alice")  # alice submits
    wait_policies(objects, "rec-p1", ["two-of-three"])
    approval = objects.wait_phase(APPROVALS, "rec-p1", "Pending")
    assert approval["spec"]["required"] == 2
    assert approval["spec"]["policies"] == ["two-of-three"]

    # The submitter is refused, although she is an approver.
    proc = patch_approval(people, ns, "rec-p1", APPROVE, user="alice")
    assert proc.returncode != 0
    assert "alice submitted or last changed recommendation rec-p1" in proc.stderr

    # bob, through his group: recorded, not decided yet (the same patch for everyone).
    proc = patch_approval(people, ns, "rec-p1", APPROVE, user="bob")
    assert proc.returncode == 0, proc.stderr
    assert "still needed: 1 more of 2 approvals" in proc.stderr  # a warning
    wait_for(
        lambda: (
            [r["user"] for r in objects.status(APPROVALS, "rec-p1").get("responses", [])] == ["bob"]
        ),
        what="bob's vote in status.responses",
    )
    (response,) = objects.status(APPROVALS, "rec-p1")["responses"]
    assert response["groups"] == ["sre", "system:authenticated"]
    assert response["decision"] == "Approved"
    assert objects.get(APPROVALS, "rec-p1")["spec"]["decision"] == "Pending"
    assert objects.phase(RECS, "rec-p1") == "AwaitingApproval"

    # bob again: counted once.
    proc = patch_approval(people, ns, "rec-p1", APPROVE, user="bob")
    assert proc.returncode == 0, proc.stderr
    assert "counts once" in proc.stderr
    assert objects.get(APPROVALS, "rec-p1")["spec"]["decision"] == "Pending"

    # carol has the approver role but is not among the policy's approvers.
    proc = patch_approval(people, ns, "rec-p1", APPROVE, user="carol")
    assert proc.returncode != 0
    assert (
        "carol may not decide approval rec-p1: the approvers are user alice or user approver "
        "or group sre (policy two-of-three)"
    ) in proc.stderr

    # The second distinct eligible person decides it.
    reason = {"spec": {"decision": "Approved", "reason": "looks fine"}}
    proc = patch_approval(people, ns, "rec-p1", reason, user="approver")
    assert proc.returncode == 0, proc.stderr
    done = objects.wait_phase(APPROVALS, "rec-p1", "Approved")
    assert done["status"]["decidedBy"] == "bob, approver"
    assert [(r["user"], r["decision"]) for r in done["status"]["responses"]] == [
        ("bob", "Approved"),
        ("approver", "Approved"),
    ]
    assert done["status"]["responses"][1]["reason"] == "looks fine"
    objects.wait_phase(RECS, "rec-p1", "Approved")


def test_the_first_rejection_rejects(
    people: Kubectl, e2e_namespace: str, objects: Objects, deciders: None
) -> None:
    ns = e2e_namespace
    apply(people, ns, TWO_OF_THREE)
    apply(people, ns, recommendation("rec-p2"), user="agent")
    wait_policies(objects, "rec-p2", ["two-of-three"])
    objects.wait_phase(APPROVALS, "rec-p2", "Pending")
    no = {"spec": {"decision": "Rejected", "reason": "not this week"}}
    proc = patch_approval(people, ns, "rec-p2", no, user="bob")
    assert proc.returncode == 0, proc.stderr
    rejected = objects.wait_phase(APPROVALS, "rec-p2", "Rejected")
    assert rejected["status"]["decidedBy"] == "bob"
    assert rejected["status"]["reason"] == "not this week"
    objects.wait_phase(RECS, "rec-p2", "Rejected")


def test_overlapping_policies_combine_most_restrictively(
    kubectl: Kubectl, e2e_namespace: str, objects: Objects
) -> None:
    ns = e2e_namespace
    apply(
        kubectl,
        ns,
        policy("a-team", approvals={"required": 2}, expiry={"low": "2h", "medium": "3h"}),
        policy(
            "b-customer",
            selector={"customerIds": ["customer-1"]},
            approvals={"required": 1},
            expiry={"low": "1h"},
            autoApprove={"maxRisk": "none"},
        ),
        policy("c-other", selector={"customerIds": ["someone-else"]}, approvals={"required": 5}),
    )
    apply(kubectl, ns, recommendation("rec-p3", riskLevel="low"))
    rec = wait_policies(objects, "rec-p3", ["a-team", "b-customer"])
    assert rec["status"]["phase"] == "AwaitingApproval"  # maxRisk none: low needs a person
    approval = objects.get(APPROVALS, "rec-p3")
    assert approval is not None
    assert approval["spec"]["required"] == 2  # the highest N
    requested = datetime.fromisoformat(approval["status"]["requestedAt"].replace("Z", "+00:00"))
    expires = datetime.fromisoformat(approval["spec"]["expiresAt"].replace("Z", "+00:00"))
    assert expires - requested == timedelta(hours=1)  # the shortest expiry


def test_a_deny_window_holds_an_approved_plan_until_it_ends(
    kubectl: Kubectl, e2e_namespace: str, objects: Objects
) -> None:
    ns = e2e_namespace
    now = datetime.now(UTC)
    # A freeze that opened at the start of this minute and ends 12 s from now.
    seconds = now.second + 12
    freeze = {
        "name": "freeze",
        "kind": "Deny",
        "schedule": f"{now.minute} {now.hour} * * *",
        "duration": f"{seconds}s",
        "timeZone": "UTC",
    }
    apply(kubectl, ns, policy("freeze", windows=[freeze]))
    apply(
        kubectl,
        ns,
        recommendation(
            "rec-p4", riskLevel="low", executeNow=True, steps=fast_steps(names=("one",))
        ),
    )
    held = wait_for(
        lambda: (
            "Deny window freeze" in (objects.status(PLANS, "rec-p4").get("message") or "")
            and objects.status(PLANS, "rec-p4")
        ),
        what="the plan to wait for the freeze",
    )
    assert held["phase"] == "Pending"
    assert "until" in held["message"]
    assert "(policy freeze)" in held["message"]
    done = objects.wait_phase(PLANS, "rec-p4", "Succeeded", timeout=60)
    started = datetime.fromisoformat(done["status"]["startedAt"].replace("Z", "+00:00"))
    assert started >= now.replace(microsecond=0) + timedelta(seconds=12 - 1)


def test_a_budget_of_one_runs_two_plans_one_after_the_other(
    kubectl: Kubectl, e2e_namespace: str, objects: Objects
) -> None:
    ns = e2e_namespace
    apply(kubectl, ns, policy("one-at-a-time", maxConcurrentPlans=1))
    names = ("rec-p5", "rec-p6")
    apply(
        kubectl,
        ns,
        *(
            recommendation(
                n,
                riskLevel="low",
                executeNow=True,
                steps=fast_steps(names=("one",), duration_ms=3000),
            )
            for n in names
        ),
    )

    def one_runs_one_waits() -> tuple[str, str] | None:
        statuses = {n: objects.status(PLANS, n) for n in names}
        running = [n for n, s in statuses.items() if s.get("phase") == "Running"]
        waiting = [
            n
            for n, s in statuses.items()
            if s.get("phase") == "Pending" and "budget: at most 1 plan(s)" in s.get("message", "")
        ]
        return (running[0], waiting[0]) if running and waiting else None

    running, waiting = wait_for(one_runs_one_waits, what="one plan running, the other waiting")
    assert running != waiting
    first = objects.wait_phase(PLANS, running, "Succeeded", timeout=60)
    second = objects.wait_phase(PLANS, waiting, "Succeeded", timeout=60)
    assert second["status"]["startedAt"] >= first["status"]["finishedAt"]


class Receiver:
    """A notification receiver on a loopback port: records each request's body and whether
    its signature verifies with the agents' key."""

    def __init__(self) -> None:
        received = self.received = []  # type: list[tuple[dict[str, Any], bool]]

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                problem = protocol.verify(
                    KEY,
                    timestamp=self.headers.get(protocol.TIMESTAMP_HEADER),
                    signature_header=self.headers.get(protocol.SIGNATURE_HEADER),
                    payload=body,
                    now=time.time(),
                    purpose=protocol.NOTIFY,
                )
                received.append((json.loads(body), problem is None))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notify"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[str]:
        return [body["event"] for body, _ in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


def notifications(operator: OperatorProcess, event: str, outcome: str) -> float:
    url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    line = f'optiinfra_notifications_total{{event="{event}",outcome="{outcome}"}} '
    return sum(float(x.split()[-1]) for x in text.splitlines() if x.startswith(line))


def test_notifications_are_signed_and_a_receiver_that_is_down_delays_nothing(
    kubectl: Kubectl,
    e2e_namespace: str,
    objects: Objects,
    receiver: Receiver,
    operator: OperatorProcess,
) -> None:
    ns = e2e_namespace
    down = f"http://127.0.0.1:{free_port()}/nobody-listens"
    failed_before = notifications(operator, "Approved", "failed")
    apply(
        kubectl,
        ns,
        endpoint("pager-down", url=down),
        endpoint("chat", url=receiver.url),
        policy(
            "tell-people",
            notify=[
                {"endpoint": "pager-down"},
                {"endpoint": "chat", "events": ["ApprovalRequested", "Approved"]},
            ],
        ),
    )
    apply(kubectl, ns, recommendation("rec-p7"))
    wait_policies(objects, "rec-p7", ["tell-people"])
    objects.wait_phase(APPROVALS, "rec-p7", "Pending")
    proc = patch_approval(kubectl, ns, "rec-p7", APPROVE, user="approver")
    assert proc.returncode == 0, proc.stderr
    objects.wait_phase(RECS, "rec-p7", "Approved")
    assert objects.get(PLANS, "rec-p7") is not None  # the decision went on
    wait_for(
        lambda: {"ApprovalRequested", "Approved"} <= set(receiver.events()),
        what="the chat receiver to be told",
    )
    assert all(signed for _, signed in receiver.received)
    approved = next(body for body, _ in receiver.received if body["event"] == "Approved")
    assert approved["text"].startswith(f"[Approved] {ns}/rec-p7 (customer-1): Approved by approver")
    wait_for(
        lambda: notifications(operator, "Approved", "failed") > failed_before,
        what="the failed notification to the pager to be counted",
    )


def test_two_of_three_with_reasons_by_kubectl_patch_and_by_the_plugin(
    people: Kubectl,
    e2e_namespace: str,
    objects: Objects,
    deciders: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A vote that does not decide yet keeps its reason (in status.responses) and leaves the
    spec valid: never a null reason, which the schema refuses. The plugin's vote on an
    approval already decided prints no "still needed" warning: nothing was recorded."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    ns = e2e_namespace
    apply(people, ns, TWO_OF_THREE)
    for name in ("rec-r1", "rec-r2"):
        apply(people, ns, recommendation(name), user="agent")
        wait_policies(objects, name, ["two-of-three"])
        objects.wait_phase(APPROVALS, name, "Pending")

    # By kubectl patch: the first vote, with a reason, is recorded and not yet decisive.
    first = {"spec": {"decision": "Approved", "reason": "capacity checked"}}
    proc = patch_approval(people, ns, "rec-r1", first, user="bob")
    assert proc.returncode == 0, proc.stderr
    assert "still needed: 1 more of 2 approvals" in proc.stderr
    spec = objects.get(APPROVALS, "rec-r1")["spec"]
    assert spec["decision"] == "Pending"
    assert "reason" not in spec
    second = {"spec": {"decision": "Approved", "reason": "ok"}}
    proc = patch_approval(people, ns, "rec-r1", second, user="alice")
    assert proc.returncode == 0, proc.stderr
    done = objects.wait_phase(APPROVALS, "rec-r1", "Approved")
    reasons = [(r["user"], r.get("reason")) for r in done["status"]["responses"]]
    assert reasons == [("bob", "capacity checked"), ("alice", "ok")]

    # By the plugin: the same, for approve and reject, each with a reason.
    def plugin(user: str, *args: str) -> subprocess.CompletedProcess[str]:
        return people("optiinfra", *args, "-n", ns, user=user, check=False)

    proc = plugin("bob", "approve", "rec-r2", "--reason", "load is low")
    assert proc.returncode == 0, proc.stderr
    assert "your decision is recorded (1 so far; still pending)" in proc.stdout
    assert objects.get(APPROVALS, "rec-r2")["spec"]["decision"] == "Pending"
    proc = plugin("approver", "approve", "rec-r2", "--reason", "agreed")
    assert proc.returncode == 0, proc.stderr
    done = objects.wait_phase(APPROVALS, "rec-r2", "Approved")
    reasons = [(r["user"], r.get("reason")) for r in done["status"]["responses"]]
    assert reasons == [("bob", "load is low"), ("approver", "agreed")]
    proc = plugin("alice", "approve", "rec-r2", "--reason", "late")
    assert proc.returncode != 0
    assert "already Approved" in proc.stderr
    assert "still needed" not in proc.stdout + proc.stderr

    # A rejection with a reason decides at once.
    apply(people, ns, recommendation("rec-r3"), user="agent")
    objects.wait_phase(APPROVALS, "rec-r3", "Pending")
    proc = plugin("bob", "reject", "rec-r3", "--reason", "not during the freeze")
    assert proc.returncode == 0, proc.stderr
    rejected = objects.wait_phase(APPROVALS, "rec-r3", "Rejected")
    assert rejected["status"]["reason"] == "not during the freeze"


VOTE_PATHS = [
    (decision, reason, way)
    for decision in ("Approved", "Rejected")
    for reason in ("checked the graphs", None)
    for way in ("kubectl patch", "plugin")
    if (decision, reason, way) != ("Rejected", None, "plugin")
]
"""Every path of the mutating webhook's patch for a first vote under 2-of-3 (the plugin
asks a rejection for its reason: `reject` without --reason ends before any request)."""


def test_every_first_vote_path_leaves_a_spec_the_api_server_accepts(
    people: Kubectl,
    e2e_namespace: str,
    objects: Objects,
    deciders: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Approve and reject, with and without a reason, by kubectl patch and by the plugin:
    the API server validates the webhook's JSON patch against the schema (a null written
    into a non-nullable field is refused), so each call must succeed and its vote be
    recorded with its reason; an approval stays Pending, a rejection decides at once."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    ns = e2e_namespace
    apply(people, ns, TWO_OF_THREE)
    for index, (decision, reason, way) in enumerate(VOTE_PATHS):
        name = f"rec-v{index}"
        apply(people, ns, recommendation(name), user="agent")
        wait_policies(objects, name, ["two-of-three"])
        objects.wait_phase(APPROVALS, name, "Pending")
        if way == "kubectl patch":
            vote = {"decision": decision} | ({"reason": reason} if reason else {})
            proc = patch_approval(people, ns, name, {"spec": vote}, user="bob")
        else:
            verb = "approve" if decision == "Approved" else "reject"
            extra = ["--reason", reason] if reason else []
            proc = people("optiinfra", verb, name, "-n", ns, *extra, user="bob", check=False)
        case = (decision, reason, way)
        assert proc.returncode == 0, (case, proc.stderr)
        assert "Invalid value" not in proc.stderr, (case, proc.stderr)
        expected = "Pending" if decision == "Approved" else "Rejected"
        voted = wait_for(
            lambda name=name: (  # type: ignore[misc]
                approval
                if (approval := objects.get(APPROVALS, name) or {})
                .get("status", {})
                .get("responses")
                else None
            ),
            what=f"the vote of {case} in status.responses",
        )
        responses = [(r["user"], r.get("reason")) for r in voted["status"]["responses"]]
        assert responses == [("bob", reason)], case
        assert objects.wait_phase(APPROVALS, name, expected)["spec"].get("reason", "") is not None
    refused = people("optiinfra", "reject", "rec-v0", "-n", ns, user="carol", check=False)
    assert refused.returncode == 2
    assert "--reason" in refused.stderr
