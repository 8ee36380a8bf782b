"""RBAC: the user roles in manifests/ behave as designed, checked with real requests.

The users agent, approver and viewer (client certificates of the local control plane) are
bound to optiinfra-agent, optiinfra-approver and optiinfra-viewer by RoleBindings in the
module's namespace; each case of the matrix is one kubectl request through the user's own
kubeconfig. The operator's ClusterRole is checked statically: it is never bound here.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from subprocess import CompletedProcess

import kubernetes
import pytest
import yaml

from tests.support import Kubectl, builders, wait_for
from tests.support.surface import (
    MANIFESTS,
    Doc,
    install_crds,
    module_namespace,
    object_exists,
    render_manifests,
)

GROUP = "optiinfra.io"
USERS = ("agent", "approver", "viewer")
ROLE_OF = {
    "agent": "optiinfra-agent",
    "approver": "optiinfra-approver",
    "viewer": "optiinfra-viewer",
}
POLICY_ADMIN = "optiinfra-policy-admin"
"""Writes ApprovalPolicies; aggregated into admin only (no user of the matrix has it)."""
RESOURCES = (
    "recommendations",
    "approvals",
    "executionplans",
    "agentendpoints",
    "approvalpolicies",
    "verificationtemplates",
)
VERBS = ("create", "get", "list", "patch", "delete", "get-status", "patch-status")
STATUS_VERBS = {"get-status", "patch-status"}
NO_STATUS = {"agentendpoints", "approvalpolicies", "verificationtemplates"}
"""Kinds without a status subresource: the status cases do not apply."""

# The design: what each user may do; everything else is Forbidden.
READ = {"get", "list", "get-status"}
# AgentEndpoints say where webhook steps go: approvers manage them, agents only read them.
ALLOWED: dict[str, dict[str, set[str]]] = {
    "agent": {
        "recommendations": READ | {"create", "patch", "delete"},
        "approvals": READ,
        "executionplans": READ,
        "agentendpoints": {"get", "list"},
        "approvalpolicies": {"get", "list"},
        # An agent does not choose its own success criteria: it reads templates, never writes.
        "verificationtemplates": {"get", "list"},
    },
    "approver": {
        "recommendations": READ,
        "approvals": READ | {"patch"},
        "executionplans": READ | {"patch"},
        "agentendpoints": {"get", "list", "create", "patch", "delete"},
        # Policies hold approvers to account: only admins write them.
        "approvalpolicies": {"get", "list"},
        "verificationtemplates": {"get", "list"},
    },
    "viewer": {
        resource: READ - (STATUS_VERBS if resource in NO_STATUS else set())
        for resource in RESOURCES
    },
}


def named(stem: str, resource: str) -> str:
    """Names differ by kind: an operator watching this namespace would name an Approval after
    its Recommendation, and must not collide with the objects of the cases."""
    return f"{stem}-{resource.removesuffix('s')}"


def manifest(resource: str, name: str) -> Doc:
    """A small valid object of each kind."""
    if resource == "recommendations":
        return builders.recommendation(
            name,
            customerId="acme",
            title="Scale the batch workers down at night",
            action="scale_down",
            affectedResources=["deployment/batch"],
        )
    if resource == "agentendpoints":
        return builders.endpoint(
            name, url="https://agent.example.com/hook", secretRef={"name": "hmac", "key": "k"}
        )
    if resource == "approvalpolicies":
        return builders.policy(name, approvals={"required": 2})
    if resource == "verificationtemplates":
        p99 = {"name": "p99", "query": "up", "failureCondition": "result < 1.0"}
        return builders.template(
            name,
            provider={"prometheus": {"address": "http://prometheus.monitoring:9090"}},
            metrics=[p99],
        )
    if resource == "approvals":
        return builders.approval(
            name, recommendation="rec-001", customerId="acme", expiresAt="2030-01-01T00:00:00Z"
        )
    return builders.plan(
        name,
        recommendation="rec-001",
        customerId="acme",
        steps=[{"name": "scale", "action": "scale_workload", "executor": "simulated"}],
    )


def cluster_roles(kubectl: Kubectl) -> dict[str, Doc]:
    return {
        d["metadata"]["name"]: d for d in render_manifests(kubectl) if d["kind"] == "ClusterRole"
    }


def can_i(kubectl: Kubectl, user: str, verb: str, resource: str, namespace: str) -> bool:
    ask = ("auth", "can-i", verb, f"{resource}.{GROUP}", "-n", namespace)
    proc = kubectl(*ask, user=user, check=False)
    return proc.stdout.strip() == "yes"


@pytest.fixture(scope="module")
def rbac_ns(kubectl: Kubectl, api: kubernetes.client.ApiClient) -> Iterator[str]:
    """CRDs and the ClusterRoles of manifests/ applied (only those), the three users bound in a
    namespace of the module's own, and one seed object of each kind, created by the admin."""
    install_crds(kubectl, api)
    roles = list(cluster_roles(kubectl).values())
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(roles))
    with module_namespace(api, "rbac-matrix") as namespace:
        for user, role in ROLE_OF.items():
            binding = ("create", "rolebinding", role, f"--clusterrole={role}", f"--user={user}")
            kubectl(*binding, "-n", namespace)
        for resource in RESOURCES:
            seed = json.dumps(manifest(resource, named("seed", resource)))
            kubectl("create", "-n", namespace, "-f", "-", stdin=seed)
        # The authorizer sees new bindings (and updated roles) through a watch: wait for them.
        signature = {
            "agent": ("create", "recommendations"),
            "approver": ("patch", "approvals"),
            "viewer": ("list", "executionplans"),
        }
        for user, (verb, resource) in signature.items():
            wait_for(
                functools.partial(can_i, kubectl, user, verb, resource, namespace),
                what=f"{user} to be allowed to {verb} {resource} in {namespace}",
            )
        yield namespace


