"""The Store's records: one object as the fields it is looked up by and the rest packed.

`Record` keeps, per object, a slotted record of namespace, name, uid, resourceVersion,
customer, phase, dependsOn, owner, and the rest of the object as compact JSON packed
by its kind's `Packer` (zlib primed with an object of the same kind, ~4x smaller) —
``managedFields``, the last-applied annotation and every annotation not under
``optiinfra.io/`` dropped at the first parse (`strip`). A `Change` is what the Store
answers when one of its records changed.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import zlib
from collections.abc import Mapping
from typing import Any, Final

from coordinator.api.common import OWN_ANNOTATIONS
from coordinator.core.origin import Origin

ObjectKey = tuple[str, str]
"""(namespace, name)."""

_META_KEPT: Final = (
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "ownerReferences",
)


class EvictedError(LookupError):
    """The object is known but not held in memory (see `Store.evict`): `Store.fetch` it."""


def version(raw: str | None) -> int:
    """A resourceVersion as a number (etcd's revisions: newer is larger)."""
    return int(raw) if raw and raw.isdigit() else 0


def _intern(value: Any) -> Any:
    return sys.intern(value) if type(value) is str else value


def strip(raw: Mapping[str, Any]) -> dict[str, Any]:
    """`raw` without what the operator never reads: managedFields, labels, and every
    annotation not under ``optiinfra.io/`` (``kubectl apply`` keeps a copy of the whole
    manifest in one)."""
    meta = raw.get("metadata") or {}
    kept: dict[str, Any] = {k: meta[k] for k in _META_KEPT if k in meta}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if OWN_ANNOTATIONS in k}
    if annotations:
        kept["annotations"] = annotations
    body = {k: v for k, v in raw.items() if k not in ("metadata", "apiVersion", "kind")}
    body["metadata"] = kept
    return body


class Packer:
    """Compresses the JSON of one kind's records (zlib, primed with a dictionary).

    Objects of one kind share most of their text — field names, the namespace, the
    customer ids, the condition messages — so the dictionary is the first object of the
    kind seen with a status: measured on the benchmark's objects, a ~1.1 KB body keeps
    ~250 B (zlib alone: ~520 B), for ~40 µs to pack and ~15 µs to unpack. Each record
    keeps the dictionary it was packed with."""

    __slots__ = ("zdict",)

    def __init__(self) -> None:
        self.zdict = b""

    def pack(self, text: bytes) -> tuple[bytes, bytes]:
        """`text` packed, and the dictionary it was packed with."""
        if not self.zdict and b'"status":{' in text:
            self.zdict = text
        packer = zlib.compressobj(1, zdict=self.zdict)
        return packer.compress(text) + packer.flush(), self.zdict


def unpack(body: bytes, zdict: bytes) -> bytes:
    unpacker = zlib.decompressobj(zdict=zdict)
    return unpacker.decompress(body) + unpacker.flush()


class Record:
    """One object: the fields looked up by, and the rest as packed compact JSON (`body`;
    None once evicted; `text` unpacks it)."""

    __slots__ = (
        "body",
        "conflicts",
        "customer",
        "deleting",
        "depends_on",
        "finalizers",
        "name",
        "namespace",
        "owner",
        "phase",
        "rv",
        "uid",
        "zdict",
    )

    def __init__(self, raw: Mapping[str, Any], packer: Packer | None = None) -> None:
        meta = raw.get("metadata") or {}
        spec = raw.get("spec") or {}
        status = raw.get("status") or {}
        self.namespace: str = sys.intern(meta.get("namespace") or "default")
        self.name: str = sys.intern(meta.get("name") or "")
        self.uid: str = meta.get("uid") or ""
        self.rv: int = version(meta.get("resourceVersion"))
        self.customer: str = sys.intern(str(spec.get("customerId") or ""))
        self.phase: str | None = _intern(status.get("phase"))
        self.depends_on: tuple[str, ...] = tuple(
            sys.intern(str(d)) for d in spec.get("dependsOn") or ()
        )
        owners = meta.get("ownerReferences") or ()
        self.owner: str | None = next((o.get("uid") for o in owners if o.get("controller")), None)
        if self.owner is None and owners:
            self.owner = owners[0].get("uid")
        self.deleting: bool = bool(meta.get("deletionTimestamp"))
        self.finalizers: tuple[str, ...] = tuple(
            sys.intern(str(f)) for f in meta.get("finalizers") or ()
        )
        self.conflicts: tuple[str, ...] = tuple(
            sys.intern(str(c.get("type"))) for c in status.get("conflicts") or ()
        )
        self.zdict = b""
        self.body: bytes | None = None
        self.pack(raw, packer or Packer())

    def pack(self, raw: Mapping[str, Any], packer: Packer) -> None:
        self.body, self.zdict = packer.pack(_encode(raw))

    def text(self) -> bytes:
        """The object as compact JSON (what is kept of it); EvictedError once evicted."""
        if self.body is None:
            raise EvictedError(
                f"{self.namespace}/{self.name} is not held in memory "
                "(its recommendation ended): fetch it"
            )
        return unpack(self.body, self.zdict)

    @property
    def key(self) -> ObjectKey:
        return (self.namespace, self.name)


def _encode(raw: Mapping[str, Any]) -> bytes:
    return json.dumps(strip(raw), separators=(",", ":")).encode()


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """What ``Store.apply`` answers when the Store changed: the record (the one removed,
    for a deletion) and where the change came from (``core.origin``)."""

    plural: str
    record: Record
    deleted: bool
    origin: Origin
