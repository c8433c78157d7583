"""Transport-neutral view of a consumed record and of the publishing side, so agent logic runs
the same under faust, in unit tests (fakes) and in the SDK."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One Kafka record as consumed: bytes untouched, with where it came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None
    headers: Sequence[tuple[str, bytes]] = field(default_factory=tuple)


class Publisher(Protocol):
    async def publish(self, topic: str, key: str | None, value: bytes, *, wait: bool = False) -> None:
        """Send ``value`` to the full topic name ``topic`` keyed by ``key``.

        With ``wait`` the call returns only when the broker acknowledged the record (acks=all),
        otherwise as soon as the record is queued. Raises on delivery failure when waiting.
        """
        ...

    async def flush(self) -> None:
        """Wait until every queued record is acknowledged."""
        ...


class MemoryPublisher:
    """Fake Publisher for unit tests: keeps ``(topic, key, value)`` in ``sent``."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str | None, bytes]] = []

    async def publish(self, topic: str, key: str | None, value: bytes, *, wait: bool = False) -> None:
        self.sent.append((topic, key, value))

    async def flush(self) -> None:
        return None

    def on(self, topic: str) -> list[bytes]:
        return [value for t, _, value in self.sent if t == topic]
