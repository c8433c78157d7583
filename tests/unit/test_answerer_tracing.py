"""The answerer's spans (fakes + an in-memory span exporter): steps, GenAI attributes, content capture."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from schemas import Query
from tests.unit.test_answerer import make, qrec


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    """The process's global TracerProvider (settable once), recording into memory."""
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.mark.parametrize("capture", [False, True])
async def test_steps_and_genai_attributes_with_and_without_content(tmp_path, spans, capture):
    spans.clear()
    answerer, _publisher, _settings, _generator = make(tmp_path, tracing_capture_content=capture)
    final = await answerer.handle(qrec(Query(query_id="q1", conversation_id="conv", text="How do I copy a file?")))
    by_step = {s.attributes.get("eddy.step"): s for s in spans.get_finished_spans()}
    assert {"process", "retrieve", "prompt", "generate", "validate", "publish"} <= set(by_step)
    process = by_step["process"]
    assert all(s.context.trace_id == process.context.trace_id for s in by_step.values())
    assert all(s.parent.span_id == process.context.span_id for k, s in by_step.items() if k != "process")
    generate = by_step["generate"]
    assert generate.name == "chat echo" and generate.kind == trace.SpanKind.CLIENT
    assert generate.attributes["gen_ai.usage.output_tokens"] == final.usage.completion_tokens
    assert generate.attributes["gen_ai.usage.input_tokens"] == final.usage.prompt_tokens
    assert generate.attributes["gen_ai.request.model"] == "echo"
    assert generate.start_time <= generate.end_time and process.start_time <= generate.start_time
    assert ("gen_ai.input.messages" in generate.attributes) is capture
    assert ("gen_ai.output.messages" in generate.attributes) is capture
    if capture:
        assert "copy a file" in generate.attributes["gen_ai.input.messages"]


async def test_a_failed_query_marks_its_span_as_an_error(tmp_path, spans):
    spans.clear()
    answerer, publisher, settings, generator = make(tmp_path)

    async def broken(*_args, **_kw):
        raise RuntimeError("generator down")
        yield  # pragma: no cover - makes this an async generator

    generator.stream = broken
    final = await answerer.handle(qrec(Query(query_id="q2", conversation_id="conv", text="copy?")))
    assert final.kind == "error"
    (process,) = [s for s in spans.get_finished_spans() if s.attributes.get("eddy.step") == "process"]
    assert process.status.status_code == trace.StatusCode.ERROR
    assert any(e.name == "exception" for e in process.events)
