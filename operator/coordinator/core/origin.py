"""Where a change of an object came from, as a value passed with the change.

Every change reaches the work queue through one function (``WorkQueue.enqueue``) with
its `Origin`: what a listing shows (start-up, a relist, the deletions a fresh listing
finds) waits behind what changes now (`waits`); a watch event and the answer of the
operator's own write go ahead. An own write never runs the reconcile that wrote it
again: that reconcile's context holds the write's version (see ``workqueue.WorkQueue``).
"""

from __future__ import annotations

import enum


class Origin(enum.StrEnum):
    LISTED = "listed"
    """Shown by a listing: not a change happening now."""
    WATCHED = "watched"
    """A watch event: someone changed the object now."""
    OWN_WRITE = "own write"
    """The API server's answer to a write of the operator (reconciler, runner, daemons)."""


def waits(origin: Origin) -> bool:
    """Whether the keys of a change from `origin` wait behind those of changes now (the
    work queue's backlog)."""
    return origin is Origin.LISTED
