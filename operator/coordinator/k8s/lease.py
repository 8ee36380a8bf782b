"""Leader election with a coordination.k8s.io Lease, as client-go's leaderelection does it.

Every replica watches and indexes (a warm standby); only the holder of the Lease acts:
reconciles customer groups and drives plans. The timing makes a hand-over safe:

- the leader renews every ``retry`` seconds; when it has not renewed for
  ``renew_deadline`` seconds (the API server is unreachable, the process stalled) it stops
  acting on its own — before anybody else may take over;
- another replica takes the Lease only after it has seen the same record, unrenewed, for
  ``duration`` seconds (measured on its own monotonic clock, never by comparing its clock
  with the leader's), which is longer than ``renew_deadline``;
- a leader that stops gracefully releases the Lease (the others take it at their next try).

Writes are replaces with the resourceVersion read, so two candidates can never both
believe they took the same record. The plan status writes carry their own precondition:
a former leader's late write fails instead of overwriting.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import random
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import kubernetes

from coordinator.api import defaults

logger = logging.getLogger(__name__)

ApiException = kubernetes.client.ApiException


@dataclasses.dataclass(frozen=True, kw_only=True)
class Timing:
    """Seconds (`coordinator run --lease-duration` sets all three in the proportions of
    `of`; client-go's are 15/10/2). A failover takes at most about ``duration + retry``
    after the leader's last renewal: 14 s by default (12/8/1.6)."""

    duration: float
    renew_deadline: float
    retry: float

    @classmethod
    def of(cls, duration: float = defaults.LEASE_DURATION_SECONDS) -> Timing:
        """`duration`; renewals given up after 2/3 of it, tried every 1/7.5 of it."""
        return cls(duration=duration, renew_deadline=duration * 2 / 3, retry=duration / 7.5)

    def __post_init__(self) -> None:
        if not self.retry < self.renew_deadline < self.duration:
            raise ValueError(
                f"lease timing needs retry < renew deadline < duration, got "
                f"{self.retry} / {self.renew_deadline} / {self.duration}"
            )


def default_identity() -> str:
    """The host (the pod's name in a cluster) and a random part: a restarted process is a
    new candidate, never mistaken for the holder it replaced."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


@dataclasses.dataclass(frozen=True)
class _Record:
    holder: str
    renewed: str
    transitions: int


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def stamp(moment: datetime.datetime) -> str:
    """A Lease's MicroTime."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def pause(timing: Timing) -> float:
    """Seconds until the next try: `retry` and up to a fifth more (replicas spread out)."""
    return timing.retry * (1 + random.random() * 0.2)


def late(renewed_at: float | None, timing: Timing, now: float) -> bool:
    """Whether a holder whose last renewal was sent at `renewed_at` (its own monotonic
    clock) is past its renew deadline: it must stop acting on its own."""
    return renewed_at is not None and now - renewed_at >= timing.renew_deadline


async def attempt(
    renew: Callable[[], bool], monotonic: Callable[[], float], what: str
) -> float | None:
    """One try of a blocking renewal (in a thread): when it was sent, if it renewed (a
    Lease counts from when the renewal was sent, not answered); None if it did not or the
    API server was away (logged at debug: the next try comes after `pause`)."""
    sent = monotonic()
    try:
        renewed = await asyncio.to_thread(renew)
    except Exception as exc:  # the API server is away: keep trying
        logger.debug("%s: %s", what, exc)
        return None
    return sent if renewed else None


def lease_body(
    *,
    namespace: str,
    name: str,
    holder: str,
    timing: Timing,
    renewed: str,
    acquired: str,
    transitions: int,
    resource_version: str | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Lease held by `holder`, renewed at `renewed`; with `resource_version`, a replace
    that fails when somebody wrote it since it was read."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if resource_version is not None:
        metadata["resourceVersion"] = resource_version
    if labels:
        metadata["labels"] = labels
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": max(1, round(timing.duration)),
            "acquireTime": acquired,
            "renewTime": renewed,
            "leaseTransitions": transitions,
        },
    }


