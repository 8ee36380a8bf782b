"""What a person reads about shards: which shard decided a recommendation and which one
drives its customer now (for ``why``), and a ring's shards with the customers each holds
(for ``shards``).

Pure functions over the coordination.k8s.io Leases as the API server returns them (plain
camelCase dicts): a shard's own Lease (labelled ``optiinfra.io/ring``) and the customers'
hand-off records (labelled ``optiinfra.io/handoff``; ``api.shardnames``). ``now`` is
passed in. They explain what the Leases say; they decide nothing (``core.handoff`` does).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from coordinator.api.shardnames import CUSTOMER_ANNOTATION, RELEASED_AT_ANNOTATION
from coordinator.core import shards
from coordinator.present import duration, parse_time

Obj = Mapping[str, Any]


def _spec(lease: Obj | None) -> Mapping[str, Any]:
    return (lease or {}).get("spec") or {}


def holder(lease: Obj | None) -> str:
    """The Lease's holder: a shard's identity (empty: nobody)."""
    return str(_spec(lease).get("holderIdentity") or "")


def released_at(record: Obj) -> str:
    """When the record's holder let its customer go (empty: it has not)."""
    annotations = (record.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(RELEASED_AT_ANNOTATION) or "")


def _renewed(lease: Obj) -> datetime | None:
    return parse_time(_spec(lease).get("renewTime"))


def live(lease: Obj, now: datetime) -> bool:
    """The Lease was renewed less than its duration ago (``core.shards.live``)."""
    seconds = float(_spec(lease).get("leaseDurationSeconds") or 0)
    return shards.live(_renewed(lease), seconds, now)


def renewed_ago(lease: Obj, now: datetime) -> str:
    """``3s ago``; ``never`` for a Lease never renewed."""
    renewed = _renewed(lease)
    return f"{duration((now - renewed).total_seconds())} ago" if renewed else "never"


def _ring_owner(leases: Sequence[Obj], now: datetime, customer: shards.Customer) -> str | None:
    members = [holder(lease) for lease in leases if holder(lease) and live(lease, now)]
    return shards.owner(shards.ring(members), *customer)


def owner_lines(rec: Obj, *, record: Obj | None, leases: Sequence[Obj], now: datetime) -> list[str]:
    """Which shard decided `rec` (``status.shard``) and which drives its customer now (its
    hand-off `record`, and the ring's `leases`); nothing when neither says anything."""
    decided = str(((rec.get("status") or {}).get("shard")) or "")
    if not decided and record is None:
        return []
    namespace = str((rec.get("metadata") or {}).get("namespace") or "")
    customer_id = str(((rec.get("spec") or {}).get("customerId")) or "")
    customer = f"{namespace}/{customer_id}"
    lines = [f"Decided by shard {decided}."] if decided else []
    owner = holder(record)
    if record is None or not owner:
        lines.append(f"Customer {customer}: no shard has claimed it yet.")
    elif released_at(record):
        lines.append(
            f"Customer {customer}: released by {owner} at {released_at(record)}; "
            "no shard drives it now."
        )
    else:
        lease = next((lease for lease in leases if holder(lease) == owner), None)
        if lease is None:
            lines.append(f"Customer {customer}: driven by {owner}, whose Lease is gone.")
        elif live(lease, now):
            lines.append(
                f"Customer {customer}: driven by {owner} now "
                f"(its Lease renewed {renewed_ago(lease, now)})."
            )
        else:
            lines.append(
                f"Customer {customer}: driven by {owner}, whose Lease expired (renewed "
                f"{renewed_ago(lease, now)}): another shard may claim it."
            )
    assigned = _ring_owner(leases, now, (namespace, customer_id)) if leases else None
    if assigned and assigned != owner:
        lines.append(f"  the ring gives it to {assigned}, which claims it once it is free")
    return lines


@dataclasses.dataclass(frozen=True)
class Shard:
    """One row of ``kubectl optiinfra shards``."""

    holder: str
    lease: str
    """The Lease's name; empty when the shard holds records but no Lease."""
    state: str
    """live, expired, or gone (records held, no Lease)."""
    renewed: str
    customers: int
    """Records it holds and has not released."""


def ring_shards(leases: Sequence[Obj], records: Sequence[Obj], now: datetime) -> list[Shard]:
    """The ring's shards (its `leases`) and, for each, how many of the hand-off `records`
    it holds; a holder of records with no Lease is a row too (state ``gone``)."""
    held = Counter(holder(r) for r in records if holder(r) and not released_at(r))
    rows = [
        Shard(
            holder=holder(lease) or "-",
            lease=str((lease.get("metadata") or {}).get("name") or ""),
            state="live" if live(lease, now) else "expired",
            renewed=renewed_ago(lease, now),
            customers=held.pop(holder(lease), 0),
        )
        for lease in leases
    ]
    rows.extend(
        Shard(holder=h, lease="", state="gone", renewed="-", customers=n) for h, n in held.items()
    )
    return sorted(rows, key=lambda row: row.holder)


def waiting(records: Sequence[Obj]) -> list[str]:
    """The customers (``namespace/customerId``) whose record no shard holds: released, or
    never claimed; sorted."""
    return sorted(
        str(((r.get("metadata") or {}).get("annotations") or {}).get(CUSTOMER_ANNOTATION) or "?")
        for r in records
        if not holder(r) or released_at(r)
    )
