"""Plan starts: a pending plan that may start is started (``runner.start``), one start at
a time per customer group (a budget counts the plans its starts wrote); its daemon
(``parts.daemons``) takes it from there."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

from coordinator import reconciler as reconciler_
from coordinator import runner as runner_
from coordinator import store as store_
from coordinator.api.common import PLANS
from coordinator.api.plan import ExecutionPlan, PlanPhase
from coordinator.parts.daemons import STARTED

logger = logging.getLogger(__name__)


class Starts:
    """Starts the pending plans that may start."""

    def __init__(
        self,
        *,
        store: store_.Store,
        runner: runner_.PlanRunner,
        reconciler: reconciler_.Reconciler,
        leading: asyncio.Event,
    ) -> None:
        self.store = store
        self._runner = runner
        self._reconciler = reconciler
        self._leading = leading
        self._starting: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}
        """Customer groups with a plan start in flight (one at a time per customer: a
        budget counts the plans its starts wrote), and how many wait."""
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        """Plans to start again later (no verification baseline yet)."""
        self._tasks: set[asyncio.Task[None]] = set()

    async def start_plan(self, plan: ExecutionPlan) -> None:
        """Start `plan` if it is pending and may start; its daemon takes it from there."""
        key = (plan.metadata.namespace, plan.metadata.name)
        if not self._leading.is_set():
            return
        if plan.status_phase.ended:  # a crash right after its last write lost no event
            self._runner.replay_if_recent(plan)
        if plan.status_phase is not PlanPhase.PENDING:
            return
        group = (plan.metadata.namespace, plan.spec.customer_id)
        if not self.store.drives(group):
            return  # another shard's customer (``parts.shards``)
        lock, users = self._starting.get(group) or (asyncio.Lock(), 0)
        self._starting[group] = (lock, users + 1)
        try:
            async with lock:
                latest = self.store.held(PLANS, key)
                if latest is None or latest.metadata.uid != plan.metadata.uid:
                    latest = plan
                if latest.status_phase is PlanPhase.PENDING:
                    ready, why, until = self._reconciler.plan_gate(key)
                    await self._runner.start(latest, dependencies=(ready, why))
                    if until is not None:  # a window opens or ends: ask again then
                        self._reconciler.recheck_at(group, until)
                    if (retry := self._runner.verifier.retry_at(latest)) is not None:
                        self._again(key, retry)  # it has no baseline yet
        finally:
            lock, users = self._starting[group]
            if users <= 1:
                del self._starting[group]
            else:
                self._starting[group] = (lock, users - 1)

    def busy(self, group: tuple[str, str]) -> bool:
        """Whether a plan start of customer `group` is in flight."""
        return group in self._starting

    def _again(self, key: tuple[str, str], when: datetime) -> None:
        """Start plan `key` again at `when` (one timer per plan: the latest wins)."""
        if (old := self._timers.pop(key, None)) is not None:
            old.cancel()
        delay = max(0.0, (when - datetime.now(UTC)).total_seconds())
        self._timers[key] = asyncio.get_running_loop().call_later(delay, self._fire, key)

    def _fire(self, key: tuple[str, str]) -> None:
        self._timers.pop(key, None)
        task = asyncio.get_running_loop().create_task(self.start_recorded(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start_waiting_plans(self, succeeded: tuple[str, str]) -> None:
        """Recommendation `succeeded` did: the pending plans that waited for it may start."""
        for key in self.store.dependents(succeeded):
            record = self.store.record(PLANS, key)
            if record is None or record.phase not in (None, PlanPhase.PENDING.value):
                continue
            plan = self.store.plan(key)
            if plan is not None and plan.status_phase is PlanPhase.PENDING:
                await self.start_plan(plan)

    async def start_pending_plans(self, namespace: str) -> None:
        """An AgentEndpoint of `namespace` was registered or changed: its pending plans may
        start (those that do not wait for it decide the same again: no write)."""
        for record in list(self.store.plans()):
            if record.namespace != namespace or record.phase not in (None, PlanPhase.PENDING.value):
                continue
            plan = self.store.plan(record.key)
            if plan is not None and plan.status_phase is PlanPhase.PENDING:
                await self.start_plan(plan)

    async def start_recorded(self, key: tuple[str, str]) -> None:
        """Plan `key` changed in the Store: start it, if it may."""
        record = self.store.record(PLANS, key)
        plan = None if record is None else await self.store.fetch(PLANS, record)
        if plan is not None:
            await self.start_plan(plan)

    async def start_pending(self) -> None:
        """Start the pending plans that may start; post again the lost events of plans
        that ended lately (see `start_plan`). Evicted plans are passed over: they ended,
        and their recommendation was found settled since (reading each one again would
        be a GET per ended plan, thousands after a takeover; a crash's lost Events of one
        that ended in that short time are not posted again)."""
        began, count = time.monotonic(), 0
        for record in self.store.plans():
            if record.phase not in STARTED and record.body is not None:
                await self.start_plan(self.store.model(PLANS, record))
                count += 1
                if count % 50 == 0:
                    await asyncio.sleep(0)  # let the reconciles and the webhooks in
        logger.info("considered %d plans in %.1f s", count, time.monotonic() - began)