class Elector:
    """Campaigns for the Lease `namespace`/`name` and keeps it while it can.

    `leading` is the one fact the rest of the operator reads; `changed` is set whenever it
    flips (the reader clears it).
    """

    def __init__(
        self,
        api: kubernetes.client.ApiClient,
        *,
        namespace: str,
        name: str,
        identity: str | None = None,
        timing: Timing | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api: Any = kubernetes.client.CoordinationV1Api(api)
        self.namespace = namespace
        self.name = name
        self.identity = identity or default_identity()
        self.timing = timing or Timing.of()
        self._monotonic = monotonic
        self._observed: _Record | None = None
        self._observed_at = 0.0
        self._renewed_at: float | None = None  # our last successful write, while leading
        self._leading = False
        self.changed = asyncio.Event()
        self._timeout = (self.timing.retry, self.timing.retry)
        """Connect and read timeouts of each call: a hung call must not outlive a retry."""
        self.holder: str = ""
        """Who holds the Lease, as last read (for messages and readiness)."""

    @property
    def leading(self) -> bool:
        """Holds the Lease and renewed it within the renew deadline (checked at every read,
        so a leader whose renewals hang stops acting in time even before its loop notices)."""
        if self._leading and late(self._renewed_at, self.timing, self._monotonic()):
            self._set_leading(False)
        return self._leading

    def held(self) -> bool:
        """Whether somebody (this replica or another) holds the Lease and renews it."""
        if self.leading:
            return True
        fresh = self._monotonic() - self._observed_at < self.timing.duration
        return bool(self._observed and self._observed.holder) and fresh

    def _set_leading(self, leading: bool) -> None:
        if leading != self._leading:
            self._leading = leading
            self.changed.set()
            if leading:
                logger.info(
                    "leading: holds lease %s/%s as %s", self.namespace, self.name, self.identity
                )
            else:
                logger.warning(
                    "stopped leading: lease %s/%s not renewed for %.0f s; no more actions",
                    self.namespace,
                    self.name,
                    self.timing.renew_deadline,
                )

    async def run(self) -> None:
        """Campaign and renew until cancelled."""
        waiting_logged = ""
        while True:
            sent = await attempt(self._try, self._monotonic, f"lease {self.namespace}/{self.name}")
            if sent is not None:
                self._renewed_at = sent
                self._set_leading(True)
            elif self.holder and self.holder != self.identity:
                self._set_leading(False)  # somebody else holds it now
            else:
                _ = self.leading  # the renew deadline
            if not self._leading and self.holder and self.holder != waiting_logged:
                waiting_logged = self.holder
                logger.info(
                    "standing by: lease %s/%s is held by %s", self.namespace, self.name, self.holder
                )
            await asyncio.sleep(pause(self.timing))

    def _try(self) -> bool:
        """One attempt to take or renew the Lease (blocking)."""
        now = stamp(_now())
        try:
            lease = self._api.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=self._timeout
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = self._body(now, acquired=now, transitions=0)
            try:
                self._api.create_namespaced_lease(
                    self.namespace, body, _request_timeout=self._timeout
                )
            except ApiException as created:
                if created.status == 409:
                    return False
                raise
            self.holder = self.identity
            return True
        spec = lease.spec
        record = _Record(
            holder=spec.holder_identity or "",
            renewed=str(spec.renew_time),
            transitions=spec.lease_transitions or 0,
        )
        if record != self._observed:
            self._observed = record
            self._observed_at = self._monotonic()
        self.holder = record.holder
        mine = record.holder == self.identity
        expired = self._monotonic() - self._observed_at >= self.timing.duration
        if record.holder and not mine and not expired:
            return False
        acquired = stamp(spec.acquire_time) if mine and spec.acquire_time is not None else now
        body = self._body(
            now,
            acquired=acquired,
            transitions=record.transitions + (0 if mine else 1),
            resource_version=lease.metadata.resource_version,
        )
        try:
            self._api.replace_namespaced_lease(
                self.name, self.namespace, body, _request_timeout=self._timeout
            )
        except ApiException as exc:
            if exc.status == 409:  # somebody else wrote it first
                return False
            raise
        self.holder = self.identity
        return True

    def _body(
        self, renewed: str, *, acquired: str, transitions: int, resource_version: str | None = None
    ) -> dict[str, Any]:
        return lease_body(
            namespace=self.namespace,
            name=self.name,
            holder=self.identity,
            timing=self.timing,
            renewed=renewed,
            acquired=acquired,
            transitions=transitions,
            resource_version=resource_version,
        )

    def release(self) -> None:
        """Give the Lease up (blocking, best effort): the others need not wait it out."""
        if not self._leading:
            return
        self._set_leading(False)
        try:
            lease = self._api.read_namespaced_lease(self.name, self.namespace)
            if (lease.spec.holder_identity or "") != self.identity:
                return
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": self.name,
                    "namespace": self.namespace,
                    "resourceVersion": lease.metadata.resource_version,
                },
                "spec": {
                    "holderIdentity": "",
                    "leaseDurationSeconds": 1,
                    "leaseTransitions": lease.spec.lease_transitions or 0,
                },
            }
            self._api.replace_namespaced_lease(self.name, self.namespace, body)
            logger.info("released lease %s/%s", self.namespace, self.name)
        except Exception as exc:  # the others take it over when it expires
            logger.warning("could not release lease %s/%s: %s", self.namespace, self.name, exc)
