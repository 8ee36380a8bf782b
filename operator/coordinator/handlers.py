"""The kopf handlers: the least interesting file, by design.

Indexes keep the operator's view of the three kinds in memory; event handlers put
the affected customer group on the reconciler's queue; one daemon per unfinished
ExecutionPlan drives it through the plan runner. Every decision is made in
``coordinator.core``; every write is made by ``reconciler`` or ``runner``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, Literal

import kopf
import pydantic

from coordinator import reconciler as reconciler_
from coordinator.api.approval import Approval
from coordinator.api.plan import ExecutionPlan, PlanPhase
from coordinator.api.policy import ApprovalPolicy
from coordinator.api.recommendation import Recommendation, RecommendationPhase
from coordinator.app import Operator
from coordinator.core import admission

GROUP: Final = "optiinfra.io"
VERSION: Final = "v1alpha1"
STARTED: Final = frozenset({PlanPhase.RUNNING.value, PlanPhase.ROLLING_BACK.value})
DELETION_GRACE_SECONDS: Final = 120.0
"""How long a plan whose recommendation was deleted mid-run may take to roll back before
kopf cancels its daemon (and lets it go)."""
STEP_GRACE_SECONDS: Final = 3.0
"""How long a step in flight may take to finish when the operator stops or stops leading;
then it is abandoned: it stays Running in status and is run again by whoever drives the
plan next (steps are idempotent: see the executors)."""

PARSED_CACHE_SIZE: Final = 1024
"""Watched objects parsed lately, by (kind, uid, resourceVersion): the indexes and the
event handler of one watch event share one parse (and one copy in memory)."""

logger = logging.getLogger(__name__)
_parsed: collections.OrderedDict[tuple[str, str, str], Any] = collections.OrderedDict()


def _parse_watched(model: type[Any], body: kopf.Body) -> Any:
    """`_parse` for a body from the watch, where uid and resourceVersion name its content.

    Not for admission requests: an object being admitted still carries the
    resourceVersion of the stored one it replaces.
    """
    meta = body.get("metadata") or {}
    key = (model.__name__, meta.get("uid") or "", meta.get("resourceVersion") or "")
    if not key[1] or not key[2]:
        return _parse(model, body)
    if key in _parsed:
        return _parsed[key]
    parsed = _parse(model, body)
    if parsed is not None:
        parsed = reconciler_.compact(parsed)
    _parsed[key] = parsed
    if len(_parsed) > PARSED_CACHE_SIZE:
        _parsed.popitem(last=False)
    return parsed


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


# --- the in-memory view (kopf indexes) ------------------------------------------------


# The handlers below are coroutines: kopf runs plain functions in a thread pool, a hop
# that costs more than the work, and a thread must not read the indexes while the event
# loop updates them.


@kopf.index(GROUP, VERSION, "recommendations")
async def recommendations_by_group(body: kopf.Body, **_: Any) -> dict[Any, Recommendation]:
    rec = _parse_watched(Recommendation, body)
    return {} if rec is None else {(rec.metadata.namespace, rec.spec.customer_id): rec}


@kopf.index(GROUP, VERSION, "recommendations")
async def recommendations_by_namespace(body: kopf.Body, **_: Any) -> dict[Any, Recommendation]:
    rec = _parse_watched(Recommendation, body)
    return {} if rec is None else {rec.metadata.namespace: rec}


@kopf.index(GROUP, VERSION, "approvals")
async def approvals_by_name(body: kopf.Body, **_: Any) -> dict[Any, Approval]:
    approval = _parse_watched(Approval, body)
    return (
        {}
        if approval is None
        else {(approval.metadata.namespace, approval.metadata.name): approval}
    )


@kopf.index(GROUP, VERSION, "approvalpolicies")
async def policies_by_namespace(body: kopf.Body, **_: Any) -> dict[Any, ApprovalPolicy]:
    policy = _parse(ApprovalPolicy, body)
    return {} if policy is None else {policy.metadata.namespace: policy}


@kopf.index(GROUP, VERSION, "executionplans")
async def plans_by_name(body: kopf.Body, **_: Any) -> dict[Any, ExecutionPlan]:
    plan = _parse_watched(ExecutionPlan, body)
    return {} if plan is None else {(plan.metadata.namespace, plan.metadata.name): plan}


# --- lifecycle of the operator --------------------------------------------------------


@kopf.on.startup(errors=kopf.ErrorsMode.PERMANENT)
async def started(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    operator: Operator = memo.operator
    operator.configure(settings)
    await operator.start(
        reconciler_.Indexes(
            recommendations=kwargs["recommendations_by_group"],
            namespaces=kwargs["recommendations_by_namespace"],
            approvals=kwargs["approvals_by_name"],
            plans=kwargs["plans_by_name"],
            policies=kwargs["policies_by_namespace"],
        )
    )


@kopf.on.cleanup()
async def stopping(memo: kopf.Memo, **_: Any) -> None:
    await memo.operator.stop()


# --- events put groups on the queue ---------------------------------------------------


@kopf.on.event(GROUP, VERSION, "recommendations")
async def recommendation_event(
    body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any
) -> None:
    rec = _parse_watched(Recommendation, body)
    if rec is not None:
        deleted = type == "DELETED"
        memo.operator.reconciler.recommendation_changed(rec, deleted=deleted)
        if rec.phase is RecommendationPhase.SUCCEEDED and not deleted:  # plans may wait for it
            await memo.operator.start_waiting_plans((rec.metadata.namespace, rec.name))


@kopf.on.event(GROUP, VERSION, "approvals")
async def approval_event(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    approval = _parse_watched(Approval, body)
    if approval is not None:
        memo.operator.reconciler.child_changed(approval, deleted=type == "DELETED")


@kopf.on.event(GROUP, VERSION, "executionplans")
async def plan_event(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    plan = _parse_watched(ExecutionPlan, body)
    if plan is not None:
        operator: Operator = memo.operator
        key = (plan.metadata.namespace, plan.metadata.name)
        operator.reconciler.child_changed(plan, deleted=type == "DELETED")
        if type == "DELETED":
            operator.plan_deleted(key)
            return
        operator.wake_plans(key)
        await operator.start_plan(plan)
        if plan.status_phase.ended:  # approval policies (issue 14): a budget frees up
            await operator.start_customer_plans(plan.metadata.namespace, plan.spec.customer_id)


# --- one daemon per started plan ---------------------------------------------------


def _started(status: kopf.Status, **_: Any) -> bool:
    """Running or rolling back. Only then does a plan carry kopf's finalizer, so that a
    plan whose recommendation is deleted mid-run is rolled back before it goes, while
    pending and ended plans never hold up a deletion."""
    return status.get("phase") in STARTED


@kopf.daemon(
    GROUP,
    VERSION,
    "executionplans",
    when=_started,
    cancellation_backoff=DELETION_GRACE_SECONDS,
    cancellation_timeout=10.0,
)
async def run_plan(body: kopf.Body, stopped: kopf.DaemonStopped, memo: kopf.Memo, **_: Any) -> None:
    """Drive the plan while this replica leads; stop at once when the operator stops or
    loses the lead (the step in flight gets STEP_GRACE_SECONDS), roll back when deleted."""
    operator: Operator = memo.operator
    plan = _parse_watched(ExecutionPlan, body)
    if plan is None:
        return
    key = (plan.metadata.namespace, plan.metadata.name)
    waker = operator.waker(key)

    def latest() -> ExecutionPlan:
        current: ExecutionPlan = _parse_watched(ExecutionPlan, body) or plan
        return operator.reconciler.overlay.latest(reconciler_.PLANS, current)

    async def wake(seconds: float) -> None:
        waits = [asyncio.ensure_future(waker.wait()), asyncio.ensure_future(stopped.wait())]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
            waker.clear()

    def halted() -> bool:
        return bool(stopped) or not operator.leading.is_set()

    try:
        while not stopped:
            if not await _first(operator.leading.wait(), stopped.wait()):
                break  # stopped before it led
            drive = asyncio.ensure_future(
                operator.runner.drive(
                    latest(),
                    latest=latest,
                    dependencies=lambda: operator.reconciler.dependencies_succeeded(key),
                    stopped=halted,
                    wake=wake,
                    on_write=operator.plan_written,
                )
            )
            await _first(drive, operator.following.wait(), stopped.wait())
            if not drive.done() and _deleted(stopped):
                await drive  # the rollback below follows the move in flight
            elif not drive.done():  # exiting or no longer leading: finish the step, or leave it
                await asyncio.wait([drive], timeout=STEP_GRACE_SECONDS)
                if not drive.done():
                    drive.cancel()
                    logger.warning("%s/%s: left the step in flight to the next driver", *key)
                await asyncio.gather(drive, return_exceptions=True)
                continue
            if drive.done() and not drive.cancelled() and drive.exception() is not None:
                raise drive.exception()  # type: ignore[misc]
            if not stopped and drive.result() in (PlanPhase.RUNNING, PlanPhase.ROLLING_BACK):
                # Another writer moved the plan (a former leader's late write): look again
                # once the watch has shown it, rather than leave the plan until a restart.
                await wake(STEP_GRACE_SECONDS)
                continue
            break
        if _deleted(stopped) and latest().status_phase in (
            PlanPhase.RUNNING,
            PlanPhase.ROLLING_BACK,
        ):
            # Deleted while running (its recommendation left Git): roll back before it goes.
            await operator.runner.drive(
                latest(),
                latest=latest,
                dependencies=lambda: (True, ""),
                stopped=lambda: not operator.leading.is_set(),
                wake=wake,
                abort=True,
                on_write=operator.plan_written,
            )
    finally:
        operator.forget_waker(key)


def _deleted(stopped: kopf.DaemonStopped) -> bool:
    return stopped.reason is not None and bool(
        stopped.reason & kopf.DaemonStoppingReason.RESOURCE_DELETED
    )


async def _first(*waits: Any) -> bool:
    """Wait until the first of `waits` is done; whether it was the first one given. The
    waits given as coroutines are cancelled; futures given are left running."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait, task in zip(waits, tasks, strict=True):
            if task is not wait and not task.done():
                task.cancel()
    return tasks[0] in done


# --- admission: identities come from the API server, never from the client ----------
#
# Registered by `register_admission` only when the webhooks are on: kopf refuses to start
# with admission handlers and no server to serve them.


def register_admission(registry: kopf.OperatorRegistry) -> None:
    """Add the admission handlers (ids as in ``coordinator.app.HOOKS``) to `registry`."""
    both: list[Literal["CREATE", "UPDATE"]] = ["CREATE", "UPDATE"]
    on = kopf.on
    on.mutate(GROUP, VERSION, "approvals", id="approval-stamp", operations=both, registry=registry)(
        approval_stamp
    )
    on.validate(
        GROUP, VERSION, "approvals", id="approval-check", operations=["UPDATE"], registry=registry
    )(approval_check)
    on.mutate(
        GROUP,
        VERSION,
        "recommendations",
        id="recommendation-stamp",
        operations=both,
        registry=registry,
    )(recommendation_stamp)
    on.validate(
        GROUP,
        VERSION,
        "recommendations",
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
    old = kwargs.get("old")
    new = _parse(Approval, body)
    before = _parse(Approval, old) if old else None
    if new is None:
        return
    # --- approval policies (issue 14): each vote is stamped here, from the request -------
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
