"""Monitor state, alert rules and trace decoding, with events built in memory (no broker)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import generate_latest

from agents.monitor import Monitor
from components.monitoring import AlertEvaluator, MonitorState, ks_statistic, price_of
from config.settings import Settings
from schemas import AlertRule, AnswerEvent, Citation, DeadLetter, Feedback, IndexEvent, ModelPrice, Timings, Usage
from streams.codec import decode_traces
from streams.dlq import DeadLetters
from streams.records import MemoryPublisher, RawRecord

T0 = 1_800_000_000.0


def at(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def final(t: float, ttft_ms: float, *, score: float = 0.8, model: str = "SmolLM2-135M-Instruct (GGUF)") -> AnswerEvent:
    return AnswerEvent(
        query_id=f"q{t}", kind="final", seq=1, text="a", occurred_at=at(t), model=model,
        usage=Usage(prompt_tokens=1000, completion_tokens=100),
        timings=Timings(queue_ms=1, retrieve_ms=10, prompt_ms=1, ttft_ms=ttft_ms, generate_ms=2000, total_ms=2100),
        citations=[Citation(doc_id="d", chunk_id="c", uri="u", title="t", score=score)],
    )


def settings(**kw) -> Settings:
    return Settings(monitor_window_s=60, drift_reference_size=10, drift_recent_size=10, **kw)


def test_figures_tokens_cost_and_prometheus_text():
    s = settings(model_prices={"SmolLM2*": ModelPrice(input_usd_per_mtok=1.0, output_usd_per_mtok=10.0)})
    state = MonitorState(s)
    for i, ttft in enumerate([100, 200, 300, 400]):
        state.on_answer(final(T0 + i, ttft))
    state.on_answer(AnswerEvent(query_id="qe", kind="error", seq=0, error="boom", occurred_at=at(T0 + 4)))
    state.on_index_event(IndexEvent(doc_id="d", version=1, change_id="c", status="indexed", collection="c",
                                    embedder="e", chunker="k", lag_ms=1500, occurred_at=at(T0 + 4), chunks_total=1,
                                    chunks_embedded=1, chunks_deleted=0, chunks_unchanged=0))
    state.on_feedback(Feedback(query_id="q1", rating="down", occurred_at=at(T0 + 4)))
    state.on_dead_letter(DeadLetter(source_topic="x", partition=0, offset=1, value_b64="", value_bytes=0,
                                    reason="r", error_type="schema", agent="answerer", occurred_at=at(T0 + 4)))
    v = state.values(T0 + 5)
    assert v["queries_per_min"] == 5.0  # 5 terminal answers in a 60 s window
    assert v["ttft_p50_ms"] == 250.0
    assert v["error_rate"] == pytest.approx(0.2)
    assert v["tokens_per_s_p50"] == 50.0  # 100 tokens in 2 s
    assert v["freshness_lag_p95_ms"] == 1500.0
    assert v["dlq_per_min"] == 1.0 and v["feedback_down_ratio"] == 1.0
    # 4 answers x (1000 in at $1/M + 100 out at $10/M) = 4 x $0.002
    assert state.totals["cost_usd"] == pytest.approx(0.008)
    text = generate_latest(state.registry).decode()
    assert 'eddy_answers_total{kind="final"} 4.0' in text
    assert 'eddy_tokens_total{model="SmolLM2-135M-Instruct (GGUF)",type="output"} 400.0' in text
    assert "# TYPE eddy_ttft_p95_ms gauge" in text  # windowed figures as gauges (at the real time: no data)
    # Outside the window the rates fall to zero while the totals stay.
    later = state.values(T0 + 200)
    assert later["queries_per_min"] == 0 and later["ttft_p95_ms"] is None and state.totals["answers"] == 5


def test_alert_fires_after_for_s_and_resolves():
    rule = AlertRule(name="slow", metric="ttft_p95_ms", threshold=500, for_s=10)
    ev = AlertEvaluator([rule])
    assert ev.evaluate({"ttft_p95_ms": 900}, T0) == []  # pending
    assert ev.evaluate({"ttft_p95_ms": 900}, T0 + 5) == []
    fired = ev.evaluate({"ttft_p95_ms": 800}, T0 + 10)
    assert [(a.rule, a.state, a.value) for a in fired] == [("slow", "firing", 800)]
    assert fired[0].since == at(T0)
    assert ev.evaluate({"ttft_p95_ms": 800}, T0 + 11) == []  # fires once
    resolved = ev.evaluate({"ttft_p95_ms": None}, T0 + 12)
    assert [(a.state, a.value) for a in resolved] == [("resolved", None)]
    # A breach shorter than for_s never fires.
    assert ev.evaluate({"ttft_p95_ms": 900}, T0 + 20) == [] and ev.evaluate({"ttft_p95_ms": 1}, T0 + 25) == []


def test_unknown_figure_in_a_rule_is_rejected():
    with pytest.raises(ValueError, match="unknown figures"):
        AlertEvaluator([AlertRule(name="x", metric="nope", threshold=1)])


def test_retrieval_score_drift_is_the_ks_statistic_of_recent_vs_reference():
    state = MonitorState(settings())
    for i in range(10):
        state.on_answer(final(T0 + i, 100, score=0.80 + i * 0.001))
    assert state.values(T0 + 10)["retrieval_score_drift_ks"] is None  # recent window not full yet
    for i in range(10):
        state.on_answer(final(T0 + 10 + i, 100, score=0.40 + i * 0.001))
    assert state.values(T0 + 20)["retrieval_score_drift_ks"] == 1.0  # disjoint distributions
    assert ks_statistic([1, 2, 3], [1, 2, 3]) == 0.0


def test_price_table_exact_name_then_glob():
    prices = {"m*": ModelPrice(input_usd_per_mtok=1), "m1": ModelPrice(input_usd_per_mtok=2)}
    assert price_of("m1", prices).input_usd_per_mtok == 2
    assert price_of("m2", prices).input_usd_per_mtok == 1
    assert price_of("other", prices) is None


def test_spans_give_step_latencies_and_waterfalls():
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "eddy-worker"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("eddy.answerer")
    with tracer.start_as_current_span("process q", attributes={"eddy.step": "process"}):
        with tracer.start_as_current_span("retrieve", attributes={"eddy.step": "retrieve"}):
            pass
    state = MonitorState(settings())
    assert state.on_traces(decode_traces(encode_spans(exporter.get_finished_spans()).SerializeToString())) == 2
    snap = state.snapshot(max(s.end_time for s in exporter.get_finished_spans()) / 1e9)
    assert {(s["agent"], s["step"]) for s in snap["steps"]} == {("answerer", "process"), ("answerer", "retrieve")}
    (trace,) = snap["traces"]
    by_name = {s["name"]: s for s in trace["spans"]}
    assert by_name["retrieve"]["parent_id"] == by_name["process q"]["span_id"]
    assert by_name["process q"]["service"] == "eddy-worker"


def test_undecodable_records_go_to_the_dlq_and_alerts_are_published():
    s = settings(alert_rules=[AlertRule(name="dlq", metric="dlq_per_min", threshold=0, for_s=0)])
    publisher = MemoryPublisher()
    monitor = Monitor(s, MonitorState(s), publisher, DeadLetters(publisher, s.topic("dlq"), "monitor"))
    record = RawRecord(topic=s.topic("traces"), partition=0, offset=7, key=b"k", value=b"\xff\xff not protobuf")
    asyncio.run(monitor.handle(record))
    bad_answer = RawRecord(topic=s.topic("answers"), partition=0, offset=8, key=b"q", value=b"{not json")
    asyncio.run(monitor.handle(bad_answer))
    letters = [DeadLetter.model_validate_json(v) for v in publisher.on(s.topic("dlq"))]
    assert [(d.error_type, d.offset) for d in letters] == [("malformed_protobuf", 7), ("malformed_json", 8)]
    for letter in letters:  # the monitor reads its own DLQ output
        asyncio.run(monitor.handle(RawRecord(topic=s.topic("dlq"), partition=0, offset=0, key=None,
                                             value=letter.to_bytes())))
    alerts = asyncio.run(monitor.tick())
    assert [(a.rule, a.state) for a in alerts] == [("dlq", "firing")]
    assert publisher.on(s.topic("alerts")) == [alerts[0].to_bytes()]


def test_grafana_dashboard_queries_only_metrics_the_monitor_exports():
    import json
    import re

    from config.settings import REPO_ROOT
    from eddy.telemetry import ExporterStats

    state = MonitorState(settings(), exporter_stats=ExporterStats())
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    exported = {m.name + suffix for m in state.registry.collect() for suffix in suffixes[m.type]}
    dashboard = json.loads((REPO_ROOT / "infra" / "grafana" / "eddy-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", []) if "expr" in t]
    used = {name for e in exprs for name in re.findall(r"\beddy_[a-z0-9_]+", e)}
    assert used and used <= exported, f"not exported by the monitor: {sorted(used - exported)}"
    titles = {p["title"].split(" (")[0] for p in dashboard["panels"]}
    assert {"Throughput", "Latency per step", "Time to first token", "Tokens", "Cost", "Freshness lag",
            "Consumer lag per group", "Errors and dead letters", "Feedback", "Active alerts",
            "Latest traces"} <= titles
