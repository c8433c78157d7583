"""Trace context in Kafka headers, and the Kafka span exporter's never-block/drop behaviour."""

from __future__ import annotations

import time

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from eddy.telemetry import KafkaSpanExporter
from streams.records import RawRecord
from streams.tracing import consumer_span, extract_context, inject_headers, traceparent_of
from tests.conftest import free_port


def sdk():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test"), exporter


def test_headers_carry_w3c_traceparent_and_the_consumer_span_continues_the_trace():
    tracer, exporter = sdk()
    with tracer.start_as_current_span("send") as producer:
        headers = inject_headers()
    ctx = producer.get_span_context()
    assert traceparent_of(headers).startswith(f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-")
    record = RawRecord(topic="eddy.queries", partition=1, offset=42, key=b"c1", value=b"{}", headers=headers)
    with consumer_span(tracer, record, "eddy-worker"):
        pass
    process = [s for s in exporter.get_finished_spans() if s.name == "process eddy.queries"][0]
    assert process.context.trace_id == ctx.trace_id and process.parent.span_id == ctx.span_id
    assert process.kind == trace.SpanKind.CONSUMER
    assert process.attributes["messaging.system"] == "kafka"
    assert process.attributes["messaging.destination.partition.id"] == "1"
    assert process.attributes["messaging.kafka.offset"] == 42
    assert process.attributes["messaging.consumer.group.name"] == "eddy-worker"


def test_no_span_no_header_and_garbage_header_starts_a_new_trace():
    assert inject_headers() == []
    ctx = extract_context([("traceparent", b"garbage")])
    assert not trace.get_current_span(ctx).get_span_context().is_valid


def test_exporter_never_blocks_and_counts_drops_when_kafka_is_unreachable():
    tracer, memory = sdk()
    for i in range(5):
        with tracer.start_as_current_span(f"s{i}"):  # five traces
            pass
    exporter = KafkaSpanExporter(f"127.0.0.1:{free_port()}", "t.traces", buffer_messages=2, message_timeout_ms=3000)
    exporter.export(memory.get_finished_spans())
    # No broker: it returned without waiting for the two queued records (they time out after 3 s;
    # an export that waited on them would count them dropped too). The local queue holds 2 records.
    assert exporter.stats.queued == 2 and exporter.stats.dropped == 3 and exporter.stats.delivered == 0
    deadline = time.monotonic() + 30
    while exporter.stats.dropped < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
        exporter.export([])  # serves delivery callbacks: the two queued records time out
    assert exporter.stats.dropped == 5 and exporter.stats.delivered == 0
    exporter.shutdown()
