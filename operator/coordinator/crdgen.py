"""Generate the CustomResourceDefinitions in crds/ from the pydantic models.

``make manifests`` runs ``python -m coordinator.crdgen crds``; a test fails when the
committed files differ from what this module produces. The models stay the single
source of truth: descriptions, enums, ranges, defaults, required fields and the
``x-kubernetes-*`` extensions (list types, CEL rules) all come from them.

pydantic emits JSON Schema; Kubernetes wants a structural OpenAPI v3 schema. The
translation inlines ``$ref``s, turns ``Optional[X]`` into X (nulls are never
stored: the operator omits them), turns free objects into
``x-kubernetes-preserve-unknown-fields`` and drops what Kubernetes refuses
(``title``, ``additionalProperties: false``). Status schemas carry no defaults.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
import yaml

from coordinator.api import approval, common, endpoint, plan, policy, recommendation, verification


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    path: str
    description: str
    priority: int = 0

    def to_crd(self) -> dict[str, Any]:
        column: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "jsonPath": self.path,
            "description": self.description,
        }
        if self.priority:
            column["priority"] = self.priority
        return column


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    short_names: tuple[str, ...]
    description: str
    spec: type[pydantic.BaseModel]
    status: type[pydantic.BaseModel] | None  # None: no status (and no status subresource)
    columns: tuple[Column, ...]


AGE = Column("Age", "date", ".metadata.creationTimestamp", "Time since creation.")
PHASE = Column("Phase", "string", ".status.phase", "Where it stands.")
RISK = Column("Risk", "string", ".spec.riskLevel", "Risk level.")

KINDS = (
    Kind(
        kind="Recommendation",
        plural=common.RECOMMENDATIONS,
        short_names=("rec", "recs"),
        description="A change an optimisation agent proposes for a customer's infrastructure. "
        "The operator finds conflicts with the customer's other recommendations, asks for "
        "approval where the risk demands it, and runs the approved change as an ExecutionPlan.",
        spec=recommendation.RecommendationSpec,
        status=recommendation.RecommendationStatus,
        columns=(
            Column("Customer", "string", ".spec.customerId", "Customer of the change."),
            Column("Action", "string", ".spec.action", "What the change does."),
            RISK,
            Column("Priority", "integer", ".spec.priority", "Priority (higher wins)."),
            Column("Savings", "number", ".spec.estimatedSavings", "Monthly savings, USD."),
            PHASE,
            Column("Superseded-By", "string", ".status.supersededBy", "Winner.", priority=1),
            Column("Message", "string", ".status.message", "Why.", priority=1),
            AGE,
        ),
    ),
    Kind(
        kind="Approval",
        plural=common.APPROVALS,
        short_names=("appr",),
        description="A decision on one recommendation, asked of a person or taken by policy. "
        "Decide with: kubectl patch approval NAME --type merge "
        '-p \'{"spec":{"decision":"Approved"}}\' (or "Rejected" with a "reason").',
        spec=approval.ApprovalSpec,
        status=approval.ApprovalStatus,
        columns=(
            Column("Recommendation", "string", ".spec.recommendation", "What is decided on."),
            RISK,
            PHASE,
            Column("Decided-By", "string", ".status.decidedBy", "Who decided."),
            Column("Expires", "string", ".spec.expiresAt", "When it can no longer be decided."),
            Column("Reason", "string", ".status.reason", "Why.", priority=1),
            AGE,
        ),
    ),
    Kind(
        kind="ExecutionPlan",
        plural=common.PLANS,
        short_names=("plan",),
        description="The steps that carry out an approved recommendation and their progress. "
        "Start with: kubectl patch executionplan NAME --type merge "
        '-p \'{"spec":{"suspend":false}}\'; abort with {"spec":{"abort":true}}.',
        spec=plan.ExecutionPlanSpec,
        status=plan.ExecutionPlanStatus,
        columns=(
            Column("Recommendation", "string", ".spec.recommendation", "What it carries out."),
            PHASE,
            Column("Step", "string", ".status.progress", "Steps finished / all steps."),
            Column("Suspended", "boolean", ".spec.suspend", "Waiting to be started."),
            Column(
                "Verification",
                "string",
                ".status.verification.phase",
                "The check against the metrics.",
                priority=1,
            ),
            AGE,
        ),
    ),
    Kind(
        kind="AgentEndpoint",
        plural=common.ENDPOINTS,
        short_names=("aep",),
        description="Where the webhook executor reaches the agent that carries out a step "
        "outside the cluster, and the Secret key that signs the requests. Created by "
        "approvers and admins, never by agents: a webhook step names an AgentEndpoint of "
        "its namespace in params.endpoint, never a URL.",
        spec=endpoint.AgentEndpointSpec,
        status=None,
        columns=(
            Column("URL", "string", ".spec.url", "Where the requests go."),
            AGE,
        ),
    ),
    Kind(
        kind="ApprovalPolicy",
        plural=common.POLICIES,
        short_names=("apol",),
        description="How a team decides the recommendations it selects: N-of-M approvers "
        "(users or groups), expiry per risk, automatic approval up to a risk, change windows "
        "(Allow, Deny), a budget of plans running at once per customer, and notifications. "
        "Where several policies select one recommendation, the most restrictive value wins "
        "field by field.",
        spec=policy.ApprovalPolicySpec,
        status=None,
        columns=(
            Column("Required", "integer", ".spec.approvals.required", "Approvals required."),
            Column("Max-Plans", "integer", ".spec.maxConcurrentPlans", "Plans at once."),
            Column("Auto-Max-Risk", "string", ".spec.autoApprove.maxRisk", "Auto-approved."),
            Column("Windows", "string", ".spec.windows[*].name", "Change windows.", priority=1),
            AGE,
        ),
    ),
    Kind(
        kind="VerificationTemplate",
        plural="verificationtemplates",
        short_names=("vtpl",),
        description="How the outcome of a change is checked after its plan's last step: "
        "PromQL queries measured every interval, count times, judged by CEL conditions over "
        "result and baseline (the value before the change). A failure rolls the change back; "
        "an inconclusive result asks a person. Written by admins, never by agents: every "
        "template that selects a recommendation applies, and a recommendation can only add "
        "more (spec.verification.templates).",
        spec=verification.VerificationTemplateSpec,
        status=None,
        columns=(
            Column("Prometheus", "string", ".spec.provider.prometheus.address", "Metrics source."),
            Column("Metrics", "string", ".spec.metrics[*].name", "What is measured."),
            Column("Baseline", "string", ".spec.baseline.window", "Baseline window."),
            Column("Savings", "string", ".spec.savings.query", "Cost query.", priority=1),
            AGE,
        ),
    ),
)


def _schema(model: type[pydantic.BaseModel], *, keep_defaults: bool) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema: dict[str, Any] = _structural(raw, defs, keep_defaults=keep_defaults)
    return schema


def _structural(node: Any, defs: dict[str, Any], *, keep_defaults: bool) -> Any:
    if isinstance(node, list):
        return [_structural(item, defs, keep_defaults=keep_defaults) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "anyOf" in node:  # Optional[X]: nulls are never stored
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"unsupported union in schema: {options}")
        node = {**options[0], **node}
        if node.get("default", 0) is None:
            del node["default"]
    if "$ref" in node:  # inline the definition (also of an Optional); the field's keys win
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**target, **node}
    node.pop("title", None)
    if not keep_defaults:
        node.pop("default", None)
    if node.get("additionalProperties") is False:
        del node["additionalProperties"]
    if node.get("additionalProperties") is True and "properties" not in node:
        del node["additionalProperties"]
        node["x-kubernetes-preserve-unknown-fields"] = True
    out = {
        key: _structural(value, defs, keep_defaults=keep_defaults) for key, value in node.items()
    }
    if "properties" in out:
        out["properties"] = {
            name: _structural(prop, defs, keep_defaults=keep_defaults)
            for name, prop in node["properties"].items()
        }
    return out


def crd(kind: Kind) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "apiVersion": {"type": "string", "description": common.API_VERSION},
        "kind": {"type": "string", "description": kind.kind},
        "metadata": {"type": "object"},
        "spec": _schema(kind.spec, keep_defaults=True),
    }
    if kind.status is not None:
        properties["status"] = _schema(kind.status, keep_defaults=False)
    root = {
        "type": "object",
        "description": kind.description,
        "required": ["spec"],
        "properties": properties,
    }
    version: dict[str, Any] = {
        "name": common.VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": root},
    }
    if kind.status is not None:
        version["subresources"] = {"status": {}}
    version["additionalPrinterColumns"] = [c.to_crd() for c in kind.columns]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{kind.plural}.{common.GROUP}"},
        "spec": {
            "group": common.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.kind.lower(),
                "shortNames": list(kind.short_names),
                "categories": ["optiinfra"],
            },
            "versions": [version],
        },
    }


HEADER = "# Generated from the pydantic models in operator/coordinator/api by `make manifests`.\n"


def render(kind: Kind) -> str:
    return HEADER + yaml.safe_dump(crd(kind), sort_keys=False, width=100)


def filename(kind: Kind) -> str:
    return f"{common.GROUP}_{kind.plural}.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crdgen", description="Write the CRDs.")
    parser.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    args.directory.mkdir(parents=True, exist_ok=True)
    for kind in KINDS:
        (args.directory / filename(kind)).write_text(render(kind))
    return 0


if __name__ == "__main__":
    sys.exit(main())
