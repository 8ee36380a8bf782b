"""The catalogue of default plans: the real steps that carry out an action when the agent
gives none.

Pure data and a lookup over it. It must not run anything, read files or know about the
cluster: an executor decides what a step does, the plan machine (``core.plan``) decides
when. Adding an action means adding a row.

A default plan does real work, never a simulation:

- **cluster actions** name the object they act on (``spec.target``) and take what they
  need from ``spec.parameters``; their steps run on the ``kubernetes`` executor:

  ========================================  ==============================================
  scale_up, scale_down, scale, scale_*      ``scale`` the target to ``replicas``, then
                                            ``wait`` until it is Available
  rightsize, resize_*, increase_*,          ``patch`` the ``resources`` of ``container``
  decrease_*                                (strategic merge), then ``wait`` for Available
  enable_autoscaling                        ``apply`` a HorizontalPodAutoscaler for the
                                            target (``minReplicas``, ``maxReplicas``,
                                            ``targetCPUUtilizationPercentage``), then
                                            ``wait`` until the target is Available
  ========================================  ==============================================

- **everything else** (migrate_to_spot, optimize_kv_cache, migrate_database, ...) is done
  outside the cluster by the agent that proposed it: the steps of ``DEFAULT_PLANS`` (or
  the family of ``ACTION_PATTERNS``, else ``GENERIC_PLAN``: RULES 5) as ``webhook`` steps
  to the AgentEndpoint named after ``spec.agentId``, each with ``spec.parameters`` in its
  params. The agent carries each step out, and undoes it when the plan rolls back.

A cluster action without a target goes to the agent too (scaling nodes is the cloud's
business); a cluster action with a target but without the parameters it needs has no
default plan: ``NoDefaultPlanError`` says what to add, and admission refuses it. The
``simulated`` executor runs only where a manifest writes ``executor: simulated``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, NamedTuple

from coordinator.api.plan import Executor, Step
from coordinator.api.recommendation import RecommendationSpec, Target

WAIT_SECONDS: Final = 300
"""How long a default plan waits for its target to be Available (spec.parameters
timeoutSeconds changes it)."""

_SCALE_ACTION: Final = re.compile(r"^scale(_up|_down|_workload|_out|_in|_[a-z0-9_]+)?$")
_RESIZE_ACTION: Final = re.compile(
    r"^(rightsize|resize_[a-z0-9_]+|increase_[a-z0-9_]+|decrease_[a-z0-9_]+)$"
)
_AUTOSCALE: Final = "enable_autoscaling"
_DNS_NAME: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class StepTemplate(NamedTuple):
    """One step of an agent's default plan: its action (also its name) and its two flags."""

    action: str
    critical: bool
    reversible: bool


def _step(action: str, *, critical: bool = True, reversible: bool = True) -> StepTemplate:
    return StepTemplate(action, critical, reversible)


_VALIDATE = _step("validate_quality", reversible=False)

_MIGRATE: Final = (_step("take_snapshot"), _step("migrate_workload"), _VALIDATE)
_RESIZE: Final = (_step("record_capacity"), _step("resize_workload"), _VALIDATE)
_CONFIGURE: Final = (_step("record_config"), _step("apply_config"), _VALIDATE)

DEFAULT_PLANS: Final[MappingProxyType[str, tuple[StepTemplate, ...]]] = MappingProxyType(
    {
        "migrate_to_spot": _MIGRATE,
        "migrate_to_on_demand": _MIGRATE,
        "scale_down": (
            _step("record_capacity"),
            _step("drain_nodes"),
            _step("remove_nodes"),
            _VALIDATE,
        ),
        "scale_up": (_step("record_capacity"), _step("add_nodes"), _VALIDATE),
        "optimize_kv_cache": (
            _step("record_config"),
            _step("apply_cache_config"),
            _step("warm_cache", critical=False, reversible=False),
            _VALIDATE,
        ),
        "migrate_database": (
            _step("take_snapshot"),
            _step("replicate_data"),
            _step("switch_traffic"),
            _VALIDATE,
        ),
        "rightsize": _RESIZE,
    }
)

ACTION_PATTERNS: Final[tuple[tuple[re.Pattern[str], tuple[StepTemplate, ...]], ...]] = (
    (re.compile(r"^(resize|rightsize|increase|decrease)_|_(up|down)$"), _RESIZE),
    (re.compile(r"^(enable|disable|optimize|tune)_"), _CONFIGURE),
    (re.compile(r"^migrate_"), _MIGRATE),
)

GENERIC_PLAN: Final = (_step("prepare"), _step("apply"), _step("verify", reversible=False))


def templates_for(action: str) -> tuple[StepTemplate, ...]:
    """The steps of the agent's default plan of ``action``: an exact row of
    ``DEFAULT_PLANS``, else the first ``ACTION_PATTERNS`` entry whose regular expression
    matches, else ``GENERIC_PLAN``."""
    exact = DEFAULT_PLANS.get(action)
    if exact is not None:
        return exact
    for pattern, templates in ACTION_PATTERNS:
        if pattern.search(action):
            return templates
    return GENERIC_PLAN


