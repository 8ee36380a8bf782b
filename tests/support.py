"""Helpers for tests on the real local control plane: kubectl, waiting with a deadline."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

DEFAULT_TIMEOUT = 30.0


def wait_for(
    probe: Callable[[], T | None],
    *,
    what: str,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = 0.1,
) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


class Kubectl:
    """The pinned kubectl, run as one of the local users (admin by default)."""

    def __init__(self, *, bin_dir: Path, kubeconfigs: dict[str, Path]) -> None:
        self._binary = str(bin_dir / "kubectl")
        self._kubeconfigs = kubeconfigs

    def __call__(
        self,
        *args: str,
        user: str = "admin",
        stdin: str | None = None,
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(self._kubeconfigs[user])}
        proc = subprocess.run(
            [self._binary, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} (as {user}) failed with {proc.returncode}:\n"
                f"{proc.stderr}{proc.stdout}"
            )
        return proc