def forbidden(proc: CompletedProcess[str], user: str, verb: str, resource: str) -> None:
    """Refused by RBAC, and the message says who was refused what."""
    output = f"{proc.stderr}{proc.stdout}"
    assert proc.returncode != 0, f"{user} was allowed to {verb} {resource}:\n{output}"
    assert "(Forbidden)" in proc.stderr, output
    message = f'User "{user}" cannot {verb} resource "{resource}" in API group "{GROUP}"'
    assert message in proc.stderr, output


def succeeded_or_forbidden(
    proc: CompletedProcess[str], allowed: bool, user: str, verb: str, resource: str
) -> None:
    if allowed:
        assert proc.returncode == 0, f"{user} could not {verb} {resource}:\n{proc.stderr}"
    else:
        forbidden(proc, user, verb, resource)


def get_object(kubectl: Kubectl, resource: str, name: str, namespace: str) -> Doc:
    obj: Doc = json.loads(kubectl("get", resource, name, "-n", namespace, "-o", "json").stdout)
    return obj


MATRIX = [
    pytest.param(user, verb, resource, id=f"{user}-{verb}-{resource}")
    for user in USERS
    for resource in RESOURCES
    for verb in VERBS
    if not (resource in NO_STATUS and verb in STATUS_VERBS)
]


@pytest.mark.parametrize(("user", "verb", "resource"), MATRIX)
def test_rbac_matrix(kubectl: Kubectl, rbac_ns: str, user: str, verb: str, resource: str) -> None:
    """One real request of `user` through its own kubeconfig; allowed means it did happen,
    denied means Forbidden naming the user, and that it did not happen."""
    allowed = verb in ALLOWED[user][resource]
    ns = rbac_ns
    seed = named("seed", resource)
    qualified = f"{resource}.{GROUP}"  # unambiguous, whatever else the cluster serves

    if verb == "create":
        name = named(f"created-by-{user}", resource)
        body = json.dumps(manifest(resource, name))
        proc = kubectl("create", "-n", ns, "-f", "-", stdin=body, user=user, check=False)
        succeeded_or_forbidden(proc, allowed, user, "create", resource)
        assert object_exists(kubectl, qualified, name, ns) is allowed

    elif verb == "get":
        proc = kubectl("get", qualified, seed, "-n", ns, "-o", "json", user=user, check=False)
        succeeded_or_forbidden(proc, allowed, user, "get", resource)
        if allowed:
            assert json.loads(proc.stdout)["metadata"]["name"] == seed

    elif verb == "list":
        proc = kubectl("get", qualified, "-n", ns, "-o", "json", user=user, check=False)
        succeeded_or_forbidden(proc, allowed, user, "list", resource)
        if allowed:
            assert seed in [item["metadata"]["name"] for item in json.loads(proc.stdout)["items"]]

    elif verb == "get-status":
        get = ("get", qualified, seed, "-n", ns, "--subresource=status", "-o", "json")
        proc = kubectl(*get, user=user, check=False)
        succeeded_or_forbidden(proc, allowed, user, "get", f"{resource}/status")
        if allowed:
            assert json.loads(proc.stdout)["metadata"]["name"] == seed

    elif verb == "patch":
        key = f"patched-by-{user}"
        body = json.dumps({"metadata": {"labels": {key: "yes"}}})
        patch = ("patch", qualified, seed, "-n", ns, "--type", "merge", "-p", body)
        proc = kubectl(*patch, user=user, check=False)
        succeeded_or_forbidden(proc, allowed, user, "patch", resource)
        labels = get_object(kubectl, qualified, seed, ns)["metadata"].get("labels") or {}
        assert (labels.get(key) == "yes") is allowed

    elif verb == "patch-status":
        forged = f"forged by {user}"
        body = json.dumps({"status": {"message": forged}})
        patch_status = ("patch", qualified, seed, "-n", ns, "--subresource=status")
        proc = kubectl(*patch_status, "--type", "merge", "-p", body, user=user, check=False)
        succeeded_or_forbidden(proc, allowed, user, "patch", f"{resource}/status")
        status = get_object(kubectl, qualified, seed, ns).get("status") or {}
        assert (status.get("message") == forged) is allowed

    else:
        assert verb == "delete"
        name = named(f"doomed-for-{user}", resource)
        kubectl("create", "-n", ns, "-f", "-", stdin=json.dumps(manifest(resource, name)))
        proc = kubectl("delete", qualified, name, "-n", ns, "--wait=false", user=user, check=False)
        succeeded_or_forbidden(proc, allowed, user, "delete", resource)
        if allowed:
            wait_for(
                lambda: not object_exists(kubectl, qualified, name, ns),
                what=f"{resource}/{name} to be deleted",
            )
        else:
            assert object_exists(kubectl, qualified, name, ns)


