"""What a plan step does: executors, chosen per step by ``spec.steps[].executor``.

An executor carries out one step (``execute``) or undoes it during a rollback
(``undo``) and reports a ``core.plan.Outcome``. Both must be idempotent: after a crash
the plan machine may ask again for the step that was in flight. Executors never touch
plan status; the runner records what they report.

``simulated`` (default) sleeps and returns results like a real integration would;
``params.fail`` makes a step fail, which is how rollback is shown and tested.
``kubernetes`` changes real objects in the recommendation's namespace: ``scale``,
``patch``, ``apply`` and ``wait``, each recording what its undo needs (see its module); its
params are checked at admission by ``coordinator.core.steps``.
``webhook`` asks the agent behind an AgentEndpoint to do it (signed, idempotent requests).
Beside them: ``waiting`` (the kubernetes ``wait`` step's polling), ``endpoints`` (an
AgentEndpoint resolved: URL, key, TLS) and ``post`` (one request to an agent, within the
address policy), which ``notify`` uses too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Protocol

from coordinator.api.plan import Step
from coordinator.core.plan import Outcome


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class StepContext:
    """Where a step runs: the plan's namespace and name, and its uid (for idempotency keys);
    the recommendation and customer it carries out (the webhook executor tells the agent)."""

    namespace: str
    plan: str
    uid: str
    recommendation: str = ""
    customer_id: str = ""
    submitter: str | None = None
    """Who submitted the recommendation (stamped at admission), and their groups."""
    groups: tuple[str, ...] = ()


class StepError(Exception):
    """The step cannot be done (or undone); the message says why."""


class Executor(Protocol):
    async def execute(self, step: Step, *, context: StepContext) -> Outcome: ...

    async def undo(
        self, step: Step, *, result: Mapping[str, Any] | None, context: StepContext
    ) -> Outcome: ...
