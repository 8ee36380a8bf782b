"""The Operator's parts: one owner of SIGTERM/SIGINT, and a stop in reverse order, each
part within its bound."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

from coordinator.parts import signals

HOUR = 3600.0  # the shutdown deadline of these tests: never reached


def test_sigterm_sets_the_stop_event_and_a_later_handler_does_not_take_it_over() -> None:
    """kopf installs its own SIGTERM/SIGINT handlers once it runs; on the operator's loop
    they are ignored: the signal sets the operator's stop event, and nothing else runs."""
    loop = signals.Loop()
    try:
        owner = signals.Signals(shutdown_timeout=HOUR)
        owner.install(loop)
        frameworks: list[Any] = []

        async def run() -> None:
            kopf_flag: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            # What kopf does in spawn_tasks, after the start-up handlers began:
            loop.add_signal_handler(signal.SIGTERM, kopf_flag.set_result, signal.SIGTERM)
            loop.add_signal_handler(signal.SIGINT, kopf_flag.set_result, signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(owner.stop_event.wait(), 5)
            await asyncio.sleep(0)
            frameworks.append(kopf_flag.done())

        loop.run_until_complete(run())
        assert owner.stop_event.is_set()
        assert frameworks == [False]
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2):
            loop.remove_signal_handler(sig)
        loop.close()


def test_other_signals_are_installed_as_asked() -> None:
    """Only the owned signals are kept: any other handler goes in as usual."""
    loop = signals.Loop()
    try:
        seen: list[int] = []
        loop.add_signal_handler(signal.SIGHUP, seen.append, signal.SIGHUP)

        async def run() -> None:
            os.kill(os.getpid(), signal.SIGHUP)
            for _ in range(100):
                if seen:
                    return
                await asyncio.sleep(0.01)

        loop.run_until_complete(run())
        assert seen == [signal.SIGHUP]
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        loop.close()


class _Part:
    def __init__(self, name: str, log: list[str], *, hangs: bool = False) -> None:
        self.name = name
        self.stop_seconds = 0.2
        self._log = log
        self._hangs = hangs

    async def start(self) -> None:
        self._log.append(f"start {self.name}")

    async def stop(self) -> None:
        self._log.append(f"stop {self.name}")
        if self._hangs:
            await asyncio.Event().wait()
        self._log.append(f"stopped {self.name}")


def test_the_operator_starts_its_parts_in_order_and_stops_them_in_reverse_each_bounded() -> None:
    """A part whose stop hangs is left after its stop_seconds; the next is stopped all
    the same."""
    from coordinator import app  # noqa: PLC0415 - kopf and the kubernetes client, only here

    log: list[str] = []
    operator = app.Operator.__new__(app.Operator)  # the parts only, no client
    operator.parts = [_Part("a", log), _Part("b", log, hangs=True), _Part("c", log)]
    operator._started = []
    operator.started = False

    async def run() -> None:
        await operator.start()
        assert operator.started
        await asyncio.wait_for(operator.stop(), 2)

    asyncio.run(run())
    assert log == [
        "start a",
        "start b",
        "start c",
        "stop c",
        "stopped c",
        "stop b",
        "stop a",
        "stopped a",
    ]
