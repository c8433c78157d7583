"""Dead-letter routing: a record an agent cannot process goes to ``dlq`` with the reason; the agent moves on."""

from __future__ import annotations

import base64
import logging

from schemas import DeadLetter
from streams.records import Publisher, RawRecord

log = logging.getLogger(__name__)

#: Original bytes kept in a dead letter (base64 grows them by 4/3; the broker takes 8 MiB records).
MAX_KEPT_BYTES = 4 * 1024 * 1024


class DeadLetters:
    """Sends DeadLetter events to the full topic name ``dlq_topic`` and waits for the broker's ack."""

    def __init__(self, publisher: Publisher, dlq_topic: str, agent: str) -> None:
        self.publisher = publisher
        self.topic = dlq_topic
        self.agent = agent
        self.sent = 0

    async def send(self, record: RawRecord, error_type: str, reason: str) -> DeadLetter:
        """Publish a DeadLetter for ``record`` (original key/bytes, source topic/partition/offset)."""
        value = record.value or b""
        truncated = len(value) > MAX_KEPT_BYTES
        key = record.key.decode("utf-8", "replace") if record.key is not None else None
        letter = DeadLetter(
            source_topic=record.topic, partition=record.partition, offset=record.offset, key=key,
            value_b64=base64.b64encode(value[:MAX_KEPT_BYTES]).decode(), value_truncated=truncated,
            value_bytes=len(value), reason=reason, error_type=error_type, agent=self.agent,
        )
        log.warning(
            "dead letter: %s [%s] topic=%s partition=%d offset=%d key=%s",
            reason, error_type, record.topic, record.partition, record.offset, key,
        )
        await self.publisher.publish(self.topic, key, letter.to_bytes(), wait=True)
        self.sent += 1
        return letter
