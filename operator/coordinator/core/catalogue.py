"""The catalogue of default plans: which steps carry out an action when the agent gives none.

Pure data and a lookup over it. It must not run anything, read files or know about the
cluster: an executor decides what a step does, the plan machine (``core.plan``) decides
when. The tables below are the whole catalogue; adding an action means adding a row.

Lookup order for an action: an exact row in ``DEFAULT_PLANS``; else the first
``ACTION_PATTERNS`` entry whose regular expression matches (``increase_memory`` is a
resize, ``enable_compression`` a configuration change); else ``GENERIC_PLAN``.
Every default step is named after its action and uses the simulated executor.
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Final, NamedTuple

from coordinator.api.plan import Step
from coordinator.api.recommendation import RecommendationSpec


class StepTemplate(NamedTuple):
    """One row of a default plan: the step's action (also its name) and its two flags."""

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
    """The rows of the default plan of ``action`` (see the module docstring for the order)."""
    exact = DEFAULT_PLANS.get(action)
    if exact is not None:
        return exact
    for pattern, templates in ACTION_PATTERNS:
        if pattern.search(action):
            return templates
    return GENERIC_PLAN


def default_steps(action: str) -> list[Step]:
    """The default plan of ``action`` as fresh Step values (simulated executor, no params)."""
    return [
        Step(name=t.action, action=t.action, critical=t.critical, reversible=t.reversible)
        for t in templates_for(action)
    ]


def plan_steps(spec: RecommendationSpec) -> list[Step]:
    """The steps that carry out a recommendation: its own ``steps`` if given, else the default.

    An empty ``steps`` list counts as not given: a plan has at least one step.
    """
    if spec.steps:
        return list(spec.steps)
    return default_steps(spec.action)
