"""Client SDK for users' programs (confluent-kafka): publish documents and queries, read answers.

    client = EddyClient.from_settings(Settings())
    client.publish_document("faq:copy", "How do I copy a file? Use shutil.copy().", title="Copying")
    async for event in client.ask("How do I copy a file?"):
        print(event.text, end="")

Records are UTF-8 JSON of the schemas in :mod:`schemas`, keyed as the topic catalogue says,
partitioned with murmur2 like the Java client and faust, so any client's records for one key
land on the same partition.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from eddy.settings import Settings
from schemas import AnswerEvent, DocumentChange, HistoryTurn, IndexEvent, Query, QueryOptions

MAX_RECORD_BYTES = 8 * 1024 * 1024


def _poll_batch(consumer: Consumer, timeout_s: float, max_messages: int = 500) -> list:
    """Messages available now: waits up to ``timeout_s`` for the first one only.

    (``Consumer.consume(n, timeout)`` waits for ``n`` messages or the whole timeout, which would
    add up to ``timeout`` to the latency of every answer delta.)
    """
    first = consumer.poll(timeout_s)
    if first is None:
        return []
    return [first, *consumer.consume(max_messages - 1, timeout=0)]


class EddyClientError(RuntimeError):
    """Delivery failed or the stack did not answer in time."""


def new_version() -> int:
    """A version for a change published now: UTC microseconds (monotonic per doc while clocks are)."""
    return time.time_ns() // 1000


class EddyClient:
    """Producer + short-lived consumers against one Kafka cluster and topic prefix."""

    def __init__(self, bootstrap_servers: str, topic_prefix: str = "eddy.") -> None:
        self.bootstrap_servers = bootstrap_servers
        self.prefix = topic_prefix
        self._producer = Producer({
            "bootstrap.servers": bootstrap_servers,
            "partitioner": "murmur2_random",
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "message.max.bytes": MAX_RECORD_BYTES,
            "log_level": 3,  # librdkafka logs errors only; transient retries are not the user's business
        })
        self._errors: list[str] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> EddyClient:
        return cls(settings.bootstrap_servers, settings.topic_prefix)

    def topic(self, name: str) -> str:
        return f"{self.prefix}{name}"

    # ------------------------------------------------------------------ publishing
    def _on_delivery(self, err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            self._errors.append(str(err))

    def _produce(self, topic: str, key: str, value: bytes) -> None:
        while True:
            try:
                self._producer.produce(self.topic(topic), key=key.encode(), value=value, on_delivery=self._on_delivery)
                break
            except BufferError:  # local queue full: let deliveries drain
                self._producer.poll(0.05)
        self._producer.poll(0)

    def publish_change(self, change: DocumentChange) -> DocumentChange:
        """Queue a DocumentChange on ``docs.changes`` (call ``flush()`` to wait for delivery)."""
        self._produce("docs.changes", change.doc_id, change.to_bytes())
        return change

    def publish_document(
        self, doc_id: str, text: str, *, title: str = "", uri: str = "", source: str = "",
        content_type: str = "text/plain", acl: Sequence[str] = (), metadata: dict[str, str] | None = None,
        version: int | None = None,
    ) -> DocumentChange:
        """Publish an upsert of one document; ``version`` defaults to now in microseconds."""
        return self.publish_change(DocumentChange(
            op="upsert", doc_id=doc_id, version=version if version is not None else new_version(),
            text=text, title=title, uri=uri, source=source, content_type=content_type,
            acl=list(acl), metadata=metadata or {},
        ))

    def delete_document(self, doc_id: str, *, source: str = "", version: int | None = None) -> DocumentChange:
        """Publish a delete of one document."""
        return self.publish_change(DocumentChange(
            op="delete", doc_id=doc_id, source=source, version=version if version is not None else new_version(),
        ))

    def publish_query(self, query: Query) -> Query:
        self._produce("queries", query.conversation_id, query.to_bytes())
        return query

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait for every queued record; EddyClientError if some could not be delivered."""
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise EddyClientError(f"{remaining} records not delivered within {timeout_s:.0f}s to {self.bootstrap_servers}")
        if self._errors:
            errors, self._errors = self._errors, []
            raise EddyClientError(f"{len(errors)} records failed: {errors[0]}")

    # ------------------------------------------------------------------ consuming
    def _consumer(self) -> Consumer:
        return Consumer({
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": f"eddy-client-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 50,
            "fetch.message.max.bytes": MAX_RECORD_BYTES,
            "log_level": 3,
        })

    def end_offsets(self, topic: str) -> list[TopicPartition]:
        """High watermarks of every partition of ``topic`` (a starting point for ``wait_indexed``)."""
        consumer = self._consumer()
        try:
            return self._end_offsets(consumer, topic)
        finally:
            consumer.close()

    def _end_offsets(self, consumer: Consumer, topic: str) -> list[TopicPartition]:
        full = self.topic(topic)
        metadata = consumer.list_topics(full, timeout=10).topics[full]
        if metadata.error is not None:
            raise EddyClientError(f"topic {full}: {metadata.error.str()} (is the stack up? `eddy up`)")
        out = []
        for partition in sorted(metadata.partitions):
            _, high = consumer.get_watermark_offsets(TopicPartition(full, partition), timeout=10)
            out.append(TopicPartition(full, partition, high))
        return out

    def wait_indexed(
        self, change_ids: Iterable[str], start: list[TopicPartition], *, timeout_s: float = 300.0,
        on_event: Callable[[IndexEvent], None] | None = None,
    ) -> list[IndexEvent]:
        """Read ``index.events`` from ``start`` until an IndexEvent reports each change id.

        Returns those events (the first per change). ``timeout_s`` is an idle timeout: raises
        EddyClientError, naming how many changes are still pending, when no awaited event
        arrived for that many seconds (a large ingest may take much longer in total).
        """
        pending = set(change_ids)
        events: list[IndexEvent] = []
        consumer = self._consumer()
        consumer.assign(start)
        deadline = time.monotonic() + timeout_s
        try:
            while pending:
                if time.monotonic() > deadline:
                    raise EddyClientError(
                        f"{len(pending)} changes still not indexed: no progress for {timeout_s:.0f}s; "
                        "is the worker running? (`eddy status`)"
                    )
                for msg in _poll_batch(consumer, 0.2):
                    if msg.error() is not None:
                        continue
                    try:
                        event = IndexEvent.model_validate_json(msg.value())
                    except ValueError:
                        continue
                    if event.change_id in pending:
                        pending.discard(event.change_id)
                        events.append(event)
                        deadline = time.monotonic() + timeout_s
                        if on_event is not None:
                            on_event(event)
        finally:
            consumer.close()
        return events

    async def ask(
        self, text: str, *, user_id: str = "", groups: Sequence[str] = (), top_k: int | None = None,
        max_tokens: int | None = None, conversation_id: str | None = None,
        history: Sequence[HistoryTurn] = (), timeout_s: float = 300.0, query_id: str | None = None,
    ) -> AsyncIterator[AnswerEvent]:
        """Publish a Query and yield its AnswerEvents (``delta``… then ``final`` or ``error``), in order.

        Raises EddyClientError when no terminal event arrives within ``timeout_s`` seconds.
        """
        consumer = self._consumer()
        try:
            # One consumer per ask: it finds the end of `answers` and then reads the answer from there.
            consumer.assign(await asyncio.to_thread(self._end_offsets, consumer, "answers"))
            query = Query(
                query_id=query_id or uuid.uuid4().hex, conversation_id=conversation_id or uuid.uuid4().hex,
                user_id=user_id, groups=list(groups), text=text, history=list(history),
                options=QueryOptions(top_k=top_k, max_tokens=max_tokens),
            )
            self.publish_query(query)
            await asyncio.to_thread(self.flush, 10.0)
            deadline = time.monotonic() + timeout_s
            wanted = query.query_id.encode()
            while True:
                if time.monotonic() > deadline:
                    raise EddyClientError(f"no answer to query {query.query_id} within {timeout_s:.0f}s")
                msgs = await asyncio.to_thread(_poll_batch, consumer, 0.1)
                for msg in msgs:
                    if msg.error() is not None or msg.key() != wanted:
                        continue
                    event = AnswerEvent.model_validate_json(msg.value())
                    yield event
                    if event.terminal:
                        return
        except KafkaException as exc:
            raise EddyClientError(f"Kafka error while asking: {exc}") from exc
        finally:
            consumer.close()

    def close(self) -> None:
        self._producer.flush(10)
