"""The webhook executor end to end: the operator (as its ServiceAccount) calls the reference
agent (``python -m coordinator.agent``) through an AgentEndpoint, with the HMAC key in a
Secret the operator was granted by the per-namespace Role of manifests/."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from coordinator.core import webhook as protocol
from tests.support import Kubectl, builders, wait_for
from tests.support.builders import recommendation
from tests.support.cluster import SUBMITTERS, grant_endpoint_secrets
from tests.support.kube import Objects, submit
from tests.support.processes import KEY, AgentProcess, OperatorProcess

PLANS = "executionplans"
SECRET = "agent-hmac"


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentProcess]:
    process = AgentProcess(tmp_path / "agent")
    yield process
    process.stop()


def endpoint_manifest(
    name: str, url: str, submitters: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """AgentEndpoint `name` at `url`, its key in Secret SECRET, taking the steps of
    `submitters` (by default SUBMITTERS)."""
    return builders.endpoint(
        name,
        url=url,
        secretRef={"name": SECRET, "key": "hmac"},
        timeoutSeconds=10,
        submitters=submitters if submitters is not None else SUBMITTERS,
    )


def set_up_endpoint(
    kubectl: Kubectl,
    api: kubernetes.client.ApiClient,
    namespace: str,
    url: str,
    *,
    grant: bool = True,
) -> None:
    """The admin's part: the Secret, the AgentEndpoint and (unless not) the Role."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET},
        "data": {"hmac": base64.b64encode(KEY).decode()},
    }
    kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(secret))
    if grant:  # before the endpoint: a plan waiting for it starts as soon as it exists
        grant_endpoint_secrets(kubectl, api, namespace, [SECRET])
    manifest = json.dumps(endpoint_manifest("agent", url))
    kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest)


@pytest.fixture
def endpoint(
    kubectl: Kubectl, api: kubernetes.client.ApiClient, objects: Objects, agent: AgentProcess
) -> AgentProcess:
    """The agent behind AgentEndpoint `agent` of the test's e2e namespace, fully granted."""
    set_up_endpoint(kubectl, api, objects.namespace, agent.url)
    return agent


RESIZE = {
    "agentId": "capacity-agent",
    "title": "Resize the node pool",
    "action": "resize_pool",
    "riskLevel": "low",
    "executeNow": True,
    "affectedResources": None,
}
"""The capacity agent's change: low risk, started at once, no resources named."""


def resize(**params: Any) -> list[dict[str, Any]]:
    """The one webhook step that resizes the spot pool through endpoint `agent`."""
    return [
        {
            "name": "resize",
            "action": "resize_pool",
            "executor": "webhook",
            "params": {"endpoint": "agent", "pool": "spot", **params},
        }
    ]


@pytest.mark.parametrize(
    ("behaviour", "requests"), [("ok", 1), ("accept-then-poll", 3), ("flaky", 3)]
)
def test_webhook_step_succeeds_with_the_agents_result(
    kubectl: Kubectl, objects: Objects, endpoint: AgentProcess, behaviour: str, requests: int
) -> None:
    """200 at once, 202 twice then 200, 503 twice then 200: the step succeeds with the
    agent's result; the agent applied the change once."""
    agent, e2e_namespace = endpoint, objects.namespace
    submit(
        kubectl,
        e2e_namespace,
        recommendation(
            "rec-hook", customerId="acme", steps=resize(agentBehaviour=behaviour), **RESIZE
        ),
    )
    plan = objects.wait_phase(PLANS, "rec-hook", "Succeeded", timeout=60)
    key = protocol.idempotency_key(plan["metadata"]["uid"], "resize", "execute")
    [step] = plan["status"]["steps"]
    assert step["phase"] == "Succeeded"
    assert step["result"] == {"applied": True, "action": "resize_pool", "change": key[:12]}
    assert agent.applied() == {key: 1}
    assert agent.requests() == {key: requests}
    # On whose behalf: the submitter as the API server authenticated it at admission.
    submitter = {"user": "agent", "groups": ["system:authenticated"]}
    assert agent.submitters() == {key: submitter}


