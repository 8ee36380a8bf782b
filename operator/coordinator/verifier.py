"""The verifier: asks Prometheus for what the plan machine's verification moves need.

Its one job: turn a move of ``core.plan`` that needs metrics or a person's decision into
a move the runner can persist. The runner hands it every move (``Verifier.move``); it
answers with the same move, or with:

- the start of a verified plan (Pending -> Running): the same Advance with the baseline
  (``core.verification.baseline``: each selected template's metrics over
  ``baseline.window``) in ``status.verification``; or, when a metric has no baseline, a
  Wait naming the metric and the reason, to be tried again after a backoff
  (``api.defaults.BASELINE_RETRY``; ``retry_at`` says when, for the plan starts). The
  annotation ``optiinfra.io/skip-baseline`` (``kubectl optiinfra start
  --skip-baseline``) starts it without, recording who asked;
- ``Verify``: the measurements that are due, taken and recorded
  (``core.verification.begin``, ``due``, ``record``) as an Advance; nothing due -> a Wait
  until the next one. The schedule lives in the status only: after a restart it resumes
  from what was written (the runner writes with the resourceVersion precondition, so no
  measurement is recorded twice);
- a Wait for a person's decision (Inconclusive): the Approval ``<plan>-verify`` (owned
  by the plan, the measurements in its message) created if missing; once it is decided
  or expired, the plan machine's move for that decision;
- savings (a template's ``savings.query`` over ``savings.window``): read before the first
  step with the baseline (without it the plan waits, as for a baseline), and once after a
  successful verification (or a person's keep), into ``status.verification.savings``
  (realised monthly, the ratio to the estimate; no data after: no figure, the message
  says so) and the metrics (``optiinfra_realised_savings_usd``, ``..._realisation_ratio``).

The templates are read with one LIST per plan start and per verifying plan (kept while it
verifies). Pure decisions are in ``core.verification``; this module only does the I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Final

import pydantic

from coordinator import metrics
from coordinator.api.approval import Approval
from coordinator.api.common import API_VERSION, APPROVALS, RECOMMENDATIONS, TEMPLATES
from coordinator.api.defaults import BASELINE_RETRY, Backoff
from coordinator.api.plan import ExecutionPlan, ExecutionPlanSpec, ExecutionPlanStatus, PlanPhase
from coordinator.api.recommendation import Recommendation
from coordinator.api.verification import (
    PrometheusProvider,
    SavingsStatus,
    VerificationPhase,
    VerificationStatus,
    VerificationTemplate,
)
from coordinator.core import approvalstatus
from coordinator.core import plan as plan_
from coordinator.core import verification as verification_
from coordinator.core.backoff import RateLimiter
from coordinator.core.verification import BaselineGap, Reading, SavingsCheck, Selection
from coordinator.k8s import client as client_

logger = logging.getLogger(__name__)

Query = Callable[[PrometheusProvider, str, str, str], Awaitable[Reading]]
"""(provider, query, namespace, template) -> the Reading (``providers.prometheus``)."""

Before = SavingsStatus | BaselineGap
WAIT_SECONDS: Final = 30.0
"""How long a Wait without a time of its own lasts (the runner's recheck)."""


class Verifier:
    """Drives the verification moves of the plans (see the module). Without `query`, it
    verifies nothing: every move passes through unchanged."""

    def __init__(
        self,
        *,
        client: client_.Client,
        query: Query | None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        retry: Backoff = BASELINE_RETRY,
    ) -> None:
        self.client = client
        self._query = query
        self._clock = clock
        self._limiter = RateLimiter[str](retry)
        self._retries: dict[str, tuple[datetime, str]] = {}
        """Plans without a baseline: when to ask again, and why they wait."""
        self._selections: dict[str, Selection] = {}

    def retry_at(self, plan: ExecutionPlan) -> datetime | None:
        """When a plan that could not get its baseline is to be started again; None when it
        is not waiting for one."""
        waiting = self._retries.get(plan.metadata.uid or "")
        return waiting[0] if waiting is not None else None

    def pause(self, move: plan_.Wait) -> float:
        """How long the runner may wait before it asks again (an event wakes it sooner)."""
        if move.until is None:
            return WAIT_SECONDS
        return max(0.0, min(WAIT_SECONDS, (move.until - self._clock()).total_seconds()))

    async def next_move(
        self,
        plan: ExecutionPlan,
        spec: ExecutionPlanSpec,
        status: ExecutionPlanStatus,
        *,
        ready: bool,
    ) -> plan_.Move:
        """The plan machine's move from `status` now (``core.plan.next_move``), as `move`
        makes it."""
        now = self._clock()
        found = plan_.next_move(spec=spec, status=status, now=now, dependencies_ready=ready)
        return await self.move(plan, spec, status, found)

    async def move(
        self,
        plan: ExecutionPlan,
        spec: ExecutionPlanSpec,
        status: ExecutionPlanStatus,
        move: plan_.Move,
    ) -> plan_.Move:
        """The move to make instead of `move` (the plan machine's, from `status`)."""
        if self._query is None:
            return move
        match move:
            case plan_.Advance(status=new) if (
                status.phase is PlanPhase.PENDING
                and new.phase is PlanPhase.RUNNING
                and new.verification is None
            ):
                return await self._start(plan, move)
            case plan_.Verify(verification=verification):
                return await self._measure(plan, spec, status, verification)
            case plan_.Wait(reason=plan_.WaitReason.AWAITING_VERIFICATION_DECISION):
                return await self._decide(plan, spec, status, move)
        if status.phase.ended or move.__class__ is plan_.Done:
            self._selections.pop(plan.metadata.uid or "", None)
        return move

    # --- before the first step --------------------------------------------------------

    async def _start(self, plan: ExecutionPlan, move: plan_.Advance) -> plan_.Move:
        uid = plan.metadata.uid or ""
        skipper = plan.metadata.annotations.get(verification_.SKIP_BASELINE_ANNOTATION)
        waiting = self._retries.get(uid)
        if skipper is None and waiting is not None and waiting[0] > self._clock():  # not yet
            return plan_.Wait(
                reason=plan_.WaitReason.WAITING_FOR_BASELINE, message=waiting[1], until=waiting[0]
            )
        selection = await self._selection(plan)
        if isinstance(selection, BaselineGap):
            return self._retry(uid, selection.message)
        if not selection.checks and not selection.problems:
            self._forget(uid)
            return move  # no template applies: the plan runs unverified, as it always did
        if skipper is not None:
            found: VerificationStatus | BaselineGap = verification_.skipped_baseline(
                selection, by=skipper
            )
        else:
            readings = {
                c.name: await self._ask(plan, c, c.baseline_query) for c in selection.checks
            }
            found = verification_.baseline(selection, readings)
        if skipper is None and selection.savings is not None and not isinstance(found, BaselineGap):
            savings = await self._savings_before(plan, selection.savings)
            if isinstance(savings, BaselineGap):
                return self._retry(uid, savings.message)
            found = found.model_copy(update={"savings": savings})
        if isinstance(found, BaselineGap):
            return self._retry(uid, found.message)
        self._forget(uid)
        logger.info(
            "plan %s/%s: baseline %s", plan.metadata.namespace, plan.metadata.name, found.baseline
        )
        return plan_.Advance(status=move.status.model_copy(update={"verification": found}))

    def _retry(self, uid: str, message: str) -> plan_.Wait:
        until = self._clock() + timedelta(seconds=self._limiter.when(uid))
        self._retries[uid] = (until, message)
        return plan_.Wait(
            reason=plan_.WaitReason.WAITING_FOR_BASELINE, message=message, until=until
        )

    def _forget(self, uid: str) -> None:
        self._limiter.forget(uid)
        self._retries.pop(uid, None)

    # --- after the last step ----------------------------------------------------------

    async def _measure(
        self,
        plan: ExecutionPlan,
        spec: ExecutionPlanSpec,
        status: ExecutionPlanStatus,
        verification: VerificationStatus,
    ) -> plan_.Move:
        uid = plan.metadata.uid or ""
        selection = self._selections.get(uid) or await self._selection(plan)
        if isinstance(selection, BaselineGap):  # the templates cannot be read: try again
            until = self._clock() + timedelta(seconds=self._limiter.when(uid))
            return plan_.Wait(
                reason=plan_.WaitReason.MEASURING, message=selection.message, until=until
            )
        self._limiter.forget(uid)
        self._selections[uid] = selection
        checks, now = selection.checks, self._clock()
        current = verification_.begin(checks, verification, now=now, templates=selection.templates)
        for check in verification_.due(checks, current, now=now):
            reading = await self._ask(plan, check, check.query)
            current = verification_.record(checks, current, check.name, reading, now=now)
        if current.phase is VerificationPhase.SUCCESSFUL and _unmeasured(current, selection):
            current = await self._savings_after(plan, selection, current)
        if current != verification:
            return plan_.Advance(
                status=plan_.record_verification(spec=spec, status=status, verification=current)
            )
        return plan_.Wait(
            reason=plan_.WaitReason.MEASURING,
            message=status.message or "verifying",
            until=verification_.next_due(checks, current),
        )

    async def _decide(
        self,
        plan: ExecutionPlan,
        spec: ExecutionPlanSpec,
        status: ExecutionPlanStatus,
        move: plan_.Wait,
    ) -> plan_.Move:
        ns, name = plan.metadata.namespace, verification_.approval_name(plan.metadata.name)
        raw = await self.client.get(APPROVALS, ns, name)
        approval = Approval.model_validate(raw) if raw is not None else None
        if approval is not None and not _owned_by(approval, plan):
            logger.warning(
                "approval %s/%s is not plan %s's: left alone", ns, name, plan.metadata.name
            )
            return move
        if approval is None:
            approval = await self._request(plan, status)
            if approval is None:
                return move
        now = self._clock()
        decided = verification_.decision_of(approval, now=now)
        if decided is None:
            return plan_.Wait(
                reason=move.reason, message=move.message, until=approval.spec.expires_at
            )
        decision, phase = decided
        if approvalstatus.changed_phase(approval, phase):
            body = approvalstatus.status_in(approval, phase, now=now).to_wire()
            await self.client.patch_status(APPROVALS, ns, name, body)
        decided_move = plan_.next_move(
            spec=spec,
            status=status,
            now=now,
            dependencies_ready=True,
            verification_decision=decision,
        )
        return await self._kept(plan, decided_move)

    async def _kept(self, plan: ExecutionPlan, move: plan_.Move) -> plan_.Move:
        """A change a person kept (Succeeded), its savings measured in the same write."""
        new = move.status if isinstance(move, plan_.Advance) else None
        if new is None or new.phase is not PlanPhase.SUCCEEDED or new.verification is None:
            return move
        selection = self._selections.get(plan.metadata.uid or "") or await self._selection(plan)
        if isinstance(selection, BaselineGap) or not _unmeasured(new.verification, selection):
            return move
        measured = await self._savings_after(plan, selection, new.verification)
        note = verification_.savings_note(measured.savings or SavingsStatus())
        message = f"{new.message}; {note}" if new.message else note
        update = {"verification": measured, "message": message}
        return plan_.Advance(status=new.model_copy(update=update))

    async def _request(self, plan: ExecutionPlan, status: ExecutionPlanStatus) -> Approval | None:
        """Create the approval `<plan>-verify` (owned by the plan) with its first status."""
        ns = plan.metadata.namespace
        found = await self._recommendation(plan)
        if found is None:
            return None
        recommendation, requested = found
        approval = verification_.decision_request(
            plan=plan.metadata.name,
            namespace=ns,
            recommendation=recommendation,
            requested=requested,
            status=status.verification or VerificationStatus(),
            now=self._clock(),
        )
        body = approval.to_wire()
        first = body.pop("status")
        body["metadata"]["ownerReferences"] = [
            client_.owner_reference(
                {
                    "apiVersion": API_VERSION,
                    "kind": "ExecutionPlan",
                    "metadata": {"name": plan.metadata.name, "uid": plan.metadata.uid},
                }
            )
        ]
        try:
            created = await self.client.create(APPROVALS, ns, body)
        except client_.ApiException as exc:
            if not client_.conflict(exc):
                raise
            return None  # created meanwhile: read on the next move
        name = approval.metadata.name
        written = await self.client.patch_status(APPROVALS, ns, name, first)
        logger.info("plan %s/%s: verification inconclusive; asked %s", ns, plan.metadata.name, name)
        return Approval.model_validate({**created, "status": written.get("status")})

    # --- reading ----------------------------------------------------------------------

    async def _recommendation(
        self, plan: ExecutionPlan
    ) -> tuple[Recommendation, Approval | None] | None:
        ns, name = plan.metadata.namespace, plan.spec.recommendation
        raw = await self.client.get(RECOMMENDATIONS, ns, name)
        if raw is None:
            return None
        approval = await self.client.get(APPROVALS, ns, name)
        return (
            Recommendation.model_validate(raw),
            Approval.model_validate(approval) if approval is not None else None,
        )

    async def _selection(self, plan: ExecutionPlan) -> Selection | BaselineGap:
        """What verifies `plan`'s recommendation, or why that cannot be read now."""
        ns = plan.metadata.namespace
        try:
            found = await self._recommendation(plan)
            if found is None:
                why = f"recommendation {plan.spec.recommendation} not found"
                return BaselineGap(metric="(templates)", reason=why)
            raw = await self.client.list(TEMPLATES, ns)
        except client_.ApiException as exc:
            why = f"cannot read the VerificationTemplates: {exc.status} {exc.reason}"
            return BaselineGap(metric="(templates)", reason=why)
        recommendation, approval = found
        templates = []
        for item in raw:
            try:
                templates.append(VerificationTemplate.model_validate(item))
            except pydantic.ValidationError:
                logger.warning("VerificationTemplate %s/%s is not valid: passed over", ns, item)
        risk = approval.spec.risk_level if approval is not None else None
        return verification_.select(
            templates, recommendation, risk=risk or recommendation.spec.risk_level
        )

    # --- savings ----------------------------------------------------------------------

    async def _savings_before(self, plan: ExecutionPlan, savings: SavingsCheck) -> Before:
        """The cost per hour over the savings window before the change (with the baseline)."""
        found = await self._recommendation(plan)
        estimated = found[0].spec.estimated_savings if found is not None else None
        reading = await self._ask(plan, savings, savings.window_query)
        return verification_.savings_before(savings, reading, estimated_monthly=estimated)

    async def _savings_after(
        self, plan: ExecutionPlan, selection: Selection, current: VerificationStatus
    ) -> VerificationStatus:
        """The savings realised, measured once; exported as metrics (customer, agent)."""
        savings = selection.savings
        assert current.savings is not None
        assert savings is not None
        reading = await self._ask(plan, savings, savings.window_query)
        realised = verification_.savings_after(current.savings, reading, now=self._clock())
        found = await self._recommendation(plan)
        if realised.realised_monthly is not None and found is not None:
            agent, customer = found[0].spec.agent_id, plan.spec.customer_id
            metrics.REALISED_SAVINGS.labels(customer, agent).set(realised.realised_monthly)
            if realised.ratio is not None:
                metrics.REALISATION_RATIO.labels(agent).set(realised.ratio)
        note = verification_.savings_note(realised)
        logger.info("plan %s/%s: %s", plan.metadata.namespace, plan.metadata.name, note)
        message = f"{current.message}; {note}" if current.message else note
        return current.model_copy(update={"savings": realised, "message": message})

    async def _ask(
        self, plan: ExecutionPlan, check: verification_.Check | SavingsCheck, query: str
    ) -> Reading:
        assert self._query is not None
        try:
            return await self._query(check.provider, query, plan.metadata.namespace, check.template)
        except client_.ApiException as exc:  # the token's Secret, the API server not answering
            return Reading(error=f"reading the token Secret: {exc.status} {exc.reason}")


def _unmeasured(verification: VerificationStatus, selection: Selection) -> bool:
    """Whether the savings are still to be measured after the change (once)."""
    found = verification.savings
    return selection.savings is not None and found is not None and not found.measured_at


def _owned_by(approval: Approval, plan: ExecutionPlan) -> bool:
    return any(o.uid == plan.metadata.uid for o in approval.metadata.owner_references)
