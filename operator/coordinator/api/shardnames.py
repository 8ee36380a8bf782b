"""The names shards agree on: the ring's label, and each customer's hand-off record.

A hand-off record is a coordination.k8s.io Lease in the shards' namespace, one per
customer (``core.handoff`` says when a shard may start driving one): its holder is the
shard that drives the customer; once that shard let it go at a step boundary it carries
`RELEASED_AT_ANNOTATION`. The operator writes them (``k8s.handoff``); the kubectl plugin
reads them to say who drives a customer.
"""

from __future__ import annotations

import hashlib
from typing import Final

RING_LABEL: Final = "optiinfra.io/ring"
"""On each shard's own Lease: the ring it belongs to."""
HANDOFF_LABEL: Final = "optiinfra.io/handoff"
"""On each hand-off record: the ring it belongs to."""
CUSTOMER_ANNOTATION: Final = "optiinfra.io/customer"
"""On each hand-off record: ``<namespace>/<customerId>``."""
RELEASED_AT_ANNOTATION: Final = "optiinfra.io/released-at"
"""On a hand-off record whose holder let the customer go: when (RFC 3339)."""
DEFAULT_RING: Final = "optiinfra"


def record_name(ring: str, namespace: str, customer_id: str) -> str:
    """The hand-off record's name: the ring and a hash of the customer (a customerId may
    hold characters a name may not)."""
    digest = hashlib.sha256(f"{namespace}/{customer_id}".encode()).hexdigest()[:16]
    return f"{ring}-customer-{digest}".lower()
