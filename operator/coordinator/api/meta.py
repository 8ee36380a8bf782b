"""The part of Kubernetes object metadata that the coordinator reads."""

from __future__ import annotations

import pydantic

from coordinator.api.common import Time


class ObjectMeta(pydantic.BaseModel):
    """metadata of an object; fields the coordinator does not use are ignored."""

    model_config = pydantic.ConfigDict(
        frozen=True, extra="ignore", validate_by_name=True, validate_by_alias=True
    )

    name: str = pydantic.Field(min_length=1, max_length=253)
    namespace: str = "default"
    generation: int = 1
    uid: str | None = None
    creation_timestamp: Time | None = pydantic.Field(default=None, alias="creationTimestamp")
    labels: dict[str, str] = pydantic.Field(default_factory=dict)
    annotations: dict[str, str] = pydantic.Field(default_factory=dict)
