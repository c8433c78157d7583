"""Tracing: the OpenTelemetry SDK set up once per process, a Kafka span exporter, and W3C trace
context in Kafka headers.

Agents and the SDK client use the OpenTelemetry *API* only (``opentelemetry.trace``); what is
recorded and where it goes is decided here, once, at start-up (``configure_tracing``):

- spans go through a ``BatchSpanProcessor`` (bounded queue of ``tracing_queue_size`` spans,
  exported every ``tracing_export_delay_ms``) to :class:`KafkaSpanExporter`, which writes OTLP
  ``ExportTraceServiceRequest`` protobuf records to ``traces``, one record per trace id of a
  batch, keyed by the trace id in lower-case hex — the encoding the OpenTelemetry Collector's
  Kafka receiver reads as ``otlp_proto`` — and optionally through a second processor to an
  OTLP/gRPC collector (``tracing_otlp_endpoint``);
- the exporter never blocks or fails the pipeline: records are queued in librdkafka's bounded
  buffer without waiting; when the buffer is full (Kafka slow or down) or a delivery fails, the
  spans are dropped and counted (``ExporterStats``; the monitor exposes them as
  ``eddy_trace_spans_dropped_total``).

Propagation: the W3C ``traceparent`` (and ``tracestate``) header of a record carries the
context of the span that produced it (``inject_headers`` / ``extract_context``), so a query
published by ``eddy ask`` or the SDK, its processing in the answerer and its answer events are
one trace; likewise a document change from publish to its IndexEvent.

Attributes follow the OpenTelemetry semantic conventions for messaging
(https://opentelemetry.io/docs/specs/semconv/messaging/kafka/) and generative AI
(https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/). Every step span also has
``eddy.step`` (e.g. ``retrieve``, ``embed``) so the monitor can group latencies by step.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from config.settings import Settings

if TYPE_CHECKING:
    from streams.records import RawRecord

log = logging.getLogger(__name__)

_PROPAGATOR = TraceContextTextMapPropagator()

#: Drops are logged at most once per this many seconds.
_DROP_LOG_EVERY_S = 10.0

#: Attribute every step span carries: the step's name (the monitor's latency-per-step label).
STEP = "eddy.step"


# ------------------------------------------------------------------------------ propagation
def inject_headers(ctx: otel_context.Context | None = None) -> list[tuple[str, bytes]]:
    """Kafka headers carrying the W3C trace context of ``ctx`` (default: the current context).

    Returns ``[("traceparent", b"00-<trace id>-<span id>-<flags>"), …]``; empty when there is no
    valid span in the context (tracing off or no active span).
    """
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=ctx)
    return [(k, v.encode()) for k, v in carrier.items()]


def extract_context(headers: Sequence[tuple[str, bytes | str | None]] | None) -> otel_context.Context:
    """The trace context carried by a record's headers (an empty context when there is none or it is malformed)."""
    carrier = {}
    for key, value in headers or ():
        if value is None:
            continue
        carrier[key.lower()] = value.decode("latin-1") if isinstance(value, bytes) else value
    return _PROPAGATOR.extract(carrier)


def traceparent_of(headers: Sequence[tuple[str, bytes | str | None]] | None) -> str | None:
    """The ``traceparent`` header's value, if any."""
    for key, value in headers or ():
        if key.lower() == "traceparent" and value is not None:
            return value.decode("latin-1") if isinstance(value, bytes) else value
    return None


def messaging_attributes(topic: str, *, operation: str, partition: int | None = None, offset: int | None = None,
                         key: bytes | str | None = None, group: str | None = None) -> dict[str, object]:
    """Messaging semantic-convention attributes of a Kafka send/process span."""
    attrs: dict[str, object] = {
        "messaging.system": "kafka",
        "messaging.destination.name": topic,
        "messaging.operation.type": operation,  # send | process | receive
        "messaging.operation.name": operation,
    }
    if partition is not None:
        attrs["messaging.destination.partition.id"] = str(partition)
    if offset is not None:
        attrs["messaging.kafka.offset"] = offset
    if key is not None:
        attrs["messaging.kafka.message.key"] = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
    if group is not None:
        attrs["messaging.consumer.group.name"] = group
    return attrs


@contextlib.contextmanager
def consumer_span(tracer: trace.Tracer, record: RawRecord, group: str) -> Iterator[Span]:
    """A CONSUMER ``process <topic>`` span for one consumed record, child of the context in its
    headers, made current for the block. Exceptions are recorded on the span and re-raised."""
    with tracer.start_as_current_span(
        f"process {record.topic}", context=extract_context(record.headers), kind=SpanKind.CONSUMER,
        attributes={**messaging_attributes(record.topic, operation="process", partition=record.partition,
                                           offset=record.offset, key=record.key, group=group), STEP: "process"},
    ) as span:
        yield span


def step(tracer: trace.Tracer, name: str, **attributes: object):
    """Context manager of a child span for one pipeline step (``eddy.step=name``)."""
    return tracer.start_as_current_span(name, attributes={STEP: name, **attributes})


