"""The OpenTelemetry SDK set-up of a process: only entry points call it (the ``eddy`` command for
``ask`` and ``ingest``, and ``eddy worker`` before it runs the worker); agents and libraries use the
API only (``streams.tracing``).

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
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from config.settings import Settings
from streams.topics import TRACES

log = logging.getLogger(__name__)

#: Drops are logged at most once per this many seconds.
_DROP_LOG_EVERY_S = 10.0


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
                 message_timeout_ms: int = 10_000, security: dict[str, str] | None = None) -> None:
        from confluent_kafka import Producer

        self.topic = topic
        self.stats = ExporterStats()
        self._producer = Producer({
            "bootstrap.servers": bootstrap_servers,
            **(security or {}),  # Settings.kafka_client_config(): SASL, TLS
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
    exporter = KafkaSpanExporter(settings.bootstrap_servers, TRACES.full_name(settings),
                                 buffer_messages=settings.tracing_buffer_messages,
                                 security=settings.kafka_client_config())
    provider.add_span_processor(BatchSpanProcessor(
        exporter, max_queue_size=settings.tracing_queue_size, schedule_delay_millis=settings.tracing_export_delay_ms,
        max_export_batch_size=min(512, settings.tracing_queue_size),
    ))
    if settings.tracing_otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.tracing_otlp_endpoint)))
    trace.set_tracer_provider(provider)
    log.info("tracing to %s%s", TRACES.full_name(settings),
             f" and {settings.tracing_otlp_endpoint}" if settings.tracing_otlp_endpoint else "")
    return Tracing(provider, exporter)
