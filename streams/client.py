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
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from config.settings import MAX_RECORD_BYTES, Settings
from schemas import AnswerEvent, DocumentChange, Feedback, HistoryTurn, IndexEvent, Query, QueryOptions
from streams.tracing import inject_headers, messaging_attributes

E = TypeVar("E")
_tracer = trace.get_tracer("eddy.client")


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

    def __init__(self, bootstrap_servers: str, topic_prefix: str = "eddy.",
                 security: dict[str, str] | None = None) -> None:
        """``security``: librdkafka security properties (``Settings.kafka_client_config()``: SASL, TLS)."""
        self.bootstrap_servers = bootstrap_servers
        self.prefix = topic_prefix
        self._security = dict(security or {})
        self._producer = Producer({
            "bootstrap.servers": bootstrap_servers,
            **self._security,
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
        return cls(settings.bootstrap_servers, settings.topic_prefix, settings.kafka_client_config())

    def topic(self, name: str) -> str:
        return f"{self.prefix}{name}"

    # ------------------------------------------------------------------ publishing
    def _on_delivery(self, err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            self._errors.append(str(err))

    def _produce(self, topic: str, key: str, value: bytes) -> None:
        """Queue one record inside a PRODUCER ``send <topic>`` span whose W3C context travels in the
        record's ``traceparent`` header (a no-op span and no header unless the program set up an
        OpenTelemetry SDK, as ``eddy`` does: ``streams.tracing.configure_tracing``)."""
        full = self.topic(topic)
        with _tracer.start_as_current_span(
            f"send {full}", kind=SpanKind.PRODUCER,
            attributes=messaging_attributes(full, operation="send", key=key),
        ):
            headers = inject_headers()
            while True:
                try:
                    self._producer.produce(full, key=key.encode(), value=value, headers=headers,
                                           on_delivery=self._on_delivery)
                    break
                except BufferError:  # local queue full: let deliveries drain
                    self._producer.poll(0.05)
        self._producer.poll(0)

    def publish_change(self, change: DocumentChange) -> DocumentChange:
        """Queue a DocumentChange on ``docs.changes`` (call ``flush()`` to wait for delivery)."""
        self._produce("docs.changes", change.record_key(), change.to_bytes())
        return change

    def publish_document(
        self, doc_id: str, text: str, *, title: str = "", uri: str = "", source: str = "",
        content_type: str = "text/plain", acl: Sequence[str] = (), metadata: dict[str, str] | None = None,
        version: int | None = None, collection: str | None = None,
    ) -> DocumentChange:
        """Publish an upsert of one document (into ``collection``; None = the worker's default collection);
        ``version`` defaults to now in microseconds."""
        return self.publish_change(DocumentChange(
            op="upsert", doc_id=doc_id, version=version if version is not None else new_version(),
            text=text, title=title, uri=uri, source=source, content_type=content_type,
            acl=list(acl), metadata=metadata or {}, collection=collection,
        ))

    def delete_document(
        self, doc_id: str, *, source: str = "", version: int | None = None, collection: str | None = None,
    ) -> DocumentChange:
        """Publish a delete of one document (of ``collection``; None = the default collection)."""
        return self.publish_change(DocumentChange(
            op="delete", doc_id=doc_id, source=source, version=version if version is not None else new_version(),
            collection=collection,
        ))

    def publish_query(self, query: Query) -> Query:
        self._produce("queries", query.conversation_id, query.to_bytes())
        return query

    def publish_feedback(
        self, query_id: str, rating: str, *, comment: str = "", share: bool = False, user_id: str = "",
    ) -> Feedback:
        """Queue a Feedback (``rating`` ``"up"`` or ``"down"``) on ``feedback`` keyed by ``query_id``.

        ``share=True`` lets the curator keep the conversation, PII-scrubbed, for the datasets.
        Raises pydantic.ValidationError for a bad rating or an empty ``query_id``.
        """
        feedback = Feedback(query_id=query_id, user_id=user_id, rating=rating, comment=comment, share=share)
        self._produce("feedback", query_id, feedback.to_bytes())
        return feedback

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait for every queued record; EddyClientError if some could not be delivered."""
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise EddyClientError(
                f"{remaining} records not delivered within {timeout_s:.0f}s to {self.bootstrap_servers}")
        if self._errors:
            errors, self._errors = self._errors, []
            raise EddyClientError(f"{len(errors)} records failed: {errors[0]}")

    # ------------------------------------------------------------------ consuming
    def _consumer(self) -> Consumer:
        return Consumer({
            "bootstrap.servers": self.bootstrap_servers,
            **self._security,
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

    def read_snapshot(self, topic: str, *, timeout_s: float = 60.0) -> Iterator[Message]:
        """Every record of ``topic`` from the start of each partition up to its high watermark at the
        time of the call (records published meanwhile are not included), partition by partition.

        Raises EddyClientError when the topic is missing or no record arrives for ``timeout_s``.
        """
        consumer = self._consumer()
        try:
            ends = {tp.partition: tp.offset for tp in self._end_offsets(consumer, topic)}
            consumer.assign([TopicPartition(self.topic(topic), p, OFFSET_BEGINNING)
                             for p, end in ends.items() if end > 0])
            done = {p for p, end in ends.items() if end == 0}
            deadline = time.monotonic() + timeout_s
            while len(done) < len(ends):
                if time.monotonic() > deadline:
                    raise EddyClientError(f"reading {self.topic(topic)}: no record for {timeout_s:.0f}s")
                for msg in _poll_batch(consumer, 0.2):
                    if msg.error() is not None or msg.partition() in done:
                        continue
                    deadline = time.monotonic() + timeout_s
                    yield msg
                    if msg.offset() + 1 >= ends[msg.partition()]:
                        done.add(msg.partition())
        finally:
            consumer.close()

    def wait_indexed(
        self, change_ids: Iterable[str], start: list[TopicPartition], *, timeout_s: float = 300.0,
        on_event: Callable[[IndexEvent], None] | None = None,
    ) -> list[IndexEvent]:
        """Read ``index.events`` from ``start`` until an IndexEvent reports each change id.

        Returns those events (the first per change). ``timeout_s`` is an idle timeout: raises
        EddyClientError, naming how many changes are still pending, when no awaited event
        arrived for that many seconds (a large ingest may take much longer in total).
        """
        def match(value: bytes) -> tuple[str, IndexEvent]:
            event = IndexEvent.model_validate_json(value)
            return event.change_id, event

        return self._wait_for("index.events", start, change_ids, match, "changes still not indexed",
                              timeout_s, on_event)

    def wait_answers(
        self, query_ids: Iterable[str], start: list[TopicPartition], *, timeout_s: float = 300.0,
        on_event: Callable[[AnswerEvent], None] | None = None,
    ) -> list[AnswerEvent]:
        """Read ``answers`` from ``start`` until each query id has its terminal event (``final`` or
        ``error``); returns those, in arrival order. ``timeout_s`` is an idle timeout, as in
        :meth:`wait_indexed` (EddyClientError naming how many queries are still unanswered)."""
        def match(value: bytes) -> tuple[str, AnswerEvent] | None:
            event = AnswerEvent.model_validate_json(value)
            return (event.query_id, event) if event.terminal else None

        return self._wait_for("answers", start, query_ids, match, "queries still unanswered", timeout_s, on_event)

    def _wait_for(
        self, topic: str, start: list[TopicPartition], ids: Iterable[str],
        match: Callable[[bytes], tuple[str, E] | None], pending_what: str, timeout_s: float,
        on_event: Callable[[E], None] | None,
    ) -> list[E]:
        """Read ``topic`` from ``start`` until ``match`` (id, event) has reported every id (the first event
        per id is kept; values that do not parse are skipped)."""
        pending = set(ids)
        events: list[E] = []
        consumer = self._consumer()
        consumer.assign(start)
        deadline = time.monotonic() + timeout_s
        try:
            while pending:
                if time.monotonic() > deadline:
                    raise EddyClientError(
                        f"{len(pending)} {pending_what}: no progress on {self.topic(topic)} for {timeout_s:.0f}s; "
                        "is the worker running? (`eddy status`)"
                    )
                for msg in _poll_batch(consumer, 0.2):
                    if msg.error() is not None:
                        continue
                    try:
                        found = match(msg.value())
                    except ValueError:
                        continue
                    if found is not None and found[0] in pending:
                        pending.discard(found[0])
                        events.append(found[1])
                        deadline = time.monotonic() + timeout_s
                        if on_event is not None:
                            on_event(found[1])
        finally:
            consumer.close()
        return events

    async def ask(
        self, text: str, *, user_id: str = "", groups: Sequence[str] = (), top_k: int | None = None,
        max_tokens: int | None = None, conversation_id: str | None = None,
        history: Sequence[HistoryTurn] = (), timeout_s: float = 300.0, query_id: str | None = None,
        collection: str | None = None,
    ) -> AsyncIterator[AnswerEvent]:
        """Publish a Query and yield its AnswerEvents (``delta``… then ``final`` or ``error``), in order.

        Raises EddyClientError when no terminal event arrives within ``timeout_s`` seconds.

        Traced as one ``ask`` span (publish → terminal event) parenting the ``send`` span of the
        query, so the answerer's spans and the answer events join the caller's trace.
        """
        consumer = self._consumer()
        span = _tracer.start_span("ask", attributes={"eddy.step": "ask"})
        try:
            # One consumer per ask: it finds the end of `answers` and then reads the answer from there.
            consumer.assign(await asyncio.to_thread(self._end_offsets, consumer, "answers"))
            query = Query(
                query_id=query_id or uuid.uuid4().hex, conversation_id=conversation_id or uuid.uuid4().hex,
                user_id=user_id, groups=list(groups), text=text, history=list(history),
                options=QueryOptions(top_k=top_k, max_tokens=max_tokens, collection=collection),
            )
            span.set_attribute("eddy.query_id", query.query_id)
            with trace.use_span(span, end_on_exit=False):
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
                    if event.terminal:
                        span.set_attribute("eddy.answer.kind", event.kind)
                        if event.kind == "error":
                            span.set_status(trace.StatusCode.ERROR, event.error or "error answer")
                    yield event
                    if event.terminal:
                        return
        except KafkaException as exc:
            span.set_status(trace.StatusCode.ERROR, str(exc))
            raise EddyClientError(f"Kafka error while asking: {exc}") from exc
        finally:
            span.end()
            consumer.close()

    def close(self) -> None:
        self._producer.flush(10)
