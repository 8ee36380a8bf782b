"""One builder per kind: each returns the object as the API server holds it (a wire dict).

Keyword arguments override the defaults: spec fields by their wire names (a field given
as None is left out), `metadata` and `status` are merged into the object's. A unit test
that wants the typed object validates it: ``Recommendation.model_validate(recommendation())``.
"""

from __future__ import annotations

from typing import Any

from coordinator.api.common import API_VERSION


def _object(
    kind: str,
    name: str,
    spec: dict[str, Any],
    *,
    namespace: str | None,
    metadata: dict[str, Any] | None,
    status: dict[str, Any] | None,
    api_version: str = API_VERSION,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    document: dict[str, Any] = {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": meta | (metadata or {}),
        "spec": {key: value for key, value in spec.items() if value is not None},
    }
    if status is not None:
        document["status"] = status
    return document


def recommendation(
    name: str = "rec-1",
    *,
    namespace: str | None = None,
    metadata: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A Recommendation of cost-agent-1 moving `i-NAME` to spot, medium risk."""
    defaults = {
        "customerId": "customer-1",
        "agentId": "cost-agent-1",
        "agentType": "cost",
        "title": f"Recommendation {name}",
        "action": "migrate_to_spot",
        "riskLevel": "medium",
        "affectedResources": [f"i-{name}"],
    }
    return _object(
        "Recommendation",
        name,
        defaults | spec,
        namespace=namespace,
        metadata=metadata,
        status=status,
    )


def approval(
    name: str = "rec-1",
    *,
    namespace: str | None = None,
    metadata: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """The Approval of recommendation `name` (same name, generation 1), Pending, medium risk,
    expiring at 2026-01-02T12:00:00Z."""
    defaults = {
        "recommendation": name,
        "recommendationGeneration": 1,
        "customerId": "customer-1",
        "riskLevel": "medium",
        "expiresAt": "2026-01-02T12:00:00Z",
        "decision": "Pending",
    }
    return _object(
        "Approval", name, defaults | spec, namespace=namespace, metadata=metadata, status=status
    )


def plan(
    name: str = "rec-1",
    *,
    namespace: str | None = None,
    metadata: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """The ExecutionPlan of recommendation `name` (same name): the quick simulated steps."""
    defaults = {"recommendation": name, "steps": fast_steps()}
    return _object(
        "ExecutionPlan",
        name,
        defaults | spec,
        namespace=namespace,
        metadata=metadata,
        status=status,
    )


def endpoint(
    name: str = "cost-agent-1",
    *,
    namespace: str | None = None,
    metadata: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """An AgentEndpoint at https://agent.example.com/ whose HMAC key is Secret agents-hmac."""
    defaults = {
        "url": "https://agent.example.com/",
        "secretRef": {"name": "agents-hmac", "key": "hmac"},
    }
    return _object(
        "AgentEndpoint",
        name,
        defaults | spec,
        namespace=namespace,
        metadata=metadata,
        status=status,
    )


def policy(
    name: str = "policy-1",
    *,
    namespace: str | None = None,
    metadata: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """An ApprovalPolicy made only of `spec` (an empty one selects everything)."""
    return _object(
        "ApprovalPolicy", name, spec, namespace=namespace, metadata=metadata, status=status
    )


def template(
    name: str = "latency",
    *,
    namespace: str | None = None,
    metadata: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A VerificationTemplate reading Prometheus on 127.0.0.1:9090, one latency metric."""
    defaults = {
        "provider": {"prometheus": {"address": "http://127.0.0.1:9090"}},
        "metrics": [metric()],
    }
    return _object(
        "VerificationTemplate",
        name,
        defaults | spec,
        namespace=namespace,
        metadata=metadata,
        status=status,
    )


def metric(name: str = "latency", **fields: Any) -> dict[str, Any]:
    """One metric of a VerificationTemplate: latency against its baseline (a field given as
    None is left out)."""
    defaults = {
        "name": name,
        "query": 'latency{deployment="{{target.name}}"}',
        "successCondition": "result <= baseline * 1.10",
        "failureCondition": "result > baseline * 1.25",
    }
    return {key: value for key, value in (defaults | fields).items() if value is not None}


def deployment(name: str, replicas: int) -> dict[str, Any]:
    """A Deployment of pause containers labelled app=NAME."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "web", "image": "registry.k8s.io/pause:3.10"}]},
            },
        },
    }


def fast_steps(
    *fail_at: str, names: tuple[str, ...] = ("one", "two", "three"), duration_ms: int = 50
) -> list[dict[str, Any]]:
    """Quick simulated steps; the ones named in `fail_at` fail."""
    return [
        {
            "name": n,
            "action": f"do_{n}",
            "executor": "simulated",
            "params": {
                "durationMs": duration_ms,
                **({"fail": f"{n} broke"} if n in fail_at else {}),
            },
        }
        for n in names
    ]


def scale_step(name: str, to: int) -> dict[str, Any]:
    """A kubernetes step that scales Deployment `name` to `to` replicas."""
    return {
        "name": "scale",
        "action": "scale_workload",
        "executor": "kubernetes",
        "params": {"kind": "Deployment", "name": name, "replicas": to},
    }


def lease(
    name: str,
    *,
    holder: str = "",
    renewed: str | None = None,
    duration: int = 15,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    namespace: str = "optiinfra-system",
) -> dict[str, Any]:
    """A coordination.k8s.io Lease held by `holder`, renewed at `renewed` (RFC 3339; None:
    never): a shard's own Lease, or a hand-off record (only a holder and annotations)."""
    spec: dict[str, Any] = {"holderIdentity": holder or None}
    if renewed is not None:
        spec |= {"renewTime": renewed, "leaseDurationSeconds": duration}
    return _object(
        "Lease",
        name,
        spec,
        namespace=namespace,
        metadata={"labels": labels or {}, "annotations": annotations or {}},
        status=None,
        api_version="coordination.k8s.io/v1",
    )
