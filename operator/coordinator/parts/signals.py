"""The one owner of SIGTERM and SIGINT: they set the operator's one stop event.

kopf hosts the process (``kopf.run`` runs the start-up and clean-up handlers) and, like
every framework, installs its own SIGTERM/SIGINT handlers on the event loop. Here they
are never installed: the loop is a `Loop`, on which the first handler of an owned
signal, ours (`Signals.install`, before kopf runs), is the only one; kopf's later
``add_signal_handler`` calls for the same signals are ignored. Ours sets the stop event
that kopf is given as its ``stop_flag`` (kopf then runs the clean-up: the Operator's
stop) and bounds the exit: whatever hangs, the process leaves ``shutdown_timeout``
seconds after the signal (`exit_after`). All state is in the API server, so leaving is
always safe (a step in flight is run again by the next driver). SIGUSR2 prints every
asyncio task and where it waits (``kill -USR1`` prints the threads: ``coordinator.run``).
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Final, TypeVarTuple

OWNED: Final = frozenset({signal.SIGTERM, signal.SIGINT})
"""The signals that stop the operator."""

Ts = TypeVarTuple("Ts")

logger = logging.getLogger(__name__)


class Loop(asyncio.SelectorEventLoop):
    """An event loop on which the first handler of an owned signal is the only one."""

    def __init__(self) -> None:
        super().__init__()
        self.owned: set[int] = set()

    def own(self, sig: int, callback: Callable[..., object], *args: Any) -> None:
        """Handle `sig` with `callback`, and with nothing else from now on."""
        super().add_signal_handler(sig, callback, *args)
        self.owned.add(sig)

    def add_signal_handler(self, sig: int, callback: Callable[[*Ts], object], *args: *Ts) -> None:
        if sig in self.owned:
            logger.debug("signal %s is owned by the operator: another handler ignored", sig)
            return
        super().add_signal_handler(sig, callback, *args)


class Signals:
    """Owns SIGTERM/SIGINT (sets `stop`) and SIGUSR2 (prints the tasks)."""

    name = "signals"
    stop_seconds = 0.0

    def __init__(self, *, shutdown_timeout: float) -> None:
        self.shutdown_timeout = shutdown_timeout
        self.stop_event = asyncio.Event()
        """Set on SIGTERM/SIGINT: kopf's stop flag (``coordinator run`` passes it). An
        asyncio one: kopf waits for a threading.Event in an executor thread, which then
        holds up the exit of the event loop (measured: a 10 s hang at every stop)."""

    def install(self, loop: Loop) -> None:
        """Take the signals on `loop`, before anything else can (main thread only)."""
        for sig in sorted(OWNED):
            loop.own(sig, self.terminate, sig)
        loop.own(signal.SIGUSR2, dump_tasks)

    async def start(self) -> None:
        """Nothing: the handlers are in place before the loop runs (`install`)."""

    async def stop(self) -> None:
        """Nothing: a signal's deadline stays armed until the process is gone."""

    def terminate(self, sig: signal.Signals) -> None:
        """SIGTERM/SIGINT: set the stop event, and make sure the process is gone within
        `shutdown_timeout` whatever hangs."""
        if self.stop_event.is_set():
            return
        timeout = self.shutdown_timeout
        logger.info("%s received: stopping, within %.0f s", sig.name, timeout)
        self.stop_event.set()
        threading.Thread(
            target=exit_after, args=(timeout,), name="shutdown-deadline", daemon=True
        ).start()


def exit_after(seconds: float) -> None:
    """The bound of a shutdown: if the process still runs `seconds` after the stop began,
    say what was still running (threads) and leave."""
    time.sleep(seconds)
    logger.warning("the stop did not finish within %.0f s; leaving now", seconds)
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    sys.stderr.flush()
    os._exit(0)


def dump_tasks() -> None:
    """`kill -USR2 PID`: every asyncio task and where it waits, on stderr (what a hung
    process is doing; `kill -USR1` prints the threads)."""
    for task in asyncio.all_tasks():
        print(f"--- {task.get_name()}: {task!r}"[:300], file=sys.stderr)
        task.print_stack(limit=8, file=sys.stderr)
    sys.stderr.flush()
