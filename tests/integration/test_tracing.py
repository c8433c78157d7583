"""Tracing against the real broker: a query asked from the CLI is ONE connected trace on ``traces``
(decoded from the OTLP protobuf there), its answer events carry that trace's context, and a
document change is one trace from its publish to its IndexEvent."""

from __future__ import annotations

import json

import pytest

from streams.tracing import traceparent_of
from tests.e2e.test_cli import eddy
from tests.integration.helpers import read_topic
from tests.integration.observability import SpanRecord, wait_for_spans

pytestmark = pytest.mark.integration


def trace_of(headers) -> str:
    value = traceparent_of(headers)
    assert value is not None, f"no traceparent header in {headers}"
    return value.split("-")[1]


def assert_connected(spans: list[SpanRecord]) -> SpanRecord:
    """One root; every other span's parent is in the trace. Returns the root."""
    ids = {s.span_id for s in spans}
    roots = [s for s in spans if s.parent_id is None]
    assert len(roots) == 1, f"roots: {[r.name for r in roots]}"
    orphans = [s.name for s in spans if s.parent_id is not None and s.parent_id not in ids]
    assert not orphans, f"spans whose parent is not in the trace: {orphans}"
    return roots[0]


def test_cli_query_is_one_connected_trace_on_the_traces_topic(obs_settings, obs_stack, tmp_path):
    s = obs_settings
    p = s.topic_prefix
    obs_stack.start_worker(("indexer", "answerer"))
    doc = tmp_path / "copy.md"
    # Marker words, in no id or name: "marimba" in the passage (so in the prompt, and in the echo
    # generator's answer), "xylophone" in the question.
    doc.write_text("# Copying files\n\nMarimba notes: use shutil.copy(src, dst) to copy a file.\n")
    eddy(s, "ingest", str(doc), "--source", "kb", "--wait", "--json")
    question = "How do I copy a xylophone file?"
    out = eddy(s, "ask", question, "--json").stdout
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    query_id = events[-1]["query_id"]
    assert events[-1]["kind"] == "final"

    # Every answer event of the query carries the same trace id in its traceparent header.
    answers = [m for m in read_topic(s, "answers", min_count=len(events)) if m.key() == query_id.encode()]
    assert len(answers) == len(events)
    (trace_id,) = {trace_of(m.headers()) for m in answers}

    def complete(spans):
        names = {x.name for x in spans if x.trace_id == trace_id}
        return {"ask", f"send {p}queries", f"process {p}queries", f"send {p}answers"} <= names

    spans = [x for x in wait_for_spans(s, complete) if x.trace_id == trace_id]
    assert {x.key for x in spans} == {trace_id}  # records keyed by trace id
    root = assert_connected(spans)
    assert (root.name, root.service) == ("ask", "eddy-cli")
    by_name = {x.name: x for x in spans}
    assert {x.service for x in spans} == {"eddy-cli", "eddy-worker"}
    process = by_name[f"process {p}queries"]
    assert process.parent_id == by_name[f"send {p}queries"].span_id
    assert process.attributes["messaging.system"] == "kafka"
    assert process.attributes["messaging.destination.name"] == f"{p}queries"
    assert process.attributes["messaging.consumer.group.name"] == s.group_id
    assert "messaging.kafka.offset" in process.attributes and "messaging.destination.partition.id" in process.attributes
    steps = {x.attributes.get("eddy.step") for x in spans}
    assert {"retrieve", "prompt", "generate", "validate", "publish"} <= steps
    (generate,) = [x for x in spans if x.attributes.get("eddy.step") == "generate"]
    assert generate.attributes["gen_ai.request.model"] == "echo"
    assert generate.attributes["gen_ai.usage.output_tokens"] == events[-1]["usage"]["completion_tokens"] > 0
    assert generate.attributes["gen_ai.usage.input_tokens"] == events[-1]["usage"]["prompt_tokens"]
    assert generate.attributes["eddy.ttft_ms"] >= 0
    # Content capture is off by default: no prompt or completion text on any span of the trace, in
    # any attribute or event. Positive control: the completion does hold the passage's marker.
    completion = events[-1]["text"]
    assert "marimba" in completion.lower() and len(completion.split()) >= 5
    texts = {f"{x.name}: {k}": str(v) for x in spans for k, v in x.attributes.items()}
    texts.update({f"{x.name}: event {name} {k}": str(v) for x in spans for name, attrs in x.events
                  for k, v in {"name": name, **attrs}.items()})
    assert texts, "no attributes to scan"
    for needle in ("marimba", "xylophone", question.lower(), completion.lower(), completion.lower()[-20:]):
        found = [where for where, text in texts.items() if needle in text.lower()]
        assert not found, f"prompt or completion text {needle!r} on spans: {found}"


def test_document_change_is_one_trace_from_publish_to_index_event(obs_settings, obs_stack, tmp_path):
    s = obs_settings
    p = s.topic_prefix
    obs_stack.start_worker(("indexer",))
    doc = tmp_path / "a.md"
    doc.write_text("# Alpha\n\nAlpha paragraph.\n\n## Beta\n\nBeta paragraph.\n")
    eddy(s, "ingest", str(doc), "--source", "kb", "--wait", "--json")
    (change,) = read_topic(s, "docs.changes", min_count=1)
    (event,) = read_topic(s, "index.events", min_count=1)
    trace_id = trace_of(change.headers())
    assert trace_of(event.headers()) == trace_id

    def complete(spans):
        names = {x.name for x in spans if x.trace_id == trace_id}
        return {f"send {p}docs.changes", f"process {p}docs.changes"} <= names

    spans = [x for x in wait_for_spans(s, complete) if x.trace_id == trace_id]
    root = assert_connected(spans)
    assert (root.name, root.service) == (f"send {p}docs.changes", "eddy-cli")
    process = next(x for x in spans if x.name == f"process {p}docs.changes")
    assert process.attributes["eddy.doc_id"] == json.loads(change.value())["doc_id"]
    assert process.attributes["eddy.index.status"] == "indexed"
    assert traceparent_of(event.headers()).split("-")[2] == process.span_id  # published from the change's span
    # The batch's step spans are a trace of their own, linked both ways with the change's trace: the
    # batch span links to the change's send span (the record's traceparent), the process span to the
    # batch (to its span current when the change was decoded).
    send_span = traceparent_of(change.headers()).split("-")[2]

    def batch_of_the_change(sp) -> list:
        [batch] = [x for x in sp if x.name == "index batch" and (trace_id, send_span) in x.links] or [None]
        return [] if batch is None else [x for x in sp if x.trace_id == batch.trace_id]

    def batch_complete(sp) -> bool:
        return {"decode", "chunk", "diff", "embed", "upsert"} <= {x.attributes.get("eddy.step")
                                                                   for x in batch_of_the_change(sp)}

    batch_spans = batch_of_the_change(wait_for_spans(s, batch_complete))
    batch = assert_connected(batch_spans)
    assert batch.name == "index batch" and batch.attributes["eddy.step"] == "batch"
    assert [link for link in process.links if link[0] == batch.trace_id] != []
    assert {span_id for t, span_id in process.links if t == batch.trace_id} <= {x.span_id for x in batch_spans}
