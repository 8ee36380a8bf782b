"""The part of Kubernetes object metadata that the coordinator reads."""

from __future__ import annotations

import pydantic

from coordinator.api.common import Time


class OwnerReference(pydantic.BaseModel):
    """An owner of the object (only what the coordinator reads)."""

    model_config = pydantic.ConfigDict(frozen=True, extra="ignore")

    kind: str
    name: str
    uid: str


class ObjectMeta(pydantic.BaseModel):
    """metadata of an object; fields the coordinator does not use are ignored."""

    model_config = pydantic.ConfigDict(
        frozen=True, extra="ignore", validate_by_name=True, validate_by_alias=True
    )

    name: str = pydantic.Field(min_length=1, max_length=253)
    namespace: str = "default"
    generation: int = 1
    uid: str | None = None
    resource_version: str | None = pydantic.Field(default=None, alias="resourceVersion")
    deletion_timestamp: Time | None = pydantic.Field(default=None, alias="deletionTimestamp")
    owner_references: list[OwnerReference] = pydantic.Field(
        default_factory=list, alias="ownerReferences"
    )
    creation_timestamp: Time | None = pydantic.Field(default=None, alias="creationTimestamp")
    labels: dict[str, str] = pydantic.Field(default_factory=dict)
    annotations: dict[str, str] = pydantic.Field(default_factory=dict)