def test_a_4xx_fails_the_step_with_the_agents_message(
    kubectl: Kubectl, objects: Objects, endpoint: AgentProcess
) -> None:
    agent, e2e_namespace = endpoint, objects.namespace
    params = {"agentBehaviour": "fail", "agentError": "no spot capacity in eu-west-1"}
    submit(
        kubectl,
        e2e_namespace,
        recommendation("rec-refused", customerId="acme", steps=resize(**params), **RESIZE),
    )
    plan = objects.wait_phase(PLANS, "rec-refused", "RolledBack", timeout=60)
    [step] = plan["status"]["steps"]
    assert step["phase"] == "Failed"
    assert step["error"] == "agent endpoint agent refused (422): no spot capacity in eu-west-1"
    assert agent.applied() == {}


def test_without_the_secret_role_the_step_names_the_secret_and_the_role(
    kubectl: Kubectl,
    api: kubernetes.client.ApiClient,
    e2e_namespace: str,
    objects: Objects,
    agent: AgentProcess,
) -> None:
    set_up_endpoint(kubectl, api, e2e_namespace, agent.url, grant=False)
    submit(
        kubectl,
        e2e_namespace,
        recommendation("rec-ungranted", customerId="acme", steps=resize(), **RESIZE),
    )
    plan = objects.wait_phase(PLANS, "rec-ungranted", "RolledBack", timeout=60)
    error = plan["status"]["steps"][0]["error"]
    assert f"Secret {e2e_namespace}/{SECRET}" in error
    assert f"Role optiinfra-endpoint-secrets in namespace {e2e_namespace}" in error
    assert agent.requests() == {}


def test_a_missing_endpoint_never_refuses_its_plan_waits_and_starts_once_registered(
    kubectl: Kubectl,
    api: kubernetes.client.ApiClient,
    e2e_namespace: str,
    objects: Objects,
    agent: AgentProcess,
) -> None:
    """The endpoint does not exist yet: the recommendation is admitted and approved by
    policy (low risk); its plan waits, Pending, naming the endpoint; registered by an
    admin (taking the agent's steps), the plan starts, from the watch."""
    submit(
        kubectl,
        e2e_namespace,
        recommendation("rec-early", customerId="acme", steps=resize(), **RESIZE),
    )

    def waiting() -> dict[str, Any] | None:
        status = objects.get(PLANS, "rec-early") or {}
        message = (status.get("status") or {}).get("message") or ""
        return status if "waiting for AgentEndpoint agent to be registered" in message else None

    plan = wait_for(waiting, timeout=30, what="the plan to wait for its endpoint")
    assert plan["status"]["phase"] == "Pending"
    [ready] = [c for c in plan["status"]["conditions"] if c["type"] == "Ready"]
    assert ready["status"] == "Unknown"
    assert f"AgentEndpoint agent to be registered in namespace {e2e_namespace}" in ready["message"]
    assert agent.requests() == {}
    set_up_endpoint(kubectl, api, e2e_namespace, agent.url)
    plan = objects.wait_phase(PLANS, "rec-early", "Succeeded", timeout=60)
    assert len(agent.applied()) == 1


