"""The wire names of shards, each written once: the labels and annotations of a ring's
Leases and hand-off records, and the name of a customer's hand-off record.

A shard's Lease carries ``RING_LABEL=<ring>``. A customer's hand-off record is a
coordination.k8s.io Lease in the lease namespace named by ``record_name``, labelled
``HANDOFF_LABEL=<ring>``, annotated ``CUSTOMER_ANNOTATION: "<namespace>/<customerId>"``
and, once its owner let it go at a step boundary, ``RELEASED_AT_ANNOTATION: <RFC3339>``;
its ``spec.holderIdentity`` is the owning shard's identity. The operator writes these
(``k8s.handoff``); ``kubectl optiinfra`` reads them.
"""

from __future__ import annotations

import hashlib
from typing import Final

RING_LABEL: Final = "optiinfra.io/ring"
"""On a shard's Lease: the ring it belongs to."""
HANDOFF_LABEL: Final = "optiinfra.io/handoff"
"""On a customer's hand-off record: the ring whose shards hand the customer over."""
CUSTOMER_ANNOTATION: Final = "optiinfra.io/customer"
"""On a hand-off record: ``<namespace>/<customerId>``, the customer it is for."""
RELEASED_AT_ANNOTATION: Final = "optiinfra.io/released-at"
"""On a hand-off record: when its holder let the customer go (RFC 3339); absent while held."""

DIGEST_CHARS: Final = 16


def record_name(ring: str, namespace: str, customer_id: str) -> str:
    """The name of the hand-off record of customer ``customer_id`` in ``namespace``.

    ``<ring>-customer-<first 16 hex of sha256("<namespace>/<customerId>")>``, lower-cased:
    a valid Lease name whatever characters the customer id holds, and the same for every
    replica (a function of the ring and the customer only).
    """
    digest = hashlib.sha256(f"{namespace}/{customer_id}".encode()).hexdigest()
    return f"{ring}-customer-{digest[:DIGEST_CHARS]}".lower()
