"""The kopf handlers: the least interesting file, by design.

They translate into the operator's terms and decide nothing: kopf's start and stop of
the operator, and the admission hooks (served by ``coordinator.k8s.admission``, not
kopf; the decisions are in ``coordinator.core.admission``). What the operator knows of
its kinds comes into the Store (``coordinator.store``) from its own list/watch
(``coordinator.k8s.informer``) or, with ``--watch=kopf``, from kopf's watching through
one event handler per kind (``coordinator.k8s.kopfwatch``); the daemon of each started
plan is run from the Store (``coordinator.parts.daemons``). The hooks ask what they need
to know of ``coordinator.parts.facts``. The handlers are on the operator's own registry
(`registry`), not kopf's global one.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import kopf
import pydantic

from coordinator.api.approval import Approval
from coordinator.api.common import GROUP, SUBMITTER_MAY_NOT_ANNOTATION, VERSION
from coordinator.api.plan import Step
from coordinator.api.recommendation import Recommendation
from coordinator.api.verification import VerificationTemplate
from coordinator.app import Operator
from coordinator.core import admission as admission_
from coordinator.core import catalogue
from coordinator.k8s.admission import Hook, RefusedError, Review, Verdict
from coordinator.k8s.kopfwatch import KopfSource
from coordinator.parts.facts import Facts

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


def registry(operator: Operator) -> kopf.OperatorRegistry:
    """kopf's handlers for `operator`: its start and stop, and with ``--watch=kopf`` one
    event handler per kind of the Store."""
    handlers = kopf.OperatorRegistry()
    kopf.on.login(registry=handlers)(kopf.login_via_client)  # as kopf's global registry
    kopf.on.startup(registry=handlers, errors=kopf.ErrorsMode.PERMANENT)(started)
    kopf.on.cleanup(registry=handlers)(stopping)
    if isinstance(operator.source, KopfSource):
        for plural in operator.source.plurals:
            kopf.on.event(GROUP, VERSION, plural, id=f"store-{plural}", registry=handlers)(
                _event(operator.source, plural)
            )
    return handlers


def _event(source: KopfSource, plural: str) -> Callable[..., Awaitable[None]]:
    async def event(event: kopf.RawEvent, **_: Any) -> None:
        source.take(plural, event["type"], event["object"])

    return event


async def started(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    operator: Operator = memo.operator
    operator.configure(settings)
    await operator.start()


async def stopping(memo: kopf.Memo, **_: Any) -> None:
    await memo.operator.stop()


# --- admission: identities come from the API server, never from the client ----------
#
# Served by the operator's own HTTPS server (``coordinator.k8s.admission``), not kopf's.


def admission(facts: Facts) -> dict[str, Hook]:
    """The admission hooks by id (as in ``coordinator.app.HOOKS``), bound to `facts`."""
    hooks = {
        "approval-stamp": approval_stamp,
        "approval-check": approval_check,
        "recommendation-stamp": recommendation_stamp,
        "recommendation-check": recommendation_check,
        "template-check": template_check,
    }
    return {id_: functools.partial(hook, facts) for id_, hook in hooks.items()}


def _named(body: Mapping[str, Any]) -> Mapping[str, Any]:
    """`body`, with a name when it has only metadata.generateName: the API server names it
    after the mutating webhooks ran, so they see it nameless (and must check it all the
    same: created that way, it went unstamped)."""
    meta = body.get("metadata")
    if not isinstance(meta, Mapping) or meta.get("name") or not meta.get("generateName"):
        return body
    return {**body, "metadata": {**meta, "name": f"{meta['generateName']}x"}}


def _models(model: type[M], review: Review) -> tuple[M | None, M | None]:
    new = _parse(model, _named(review.object)) if review.object is not None else None
    old = _parse(model, review.old) if review.old is not None else None
    return new, old


async def approval_stamp(facts: Facts, review: Review) -> Verdict:
    """Each vote is stamped here, from the authenticated request (user and groups)."""
    verdict = Verdict()
    new, before = _models(Approval, review)
    if new is None:
        return verdict
    submitter = None
    if before is not None and new.spec.decision != before.spec.decision:
        submitter = await facts.submitter(new.metadata.namespace, new.spec.recommendation)
    outcome = admission_.record_vote(
        old=before,
        new=new,
        user=review.user,
        groups=review.groups,
        submitter=submitter,
        now=datetime.now(UTC),
        stamped=submitter is not None
        or before is None
        or new.spec.decision == before.spec.decision,
    )
    if outcome.refusal:
        raise RefusedError(outcome.refusal, code=403)
    verdict.annotations.update(outcome.annotations)
    verdict.spec.update(outcome.spec)
    if outcome.warning:
        verdict.warnings.append(outcome.warning)
    return verdict


async def approval_check(facts: Facts, review: Review) -> Verdict:
    new, before = _models(Approval, review)
    if new is None or before is None:
        return Verdict()
    submitter = await facts.submitter(new.metadata.namespace, new.spec.recommendation)
    reason = admission_.check_decision(
        old=before,
        new=new,
        user=review.user,
        submitter=submitter,
        now=datetime.now(UTC),
        stamped=submitter is not None,
    )
    if reason:
        raise RefusedError(reason, code=403)
    return Verdict()


async def recommendation_stamp(facts: Facts, review: Review) -> Verdict:
    """Who submitted the spec, and what of its plan they may not do themselves: stamped on
    every create and spec change, from the authenticated request. An object the models
    cannot read is stamped all the same, as needing a person (its validation refuses what
    is invalid; nothing that passed here goes unstamped)."""
    verdict = Verdict()
    if review.object is None:
        return verdict
    raw_new, raw_old = review.object, review.old
    old_annotations = _annotations(raw_old) if raw_old is not None else None
    resubmitted = admission_.resubmitted(_spec(raw_old), _spec(raw_new), old_annotations)
    verdict.annotations.update(
        admission_.stamp_submitter(
            old_spec=_spec(raw_old),
            new_spec=_spec(raw_new),
            old_annotations=old_annotations,
            new_annotations=_annotations(raw_new),
            user=review.user,
            groups=review.groups,
        )
    )
    new, before = _models(Recommendation, review)
    if new is None:
        if resubmitted:
            verdict.annotations[SUBMITTER_MAY_NOT_ANNOTATION] = "could not be checked"
        return verdict
    denied = None
    if resubmitted:  # who may do what: asked once per spec
        denied = await facts.submitter_may_not(review.userinfo, new)
        steps = _plan_steps(new)
        if steps is not None:
            endpoints = await facts.endpoints_of(new.metadata.namespace, steps)
            endpoint = admission_.endpoint_deputy(steps, endpoints=endpoints)
            denied = "; ".join(d for d in (denied, endpoint) if d) or None
    verdict.annotations.update(admission_.stamp_deputy(old=before, new=new, denied=denied))
    return verdict


def _spec(raw: Mapping[str, Any] | None) -> Any:
    return (raw or {}).get("spec") if isinstance(raw, Mapping) else None


def _annotations(raw: Mapping[str, Any] | None) -> Mapping[str, str]:
    meta = (raw or {}).get("metadata") if isinstance(raw, Mapping) else None
    found = meta.get("annotations") if isinstance(meta, Mapping) else None
    return found if isinstance(found, Mapping) else {}


def _plan_steps(rec: Recommendation) -> list[Step] | None:
    try:
        return catalogue.plan_steps(rec.spec)
    except catalogue.NoDefaultPlanError:
        return None  # refused by the validating webhook


async def recommendation_check(facts: Facts, review: Review) -> Verdict:
    verdict = Verdict()
    new, before = _models(Recommendation, review)
    if new is None:
        return verdict
    if before is not None:
        reason = admission_.check_spec_change(old=before, new=new)
        if reason:
            raise RefusedError(reason, code=403)  # not 409: clients retry conflicts
    # --- executors (issue 12): the params of each step, before anything can run ---------
    problems = admission_.step_problems(old=before, new=new, kinds=facts.config.executor_kinds)
    if problems:
        raise RefusedError("; ".join(problems), code=403)
    problem = admission_.plan_problem(new)
    if problem:  # never a fake plan: say what to add
        raise RefusedError(problem, code=422)
    if before is None or before.spec != new.spec:  # whose steps an endpoint takes
        steps = catalogue.plan_steps(new.spec)
        endpoints = await facts.endpoints_of(new.metadata.namespace, steps)
        reason = admission_.endpoint_problem(
            new, steps, endpoints=endpoints, user=review.user, groups=review.groups
        )
        if reason:
            raise RefusedError(reason, code=403)
    if new.spec.depends_on:
        existing = await facts.existing(new.metadata.namespace, new.spec.depends_on)
        verdict.warnings.extend(admission_.dependency_warnings(new, existing=existing))
    return verdict


async def template_check(facts: Facts, review: Review) -> Verdict:
    """A VerificationTemplate whose conditions or queries cannot work is refused, the field
    named (its CEL is compiled here: the API server's schema cannot)."""
    del facts  # the template alone says it
    new, _ = _models(VerificationTemplate, review)
    if new is not None and (problem := admission_.template_problem(new)) is not None:
        raise RefusedError(problem, code=422)
    return Verdict()