def test_admission_refuses_what_it_can_know_of_endpoints(
    kubectl: Kubectl, e2e_namespace: str, operator: OperatorProcess
) -> None:
    """A webhook step without params.endpoint, and an endpoint whose submitters exclude
    the submitter, are refused; a missing endpoint is not."""
    rec = recommendation("rec-nowhere", customerId="acme", steps=resize(), **RESIZE)
    del rec["spec"]["steps"][0]["params"]["endpoint"]
    proc = kubectl(
        "create", "-n", e2e_namespace, "-f", "-", stdin=yaml.safe_dump(rec), user="agent",
        check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "spec.steps[0].params.endpoint: webhook step resize must name" in proc.stderr
    # Another agent's endpoint: registered a moment before the recommendation (the
    # operator's watch may not have shown it yet), refused all the same.
    infra = endpoint_manifest("agent", "https://agent.example.com/hook", [{"user": "infra"}])
    kubectl("create", "-n", e2e_namespace, "-f", "-", stdin=json.dumps(infra), user="approver")
    rec = recommendation("rec-elsewhere", customerId="acme", steps=resize(), **RESIZE)
    proc = kubectl(
        "create", "-n", e2e_namespace, "-f", "-", stdin=yaml.safe_dump(rec), user="agent",
        check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "agent may not send steps to AgentEndpoint agent" in proc.stderr, proc.stderr
    assert "its submitters are user infra" in proc.stderr


def test_an_agent_cannot_create_an_endpoint_an_approver_can(
    kubectl: Kubectl, e2e_namespace: str
) -> None:
    manifest = json.dumps(endpoint_manifest("by-agent", "https://agent.example.com/hook"))
    proc = kubectl("create", "-n", e2e_namespace, "-f", "-", stdin=manifest, user="agent",
                   check=False)  # fmt: skip
    assert proc.returncode != 0
    assert 'cannot create resource "agentendpoints"' in proc.stderr, proc.stderr
    manifest = json.dumps(endpoint_manifest("by-approver", "https://agent.example.com/hook"))
    kubectl("create", "-n", e2e_namespace, "-f", "-", stdin=manifest, user="approver")
    # The CRD's CEL rule: plain http only to loopback.
    bad = json.dumps(endpoint_manifest("plain", "http://agent.example.com/hook"))
    proc = kubectl("create", "-n", e2e_namespace, "-f", "-", stdin=bad, user="approver",
                   check=False)  # fmt: skip
    assert proc.returncode != 0
    assert "http:// only to loopback" in proc.stderr, proc.stderr


def test_sigkill_during_a_call_then_restart_applies_the_change_once(
    kubectl: Kubectl,
    api: kubernetes.client.ApiClient,
    own_namespace: str,
    own_operator: Callable[..., OperatorProcess],
    tmp_path: Path,
) -> None:
    """The agent holds the first request 3 s; the operator is killed meanwhile. The
    restarted operator sends the same idempotency key; the agent applied the change once."""
    agent = AgentProcess(tmp_path / "agent")
    try:
        objects = Objects(api, own_namespace)
        set_up_endpoint(kubectl, api, own_namespace, agent.url)
        process = own_operator("operator")
        rec = recommendation(
            "rec-kill",
            customerId="acme",
            steps=resize(agentBehaviour="hold", holdSeconds=3),
            **RESIZE,
        )
        kubectl("apply", "-n", own_namespace, "-f", "-", stdin=yaml.safe_dump(rec))
        wait_for(agent.requests, what="the agent to receive the first request", timeout=30)
        process.kill()
        [(key, count)] = agent.requests().items()
        assert count == 1
        own_operator("operator-restarted")
        plan = objects.wait_phase(PLANS, "rec-kill", "Succeeded", timeout=60)
        assert key == protocol.idempotency_key(plan["metadata"]["uid"], "resize", "execute")
        assert agent.applied() == {key: 1}
        assert agent.requests()[key] >= 2  # asked again after the restart, with the same key
        assert plan["status"]["steps"][0]["result"]["change"] == key[:12]
    finally:
        agent.stop()


@pytest.mark.parametrize(
    "url",
    [
        "https://169.254.169.254/latest/meta-data/",
        "http://169.254.169.254/",
        "https://[fe80::1]:8443/",
        "https://[::ffff:169.254.169.254]/",
        "https://[fd00:ec2::254]/",
        "https://0.0.0.0/",
        "https://224.0.0.1/",
    ],
)
def test_an_endpoint_at_a_metadata_or_link_local_address_is_refused_at_creation(
    kubectl: Kubectl, own_namespace: str, url: str
) -> None:
    """The CRD's CEL address rule: the API server refuses the object, naming spec.url; an
    endpoint at a private address (where real agents live) is created."""
    manifest = json.dumps(endpoint_manifest("metadata", url))
    proc = kubectl("create", "-n", own_namespace, "-f", "-", stdin=manifest, check=False)
    assert proc.returncode != 0
    assert "spec.url" in proc.stderr, proc.stderr
    assert "url must not name a link-local (169.254.0.0/16, fe80::/10" in proc.stderr
    private = json.dumps(endpoint_manifest("private", "https://10.0.0.7:8443/hook"))
    kubectl("create", "-n", own_namespace, "-f", "-", stdin=private)
