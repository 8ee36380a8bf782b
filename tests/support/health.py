"""How GitOps tools judge our objects' health, for tests: kstatus (Flux) and Argo CD.

``kstatus`` is a port of ``status.Compute`` of sigs.k8s.io/cli-utils/pkg/kstatus/status
(commit 5895ad6c17dd06b99c1e5c8af17e2b12a3504fad: ``status.go`` Compute and
checkReadyCondition, ``generic.go`` checkGenericProperties and checkGeneration) for a
custom resource (the per-kind legacy rules only cover built-in kinds), in its order:

1. ``metadata.deletionTimestamp`` set: Terminating;
2. ``status.observedGeneration`` present and not ``metadata.generation``: InProgress;
3. the first condition that is ``Reconciling`` True (InProgress) or ``Stalled`` True
   (Failed), in the order of ``status.conditions``;
4. a ``Ready`` condition: True is Current, False or Unknown InProgress;
5. otherwise Current.

``argocd_health`` runs a Lua health check of docs/argocd/health/ as Argo CD's controller
does (util/lua/lua.go of argoproj/argo-cd): Lua 5.1 (gopher-lua), the object as the
global ``obj``, only the base, table and package libraries (no ``string``, ``math``,
``io``, ``debug``), and the returned table's ``status`` must be one of Argo CD's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lupa.lua51

HEALTH = Path(__file__).parents[2] / "docs" / "argocd" / "health"
ARGOCD_STATUSES = frozenset(
    {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
)
KINDS = ("Recommendation", "Approval", "ExecutionPlan")


def kstatus(obj: dict[str, Any]) -> tuple[str, str]:
    """(status, message) as kstatus computes them for a custom resource."""
    metadata = obj.get("metadata") or {}
    status = obj.get("status") or {}
    if metadata.get("deletionTimestamp"):
        return "Terminating", "Resource scheduled for deletion"
    generation, observed = metadata.get("generation"), status.get("observedGeneration")
    if generation is not None and observed is not None and observed != generation:
        return "InProgress", (
            f"{obj.get('kind')} generation is {generation}, "
            f"but latest observed generation is {observed}"
        )
    conditions = status.get("conditions") or []
    for condition in conditions:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Reconciling":
            return "InProgress", condition.get("message", "")
        if condition.get("type") == "Stalled":
            return "Failed", condition.get("message", "")
    for condition in conditions:
        if condition.get("type") != "Ready":
            continue
        if condition.get("status") == "True":
            return "Current", "Resource is Ready"
        if condition.get("status") in ("False", "Unknown"):
            return "InProgress", condition.get("message", "")
    return "Current", "Resource is current"


_SANDBOX = """
local strings = getmetatable("")
if strings ~= nil then strings.__index = nil end
string, math, io, debug, coroutine, os = nil, nil, nil, nil, nil, nil
"""


def script(kind: str) -> str:
    return (HEALTH / f"{kind}.lua").read_text()


def argocd_health(obj: dict[str, Any], *, lua: str | None = None) -> tuple[str, str]:
    """(status, message) of the Argo CD health check of `obj`'s kind (or of `lua`)."""
    runtime = lupa.lua51.LuaRuntime(register_eval=False, register_builtins=False)
    runtime.execute(_SANDBOX)
    runtime.globals().obj = runtime.table_from(obj, recursive=True)
    result = runtime.execute(lua if lua is not None else script(obj["kind"]))
    assert lupa.lua51.lua_type(result) == "table", f"the script returned {result!r}"
    status, message = result["status"], result["message"]
    assert status in ARGOCD_STATUSES, f"not a health status of Argo CD: {status!r}"
    return status, message or ""


GITOPS_FAMILY = {
    "Healthy": "Current",
    "Suspended": "InProgress",
    "Progressing": "InProgress",
    "Degraded": "Failed",
}
"""The kstatus status an Argo CD health must agree with: both tools tell the same story."""
