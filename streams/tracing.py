"""Trace context for agents and the client SDK: the OpenTelemetry *API* only.

What is recorded and where spans go is decided once per process by its entry point
(``eddy.telemetry.configure_tracing``, called by the ``eddy`` command and the worker's start-up);
this module never imports the SDK. It gives:

- propagation: the W3C ``traceparent`` (and ``tracestate``) header of a record carries the
  context of the span that produced it (``inject_headers`` / ``extract_context``), so a query
  published by ``eddy ask`` or the SDK, its processing in the answerer and its answer events are
  one trace; likewise a document change from publish to its IndexEvent;
- step spans: ``consumer_span`` for one consumed record, ``step`` / ``record_step`` for the steps
  of a pipeline, each with ``eddy.step`` (e.g. ``retrieve``, ``embed``) so the monitor can group
  latencies by step.

Attributes follow the OpenTelemetry semantic conventions for messaging
(https://opentelemetry.io/docs/specs/semconv/messaging/kafka/) and generative AI
(https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from streams.records import RawRecord

_PROPAGATOR = TraceContextTextMapPropagator()

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