def record_step(tracer: trace.Tracer, name: str, start_s: float, end_s: float, *, step_name: str | None = None,
                attributes: dict[str, object] | None = None, kind: SpanKind = SpanKind.INTERNAL) -> Span:
    """Record a child span (of the current span) for a step that already ran, timed with
    ``time.perf_counter()`` readings ``start_s``..``end_s`` (converted to UNIX ns). ``eddy.step`` is
    ``step_name`` (default ``name``). Returns the ended span.

    For steps whose code is timed anyway: no re-indentation of the step, same figures as the events.
    """
    offset_ns = time.time_ns() - time.perf_counter_ns()
    span = tracer.start_span(name, kind=kind, start_time=int(start_s * 1e9) + offset_ns,
                             attributes={STEP: step_name or name, **(attributes or {})})
    span.end(end_time=int(end_s * 1e9) + offset_ns)
    return span


# ------------------------------------------------------------------------------ exporter
@dataclass
class ExporterStats:
    """Counters of one exporter (thread-safe increments): spans handed to Kafka, delivered, dropped."""

    queued: int = 0
    delivered: int = 0
    dropped: int = 0
    records: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, n: int) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)


class KafkaSpanExporter(SpanExporter):
    """OTLP protobuf span batches to a Kafka topic; never blocks, drops and counts instead.

    Each ``export(spans)`` groups the spans by trace id and produces one record per trace:
    key = trace id (32 lower-case hex digits), value = ``ExportTraceServiceRequest``
    (``opentelemetry.proto.collector.trace.v1``) encoded by the OpenTelemetry OTLP encoder.
    The confluent-kafka producer queues at most ``buffer_messages`` records; a full queue
    (``BufferError``) or a failed delivery (``message_timeout_ms`` elapsed, broker down) drops
    that record's spans and adds them to ``stats.dropped``.
    """

    def __init__(self, bootstrap_servers: str, topic: str, *, buffer_messages: int = 10_000,
                 message_timeout_ms: int = 10_000) -> None:
        from confluent_kafka import Producer

        self.topic = topic
        self.stats = ExporterStats()
        self._producer = Producer({
            "bootstrap.servers": bootstrap_servers,
            "acks": 1,
            "linger.ms": 50,
            "compression.type": "lz4",
            "queue.buffering.max.messages": buffer_messages,
            "message.timeout.ms": message_timeout_ms,
            "partitioner": "murmur2_random",
            "log_level": 3,
        })
        self._shutdown = False
        self._last_drop_log = float("-inf")

    def _drop(self, count: int, why: str) -> None:
        self.stats.add("dropped", count)
        now = time.monotonic()
        if now - self._last_drop_log >= _DROP_LOG_EVERY_S:  # a slow broker must not flood the log either
            self._last_drop_log = now
            log.warning("dropped %d spans (%d in all): %s", count, self.stats.dropped, why)

    def _delivered(self, err, msg, count: int) -> None:
        if err is None:
            self.stats.add("delivered", count)
        else:
            self._drop(count, f"delivery to {self.topic} failed: {err}")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        if self._shutdown:
            return SpanExportResult.FAILURE
        by_trace: dict[int, list[ReadableSpan]] = {}
        for span in spans:
            by_trace.setdefault(span.context.trace_id, []).append(span)
        for trace_id, group in by_trace.items():
            value = encode_spans(group).SerializeToString()
            count = len(group)
            try:
                self._producer.produce(
                    self.topic, key=f"{trace_id:032x}".encode(), value=value,
                    on_delivery=lambda err, msg, n=count: self._delivered(err, msg, n),
                )
                self.stats.add("queued", count)
                self.stats.add("records", 1)
            except BufferError:
                self._drop(count, f"the Kafka producer's queue for {self.topic} is full")
        self._producer.poll(0)  # serve delivery callbacks without waiting
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._producer.flush(timeout_millis / 1000) == 0

    def shutdown(self) -> None:
        if not self._shutdown:
            self._shutdown = True
            left = self._producer.flush(2.0)
            if left:
                self.stats.add("dropped", left)


# ------------------------------------------------------------------------------ SDK set-up
@dataclass
class Tracing:
    """The process's tracing set-up (see :func:`configure_tracing`)."""

    provider: TracerProvider | None
    exporter: KafkaSpanExporter | None

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    def flush(self, timeout_s: float = 10.0) -> bool:
        return self.provider.force_flush(int(timeout_s * 1000)) if self.provider is not None else True

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()


def configure_tracing(settings: Settings, service_name: str, **resource: str) -> Tracing:
    """Install the SDK's TracerProvider as the process's global one, exporting to ``traces``
    (and to ``settings.tracing_otlp_endpoint`` over OTLP/gRPC when set).

    Call once at start-up (the global provider can be set only once per process). With
    ``settings.tracing`` false nothing is installed and the API's no-op tracer stays in place.
    ``resource`` adds resource attributes (e.g. ``eddy.agents``).
    """
    if not settings.tracing:
        return Tracing(None, None)
    provider = TracerProvider(resource=Resource.create({"service.name": service_name, **resource}))
    exporter = KafkaSpanExporter(settings.bootstrap_servers, settings.topic("traces"),
                                 buffer_messages=settings.tracing_buffer_messages)
    provider.add_span_processor(BatchSpanProcessor(
        exporter, max_queue_size=settings.tracing_queue_size, schedule_delay_millis=settings.tracing_export_delay_ms,
        max_export_batch_size=min(512, settings.tracing_queue_size),
    ))
    if settings.tracing_otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.tracing_otlp_endpoint)))
    trace.set_tracer_provider(provider)
    log.info("tracing to %s%s", settings.topic("traces"),
             f" and {settings.tracing_otlp_endpoint}" if settings.tracing_otlp_endpoint else "")
    return Tracing(provider, exporter)
