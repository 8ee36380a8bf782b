"""The plan runner against a fake API server: transient errors, stale writers, events."""

from __future__ import annotations

import asyncio
import copy
import functools
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import urllib3

from coordinator import runner as runner_
from coordinator.api.common import PLANS
from coordinator.api.meta import ObjectMeta
from coordinator.api.plan import (
    ExecutionPlan,
    ExecutionPlanSpec,
    ExecutionPlanStatus,
    Executor,
    PlanPhase,
    Step,
)
from coordinator.core import plan as plan_
from coordinator.core import planevents
from coordinator.executors import StepContext
from coordinator.k8s import client as client_
from coordinator.k8s import events as events_
from coordinator.k8s import retrying as retrying_
from tests.support.fakeapi import FakeApi, FakeRecorder

NS, NAME, UID = "team", "rec-1", "uid-1"
KEY = (PLANS, NS, NAME)


def _error(status: int) -> client_.ApiException:
    return client_.ApiException(status=status, reason={409: "Conflict"}.get(status, "Error"))


class CountingExecutor:
    def __init__(self) -> None:
        self.executed: list[str] = []
        self.undone: list[str] = []
        self.on_execute: Any = None

    async def execute(self, step: Step, *, context: StepContext) -> plan_.Outcome:
        self.executed.append(step.name)
        if self.on_execute is not None:
            self.on_execute(step)
        return plan_.Outcome(ok=True, result={"done": step.name}, duration_ms=5)

    async def undo(
        self, step: Step, *, result: Mapping[str, Any] | None, context: StepContext
    ) -> plan_.Outcome:
        self.undone.append(step.name)
        return plan_.Outcome(ok=True, duration_ms=5)


def _spec(*names: str) -> ExecutionPlanSpec:
    return ExecutionPlanSpec(
        recommendation=NAME,
        customer_id="c",
        suspend=False,
        steps=[Step(name=n, action=n, executor=Executor.SIMULATED) for n in names],
    )


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def _api(*steps: str) -> FakeApi:
    api = FakeApi()
    plan = ExecutionPlan(metadata=ObjectMeta(name=NAME), spec=_spec(*steps)).to_wire()
    api.put(
        PLANS, {**plan, "metadata": {"name": NAME, "namespace": NS, "uid": UID, "generation": 1}}
    )
    return api


def _runner(api: FakeApi) -> tuple[runner_.PlanRunner, CountingExecutor, FakeRecorder]:
    executor = CountingExecutor()
    recorder = FakeRecorder()

    async def no_sleep(seconds: float) -> None:
        pass

    runner = runner_.PlanRunner(
        client=cast(client_.Client, api),
        recorder=cast(events_.Recorder, recorder),
        executors={Executor.SIMULATED: executor},
        clock=Clock(),
        sleep=no_sleep,
    )
    return runner, executor, recorder


async def _drive(runner: runner_.PlanRunner, api: FakeApi, plan: ExecutionPlan) -> PlanPhase:
    sleeps: list[float] = []

    async def wake(seconds: float) -> None:
        sleeps.append(seconds)

    return await runner.drive(
        plan,
        latest=functools.partial(api.plan, NS, NAME),
        dependencies=lambda: (True, ""),
        stopped=lambda: len(sleeps) > 50,
        wake=wake,
    )


async def _started(runner: runner_.PlanRunner, api: FakeApi) -> ExecutionPlan:
    await runner.start(api.plan(NS, NAME), dependencies=(True, ""))
    return api.plan(NS, NAME)


def test_transient_errors_in_status_writes_are_retried_in_the_runner() -> None:
    async def scenario() -> None:
        api = _api("a", "b")
        runner, executor, _ = _runner(api)
        plan = await _started(runner, api)
        assert plan.status_phase is PlanPhase.RUNNING
        # The outcome of step a meets 503, 503, connection refused, then the server is back.
        refused = urllib3.exceptions.MaxRetryError(
            None, "/", reason=urllib3.exceptions.NewConnectionError(None, "refused")
        )
        executor.on_execute = lambda step: (
            api.failures.extend([_error(503), _error(503), refused]) if step.name == "a" else None
        )
        phase = await _drive(runner, api, plan)
        assert phase is PlanPhase.SUCCEEDED
        assert executor.executed == ["a", "b"]  # each step ran once
        assert api.plan(NS, NAME).status_phase is PlanPhase.SUCCEEDED
        assert not api.failures

    asyncio.run(scenario())


