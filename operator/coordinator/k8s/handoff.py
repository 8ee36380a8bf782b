"""Each customer's hand-off record, read and written: claims and releases of shards.

A record is a coordination.k8s.io Lease in the shards' namespace, named after the ring
and the customer (``api.shardnames.record_name``): its holder is the shard that drives
the customer, and ``optiinfra.io/released-at`` says when that shard let it go. Whether a
shard may claim one is ``core.handoff.may_start``'s answer, from the record and the old
holder's own Lease read here from the API server (never from a cache: a stale Lease
would look expired too early). A claim is a create, or a replace at the resourceVersion
read: of two shards that both decided yes, one write fails (409) and that shard waits.
Blocking calls, for ``asyncio.to_thread``.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import kubernetes

from coordinator.api.shardnames import (
    CUSTOMER_ANNOTATION,
    HANDOFF_LABEL,
    RELEASED_AT_ANNOTATION,
    record_name,
)
from coordinator.core import handoff, shards
from coordinator.k8s.lease import stamp
from coordinator.k8s.shardlease import lease_name

ApiException = kubernetes.client.ApiException


def _parse(moment: str | None) -> datetime.datetime | None:
    if not moment:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(moment.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def as_record(lease: Any) -> handoff.Record:
    """A record Lease (as the client returns it) as ``core.handoff`` reads it."""
    annotations = lease.metadata.annotations or {}
    return handoff.Record(
        owner=lease.spec.holder_identity or "",
        released_at=_parse(annotations.get(RELEASED_AT_ANNOTATION)),
    )


class Records:
    """The hand-off records of ring `ring` in `namespace`, for shard `identity`."""

    def __init__(
        self,
        api: kubernetes.client.ApiClient,
        *,
        namespace: str,
        ring: str,
        identity: str,
        clock: Callable[[], datetime.datetime],
        timeout: float = 5.0,
    ) -> None:
        self._api: Any = kubernetes.client.CoordinationV1Api(api)
        self.namespace = namespace
        self.ring = ring
        self.identity = identity
        self._clock = clock
        self._timeout = (timeout, timeout)

    def _read(self, name: str) -> Any | None:
        try:
            return self._api.read_namespaced_lease(
                name, self.namespace, _request_timeout=self._timeout
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def owner_lease(self, holder: str) -> handoff.OwnerLease | None:
        """Shard `holder`'s own Lease, None when it is gone."""
        lease = self._read(lease_name(self.ring, holder))
        if lease is None:
            return None
        return handoff.OwnerLease(
            holder=lease.spec.holder_identity or "",
            renewed=lease.spec.renew_time,
            duration=float(lease.spec.lease_duration_seconds or 0),
        )

    def claim(self, ring: shards.Ring, customer: shards.Customer) -> handoff.Verdict:
        """Claim `customer` if the hand-off rule lets this shard start driving it; the
        verdict (``start`` True: claimed, this shard drives it now)."""
        name = record_name(self.ring, *customer)
        lease = self._read(name)
        record = as_record(lease) if lease is not None else None
        old = record.owner if record is not None else ""
        owner = (
            self.owner_lease(old)
            if record is not None and old and old != self.identity and record.released_at is None
            else None
        )
        verdict = handoff.may_start(
            me=self.identity,
            ring=ring,
            customer=customer,
            record=record,
            lease=owner,
            now=self._clock(),
        )
        if not verdict.start or (
            record is not None and old == self.identity and not record.released_at
        ):
            return verdict
        body = self._body(name, customer, released=None)
        try:
            if lease is None:
                self._api.create_namespaced_lease(
                    self.namespace, body, _request_timeout=self._timeout
                )
            else:
                body["metadata"]["resourceVersion"] = lease.metadata.resource_version
                self._api.replace_namespaced_lease(
                    name, self.namespace, body, _request_timeout=self._timeout
                )
        except ApiException as exc:
            if exc.status != 409:
                raise
            return handoff.Verdict(start=False, reason="another shard claimed it first")
        return verdict

    def release(self, customer: shards.Customer) -> bool:
        """Say that this shard let `customer` go (it drives it no more); False when the
        record is not this shard's (nothing to say)."""
        name = record_name(self.ring, *customer)
        lease = self._read(name)
        if lease is None or (lease.spec.holder_identity or "") != self.identity:
            return False
        body = self._body(name, customer, released=stamp(self._clock()))
        body["metadata"]["resourceVersion"] = lease.metadata.resource_version
        try:
            self._api.replace_namespaced_lease(
                name, self.namespace, body, _request_timeout=self._timeout
            )
        except ApiException as exc:
            if exc.status != 409:
                raise
            return False  # claimed by another since: it is not this shard's to release
        return True

    def _body(
        self, name: str, customer: shards.Customer, *, released: str | None
    ) -> dict[str, Any]:
        annotations = {CUSTOMER_ANNOTATION: shards.customer_key(*customer)}
        if released is not None:
            annotations[RELEASED_AT_ANNOTATION] = released
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": {HANDOFF_LABEL: self.ring},
                "annotations": annotations,
            },
            "spec": {"holderIdentity": self.identity},
        }
