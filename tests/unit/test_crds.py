"""The committed CRDs and webhook configurations are exactly what the code generates, and they
say what users need."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from coordinator import crdgen
from coordinator.k8s import access, webhooks
from coordinator.k8s import registrar as registrar_

CRDS = Path(__file__).parents[2] / "crds"


@pytest.mark.parametrize("kind", crdgen.KINDS, ids=lambda k: k.kind)
def test_committed_crd_is_up_to_date(kind: crdgen.Kind) -> None:
    committed = (CRDS / crdgen.filename(kind)).read_text()
    assert committed == crdgen.render(kind), "crds/ is stale: run `make manifests` and commit"


def _fields(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name, prop in schema.get("properties", {}).items():
        found.append((f"{path}.{name}", prop))
        found += _fields(prop, f"{path}.{name}")
        if "items" in prop:
            found += _fields(prop["items"], f"{path}.{name}[]")
    return found


@pytest.mark.parametrize("kind", crdgen.KINDS, ids=lambda k: k.kind)
def test_every_spec_and_status_field_is_described(kind: crdgen.Kind) -> None:
    root = crdgen.crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    undocumented = [
        path
        for path, prop in _fields(root)
        if path.startswith((".spec", ".status")) and not prop.get("description")
    ]
    assert undocumented == []


def test_recommendation_schema_carries_the_api_rules() -> None:
    crd = yaml.safe_load((CRDS / "optiinfra.io_recommendations.yaml").read_text())
    version = crd["spec"]["versions"][0]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    props = spec["properties"]
    assert set(spec["required"]) == {
        "customerId",
        "agentId",
        "agentType",
        "title",
        "action",
        "riskLevel",
    }
    assert props["riskLevel"]["enum"] == ["low", "medium", "high", "critical"]
    assert (props["priority"]["minimum"], props["priority"]["maximum"]) == (0, 1000)
    assert props["priority"]["default"] == 0
    assert props["confidence"]["default"] == 1
    assert props["autoApprove"]["default"] is True
    assert props["executeNow"]["default"] is False
    assert props["affectedResources"]["x-kubernetes-list-type"] == "set"
    assert props["affectedResources"]["maxItems"] == 256
    assert props["steps"]["x-kubernetes-list-type"] == "map"
    assert props["steps"]["x-kubernetes-list-map-keys"] == ["name"]
    assert props["steps"]["items"]["properties"]["params"]["x-kubernetes-preserve-unknown-fields"]
    assert version["subresources"] == {"status": {}}
    names = crd["spec"]["names"]
    assert names["shortNames"] == ["rec", "recs"]
    assert names["categories"] == ["optiinfra"]
    columns = [c["name"] for c in version["additionalPrinterColumns"] if "priority" not in c]
    assert columns == ["Customer", "Action", "Risk", "Priority", "Savings", "Phase", "Age"]


def test_committed_webhook_configurations_are_up_to_date() -> None:
    """manifests/webhooks.yaml is what an in-cluster operator registers (issue 22, item 5)."""
    committed = (CRDS.parent / "manifests" / "webhooks.yaml").read_text()
    assert committed == webhooks.manifest(), "stale: run `make manifests` and commit"
    validating, mutating = yaml.safe_load_all(committed)
    hooks = {w["name"] for w in validating["webhooks"] + mutating["webhooks"]}
    assert hooks == {webhooks.hook_name(hook, "") for hook in webhooks.HOOKS}
    for hook in validating["webhooks"] + mutating["webhooks"]:
        assert hook["failurePolicy"] == "Fail"
        assert hook["clientConfig"]["service"]["name"] == "optiinfra-coordinator"


def test_an_in_cluster_operator_needs_no_create_on_webhook_configurations() -> None:
    """The preflight asks for `create` only in local mode (local-webhooks-role.yaml)."""

    def creates(**mode: bool) -> set[str]:
        wanted = access.needs(namespaces=(), webhooks=True, lease=None, **mode)
        return {n.resource for n in wanted if n.verb == "create" and "webhook" in n.resource}

    assert creates() == set()
    assert creates(local_webhooks=True) == {
        "validatingwebhookconfigurations",
        "mutatingwebhookconfigurations",
    }


class _NoConfigurations:
    def read_validating_webhook_configuration(self, name: str, **_: Any) -> None:
        raise kubernetes.client.ApiException(status=404, reason="Not Found")

    def create_validating_webhook_configuration(self, body: Any, **_: Any) -> None:
        raise AssertionError("an in-cluster operator must not create a configuration")

    replace_validating_webhook_configuration = create_validating_webhook_configuration


def test_an_in_cluster_operator_says_to_apply_the_manifest_when_a_configuration_is_missing() -> (
    None
):
    registrar = registrar_.Registrar(kubernetes.client.ApiClient(), create=False)
    registrar._api = _NoConfigurations()  # the API calls, faked
    validating, mutating = yaml.safe_load_all(webhooks.manifest())
    with pytest.raises(
        registrar_.MissingConfigurationError, match=r"apply manifests/webhooks\.yaml"
    ):
        registrar.apply(validating, mutating)


def test_verification_template_schema_teaches_and_bounds_every_field() -> None:
    crd = yaml.safe_load((CRDS / "optiinfra.io_verificationtemplates.yaml").read_text())
    names = crd["spec"]["names"]
    assert (names["kind"], names["shortNames"], names["categories"]) == (
        "VerificationTemplate",
        ["vtpl"],
        ["optiinfra"],
    )
    version = crd["spec"]["versions"][0]
    assert "subresources" not in version  # written by admins, no status
    columns = [c["name"] for c in version["additionalPrinterColumns"] if "priority" not in c]
    assert columns == ["Prometheus", "Metrics", "Baseline", "Age"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["required"] == ["provider", "metrics"]
    prometheus = spec["properties"]["provider"]["properties"]["prometheus"]
    assert prometheus["properties"]["timeoutSeconds"]["default"] == 10
    assert prometheus["properties"]["secretRef"]["required"] == ["name", "key"]
    metrics = spec["properties"]["metrics"]
    assert (metrics["minItems"], metrics["maxItems"]) == (1, 16)
    assert metrics["x-kubernetes-list-map-keys"] == ["name"]
    metric = metrics["items"]["properties"]
    defaults = {name: metric[name].get("default") for name in metric}
    assert defaults == {
        "name": None,
        "query": None,
        "successCondition": None,
        "failureCondition": None,
        "interval": "1m",
        "count": 5,
        "initialDelay": "0",
        "failureLimit": 0,
        "inconclusiveLimit": 0,
        "consecutiveErrorLimit": 4,
        "dryRun": False,
    }
    assert metric["successCondition"]["maxLength"] == 1024
    assert metric["query"]["maxLength"] == 4096
    assert "{{namespace}}" in metric["query"]["x-kubernetes-validations"][0]["rule"]
    rules = [r["rule"] for r in metrics["items"]["x-kubernetes-validations"]]
    assert rules == ["has(self.successCondition) || has(self.failureCondition)"]
    assert spec["properties"]["baseline"]["properties"]["window"]["default"] == "30m"
    # the selector is the ApprovalPolicy's
    policy = yaml.safe_load((CRDS / "optiinfra.io_approvalpolicies.yaml").read_text())
    policy_spec = policy["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert (
        spec["properties"]["selector"]["properties"]
        == policy_spec["properties"]["selector"]["properties"]
    )


def test_plan_and_recommendation_schemas_carry_verification() -> None:
    plan = yaml.safe_load((CRDS / "optiinfra.io_executionplans.yaml").read_text())
    status = plan["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert "Verifying" in status["properties"]["phase"]["enum"]
    verification = status["properties"]["verification"]["properties"]
    assert verification["phase"]["enum"] == ["Running", "Successful", "Failed", "Inconclusive"]
    assert verification["baseline"]["additionalProperties"] == {"type": "number"}
    metric = verification["metrics"]["items"]["properties"]
    assert {"name", "phase", "successful", "failed", "inconclusive", "errors"} <= set(metric)
    assert metric["measurements"]["maxItems"] == 10
    assert set(metric["measurements"]["items"]["properties"]) == {"at", "value", "phase", "message"}
    assert {"estimatedMonthly", "realisedMonthly", "ratio", "measuredAt"} <= set(
        verification["savings"]["properties"]
    )
    rec = yaml.safe_load((CRDS / "optiinfra.io_recommendations.yaml").read_text())
    schema = rec["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    templates = schema["spec"]["properties"]["verification"]["properties"]["templates"]
    assert (templates["x-kubernetes-list-type"], templates["maxItems"]) == ("set", 16)
    assert "realisedMonthly" in schema["status"]["properties"]["realisedSavings"]["properties"]