class NoDefaultPlanError(ValueError):
    """The action has no default plan for this spec; the message says what to add."""


def plan_steps(spec: RecommendationSpec) -> list[Step]:
    """The steps that carry out a recommendation: its own ``steps`` if given, else the
    default of its action. ``NoDefaultPlanError`` when there is none."""
    if spec.steps:
        return list(spec.steps)
    return default_steps(spec)


def default_steps(spec: RecommendationSpec) -> list[Step]:
    """The default plan of ``spec.action`` for its target and parameters."""
    params = dict(spec.parameters or {})
    target = spec.target
    if target is not None:
        if _SCALE_ACTION.match(spec.action):
            return _scale(spec, target, params)
        if _RESIZE_ACTION.match(spec.action):
            return _resize(spec, target, params)
        if spec.action == _AUTOSCALE:
            return _autoscale(spec, target, params)
        raise NoDefaultPlanError(
            f"no default plan acts on a target for action {spec.action}: give spec.steps "
            f"(or drop spec.target to have agent {spec.agent_id} carry it out)"
        )
    return _webhook(spec, params)


def _ref(target: Target) -> dict[str, str]:
    return {"apiVersion": target.api_version, "kind": target.kind, "name": target.name}


def _wait_available(target: Target, params: Mapping[str, Any]) -> Step:
    return Step(
        name="wait_available",
        action="wait",
        executor=Executor.KUBERNETES,
        critical=True,
        reversible=False,
        params={
            "target": _ref(target),
            "condition": {"type": "Available", "status": "True"},
            "timeoutSeconds": params.get("timeoutSeconds", WAIT_SECONDS),
        },
    )


def _need(spec: RecommendationSpec, params: Mapping[str, Any], key: str, what: str) -> Any:
    value = params.get(key)
    if value is None:
        target = spec.target.text() if spec.target else ""
        raise NoDefaultPlanError(
            f"spec.parameters.{key}: the default plan of {spec.action} on {target} needs "
            f"{what} (or give spec.steps)"
        )
    return value


def _scale(spec: RecommendationSpec, target: Target, params: Mapping[str, Any]) -> list[Step]:
    replicas = _need(spec, params, "replicas", "the replica count to scale to")
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise NoDefaultPlanError(f"spec.parameters.replicas: a whole number >= 0, not {replicas!r}")
    scale = Step(
        name="scale",
        action="scale",
        executor=Executor.KUBERNETES,
        params={"target": _ref(target), "replicas": replicas},
    )
    return [scale, _wait_available(target, params)]


def _resize(spec: RecommendationSpec, target: Target, params: Mapping[str, Any]) -> list[Step]:
    container = _need(spec, params, "container", "the name of the container to resize")
    resources = _need(spec, params, "resources", "the container's new requests/limits")
    if not isinstance(container, str) or not isinstance(resources, dict):
        raise NoDefaultPlanError(
            "spec.parameters: container is a name and resources an object "
            "({requests: {...}, limits: {...}})"
        )
    patch = {
        "spec": {
            "template": {"spec": {"containers": [{"name": container, "resources": resources}]}}
        }
    }
    resize = Step(
        name="resize",
        action="patch",
        executor=Executor.KUBERNETES,
        params={"target": _ref(target), "type": "strategic", "patch": patch},
    )
    return [resize, _wait_available(target, params)]


def _autoscale(spec: RecommendationSpec, target: Target, params: Mapping[str, Any]) -> list[Step]:
    maximum = _need(spec, params, "maxReplicas", "the most replicas the autoscaler may set")
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": target.name},
        "spec": {
            "scaleTargetRef": _ref(target),
            "minReplicas": params.get("minReplicas", 1),
            "maxReplicas": maximum,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": params.get("targetCPUUtilizationPercentage", 80),
                        },
                    },
                }
            ],
        },
    }
    apply = Step(
        name="autoscaler",
        action="apply",
        executor=Executor.KUBERNETES,
        params={"manifest": hpa},
    )
    return [apply, _wait_available(target, params)]


def _webhook(spec: RecommendationSpec, params: Mapping[str, Any]) -> list[Step]:
    if not _DNS_NAME.match(spec.agent_id):
        raise NoDefaultPlanError(
            f"spec.agentId {spec.agent_id!r} cannot name an AgentEndpoint (a DNS name): give "
            "spec.steps with a webhook step naming the endpoint"
        )
    return [
        Step(
            name=t.action,
            action=t.action,
            critical=t.critical,
            reversible=t.reversible,
            executor=Executor.WEBHOOK,
            params={**params, "endpoint": spec.agent_id},
        )
        for t in templates_for(spec.action)
    ]
