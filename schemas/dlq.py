"""``dlq`` (DeadLetter): a record an agent could not process, kept with the reason."""

from __future__ import annotations

from pydantic import Field

from schemas.base import Event


class DeadLetter(Event):
    """Keyed by the original record's key. ``value_b64`` holds the original bytes, base64."""

    source_topic: str
    partition: int
    offset: int
    key: str | None = Field(None, description="original key, UTF-8 (replacement chars if not)")
    value_b64: str = Field(description="original value bytes, base64 (the first 4 MiB when truncated)")
    value_bytes: int = Field(ge=0, description="size of the original value, bytes")
    value_truncated: bool = Field(
        False, description="true when value_b64 holds only a prefix; the original is still at source offset")
    reason: str = Field(description="why it was rejected, for a human")
    error_type: str = Field(description="machine-readable class: malformed_json, schema, oversized, ...")
    agent: str
