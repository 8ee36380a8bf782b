"""What the admission hooks ask the operator: who submitted a recommendation, what of
its plan they may not do themselves, the AgentEndpoints its steps name, the names a
namespace holds — answered from the Store (one GET, or an access review, when it must).
The hooks (``coordinator.handlers``) decide; this only looks up."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import kubernetes

from coordinator import store as store_
from coordinator.api.common import RECOMMENDATIONS, SUBMITTED_BY_ANNOTATION
from coordinator.api.endpoint import AgentEndpointSpec
from coordinator.api.plan import Step
from coordinator.api.recommendation import Recommendation
from coordinator.core import admission, catalogue
from coordinator.executors.endpoints import ClientResolver, EndpointError
from coordinator.k8s import access as access_
from coordinator.k8s import client as client_
from coordinator.parts.config import Config


class Facts:
    """The lookups of the admission hooks."""

    def __init__(
        self,
        *,
        config: Config,
        api: kubernetes.client.ApiClient,
        client: client_.Client,
        store: store_.Store,
        endpoints: ClientResolver,
    ) -> None:
        self.config = config
        self._api = api
        self._client = client
        self._store = store
        self._endpoints = endpoints
        self._resources = access_.Resources(api)

    async def submitter(self, namespace: str, name: str) -> str | None:
        """Who submitted (or last changed) recommendation `name`, as recorded at admission."""
        rec = self._store.recommendation((namespace, name))
        if rec is not None:
            return rec.metadata.annotations.get(SUBMITTED_BY_ANNOTATION)
        raw = await self._client.get(RECOMMENDATIONS, namespace, name)
        annotations = (raw or {}).get("metadata", {}).get("annotations") or {}
        submitter: str | None = annotations.get(SUBMITTED_BY_ANNOTATION)
        return submitter

    async def submitter_may_not(self, user: Mapping[str, Any], rec: Recommendation) -> str | None:
        """What of the plan's cluster changes the submitter (`user`, from the admission
        request) may not make themselves, or None (see k8s.access)."""
        try:
            steps = catalogue.plan_steps(rec.spec)
        except catalogue.NoDefaultPlanError:
            return None  # refused by the validating webhook
        accesses = admission.cluster_accesses(steps)
        if not accesses:
            return None
        return await asyncio.to_thread(
            access_.submitter_may_not,
            self._api,
            self._resources,
            user=user,
            namespace=rec.metadata.namespace,
            accesses=accesses,
        )

    async def endpoints_of(
        self, namespace: str, steps: Sequence[Step]
    ) -> dict[str, AgentEndpointSpec | None]:
        """The AgentEndpoints the webhook steps of `steps` name, None for those missing
        (from the Store; one GET for a name it does not hold: the endpoint may have been
        applied a moment ago and not reached the watch yet)."""
        found: dict[str, AgentEndpointSpec | None] = {}
        for name in sorted(admission.webhook_endpoints(steps)):
            try:
                endpoint = await self._endpoints.endpoint(namespace, name)
            except EndpointError:  # stored before a rule existed: as good as missing
                endpoint = None
            found[name] = endpoint.spec if endpoint is not None else None
        return found

    def submitter_of(self, namespace: str, name: str) -> tuple[str | None, tuple[str, ...]]:
        """Who submitted recommendation `name`, and their groups, as stamped at admission
        (from the Store: a plan runs while its recommendation is held; for the runner)."""
        rec = self._store.recommendation((namespace, name))
        if rec is None:
            return None, ()
        annotations = rec.metadata.annotations
        user = annotations.get(SUBMITTED_BY_ANNOTATION)
        return user, tuple(admission.submitter_groups(annotations))

    async def existing(self, namespace: str, names: Sequence[str]) -> set[str]:
        """Which of `names` are recommendations of `namespace`: from the Store, one GET
        each for those it does not hold (with shards it holds only this replica's
        customers; any replica answers admission)."""
        held = self._store.names_in(namespace)
        found = {name for name in names if name in held}
        for name in sorted(set(names) - found):
            if await self._client.get(RECOMMENDATIONS, namespace, name) is not None:
                found.add(name)
        return found