def test_approver_decides_but_cannot_write_who_decided(kubectl: Kubectl, rbac_ns: str) -> None:
    """The documented command works for an approver; the status (decidedBy) stays the
    operator's."""
    name = "to-decide"
    kubectl("create", "-n", rbac_ns, "-f", "-", stdin=json.dumps(manifest("approvals", name)))
    decide = {"spec": {"decision": "Rejected", "reason": "Too risky during peak hours"}}
    patch = ("patch", "approval", name, "-n", rbac_ns, "--type", "merge")
    kubectl(*patch, "-p", json.dumps(decide), user="approver")
    obj = json.loads(kubectl("get", "approval", name, "-n", rbac_ns, "-o", "json").stdout)
    assert obj["spec"]["decision"] == "Rejected"
    forge = {"status": {"phase": "Approved", "decidedBy": "somebody-else"}}
    proc = kubectl(
        *patch, "--subresource=status", "-p", json.dumps(forge), user="approver", check=False
    )
    forbidden(proc, "approver", "patch", "approvals/status")


# --- The built-in roles aggregate the user roles ---------------------------------------------

# Which user roles each built-in role takes in: approving is a separate duty, so not in edit.
AGGREGATES = {
    "view": {"optiinfra-viewer"},
    "edit": {"optiinfra-viewer", "optiinfra-agent"},
    "admin": {
        "optiinfra-viewer",
        "optiinfra-agent",
        "optiinfra-approver",
        POLICY_ADMIN,
    },
}


def matches(labels: dict[str, str], selector: Doc) -> bool:
    assert set(selector) <= {"matchLabels"}, f"unexpected selector {selector}"
    return bool(selector) and selector["matchLabels"].items() <= labels.items()


def test_user_roles_are_selected_by_the_builtin_aggregations(
    kubectl: Kubectl, roles: dict[str, Doc]
) -> None:
    """Against the cluster's own view/edit/admin aggregation rules, followed transitively the
    way the aggregation controller does (view is aggregated into edit, edit into admin)."""
    live = json.loads(kubectl("get", "clusterroles", "-o", "json").stdout)["items"]
    all_roles = {r["metadata"]["name"]: r for r in live} | roles
    labels = {name: r["metadata"].get("labels") or {} for name, r in all_roles.items()}

    def members(aggregate: str, seen: frozenset[str] = frozenset()) -> set[str]:
        selectors = (all_roles[aggregate].get("aggregationRule") or {}).get(
            "clusterRoleSelectors", []
        )
        found: set[str] = set()
        for name in all_roles:
            if name in seen or not any(matches(labels[name], s) for s in selectors):
                continue
            found.add(name)
            if all_roles[name].get("aggregationRule"):
                found |= members(name, seen | {aggregate})
        return found

    for builtin, expected in AGGREGATES.items():
        assert members(builtin) & {*ROLE_OF.values(), POLICY_ADMIN} == expected, builtin


