"""The webhook executor: a step carried out outside the cluster by the agent that proposed it.

A ``webhook`` step names an AgentEndpoint of its namespace in ``params.endpoint``; the
other params go to the agent as they are. For each execute or undo the executor reads
the endpoint (from the operator's Store, or one GET when the Store does not hold it yet)
and its HMAC key (a Secret the operator was granted, see
manifests/endpoint-secrets-role.yaml), then POSTs the signed request of
``coordinator.core.webhook`` until the agent gives a final answer:

- 200 ``{"result": {...}}``: done, the result is the step's result;
- 202, 5xx, or no answer (refused, reset, no answer within the endpoint's
  ``timeoutSeconds``): the same request (same idempotency key, fresh timestamp and
  signature) again after 0.5 s, doubling up to 5 s (``api.defaults.AGENT_RETRY``);
- 4xx ``{"error": "..."}``: the step failed with the agent's message (and any other
  status: redirects are not followed);
- a body longer than ``MAX_ANSWER_BYTES`` (64 KiB; a ``Content-Length`` above it, or
  more bytes than that arriving): the step failed, naming the endpoint and the limit. The
  rest is never read, so an agent cannot exhaust the operator's memory, and the step is
  not sent again.

The endpoint is resolved by ``executors.endpoints``, the request sent by
``executors.post``, only to the addresses the operator's address policy allows: a refused
address fails the step at once, naming the endpoint, the host, the address and its class
(``AddressRefused``), never asked again.

The whole step is limited by ``params.timeoutSeconds`` (default 300 s). The key is
derived from the plan's uid, the step and the operation, so a step re-run after an
operator restart sends the key the agent has seen: an agent that applies each key once
applies the change once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from coordinator.api import defaults
from coordinator.api.plan import Step
from coordinator.core import webhook as protocol
from coordinator.core.plan import Outcome
from coordinator.executors import StepContext
from coordinator.executors import endpoints as endpoints_
from coordinator.executors import post as post_
from coordinator.k8s.client import transient

logger = logging.getLogger(__name__)


class WebhookExecutor:
    def __init__(
        self,
        resolver: endpoints_.Resolver,
        *,
        post: post_.Post = post_.aiohttp_post,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._resolver = resolver
        self._post = post
        self._sleep = sleep
        self._clock = clock
        self._monotonic = monotonic

    async def execute(self, step: Step, *, context: StepContext) -> Outcome:
        return await self._call(protocol.EXECUTE, step, context, None)

    async def undo(
        self, step: Step, *, result: Mapping[str, Any] | None, context: StepContext
    ) -> Outcome:
        return await self._call(protocol.UNDO, step, context, result)

    async def _call(
        self,
        operation: str,
        step: Step,
        context: StepContext,
        previous: Mapping[str, Any] | None,
    ) -> Outcome:
        began = self._monotonic()
        deadline = began + protocol.step_timeout(step.params)
        name = step.params.get("endpoint")
        if not isinstance(name, str) or not name:
            return self._outcome(
                began,
                error=f"step {step.name}: params.endpoint must name an AgentEndpoint of the "
                "namespace",
            )
        key = protocol.idempotency_key(context.uid, step.name, operation)
        payload = protocol.body(
            operation=operation,
            key=key,
            namespace=context.namespace,
            recommendation=context.recommendation,
            customer_id=context.customer_id,
            plan=context.plan,
            step={"name": step.name, "action": step.action, "params": step.params},
            previous_result=previous,
            submitter=context.submitter,
            groups=context.groups,
        )
        pauses = defaults.AGENT_RETRY.delays()
        attempts = 0
        last = "nothing sent yet"
        while True:
            left = deadline - self._monotonic()
            if left <= 0:
                return self._outcome(
                    began,
                    error=f"agent endpoint {name}: no final answer to {operation} of step "
                    f"{step.name} within {protocol.step_timeout(step.params):g} s "
                    f"({attempts} requests; last: {last})",
                )
            try:
                target = await self._resolver.resolve(context.namespace, name)
            except endpoints_.EndpointError as exc:
                return self._outcome(began, error=str(exc))
            except Exception as exc:
                if not transient(exc):
                    raise
                last = f"reading AgentEndpoint {name}: {exc}"
            else:
                attempts += 1
                try:
                    status: int | None
                    status, answer = await post_.signed(
                        self._post,
                        target,
                        payload,
                        timestamp=int(self._clock()),
                        seconds=left,
                        purpose=protocol.STEP,
                    )
                except post_.NoAnswerError as exc:
                    status, answer = None, b""
                    last = f"no answer ({exc})"
                except post_.AddressRefused as exc:
                    return self._outcome(began, error=str(exc))
                except post_.AnswerTooLargeError as exc:
                    return self._outcome(
                        began,
                        error=f"agent endpoint {name} {exc.explained()}; not asked again",
                    )
                verdict = protocol.classify(status)
                if verdict is protocol.Answer.DONE:
                    result = protocol.result_of(answer)
                    if result is None:
                        return self._outcome(
                            began,
                            error=f"agent endpoint {name} answered 200 without a JSON "
                            '{"result": {...}}',
                        )
                    return self._outcome(began, result=result)
                if verdict is protocol.Answer.FAILED:
                    assert status is not None
                    message = protocol.error_text(status, answer)
                    return self._outcome(
                        began, error=f"agent endpoint {name} refused ({status}): {message}"
                    )
                if status is not None:
                    last = "202 accepted" if status == 202 else f"{status}"
                logger.info(
                    "%s/%s step %s: %s of key %s: %s; asking again",
                    context.namespace,
                    context.plan,
                    step.name,
                    operation,
                    key[:12],
                    last,
                )
            await self._sleep(min(next(pauses), max(deadline - self._monotonic(), 0)))

    def _outcome(
        self, began: float, *, result: Mapping[str, Any] | None = None, error: str | None = None
    ) -> Outcome:
        duration = int((self._monotonic() - began) * 1000)
        if error is not None:
            return Outcome(ok=False, error=error, duration_ms=duration)
        return Outcome(ok=True, result=dict(result or {}), duration_ms=duration)