def test_the_retry_of_a_transient_error_stops_when_the_daemon_stops() -> None:
    async def scenario() -> None:
        api = _api("a")
        runner, _, _ = _runner(api)
        plan = await _started(runner, api)
        api.failures.extend([_error(503)] * 1000)
        slept: list[float] = []

        async def sleep(seconds: float) -> None:
            slept.append(seconds)

        async def wake(seconds: float) -> None:
            raise AssertionError("a backoff does not wait for the plan's wake-ups")

        runner.sleep = sleep
        phase = await runner.drive(
            plan,
            latest=functools.partial(api.plan, NS, NAME),
            dependencies=lambda: (True, ""),
            stopped=lambda: sum(slept) >= 2.0,  # the daemon stops during the backoff
            wake=wake,
        )
        assert phase is PlanPhase.RUNNING  # left as it is, for the next daemon
        tries = 1000 - len(api.failures)
        assert 2 <= tries <= 6, tries  # paced: 0.2 s doubling (with jitter), not a hot loop
        assert max(slept) <= retrying_.STOP_POLL_SECONDS  # stopping is noticed within 0.1 s

    asyncio.run(scenario())


def test_a_non_transient_error_is_not_retried() -> None:
    assert client_.transient(_error(503))
    assert client_.transient(_error(429))
    assert client_.transient(ConnectionResetError())
    assert client_.transient(urllib3.exceptions.ProtocolError("reset"))
    assert client_.transient(urllib3.exceptions.ReadTimeoutError(None, "/", "timed out"))
    assert not client_.transient(_error(409))
    assert not client_.transient(_error(404))
    assert not client_.transient(_error(422))
    assert not client_.transient(ValueError("bug"))


def test_a_stale_runner_does_not_overwrite_a_newer_steps_list() -> None:
    async def scenario() -> None:
        api = _api("a", "b", "c")
        runner, executor, _ = _runner(api)
        stale = await _started(runner, api)  # step a Running, as this runner read it
        # Meanwhile another replica recorded a and started b.
        other, _, _ = _runner(api)
        newer = api.plan(NS, NAME)
        await other._move(  # a's outcome
            newer,
            newer.spec,
            (True, ""),
            retrying_.Control(stopped=lambda: False, sleep=asyncio.sleep),
        )
        newer = api.plan(NS, NAME)
        await other._move(  # b Running
            newer,
            newer.spec,
            (True, ""),
            retrying_.Control(stopped=lambda: False, sleep=asyncio.sleep),
        )
        theirs = copy.deepcopy(api.objects[KEY]["status"])
        assert [s["phase"] for s in theirs["steps"]] == ["Succeeded", "Running", "Pending"]
        writes = len(api.writes)

        phase = await _drive(runner, api, stale)

        assert api.objects[KEY]["status"] == theirs  # nothing of the stale runner's was written
        assert len(api.writes) == writes
        assert phase is PlanPhase.RUNNING
        assert executor.executed == ["a"]  # it ran its step, and stopped at the refusal

    asyncio.run(scenario())


def test_a_harmless_conflict_is_written_again_on_the_fresh_version() -> None:
    async def scenario() -> None:
        api = _api("a", "b")
        runner, executor, _ = _runner(api)
        plan = await _started(runner, api)
        # Every step changes the plan's metadata (a finalizer, an annotation) meanwhile.
        executor.on_execute = lambda step: api.bump(KEY)
        phase = await _drive(runner, api, plan)
        assert phase is PlanPhase.SUCCEEDED
        assert executor.executed == ["a", "b"]
        assert len(api.gets) == 2  # one read per refused write

    asyncio.run(scenario())


