"""Dead-letter routing: a record an agent cannot process goes to ``dlq`` with the reason; the agent moves on.

A dead letter always fits in one record (``config.MAX_RECORD_BYTES``): the original value is kept up
to ``MAX_KEPT_BYTES``, the key up to ``MAX_KEY_BYTES`` and the reason up to ``MAX_REASON_CHARS``
(the original record stays at its source offset). When the dead letter cannot be written,
:meth:`DeadLetters.send` raises :class:`DeadLetterError`: the caller must then not acknowledge the
record (the worker stops, and the record is redelivered after a restart), never skip it.
"""

from __future__ import annotations

import base64
import logging

from config.settings import MAX_RECORD_BYTES
from schemas import DeadLetter
from streams.records import Publisher, RawRecord

log = logging.getLogger(__name__)

#: Original bytes kept in a dead letter (base64 grows them by 4/3; the broker takes 8 MiB records).
MAX_KEPT_BYTES = 4 * 1024 * 1024
#: Original key bytes kept (as the dead letter's key and its ``key`` field).
MAX_KEY_BYTES = 64 * 1024
#: Characters of the reason kept (a schema reason quoting the record can be tens of MB).
MAX_REASON_CHARS = 64 * 1024
# Worst case, every kept character escaped six-fold in JSON: well inside one record.
assert MAX_KEPT_BYTES * 4 // 3 + 6 * (MAX_KEY_BYTES + MAX_REASON_CHARS + 256) + 3 * MAX_KEY_BYTES < MAX_RECORD_BYTES


class DeadLetterError(Exception):
    """The dead-letter topic could not be written: the record must not be acknowledged."""


def _text(value: str) -> str:
    """``value`` as encodable text: lone surrogates spelled as ``\\udXXX``."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


class DeadLetters:
    """Sends DeadLetter events to the full topic name ``dlq_topic`` and waits for the broker's ack."""

    def __init__(self, publisher: Publisher, dlq_topic: str, agent: str) -> None:
        self.publisher = publisher
        self.topic = dlq_topic
        self.agent = agent
        self.sent = 0

    async def send(self, record: RawRecord, error_type: str, reason: str) -> DeadLetter:
        """Publish a DeadLetter for ``record`` (original key/bytes, source topic/partition/offset).

        Raises DeadLetterError when it cannot be built or the broker does not acknowledge it.
        """
        try:
            letter, key = self._letter(record, error_type, reason)
            value = letter.to_bytes()
        except Exception as exc:  # whatever it is, the record must not be acknowledged
            raise DeadLetterError(f"cannot build a dead letter for {record.topic}[{record.partition}]@"
                                  f"{record.offset}: {type(exc).__name__}: {exc}") from exc
        log.warning(
            "dead letter: %s [%s] topic=%s partition=%d offset=%d key=%.200s",
            letter.reason[:2000], error_type, record.topic, record.partition, record.offset, key,
        )
        try:
            await self.publisher.publish(self.topic, key, value, wait=True)
        except Exception as exc:  # the publisher's errors are the transport's
            raise DeadLetterError(f"cannot write the dead letter of {record.topic}[{record.partition}]@"
                                  f"{record.offset} to {self.topic}: {type(exc).__name__}: {exc}") from exc
        self.sent += 1
        return letter

    def _letter(self, record: RawRecord, error_type: str, reason: str) -> tuple[DeadLetter, str | None]:
        value = record.value or b""
        notes = []
        key = None
        if record.key is not None:
            if len(record.key) > MAX_KEY_BYTES:
                notes.append(f"key truncated: {len(record.key):,} bytes")
            key = record.key[:MAX_KEY_BYTES].decode("utf-8", "replace")
        if len(reason) > MAX_REASON_CHARS:
            notes.append(f"reason truncated: {len(reason):,} characters")
            reason = reason[:MAX_REASON_CHARS]
        if notes:
            reason = f"{reason}… [{'; '.join(notes)}]"
        letter = DeadLetter(
            source_topic=_text(record.topic), partition=record.partition, offset=record.offset, key=key,
            value_b64=base64.b64encode(value[:MAX_KEPT_BYTES]).decode(), value_truncated=len(value) > MAX_KEPT_BYTES,
            value_bytes=len(value), reason=_text(reason), error_type=_text(error_type), agent=self.agent,
        )
        return letter, key
