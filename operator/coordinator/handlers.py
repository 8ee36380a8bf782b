"""The kopf handlers: the least interesting file, by design.

They translate into the operator's terms and decide nothing: kopf's start and stop of
the operator, and the admission hooks (served by ``coordinator.k8s.admission``, not
kopf; the decisions are in ``coordinator.core.admission``). kopf watches nothing: what
the operator knows of its kinds comes from its own list/watch into the Store
(``coordinator.k8s.informer``, ``coordinator.store``), and the daemon of each started
plan is run from there (``coordinator.app``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import kopf
import pydantic

from coordinator.api.approval import Approval
from coordinator.api.recommendation import Recommendation
from coordinator.app import Operator
from coordinator.core import admission as admission_
from coordinator.k8s.admission import Hook, RefusedError, Review, Verdict

M = TypeVar("M", bound=pydantic.BaseModel)


logger = logging.getLogger(__name__)


def _parse(model: type[M], body: Mapping[str, Any]) -> M | None:
    try:
        return model.model_validate(dict(body))
    except pydantic.ValidationError as exc:
        meta = body.get("metadata") or {}
        logger.error(
            "ignoring %s %s/%s: %s", body.get("kind"), meta.get("namespace"), meta.get("name"), exc
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


# --- admission: identities come from the API server, never from the client ----------
#
# Served by the operator's own HTTPS server (``coordinator.k8s.admission``), not kopf's.


def admission(operator: Operator) -> dict[str, Hook]:
    """The admission hooks by id (as in ``coordinator.app.HOOKS``), bound to `operator`."""
    hooks = {
        "approval-stamp": approval_stamp,
        "approval-check": approval_check,
        "recommendation-stamp": recommendation_stamp,
        "recommendation-check": recommendation_check,
    }
    return {id_: functools.partial(hook, operator) for id_, hook in hooks.items()}


def _models(model: type[M], review: Review) -> tuple[M | None, M | None]:
    new = _parse(model, review.object) if review.object is not None else None
    old = _parse(model, review.old) if review.old is not None else None
    return new, old


async def approval_stamp(operator: Operator, review: Review) -> Verdict:
    """Each vote is stamped here, from the authenticated request (user and groups)."""
    verdict = Verdict()
    new, before = _models(Approval, review)
    if new is None:
        return verdict
    submitter = None
    if before is not None and new.spec.decision != before.spec.decision:
        submitter = await operator.submitter(new.metadata.namespace, new.spec.recommendation)
    outcome = admission_.record_vote(
        old=before,
        new=new,
        user=review.user,
        groups=review.groups,
        submitter=submitter,
        now=datetime.now(UTC),
    )
    if outcome.refusal:
        raise RefusedError(outcome.refusal, code=403)
    verdict.annotations.update(outcome.annotations)
    verdict.spec.update(outcome.spec)
    if outcome.warning:
        verdict.warnings.append(outcome.warning)
    return verdict


async def approval_check(operator: Operator, review: Review) -> Verdict:
    new, before = _models(Approval, review)
    if new is None or before is None:
        return Verdict()
    submitter = await operator.submitter(new.metadata.namespace, new.spec.recommendation)
    reason = admission_.check_decision(
        old=before, new=new, user=review.user, submitter=submitter, now=datetime.now(UTC)
    )
    if reason:
        raise RefusedError(reason, code=403)
    return Verdict()


async def recommendation_stamp(operator: Operator, review: Review) -> Verdict:
    verdict = Verdict()
    new, before = _models(Recommendation, review)
    if new is None:
        return verdict
    verdict.annotations.update(admission_.stamp_submitter(old=before, new=new, user=review.user))
    denied = None
    if before is None or before.spec != new.spec:  # who may do what: asked once per spec
        denied = await operator.submitter_may_not(review.userinfo, new)
    verdict.annotations.update(admission_.stamp_deputy(old=before, new=new, denied=denied))
    return verdict


async def recommendation_check(operator: Operator, review: Review) -> Verdict:
    verdict = Verdict()
    new, before = _models(Recommendation, review)
    if new is None:
        return verdict
    if before is not None:
        reason = admission_.check_spec_change(old=before, new=new)
        if reason:
            raise RefusedError(reason, code=403)  # not 409: clients retry conflicts
    # --- executors (issue 12): the params of each step, before anything can run ---------
    problems = admission_.step_problems(old=before, new=new, kinds=operator.config.executor_kinds)
    if problems:
        raise RefusedError("; ".join(problems), code=403)
    problem = admission_.plan_problem(new)
    if problem:  # never a fake plan: say what to add
        raise RefusedError(problem, code=422)
    reason = await operator.endpoint_problem(new)
    if reason:
        raise RefusedError(reason, code=403)
    if new.spec.depends_on:  # the namespace's names (a set as large as it) only when needed
        existing = operator.names_in(new.metadata.namespace)
        verdict.warnings.extend(admission_.dependency_warnings(new, existing=existing))
    return verdict
