"""Shared pieces of the observability tests: the spans read back from the ``traces`` topic."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from config.settings import Settings
from infra.process import poll_until
from tests.integration.helpers import read_topic


@dataclass(frozen=True)
class SpanRecord:
    """One span decoded from ``traces``, with the record's key and its resource/scope names."""

    key: str
    service: str
    scope: str
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: int
    attributes: dict
    start_ns: int
    end_ns: int
    links: tuple[tuple[str, str], ...] = ()  # (trace id, span id) of each linked span
    events: tuple[tuple[str, dict], ...] = ()  # (name, attributes) of each span event


def _attributes(key_values) -> dict:
    return {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in key_values}


def decode_spans(key: bytes, value: bytes) -> list[SpanRecord]:
    """Spans of one ``traces`` record (an OTLP ExportTraceServiceRequest)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    out = []
    for rs in ExportTraceServiceRequest.FromString(value).resource_spans:
        service = next(a.value.string_value for a in rs.resource.attributes if a.key == "service.name")
        for ss in rs.scope_spans:
            for span in ss.spans:
                out.append(SpanRecord(key.decode(), service, ss.scope.name, span.trace_id.hex(), span.span_id.hex(),
                                      span.parent_span_id.hex() or None, span.name, span.kind,
                                      _attributes(span.attributes), span.start_time_unix_nano, span.end_time_unix_nano,
                                      tuple((link.trace_id.hex(), link.span_id.hex()) for link in span.links),
                                      tuple((e.name, _attributes(e.attributes)) for e in span.events)))
    return out


def wait_for_spans(settings: Settings, done: Callable[[list[SpanRecord]], bool], timeout_s: float = 60.0
                   ) -> list[SpanRecord]:
    """Every span on ``traces`` once ``done(spans)`` holds (AssertionError after ``timeout_s``)."""
    spans: list[SpanRecord] = []

    def satisfied() -> bool:
        nonlocal spans
        spans = [s for m in read_topic(settings, "traces", timeout_s=5) for s in decode_spans(m.key(), m.value())]
        return done(spans)

    if not poll_until(satisfied, timeout_s=timeout_s, interval_s=0.5):
        raise AssertionError(f"spans on traces never satisfied the condition: {sorted({s.name for s in spans})}")
    return spans
