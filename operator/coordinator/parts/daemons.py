"""The plan driver: one daemon per started plan, from the Store.

A plan that is started (Running, Verifying, RollingBack) has a daemon while this process runs: it
puts the plan's finalizer on (so that a plan whose recommendation is deleted mid-run is
rolled back before it goes), drives the plan with the runner while this replica leads
(`drive_plan`), and takes the finalizer off once the plan has ended; pending and ended
plans never hold up a deletion. (Driven from the Store: kopf's processing of the plans'
events, for its daemons, was about 11 % of the operator's CPU at 20/s, profiled.) At
the stop each daemon finishes or leaves its step (STEP_GRACE_SECONDS); running plans
keep their finalizer, for whoever drives them next.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Final

from coordinator import outbox as outbox_
from coordinator import runner as runner_
from coordinator import store as store_
from coordinator.api.common import FINALIZER, PLANS
from coordinator.api.plan import ExecutionPlan, PlanPhase
from coordinator.k8s import client as client_
from coordinator.parts import CLEANUP_SECONDS, Background, first

STEP_GRACE_SECONDS: Final = 3.0
"""How long a step in flight may take to finish when the operator stops or stops leading;
then it is abandoned: it stays Running in status and is run again by whoever drives the
plan next (steps are idempotent: see the executors)."""
DELETION_GRACE_SECONDS: Final = 120.0
"""How long a plan deleted mid-run (its recommendation left Git) may take to roll back
before its daemon is cancelled and its finalizer taken off."""
DAEMON_RETRY_SECONDS: Final = 5.0
"""A plan daemon that failed (a bug, an error no retry covered) runs again after this."""
STARTED: Final = frozenset(
    {PlanPhase.RUNNING.value, PlanPhase.VERIFYING.value, PlanPhase.ROLLING_BACK.value}
)
"""The phases of a plan that is driven: its daemon holds it (Verifying: measured until the
verification ends, coordinator.verifier)."""

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class _Daemon:
    task: asyncio.Task[None]
    stop: asyncio.Event
    """Set when the operator stops, the plan is being deleted, or its customer moves."""
    customer: tuple[str, str]
    """(namespace, customerId): a shard lets a customer go with its daemons (`leave`)."""


class Daemons:
    """The daemons of the started plans, by uid."""

    name = "plan daemons"
    stop_seconds = STEP_GRACE_SECONDS + 1 + CLEANUP_SECONDS

    def __init__(
        self,
        *,
        store: store_.Store,
        outbox: outbox_.Outbox,
        client: client_.Client,
        runner: runner_.PlanRunner,
        leading: asyncio.Event,
        following: asyncio.Event,
        listed: asyncio.Event,
        background: Background,
    ) -> None:
        self._store = store
        self._outbox = outbox
        """Where the finalizer patches' answers go: the Store, then dispatch."""
        self._client = client
        self._runner = runner
        self._leading = leading
        self._following = following
        self._listed = listed
        self._background = background
        self._daemons: dict[str, _Daemon] = {}
        self._wakers: dict[tuple[str, str], asyncio.Event] = {}
        """One per plan being driven: set when its object changed (suspend, abort)."""

    async def start(self) -> None:
        """Nothing: a daemon starts when its plan is seen started (`supervise`)."""

    def wake(self, key: store_.ObjectKey) -> None:
        """Plan `key` changed: its driver looks at it again (suspend, abort)."""
        waker = self._wakers.get(key)
        if waker is not None:
            waker.set()

    def supervise(self, record: store_.Record, deleted: bool) -> None:
        """A plan changed: run its daemon while it is started (Running, Verifying,
        RollingBack), tell
        it when the plan is being deleted, take the finalizer off once it has ended.

        The daemon holds the plan with a finalizer, so that a plan whose recommendation
        is deleted mid-run is rolled back before it goes; pending and ended plans never
        hold up a deletion. (Driven from the Store: kopf's processing of the plans' events,
        for its daemons, was about 11 % of the operator's CPU at 20/s, profiled.)"""
        daemon = self._daemons.get(record.uid)
        if deleted:
            if daemon is not None:
                daemon.stop.set()
            return
        if daemon is not None:
            if record.deleting and not daemon.stop.is_set():
                self._deleting(daemon)
            return
        if record.phase in STARTED and self._store.drives((record.namespace, record.customer)):
            stop = asyncio.Event()
            task = asyncio.create_task(
                self._daemon(record.key, record.uid, stop),
                name=f"plan {record.namespace}/{record.name}",
            )
            daemon = self._daemons[record.uid] = _Daemon(
                task, stop, (record.namespace, record.customer)
            )
            if record.deleting:
                self._deleting(daemon)
        elif FINALIZER in record.finalizers and self._leading.is_set():
            self._background.spawn(self._finalizer(record.key, record.uid, present=False))

    def _deleting(self, daemon: _Daemon) -> None:
        daemon.stop.set()  # it rolls back (see drive_plan), within the grace
        asyncio.get_running_loop().call_later(DELETION_GRACE_SECONDS, daemon.task.cancel)

    async def _daemon(self, key: store_.ObjectKey, uid: str, stop: asyncio.Event) -> None:
        """Drive started plan `key` (see `drive_plan`) until it ends, is deleted, or the
        operator stops; then let it go."""
        try:
            while True:
                plan = self._store.held(PLANS, key)
                if plan is None or plan.metadata.uid != uid:
                    return  # gone, another object, or ended and evicted
                try:
                    if not stop.is_set() and await first(self._leading.wait(), stop.wait()):
                        await self._finalizer(key, uid, present=True)
                    await self.drive_plan(
                        plan,
                        stopped=stop.is_set,
                        deleted=lambda: self._is_deleting(key, uid),
                        wait_stopped=stop.wait,
                    )
                    return
                except Exception:
                    logger.exception(
                        "%s/%s: driving the plan failed; again in %.0fs", *key, DAEMON_RETRY_SECONDS
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), DAEMON_RETRY_SECONDS)
                        return
        finally:
            self._daemons.pop(uid, None)
            record = self._store.record(PLANS, key)
            if (
                record is not None
                and record.uid == uid
                and FINALIZER in record.finalizers
                and (record.deleting or record.phase not in STARTED)
                and self._leading.is_set()
            ):
                self._background.spawn(self._finalizer(key, uid, present=False))

    def _is_deleting(self, key: store_.ObjectKey, uid: str) -> bool:
        record = self._store.record(PLANS, key)
        return record is None or record.uid != uid or record.deleting

    async def _finalizer(self, key: store_.ObjectKey, uid: str, *, present: bool) -> None:
        """Put the finalizer on plan `key` (`present`) or take it off; only on the object
        `uid`, only at the version the Store holds (409: read it again)."""
        namespace, name = key
        for _ in range(5):
            record = self._store.record(PLANS, key)
            if record is None or record.uid != uid or (FINALIZER in record.finalizers) == present:
                return
            if present and record.deleting:
                return  # being deleted already: nothing may be added
            others = [f for f in record.finalizers if f != FINALIZER]
            body = {
                "metadata": {
                    "finalizers": [*others, FINALIZER] if present else others,
                    "resourceVersion": str(record.rv),
                }
            }
            try:
                raw = await self._client.patch(PLANS, namespace, name, body)
                self._outbox.own_write(PLANS, raw)
                return
            except client_.ApiException as exc:
                if exc.status == 404:
                    return
                if exc.status != 409:
                    raise
            latest = await self._client.get(PLANS, namespace, name)
            if latest is None:
                return
            self._outbox.read(PLANS, latest)

    async def stop(self) -> None:
        """At exit: each daemon finishes or leaves its step (STEP_GRACE_SECONDS); running
        plans keep their finalizer, for whoever drives them next."""
        await self.leave(None)

    async def leave(self, customers: Collection[tuple[str, str]] | None) -> None:
        """The daemons of `customers` (None: all) finish or leave their steps, as at exit
        (a shard lets the customers go: ``parts.shards``); returns once they have."""
        daemons = [
            d for d in self._daemons.values() if customers is None or d.customer in customers
        ]
        for daemon in daemons:
            daemon.stop.set()
        if daemons:
            tasks = [d.task for d in daemons]
            _, pending = await asyncio.wait(tasks, timeout=STEP_GRACE_SECONDS + 1)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def drive_plan(
        self,
        plan: ExecutionPlan,
        *,
        stopped: Callable[[], bool],
        deleted: Callable[[], bool],
        wait_stopped: Callable[[], Awaitable[object]],
    ) -> None:
        """Drive a started plan while this replica leads; stop at once when the operator
        stops or loses the lead (the step in flight gets STEP_GRACE_SECONDS); roll it back
        when it was deleted mid-run. `stopped`, `deleted`, `wait_stopped`: its daemon's
        (see `_daemon`)."""
        key = (plan.metadata.namespace, plan.metadata.name)
        waker = self._wakers.setdefault(key, asyncio.Event())

        def latest() -> ExecutionPlan:
            known: ExecutionPlan | None = self._store.held(PLANS, key)
            if known is None or known.metadata.uid != plan.metadata.uid:
                return plan
            return known

        async def wake(seconds: float) -> None:
            waits = [asyncio.ensure_future(waker.wait()), asyncio.ensure_future(wait_stopped())]
            try:
                await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in waits:
                    task.cancel()
                waker.clear()

        def halted() -> bool:
            return stopped() or not self._leading.is_set()

        try:
            while not stopped():
                if not await first(self._leading.wait(), wait_stopped()):
                    break  # stopped before it led
                if not self._listed.is_set():  # dependencies are in the Store
                    await first(self._listed.wait(), wait_stopped())
                    continue
                drive = asyncio.ensure_future(
                    self._runner.drive(
                        latest(),
                        latest=latest,
                        dependencies=lambda: self._store.dependencies_succeeded(key),
                        stopped=halted,
                        wake=wake,
                    )
                )
                await first(drive, self._following.wait(), wait_stopped())
                if not drive.done() and deleted():
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
                if not stopped() and drive.result() in STARTED:
                    # Another writer moved the plan (a former leader's late write): look
                    # again once the watch has shown it, rather than leave it until a restart.
                    await wake(STEP_GRACE_SECONDS)
                    continue
                break
            if deleted() and latest().status_phase in STARTED:
                # Deleted while running (its recommendation left Git): roll back before it goes.
                await self._runner.drive(
                    latest(),
                    latest=latest,
                    dependencies=lambda: (True, ""),
                    stopped=lambda: not self._leading.is_set(),
                    wake=wake,
                    abort=True,
                )
        finally:
            self._wakers.pop(key, None)
