"""The kopf handlers: the least interesting file, by design.

They translate what kopf tells into the operator's terms and decide nothing: the
operator starting and stopping, one daemon per started ExecutionPlan that asks the
operator to drive it, and the admission webhooks (the decisions are in
``coordinator.core.admission``). What the operator knows of its kinds comes from its own
list/watch into the Store (``coordinator.k8s.informer``, ``coordinator.store``), not
from kopf: kopf watches the plans only for their daemons.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, Literal

import kopf
import pydantic

from coordinator.api.approval import Approval
from coordinator.api.common import APPROVALS, GROUP, PLANS, RECOMMENDATIONS, VERSION
from coordinator.api.plan import ExecutionPlan, PlanPhase
from coordinator.api.recommendation import Recommendation
from coordinator.app import Operator
from coordinator.core import admission

STARTED: Final = frozenset({PlanPhase.RUNNING.value, PlanPhase.ROLLING_BACK.value})
DELETION_GRACE_SECONDS: Final = 120.0
"""How long a plan whose recommendation was deleted mid-run may take to roll back before
kopf cancels its daemon (and lets it go)."""

logger = logging.getLogger(__name__)


def _parse(model: type[Any], body: kopf.Body) -> Any:
    try:
        return model.model_validate(dict(body))
    except pydantic.ValidationError as exc:
        logger.error(
            "ignoring %s %s/%s: %s",
            body.get("kind"),
            body.metadata.namespace,
            body.metadata.name,
            exc,
        )
        return None


# --- lifecycle of the operator --------------------------------------------------------


@kopf.on.startup(errors=kopf.ErrorsMode.PERMANENT)
async def started(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    operator: Operator = memo.operator
    operator.configure(settings)
    await operator.start()


@kopf.on.cleanup()
async def stopping(memo: kopf.Memo, **_: Any) -> None:
    await memo.operator.stop()


# --- one daemon per started plan ---------------------------------------------------


def _started(status: kopf.Status, **_: Any) -> bool:
    """Running or rolling back. Only then does a plan carry kopf's finalizer, so that a
    plan whose recommendation is deleted mid-run is rolled back before it goes, while
    pending and ended plans never hold up a deletion."""
    return status.get("phase") in STARTED


@kopf.daemon(
    GROUP,
    VERSION,
    PLANS,
    when=_started,
    cancellation_backoff=DELETION_GRACE_SECONDS,
    cancellation_timeout=10.0,
)
async def run_plan(body: kopf.Body, stopped: kopf.DaemonStopped, memo: kopf.Memo, **_: Any) -> None:
    """Ask the operator to drive the plan while this replica leads, and to roll it back
    when it is deleted mid-run (kopf holds its deletion until this returns)."""
    operator: Operator = memo.operator
    plan = _parse(ExecutionPlan, body)
    if plan is not None:
        await operator.drive_plan(
            plan,
            stopped=lambda: bool(stopped),
            deleted=lambda: _deleted(stopped),
            wait_stopped=stopped.wait,
        )


def _deleted(stopped: kopf.DaemonStopped) -> bool:
    return stopped.reason is not None and bool(
        stopped.reason & kopf.DaemonStoppingReason.RESOURCE_DELETED
    )


# --- admission: identities come from the API server, never from the client ----------
#
# Registered by `register_admission` only when the webhooks are on: kopf refuses to start
# with admission handlers and no server to serve them.


def register_admission(registry: kopf.OperatorRegistry) -> None:
    """Add the admission handlers (ids as in ``coordinator.app.HOOKS``) to `registry`."""
    both: list[Literal["CREATE", "UPDATE"]] = ["CREATE", "UPDATE"]
    on = kopf.on
    on.mutate(GROUP, VERSION, APPROVALS, id="approval-stamp", operations=both, registry=registry)(
        approval_stamp
    )
    on.validate(
        GROUP, VERSION, APPROVALS, id="approval-check", operations=["UPDATE"], registry=registry
    )(approval_check)
    on.mutate(
        GROUP,
        VERSION,
        RECOMMENDATIONS,
        id="recommendation-stamp",
        operations=both,
        registry=registry,
    )(recommendation_stamp)
    on.validate(
        GROUP,
        VERSION,
        RECOMMENDATIONS,
        id="recommendation-check",
        operations=both,
        registry=registry,
    )(recommendation_check)


def _user(userinfo: kopf.UserInfo) -> str:
    return str(userinfo.get("username") or "")


def _set(patch: kopf.Patch, annotations: Mapping[str, str | None]) -> None:
    for key, value in annotations.items():
        patch.metadata.annotations[key] = value


async def approval_stamp(
    *,
    body: kopf.Body,
    userinfo: kopf.UserInfo,
    patch: kopf.Patch,
    memo: kopf.Memo,
    warnings: list[str],
    **kwargs: Any,
) -> None:
    """Each vote is stamped here, from the authenticated request (user and groups)."""
    old = kwargs.get("old")
    new = _parse(Approval, body)
    before = _parse(Approval, old) if old else None
    if new is None:
        return
    submitter = None
    if before is not None and new.spec.decision != before.spec.decision:
        operator: Operator = memo.operator
        submitter = await operator.submitter(new.metadata.namespace, new.spec.recommendation)
    outcome = admission.record_vote(
        old=before,
        new=new,
        user=_user(userinfo),
        groups=[str(g) for g in userinfo.get("groups") or ()],
        submitter=submitter,
        now=datetime.now(UTC),
    )
    if outcome.refusal:
        raise kopf.AdmissionError(outcome.refusal, code=403)
    _set(patch, outcome.annotations)
    for field, value in outcome.spec.items():
        patch.spec[field] = value
    if outcome.warning:
        warnings.append(outcome.warning)


async def approval_check(
    *, body: kopf.Body, userinfo: kopf.UserInfo, memo: kopf.Memo, **kwargs: Any
) -> None:
    old = kwargs.get("old")
    new = _parse(Approval, body)
    before = _parse(Approval, old) if old else None
    if new is None or before is None:
        return
    operator: Operator = memo.operator
    submitter = await operator.submitter(new.metadata.namespace, new.spec.recommendation)
    reason = admission.check_decision(
        old=before, new=new, user=_user(userinfo), submitter=submitter, now=datetime.now(UTC)
    )
    if reason:
        raise kopf.AdmissionError(reason, code=403)


async def recommendation_stamp(
    *, body: kopf.Body, userinfo: kopf.UserInfo, patch: kopf.Patch, memo: kopf.Memo, **kwargs: Any
) -> None:
    old = kwargs.get("old")
    new = _parse(Recommendation, body)
    before = _parse(Recommendation, old) if old else None
    if new is None:
        return
    _set(patch, admission.stamp_submitter(old=before, new=new, user=_user(userinfo)))
    denied = None
    if before is None or before.spec != new.spec:  # who may do what: asked once per spec
        operator: Operator = memo.operator
        denied = await operator.submitter_may_not(userinfo, new)
    _set(patch, admission.stamp_deputy(old=before, new=new, denied=denied))


async def recommendation_check(
    *, body: kopf.Body, warnings: list[str], memo: kopf.Memo, **kwargs: Any
) -> None:
    old = kwargs.get("old")
    new = _parse(Recommendation, body)
    before = _parse(Recommendation, old) if old else None
    if new is None:
        return
    if before is not None:
        reason = admission.check_spec_change(old=before, new=new)
        if reason:
            raise kopf.AdmissionError(reason, code=403)  # not 409: clients retry conflicts
    # --- executors (issue 12): the params of each step, before anything can run ---------
    problems = admission.step_problems(old=before, new=new)
    if problems:
        raise kopf.AdmissionError("; ".join(problems), code=403)
    problem = admission.plan_problem(new)
    if problem:  # never a fake plan: say what to add
        raise kopf.AdmissionError(problem, code=422)
    operator: Operator = memo.operator
    reason = await operator.endpoint_problem(new)
    if reason:
        raise kopf.AdmissionError(reason, code=403)
    if new.spec.depends_on:  # the namespace's names (a set as large as it) only when needed
        existing = operator.names_in(new.metadata.namespace)
        warnings.extend(admission.dependency_warnings(new, existing=existing))
