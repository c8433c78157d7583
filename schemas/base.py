"""Fields every JSON event carries: ``event_id``, ``schema_version``, ``occurred_at``."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


def utc_now() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """Base of every event. ``occurred_at`` is a timezone-aware UTC timestamp (RFC 3339 on the wire)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    SCHEMA_VERSION: ClassVar[int] = 1

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4, description="unique id of this event")
    schema_version: int = Field(1, ge=1, description="version of this event's schema")
    occurred_at: AwareDatetime = Field(default_factory=utc_now, description="when the event happened, UTC")

    def to_bytes(self) -> bytes:
        """UTF-8 JSON of the event, as it travels on Kafka."""
        return self.model_dump_json(exclude_none=False).encode()
