"""Access reviews: what the operator may do, and what a submitter may do.

- At start (SelfSubjectAccessReview): an operator that lacks a right fails late and in
  loops — a 403 on its webhook configuration at exit, a 500 per reconcile. Asking the API
  server first turns that into one line naming the identity, the verb and the resource.
- At admission (SubjectAccessReview): the operator acts with its own rights, so a
  submitter could make it do what they may not. For each cluster change a recommendation's
  plan would make, the API server is asked whether the submitter may make it themselves;
  if not, a person must approve (``core.approval.assess``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Final

import kubernetes

from coordinator.api import common
from coordinator.core import admission
from coordinator.core import namespaces as namespaces_

ROLE_HINT: Final = "manifests/operator-rbac.yaml grants what it needs"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Need:
    verb: str
    group: str
    resource: str
    namespace: str = ""  # "": in every namespace (or cluster-scoped)
    name: str = ""
    why: str = ""

    def text(self) -> str:
        what = f"{self.resource}.{self.group}" if self.group else self.resource
        if self.name:
            what += f"/{self.name}"
        where = f" in namespace {self.namespace}" if self.namespace else ""
        return f"{self.verb} {what}{where}"


def needs(
    *,
    namespaces: Sequence[str],
    webhooks: bool,
    lease: tuple[str, str] | None,
    local_webhooks: bool = False,
    shards: str | None = None,
) -> list[Need]:
    """The rights the operator uses, for the namespaces it watches and its mode. (The
    kubernetes executor's rights are granted per namespace, optiinfra-executor: a plan in a
    namespace without them fails its first kubernetes step saying what to bind.)"""
    globs = any(namespaces_.is_pattern(ns) for ns in namespaces)
    scopes = list(namespaces) if namespaces and not globs else [""]
    group = common.GROUP
    result: list[Need] = []
    for ns in scopes:
        for verb in ("list", "watch"):
            result.append(
                Need(verb=verb, group=group, resource=common.RECOMMENDATIONS, namespace=ns)
            )
        result.append(
            Need(
                verb="patch", group=group, resource=f"{common.RECOMMENDATIONS}/status", namespace=ns
            )
        )
        for plural in (common.APPROVALS, common.PLANS):
            for verb in ("list", "watch", "create", "delete"):
                result.append(Need(verb=verb, group=group, resource=plural, namespace=ns))
            result.append(
                Need(verb="patch", group=group, resource=f"{plural}/status", namespace=ns)
            )
        for verb in ("list", "watch"):  # the ApprovalPolicies of the namespace: read only
            result.append(Need(verb=verb, group=group, resource=common.POLICIES, namespace=ns))
        # The VerificationTemplates of a plan's namespace: one LIST per plan that starts
        # or verifies (coordinator.verifier).
        result.append(Need(verb="list", group=group, resource=common.TEMPLATES, namespace=ns))
        # AgentEndpoints: kept in the Store (admission, webhook steps); a GET for one the
        # watch has not shown yet.
        for verb in ("get", "list", "watch"):
            result.append(Need(verb=verb, group=group, resource=common.ENDPOINTS, namespace=ns))
        result.append(Need(verb="create", group="", resource="events", namespace=ns))
    if globs:  # kopf follows the namespaces that match coming and going
        result.append(Need(verb="watch", group="", resource="namespaces", why="--namespace globs"))
    if webhooks:  # whether a submitter may make a plan's changes themselves (admission)
        result.append(
            Need(
                verb="create",
                group="authorization.k8s.io",
                resource="subjectaccessreviews",
                why="the admission webhooks' check of the submitter's rights",
            )
        )
        # In a cluster the configurations are shipped (manifests/webhooks.yaml); a local
        # operator creates them (manifests/local-webhooks-role.yaml).
        verbs = (("create", ""),) if local_webhooks else ()
        for plural in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations"):
            for verb, name in (
                *verbs,
                ("get", "optiinfra-coordinator"),
                ("update", "optiinfra-coordinator"),
            ):
                why = "admission webhooks (--webhooks=off to run without)"
                if verb == "create":
                    why = "local admission webhooks (manifests/local-webhooks-role.yaml grants it)"
                result.append(
                    Need(
                        verb=verb,
                        group="admissionregistration.k8s.io",
                        resource=plural,
                        name=name,
                        why=why,
                    )
                )
    if lease is not None:
        namespace, name = lease
        for verb, lease_name in (("create", ""), ("get", name), ("update", name)):
            result.append(
                Need(
                    verb=verb,
                    group="coordination.k8s.io",
                    resource="leases",
                    namespace=namespace,
                    name=lease_name,
                    why="leader election (--lease)",
                )
            )
    if shards is not None:
        result.extend(
            Need(
                verb=verb,
                group="coordination.k8s.io",
                resource="leases",
                namespace=shards,
                why="shards (--shard): its own Lease, the ring, the customers' hand-off records",
            )
            for verb in ("create", "get", "list", "update", "delete")
        )
    return result


def whoami(api: kubernetes.client.ApiClient) -> str:
    """The user the API server authenticates this client as (or "this client")."""
    try:
        authn: Any = kubernetes.client.AuthenticationV1Api(api)
        review = authn.create_self_subject_review(
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
            _request_timeout=10,
        )
        return str(review.status.user_info.username)
    except Exception:  # an older API server: the message just says less
        return "this client"


def denied(api: kubernetes.client.ApiClient, wanted: Sequence[Need]) -> list[Need]:
    """The needs the API server does not allow this client."""
    authz: Any = kubernetes.client.AuthorizationV1Api(api)
    missing = []
    for need in wanted:
        attributes = {"verb": need.verb, "group": need.group, "resource": need.resource}
        resource, _, sub = need.resource.partition("/")
        attributes["resource"] = resource
        if sub:
            attributes["subresource"] = sub
        if need.namespace:
            attributes["namespace"] = need.namespace
        if need.name:
            attributes["name"] = need.name
        review = authz.create_self_subject_access_review(
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": attributes},
            },
            _request_timeout=10,
        )
        if not review.status.allowed:
            missing.append(need)
    return missing


def preflight(
    api: kubernetes.client.ApiClient,
    *,
    namespaces: Sequence[str],
    webhooks: bool,
    lease: tuple[str, str] | None,
    local_webhooks: bool = False,
    shards: str | None = None,
) -> str | None:
    """None when the operator may do all it needs, else one line saying what it lacks."""
    wanted = needs(
        namespaces=namespaces,
        webhooks=webhooks,
        lease=lease,
        local_webhooks=local_webhooks,
        shards=shards,
    )
    try:
        missing = denied(api, wanted)
    except kubernetes.client.ApiException as exc:
        return f"cannot ask the API server what this operator may do: {exc.status} {exc.reason}"
    except Exception as exc:
        return f"cannot reach the API server: {' '.join(str(exc).split())[:300]}"
    if not missing:
        return None
    first = missing[0]
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    why = f", needed for {first.why}" if first.why else ""
    return f"{whoami(api)} may not {first.text()}{why}{more}; {ROLE_HINT}"


# --- the submitter's rights: the operator is nobody's deputy ------------------------------


class Resources:
    """Which resource (plural) and group a kind of an apiVersion is, from discovery of that
    group-version only (one small call each, cached)."""

    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self._api = api
        self._known: dict[str, dict[str, str]] = {}

    def plural(self, api_version: str, kind: str) -> str | None:
        known = self._known.get(api_version)
        if known is None:
            found: Any
            if api_version == "v1":
                found = kubernetes.client.CoreV1Api(self._api).get_api_resources(_request_timeout=5)
            else:
                group, _, version = api_version.rpartition("/")
                found = kubernetes.client.CustomObjectsApi(self._api).get_api_resources(
                    group, version, _request_timeout=5
                )
            known = {r.kind: r.name for r in found.resources or () if "/" not in r.name}
            self._known[api_version] = known
        return known.get(kind)


def submitter_may_not(
    api: kubernetes.client.ApiClient,
    resources: Resources,
    *,
    user: Mapping[str, Any],
    namespace: str,
    accesses: Sequence[admission.Access],
) -> str | None:
    """The first change of `accesses` that `user` (the userInfo of an admission request) may
    not make in `namespace` themselves, as a phrase ("alice may not patch Deployment web
    (scale) (step scale)"); None when they may make every one. A review that cannot be made
    counts as a no: a person then decides, which is the safe side."""
    authz: Any = kubernetes.client.AuthorizationV1Api(api)
    name = str(user.get("username") or "the submitter")
    for access in accesses:
        try:
            plural = resources.plural(access.api_version, access.kind)
            if plural is None:
                return f"{name} asks to {access.text()}, a kind this cluster does not serve"
            group = access.api_version.rpartition("/")[0]
            attributes = {
                "namespace": namespace,
                "verb": access.verb,
                "group": group,
                "resource": plural,
                "name": access.name,
            }
            if access.subresource:
                attributes["subresource"] = access.subresource
            review = authz.create_subject_access_review(
                {
                    "apiVersion": "authorization.k8s.io/v1",
                    "kind": "SubjectAccessReview",
                    "spec": {
                        "user": user.get("username"),
                        "groups": list(user.get("groups") or ()),
                        "uid": user.get("uid"),
                        "extra": dict(user.get("extra") or {}),
                        "resourceAttributes": attributes,
                    },
                },
                _request_timeout=5,
            )
        except Exception as exc:
            return f"{name}'s right to {access.text()} could not be checked ({exc})"
        if not review.status.allowed:
            return f"{name} may not {access.text()}"
    return None
