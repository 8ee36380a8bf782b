"""A shard's own Lease, and the ring read from the live Leases of its ring.

With shards (``core.shards``) every replica acts, each for its own customers. Each holds
its own coordination.k8s.io Lease named ``<ring>-<identity>`` and labelled
``optiinfra.io/ring=<ring>``, renewed as the leader Lease is (``k8s.lease``: the same
timing, body and pauses):

- it renews every ``retry`` seconds; when it has not renewed for ``renew_deadline``
  seconds it stops acting for its customers on its own (``holding`` turns False), before
  its Lease expires for the others (``duration``); after such a lapse it takes each
  customer again only by claiming it through ``core.handoff``;
- a replica that stops gracefully deletes its Lease (the ring shrinks at once);
- the ring is the holders of the Leases with the label that are live: renewed less than
  their ``leaseDurationSeconds`` ago (``core.shards.live``; a Lease released or never
  renewed is not live). It is read again after every renewal: an expiry is a matter of
  time, which no watch event announces.

Nobody else writes a shard's Lease, so a renewal is a replace with the resourceVersion
read: a Lease deleted or replaced by somebody else is created again, after a lapse.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import kubernetes

from coordinator.api.shardnames import RING_LABEL
from coordinator.core import shards
from coordinator.k8s.lease import (
    Timing,
    attempt,
    default_identity,
    late,
    lease_body,
    pause,
    stamp,
)

logger = logging.getLogger(__name__)

ApiException = kubernetes.client.ApiException

_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")


def now() -> datetime.datetime:
    """The wall clock, in UTC (Leases' times)."""
    return datetime.datetime.now(datetime.UTC)


def lease_name(ring: str, identity: str) -> str:
    """``<ring>-<identity>`` as a DNS subdomain (lower case; other characters become ``-``)."""
    name = re.sub(r"[^a-z0-9.-]+", "-", f"{ring}-{identity}".lower()).strip("-.")
    return name[:253].rstrip("-.")


def members(leases: list[Any], now: datetime.datetime) -> list[str]:
    """The holders of the live Leases among `leases` (as the client returns them)."""
    return sorted(
        lease.spec.holder_identity
        for lease in leases
        if lease.spec.holder_identity
        and shards.live(lease.spec.renew_time, lease.spec.lease_duration_seconds or 0, now)
    )


def read_ring(
    api: kubernetes.client.ApiClient, *, namespace: str, ring: str, now: datetime.datetime
) -> shards.Ring:
    """The ring `ring` as its live Leases in `namespace` make it at `now` (blocking)."""
    listed = kubernetes.client.CoordinationV1Api(api).list_namespaced_lease(
        namespace, label_selector=f"{RING_LABEL}={ring}"
    )
    return shards.ring(members(listed.items, now))


class ShardLease:
    """Holds and renews this replica's Lease in the ring `ring`, and reads the ring.

    `holding` and `ring` are what the rest of the operator reads; `changed` is set
    whenever either changes (the reader clears it).
    """

    def __init__(
        self,
        api: kubernetes.client.ApiClient,
        *,
        namespace: str,
        ring: str,
        identity: str | None = None,
        timing: Timing | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], datetime.datetime] = now,
    ) -> None:
        if not _LABEL_VALUE.match(ring):
            raise ValueError(
                f"a ring's name is a label value (63 characters at most), not {ring!r}"
            )
        self._client = api
        self._api: Any = kubernetes.client.CoordinationV1Api(api)
        self.namespace = namespace
        self.ring_name = ring
        self.identity = identity or default_identity()
        self.name = lease_name(ring, self.identity)
        self.timing = timing or Timing.of()
        self._monotonic = monotonic
        self._clock = clock
        self._renewed_at: float | None = None
        self._holding = False
        self._timeout = (self.timing.retry, self.timing.retry)
        self.ring = shards.ring([])
        """The ring as last read (empty until the first read)."""
        self.changed = asyncio.Event()

    @property
    def holding(self) -> bool:
        """Holds its Lease and renewed it within the renew deadline (checked at every read)."""
        if self._holding and late(self._renewed_at, self.timing, self._monotonic()):
            self._set_holding(False)
        return self._holding

    def _set_holding(self, holding: bool, *, releasing: bool = False) -> None:
        if holding != self._holding:
            self._holding = holding
            self.changed.set()
            if holding:
                logger.info("shard: holds lease %s/%s", self.namespace, self.name)
            elif not releasing:
                logger.warning(
                    "shard: lease %s/%s not renewed for %.0f s; no more actions",
                    self.namespace,
                    self.name,
                    self.timing.renew_deadline,
                )

    async def run(self) -> None:
        """Renew and read the ring until cancelled."""
        while True:
            await self.tick()
            await asyncio.sleep(pause(self.timing))

    async def tick(self) -> None:
        """One renewal, then one read of the ring."""
        sent = await attempt(
            self.renew, self._monotonic, f"shard lease {self.namespace}/{self.name}"
        )
        if sent is not None:
            self._renewed_at = sent
            self._set_holding(True)
        else:
            _ = self.holding  # the renew deadline
        try:
            ring = await asyncio.to_thread(
                read_ring,
                self._client,
                namespace=self.namespace,
                ring=self.ring_name,
                now=self._clock(),
            )
        except Exception as exc:
            logger.debug("ring %s: %s", self.ring_name, exc)
            return
        if ring != self.ring:
            logger.info("ring %s: %s", self.ring_name, ", ".join(sorted(ring.members)) or "empty")
            self.ring = ring
            self.changed.set()

    def renew(self) -> bool:
        """Create or renew this replica's Lease (blocking). False: somebody else wrote it
        since it was read (the next try reads it again)."""
        now = stamp(self._clock())
        labels = {RING_LABEL: self.ring_name}
        try:
            lease = self._api.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=self._timeout
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            if self._holding:  # deleted under us: a lapse, whatever the deadline says
                self._set_holding(False)
            body = lease_body(
                namespace=self.namespace,
                name=self.name,
                holder=self.identity,
                timing=self.timing,
                renewed=now,
                acquired=now,
                transitions=0,
                labels=labels,
            )
            self._api.create_namespaced_lease(self.namespace, body, _request_timeout=self._timeout)
            return True
        spec = lease.spec
        if (spec.holder_identity or "") != self.identity and self._holding:
            self._set_holding(False)  # replaced by somebody else: a lapse too
        body = lease_body(
            namespace=self.namespace,
            name=self.name,
            holder=self.identity,
            timing=self.timing,
            renewed=now,
            acquired=stamp(spec.acquire_time) if spec.acquire_time is not None else now,
            transitions=spec.lease_transitions or 0,
            resource_version=lease.metadata.resource_version,
            labels=labels,
        )
        try:
            self._api.replace_namespaced_lease(
                self.name, self.namespace, body, _request_timeout=self._timeout
            )
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def release(self) -> None:
        """Delete this replica's Lease (blocking, best effort): the ring shrinks at once
        instead of after the Lease's duration. Call it once nothing acts any more."""
        self._set_holding(False, releasing=True)
        try:
            lease = self._api.read_namespaced_lease(self.name, self.namespace)
            if (lease.spec.holder_identity or "") != self.identity:
                return
            self._api.delete_namespaced_lease(
                self.name,
                self.namespace,
                body={"preconditions": {"resourceVersion": lease.metadata.resource_version}},
            )
            logger.info("shard: released lease %s/%s", self.namespace, self.name)
        except Exception as exc:  # the others drop it from the ring when it expires
            logger.warning("could not release lease %s/%s: %s", self.namespace, self.name, exc)