def test_drive_records_again_the_events_the_stored_status_implies() -> None:
    async def scenario() -> None:
        api = _api("a", "b")
        runner, _, recorder = _runner(api)
        plan = await _started(runner, api)
        await runner._move(
            plan,
            plan.spec,
            (True, ""),
            retrying_.Control(stopped=lambda: False, sleep=asyncio.sleep),
        )  # a Succeeded: its event recorded once
        before = list(recorder.events)
        assert before.count(("StepSucceeded", "step|a|Succeeded")) == 1
        # A restart: a new runner drives the plan from its stored status.
        again, _, replayed = _runner(api)
        await _drive(again, api, api.plan(NS, NAME))
        assert ("StepSucceeded", "step|a|Succeeded") in replayed.events
        assert ("PlanStarted", "phase|Running") in replayed.events
        keys = [key for _, key in replayed.events]
        assert len(keys) == len(set(keys)), replayed.events  # each transition once
        assert {"step|b|Succeeded", "phase|Succeeded"} <= set(keys)

    asyncio.run(scenario())


def test_ended_plans_are_replayed_only_when_they_ended_lately() -> None:
    api = _api("a")
    runner, _, recorder = _runner(api)
    finished = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    status = {
        "phase": "Succeeded",
        "startedAt": "2026-01-02T03:04:00Z",
        "finishedAt": "2026-01-02T03:04:05Z",
    }
    api.objects[KEY]["status"] = status
    runner.clock = lambda: finished + timedelta(minutes=1)
    runner.replay_if_recent(api.plan(NS, NAME))
    assert {r for r, _ in recorder.events} == {"Succeeded", "PlanStarted"}
    recorder.events.clear()
    runner.clock = lambda: finished + runner_.REPLAY_WINDOW + timedelta(seconds=1)
    runner.replay_if_recent(api.plan(NS, NAME))
    assert recorder.events == []


def test_the_403_of_an_api_server_still_loading_its_roles_is_transient_a_real_one_is_not() -> None:
    loading = client_.ApiException(status=403, reason="Forbidden")
    loading.body = (
        'executionplans.optiinfra.io "p" is forbidden: User "x" cannot patch resource '
        '"executionplans/status": RBAC: [clusterrole.rbac.authorization.k8s.io '
        '"optiinfra-coordinator" not found]'
    )
    denied = client_.ApiException(status=403, reason="Forbidden")
    denied.body = 'executionplans.optiinfra.io "p" is forbidden: User "x" cannot patch resource'
    assert client_.transient(loading)
    assert not client_.transient(denied)


def test_a_403_while_the_api_server_reloads_its_roles_is_waited_out_not_a_daemon_failure() -> None:
    async def scenario() -> None:
        api = _api("a", "b")
        runner, executor, _ = _runner(api)
        plan = await _started(runner, api)
        executor.on_execute = lambda step: (
            api.failures.extend([_error(403), _error(403)]) if step.name == "a" else None
        )
        phase = await _drive(runner, api, plan)
        assert phase is PlanPhase.SUCCEEDED
        assert executor.executed == ["a", "b"]
        assert not api.failures

    asyncio.run(scenario())


def test_a_rolled_back_plan_implies_the_success_of_the_steps_it_undid() -> None:
    """A SIGKILL can lose a StepSucceeded event before the rollback that later undoes the
    step: replayed from the final status, it must still be there (found by make chaos)."""
    status = ExecutionPlanStatus.model_validate(
        {
            "phase": "RolledBack",
            "startedAt": "2026-01-01T00:00:00Z",
            "finishedAt": "2026-01-01T00:00:09Z",
            "steps": [
                {"name": "a", "phase": "RolledBack", "durationMs": 700},
                {"name": "b", "phase": "Failed", "error": "broke"},
                {"name": "c", "phase": "Skipped"},
            ],
        }
    )
    implied = {(e.reason, e.message) for e in planevents.implied_events(status)}
    assert implied == {
        ("StepSucceeded", "Step a: Succeeded in 700 ms"),
        ("StepRolledBack", "Step a: RolledBack in 700 ms"),
        ("StepFailed", "Step b: Failed broke"),
        ("PlanStarted", "Plan started"),
        ("RollingBack", "Rolling back"),
        ("RolledBack", "RolledBack"),
    }
