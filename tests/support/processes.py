"""Processes the tests start as a user starts them, on 127.0.0.1: `coordinator run` (a
process, a kubeconfig, flags) and the reference agent (``python -m coordinator.agent``)
with the tests' key; both from hack/cluster/localproc.py, which bench/ and the demo use."""

from __future__ import annotations

from pathlib import Path

import localproc
from localproc import OperatorProcess

__all__ = ["KEY", "AgentProcess", "OperatorProcess"]


KEY = b"cluster-test-hmac-key"
"""The HMAC key the tests' agents verify with (and the Secrets of their endpoints hold)."""


class AgentProcess(localproc.AgentProcess):
    """The reference agent with the tests' key (``KEY``) in `directory`."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, KEY)