AGGREGATED = {
    # built-in role: {(verb, resource): allowed}
    "view": {
        ("get", "recommendations"): True,
        ("list", "executionplans"): True,
        ("create", "recommendations"): False,
        ("patch", "approvals"): False,
        ("get", "agentendpoints"): True,
        ("create", "agentendpoints"): False,
        ("get", "approvalpolicies"): True,
        ("create", "approvalpolicies"): False,
    },
    "edit": {
        ("create", "recommendations"): True,
        ("delete", "recommendations"): True,
        ("get", "executionplans"): True,
        ("patch", "approvals"): False,
        ("patch", "executionplans"): False,
        ("create", "agentendpoints"): False,  # edit users (agents) cannot point steps elsewhere
        ("create", "approvalpolicies"): False,
    },
    "admin": {
        ("create", "recommendations"): True,
        ("patch", "approvals"): True,
        ("list", "approvals"): True,
        ("patch", "executionplans"): True,
        ("create", "agentendpoints"): True,
        ("create", "approvalpolicies"): True,
        ("patch", "approvalpolicies"): True,
    },
}


def test_builtin_roles_grant_the_aggregated_rights(
    kubectl: Kubectl, rbac_ns: str, namespace: str
) -> None:
    """The same, as the authorizer sees it: access reviews for made-up users bound to view,
    edit and admin. Needs the clusterrole-aggregation-controller in kube-controller-manager."""
    view = json.loads(kubectl("get", "clusterrole", "view", "-o", "json").stdout)
    if not view.get("rules"):
        pytest.skip(
            "the built-in view role has no rules at all: the clusterrole-aggregation-controller "
            "is not running (KCM_CONTROLLERS in hack/cluster/localcluster.py)"
        )
    for role in AGGREGATED:
        binding = ("create", "rolebinding", f"builtin-{role}", f"--clusterrole={role}")
        kubectl(*binding, f"--user=probe-{role}", "-n", namespace)
    wrong: list[str] = []

    def aggregated() -> bool:
        wrong.clear()
        for role, table in AGGREGATED.items():
            for (verb, resource), expected in table.items():
                ask = ("auth", "can-i", verb, f"{resource}.{GROUP}", "-n", namespace)
                proc = kubectl(*ask, f"--as=probe-{role}", check=False)
                if (proc.stdout.strip() == "yes") is not expected:
                    wrong.append(f"{role} {'can not' if expected else 'can'} {verb} {resource}")
        return not wrong

    try:
        wait_for(aggregated, what="view/edit/admin to aggregate the optiinfra roles", timeout=20)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {wrong}") from None


# --- Static checks of the ClusterRoles --------------------------------------------------------

OPERATOR_PERMISSIONS = {
    # (apiGroup, resource, verb, resourceNames)
    *{(GROUP, "recommendations", v, ()) for v in ("get", "list", "watch")},
    *{(GROUP, "recommendations/status", v, ()) for v in ("get", "patch", "update")},
    *{
        (GROUP, r, v, ())
        for r in ("approvals", "executionplans")
        for v in ("get", "list", "watch", "create", "patch", "update", "delete")
    },
    *{
        (GROUP, f"{r}/status", v, ())
        for r in ("approvals", "executionplans")
        for v in ("get", "patch", "update")
    },
    *{(GROUP, "agentendpoints", v, ()) for v in ("get", "list", "watch")},
    *{(GROUP, "approvalpolicies", v, ()) for v in ("get", "list", "watch")},
    *{(GROUP, "verificationtemplates", v, ()) for v in ("get", "list", "watch")},
    # No secrets: endpoint keys are granted per namespace, by name (endpoint-secrets-role.yaml).
    *{(g, "events", v, ()) for g in ("", "events.k8s.io") for v in ("create", "patch")},
    *{
        ("apiextensions.k8s.io", "customresourcedefinitions", v, ())
        for v in ("get", "list", "watch")
    },
    *{("", "namespaces", v, ()) for v in ("get", "list", "watch")},
    ("authorization.k8s.io", "subjectaccessreviews", "create", ()),
    # The shipped webhook configurations (webhooks.yaml), by name; never `create` in a cluster
    # (local-webhooks-role.yaml grants that to an operator run outside it).
    *{
        ("admissionregistration.k8s.io", r, v, ("optiinfra-coordinator",))
        for r in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations")
        for v in ("get", "update")
    },
    # No workloads, no ConfigMaps: a namespace grants them (optiinfra-executor).
}
EXECUTOR_PERMISSIONS = {
    # scale, patch and wait on the workloads (the object itself and /scale)
    *{
        ("apps", r, v, ())
        for r in ("deployments", "statefulsets", "replicasets")
        for v in ("get", "patch")
    },
    *{
        ("apps", f"{r}/scale", v, ())
        for r in ("deployments", "statefulsets", "replicasets")
        for v in ("get", "patch", "update")
    },
    # apply of an HPA (server-side apply: create + patch; get first), its undo deletes it
    *{
        ("autoscaling", "horizontalpodautoscalers", v, ())
        for v in ("create", "get", "patch", "delete")
    },
    *{("", "configmaps", v, ()) for v in ("get", "patch")},
}


def permissions(role: Doc) -> set[tuple[str, str, str, tuple[str, ...]]]:
    return {
        (group, resource, verb, tuple(rule.get("resourceNames") or ()))
        for rule in role["rules"]
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule["verbs"]
    }


def strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from strings(v)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


@pytest.fixture(scope="module")
def roles(kubectl: Kubectl) -> dict[str, Doc]:
    return cluster_roles(kubectl)


def test_no_role_has_wildcards_or_secrets(roles: dict[str, Doc]) -> None:
    assert set(roles) == {
        "optiinfra-coordinator", "optiinfra-executor", *ROLE_OF.values(), POLICY_ADMIN
    }  # fmt: skip
    for name, role in roles.items():
        texts = list(strings(role["rules"]))
        assert not [t for t in texts if "*" in t], f"{name} has a wildcard"
        assert "secrets" not in texts, f"{name} touches secrets"
        assert all("nonResourceURLs" not in rule for rule in role["rules"]), name
        verbs = {verb for rule in role["rules"] for verb in rule["verbs"]}
        assert not verbs & {"escalate", "bind", "impersonate", "deletecollection"}, name


def test_operator_role_grants_exactly_what_the_operator_uses(roles: dict[str, Doc]) -> None:
    granted = permissions(roles["optiinfra-coordinator"])
    assert granted - OPERATOR_PERMISSIONS == set(), "more than the operator uses"
    assert OPERATOR_PERMISSIONS - granted == set(), "less than the operator uses"


def test_the_executor_role_grants_the_workloads_only_and_is_bound_nowhere(
    kubectl: Kubectl, roles: dict[str, Doc]
) -> None:
    """Changing workloads is a namespace's choice: optiinfra-executor is shipped, and bound
    only by a RoleBinding a namespace makes (tests/cluster/conftest.py opt_in)."""
    assert permissions(roles["optiinfra-executor"]) == EXECUTOR_PERMISSIONS
    bindings = [d for d in render_manifests(kubectl) if d["kind"].endswith("Binding")]
    assert not [b for b in bindings if b["roleRef"]["name"] == "optiinfra-executor"]


def test_the_local_webhooks_role_is_a_separate_role_outside_the_install() -> None:
    """`create` on webhook configurations: only for an operator run outside the cluster."""
    text = (MANIFESTS / "local-webhooks-role.yaml").read_text()
    role, binding = [d for d in yaml.safe_load_all(text) if d]
    assert (role["kind"], binding["kind"]) == ("ClusterRole", "ClusterRoleBinding")
    assert permissions(role) == {
        ("admissionregistration.k8s.io", r, "create", ())
        for r in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations")
    }
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    assert "local-webhooks-role.yaml" not in kustomization["resources"]
    assert "webhooks.yaml" in kustomization["resources"]


def test_operator_role_is_bound_to_the_operator(kubectl: Kubectl) -> None:
    docs = render_manifests(kubectl)
    [binding] = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "optiinfra-coordinator",
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": deployment["spec"]["template"]["spec"]["serviceAccountName"],
            "namespace": deployment["metadata"]["namespace"],
        }
    ]


def test_the_endpoint_secrets_template_grants_get_on_named_secrets_only() -> None:
    """The one place the operator reads Secrets: a namespaced Role, `get` only, by name,
    bound to the operator's ServiceAccount."""
    text = (MANIFESTS / "endpoint-secrets-role.yaml").read_text()
    role, binding = [d for d in yaml.safe_load_all(text) if d]
    assert (role["kind"], binding["kind"]) == ("Role", "RoleBinding")
    [rule] = role["rules"]
    assert rule["resources"] == ["secrets"]
    assert rule["verbs"] == ["get"]
    assert rule["resourceNames"], "the Secrets must be named"
    assert binding["roleRef"]["name"] == role["metadata"]["name"] == "optiinfra-endpoint-secrets"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "optiinfra-coordinator", "namespace": "optiinfra-system"}
    ]
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    assert "endpoint-secrets-role.yaml" not in kustomization["resources"]  # a template


def test_no_user_role_writes_status(roles: dict[str, Doc]) -> None:
    for name in ROLE_OF.values():
        for group, resource, verb, _ in permissions(roles[name]):
            assert group == GROUP, name
            if resource.endswith("/status"):
                assert verb in {"get", "list", "watch"}, f"{name} may {verb} {resource}"
