"""The monitor's figures and alert rules, fed one event at a time: no I/O, unit-testable.

:class:`Window` (sliding-window rates and percentiles), :func:`ks_statistic` (retrieval-score
drift), :class:`AlertEvaluator` (the fire/resolve state machine of ``alert_rules``) and
:class:`MonitorState` (every figure of the monitor agent, its Prometheus metrics in a registry of
its own, and the latest traces decoded from OTLP protobuf). ``agents/monitor.py`` feeds it from the
topics; the worker serves its ``/metrics`` and ``/api/state``.
"""

from __future__ import annotations

import fnmatch
import math
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from components.stats import percentile
from config.settings import Settings
from schemas import Alert, AlertRule, AnswerEvent, DeadLetter, Feedback, IndexEvent, ModelPrice

#: Figures alert rules can name (``MonitorState.values``); all windowed over ``monitor_window_s``
#: except ``consumer_lag_max`` (latest poll) and the drift statistic (count-based windows).
FIGURES = (
    "queries_per_min", "index_events_per_min", "ttft_p50_ms", "ttft_p95_ms", "tokens_per_s_p50",
    "error_rate", "errors_per_min", "dlq_per_min", "freshness_lag_p50_ms", "freshness_lag_p95_ms",
    "consumer_lag_max", "feedback_up_per_min", "feedback_down_per_min", "feedback_down_ratio",
    "retrieval_score_drift_ks", "index_refused_per_min", "index_conflicts_per_min",
)
#: Series kept for the dashboard's time charts (one sample per tick).
HISTORY_FIGURES = (
    "queries_per_min", "index_events_per_min", "ttft_p50_ms", "ttft_p95_ms", "tokens_per_s_p50",
    "errors_per_min", "dlq_per_min", "freshness_lag_p95_ms", "consumer_lag_max", "cost_usd_total",
    "input_tokens_total", "output_tokens_total",
)
_MAX_TRACES = 10
_MAX_SPANS_PER_TRACE = 200
_HISTORY_POINTS = 300


class Window:
    """Values with their times (UNIX seconds); those older than ``now - window_s`` are dropped."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._items: deque[tuple[float, float]] = deque()

    def add(self, t: float, value: float = 1.0) -> None:
        if self._items and t < self._items[-1][0]:
            # Late event (another partition): keep times sorted so pruning stays a popleft loop.
            items = sorted([*self._items, (t, value)])
            self._items = deque(items)
        else:
            self._items.append((t, value))

    def values(self, now: float) -> list[float]:
        cutoff = now - self.window_s
        while self._items and self._items[0][0] < cutoff:
            self._items.popleft()
        return [v for t, v in self._items if t <= now]

    def per_min(self, now: float) -> float:
        return len(self.values(now)) * 60.0 / self.window_s

    def percentile(self, now: float, q: float) -> float | None:
        values = self.values(now)
        return percentile(values, q) if values else None


def ks_statistic(reference: Iterable[float], recent: Iterable[float]) -> float:
    """Two-sample Kolmogorov–Smirnov statistic D = sup |F_ref(x) − F_recent(x)| in [0, 1]
    (scipy.stats.ks_2samp; 0 = same distribution, 1 = disjoint)."""
    from scipy.stats import ks_2samp

    return float(ks_2samp(list(reference), list(recent)).statistic)


def price_of(model: str, prices: dict[str, ModelPrice]) -> ModelPrice | None:
    """The price-table entry whose glob pattern matches ``model`` (exact names win), or None."""
    if model in prices:
        return prices[model]
    for pattern, price in prices.items():
        if fnmatch.fnmatchcase(model, pattern):
            return price
    return None


class AlertEvaluator:
    """Rule state machine: ok → pending (condition holds) → firing (held ``for_s``) → resolved (stops holding)."""

    def __init__(self, rules: Iterable[AlertRule]) -> None:
        self.rules = list(rules)
        unknown = sorted({r.metric for r in self.rules} - set(FIGURES))
        if unknown:
            raise ValueError(f"alert rules name unknown figures {unknown}; known: {', '.join(FIGURES)}")
        self.pending: dict[str, float] = {}
        self.firing: dict[str, Alert] = {}

    @staticmethod
    def _holds(rule: AlertRule, value: float | None) -> bool:
        if value is None or math.isnan(value):
            return False
        return {">": value > rule.threshold, ">=": value >= rule.threshold,
                "<": value < rule.threshold, "<=": value <= rule.threshold}[rule.op]

    def evaluate(self, values: dict[str, float | None], now: float) -> list[Alert]:
        """Transitions at ``now`` (UNIX s): an Alert ``firing`` or ``resolved`` per rule that changed."""
        out: list[Alert] = []
        for rule in self.rules:
            value = values.get(rule.metric)
            if self._holds(rule, value):
                since = self.pending.setdefault(rule.name, now)
                if rule.name not in self.firing and now - since >= rule.for_s:
                    alert = self._alert(rule, "firing", value, since)
                    self.firing[rule.name] = alert
                    out.append(alert)
            else:
                self.pending.pop(rule.name, None)
                fired = self.firing.pop(rule.name, None)
                if fired is not None:
                    out.append(self._alert(rule, "resolved", value, fired.since.timestamp()))
        return out

    @staticmethod
    def _alert(rule: AlertRule, state: str, value: float | None, since: float) -> Alert:
        from datetime import UTC, datetime

        return Alert(rule=rule.name, state=state, severity=rule.severity, metric=rule.metric, op=rule.op,
                     threshold=rule.threshold, value=value, for_s=rule.for_s,
                     since=datetime.fromtimestamp(since, UTC), description=rule.description)


@dataclass
class _Trace:
    first_seen: float
    spans: dict[str, dict[str, Any]] = field(default_factory=dict)


def _any_value(value) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind in ("string_value", "int_value", "double_value", "bool_value") else None


class MonitorState:
    """Everything the monitor knows, fed one event at a time; no I/O (unit-testable).

    ``registry`` receives the Prometheus metrics (a fresh ``CollectorRegistry`` per state).
    ``exporter_stats`` (``streams.tracing.ExporterStats`` of this process, optional) is exposed
    as ``eddy_trace_spans_{queued,delivered,dropped}_total``.
    """

    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None,
                 exporter_stats: object | None = None) -> None:
        self.settings = settings
        self.window_s = settings.monitor_window_s
        self.prices = settings.model_prices
        self.evaluator = AlertEvaluator(settings.alert_rules)
        w = lambda: Window(self.window_s)  # noqa: E731
        self.answers, self.errors, self.ttft, self.tokens_per_s = w(), w(), w(), w()
        self.index_events, self.freshness, self.dlq = w(), w(), w()
        self.index_refused, self.index_conflicts = w(), w()  # changes refused by the version rule; fenced writes
        self.feedback = {"up": w(), "down": w()}
        self.steps: dict[tuple[str, str], Window] = {}
        self.reference_scores: list[float] = []
        self.recent_scores: deque[float] = deque(maxlen=settings.drift_recent_size)
        self.consumer_lag: dict[str, dict[str, int]] = {}
        self.traces: OrderedDict[str, _Trace] = OrderedDict()
        self.totals = {"answers": 0, "errors": 0, "index_events": 0, "index_refused": 0, "index_conflicts": 0,
                       "dead_letters": 0, "feedback_up": 0,
                       "feedback_down": 0, "spans": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0}
        self.history: deque[dict[str, float | None]] = deque(maxlen=_HISTORY_POINTS)
        self.exporter_stats = exporter_stats
        self.registry = registry if registry is not None else CollectorRegistry()
        self._metrics(self.registry)

    # ------------------------------------------------------------------ Prometheus
    def _metrics(self, r: CollectorRegistry) -> None:
        self.m_answers = Counter("eddy_answers", "terminal answer events", ["kind"], registry=r)
        self.m_steps = Histogram("eddy_step_duration_seconds", "duration of one traced step", ["agent", "step"],
                                 registry=r, buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60))
        self.m_ttft = Histogram("eddy_ttft_seconds", "query picked up -> first token", registry=r,
                                buckets=(.05, .1, .25, .5, 1, 2, 3, 5, 10, 30))
        self.m_tps = Histogram("eddy_generation_tokens_per_second", "completion tokens / generation time",
                               registry=r, buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500))
        self.m_tokens = Counter("eddy_tokens", "generation tokens", ["model", "type"], registry=r)
        self.m_cost = Counter("eddy_cost_usd", "token cost by the configured price table, USD", ["model"], registry=r)
        self.m_dlq = Counter("eddy_dead_letters", "dead letters", ["agent", "error_type"], registry=r)
        self.m_index = Counter("eddy_index_events", "index events", ["status"], registry=r)
        self.m_fresh = Histogram("eddy_freshness_lag_seconds", "change published -> searchable", registry=r,
                                 buckets=(.1, .25, .5, 1, 2, 5, 10, 30, 60, 300, 900))
        self.m_feedback = Counter("eddy_feedback", "feedback events", ["rating"], registry=r)
        self.m_lag = Gauge("eddy_consumer_lag_records", "committed offset behind the log end", ["group", "topic"],
                           registry=r)
        self.m_alert = Gauge("eddy_alert_firing", "1 while the alert rule fires", ["rule"], registry=r)
        state = self

        class _Figures:
            def collect(self):
                values = state.values(time.time())
                for name in FIGURES:
                    g = GaugeMetricFamily(f"eddy_{name}", f"{name} over the last monitor_window_s (monitor)")
                    g.add_metric([], float("nan") if values[name] is None else values[name])
                    yield g
                stats = state.exporter_stats
                if stats is not None:
                    for attr in ("queued", "delivered", "dropped"):
                        c = CounterMetricFamily(f"eddy_trace_spans_{attr}", f"spans {attr} by this process's "
                                                "Kafka span exporter")
                        c.add_metric([], getattr(stats, attr))
                        yield c

        r.register(_Figures())

    # ------------------------------------------------------------------ events
    def on_answer(self, event: AnswerEvent) -> None:
        if not event.terminal:
            return
        t = event.occurred_at.timestamp()
        self.totals["answers"] += 1
        self.answers.add(t)
        self.m_answers.labels(event.kind).inc()
        if event.kind == "error":
            self.totals["errors"] += 1
            self.errors.add(t)
            return
        if event.timings is not None and event.usage is not None:  # retrieval-only answers generate nothing
            self.ttft.add(t, event.timings.ttft_ms)
            self.m_ttft.observe(event.timings.ttft_ms / 1000)
            if event.usage is not None and event.timings.generate_ms > 0:
                tps = event.usage.completion_tokens / (event.timings.generate_ms / 1000)
                self.tokens_per_s.add(t, tps)
                self.m_tps.observe(tps)
        if event.usage is not None:
            model = event.model or "unknown"
            n_in, n_out = event.usage.prompt_tokens, event.usage.completion_tokens
            self.totals["input_tokens"] += n_in
            self.totals["output_tokens"] += n_out
            self.m_tokens.labels(model, "input").inc(n_in)
            self.m_tokens.labels(model, "output").inc(n_out)
            price = price_of(model, self.prices)
            if price is not None:
                cost = (n_in * price.input_usd_per_mtok + n_out * price.output_usd_per_mtok) / 1e6
                self.totals["cost_usd"] += cost
                self.m_cost.labels(model).inc(cost)
        scores = [r.score for r in event.retrieved or ()] or [c.score for c in event.citations]
        if scores:
            top = max(scores)
            if len(self.reference_scores) < self.settings.drift_reference_size:
                self.reference_scores.append(top)
            else:
                self.recent_scores.append(top)

    def on_index_event(self, event: IndexEvent) -> None:
        t = event.occurred_at.timestamp()
        self.totals["index_events"] += 1
        self.index_events.add(t)
        self.m_index.labels(event.status).inc()
        if event.status in ("refused", "conflict"):
            self.totals["index_refused" if event.status == "refused" else "index_conflicts"] += 1
            (self.index_refused if event.status == "refused" else self.index_conflicts).add(t)
        if event.status in ("indexed", "deleted", "unchanged"):
            self.freshness.add(t, event.lag_ms)
            self.m_fresh.observe(event.lag_ms / 1000)

    def on_dead_letter(self, letter: DeadLetter) -> None:
        self.totals["dead_letters"] += 1
        self.dlq.add(letter.occurred_at.timestamp())
        self.m_dlq.labels(letter.agent, letter.error_type).inc()

    def on_feedback(self, feedback: Feedback) -> None:
        self.totals[f"feedback_{feedback.rating}"] += 1
        self.feedback[feedback.rating].add(feedback.occurred_at.timestamp())
        self.m_feedback.labels(feedback.rating).inc()

    def on_consumer_lag(self, lag: dict[str, dict[str, int]]) -> None:
        self.consumer_lag = lag
        self.m_lag.clear()
        for group, topics in lag.items():
            for topic, records in topics.items():
                self.m_lag.labels(group, topic).set(records)

    def on_traces(self, request: ExportTraceServiceRequest) -> int:
        """Take the spans of one ``traces`` record (decoded by ``streams.codec.decode_traces``); returns
        how many were read."""
        n = 0
        for resource_spans in request.resource_spans:
            service = next((_any_value(a.value) for a in resource_spans.resource.attributes
                            if a.key == "service.name"), "") or "unknown"
            for scope_spans in resource_spans.scope_spans:
                agent = scope_spans.scope.name.removeprefix("eddy.") or service
                for span in scope_spans.spans:
                    self._on_span(service, agent, span)
                    n += 1
        self.totals["spans"] += n
        return n

    def _on_span(self, service: str, agent: str, span) -> None:
        attrs = {a.key: _any_value(a.value) for a in span.attributes}
        duration_ms = (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6
        end_s = span.end_time_unix_nano / 1e9
        step = attrs.get("eddy.step")
        if isinstance(step, str):
            self.steps.setdefault((agent, step), Window(self.window_s)).add(end_s, duration_ms)
            self.m_steps.labels(agent, step).observe(duration_ms / 1000)
        trace_id = span.trace_id.hex()
        entry = self.traces.get(trace_id)
        if entry is None:
            entry = self.traces[trace_id] = _Trace(first_seen=time.time())
            while len(self.traces) > _MAX_TRACES:
                self.traces.popitem(last=False)
        if len(entry.spans) < _MAX_SPANS_PER_TRACE:
            entry.spans[span.span_id.hex()] = {
                "span_id": span.span_id.hex(), "parent_id": span.parent_span_id.hex() or None,
                "name": span.name, "service": service, "agent": agent, "step": step,
                "start_ns": span.start_time_unix_nano, "duration_ms": round(duration_ms, 3),
                "error": span.status.code == 2,
            }

    # ------------------------------------------------------------------ figures
    def values(self, now: float) -> dict[str, float | None]:
        """The windowed figures at ``now`` (UNIX s): see FIGURES; None where there is no data."""
        answers = len(self.answers.values(now))
        errors = len(self.errors.values(now))
        up, down = (len(self.feedback[r].values(now)) for r in ("up", "down"))
        lags = [v for topics in self.consumer_lag.values() for v in topics.values()]
        drift = None
        if len(self.reference_scores) >= self.settings.drift_reference_size and \
                len(self.recent_scores) >= self.settings.drift_recent_size:
            drift = ks_statistic(self.reference_scores, self.recent_scores)
        per_min = 60.0 / self.window_s
        return {
            "queries_per_min": answers * per_min,
            "index_events_per_min": self.index_events.per_min(now),
            "ttft_p50_ms": self.ttft.percentile(now, 50),
            "ttft_p95_ms": self.ttft.percentile(now, 95),
            "tokens_per_s_p50": self.tokens_per_s.percentile(now, 50),
            "error_rate": errors / answers if answers else None,
            "errors_per_min": errors * per_min,
            "dlq_per_min": self.dlq.per_min(now),
            "freshness_lag_p50_ms": self.freshness.percentile(now, 50),
            "freshness_lag_p95_ms": self.freshness.percentile(now, 95),
            "consumer_lag_max": float(max(lags)) if lags else None,
            "feedback_up_per_min": up * per_min,
            "feedback_down_per_min": down * per_min,
            "feedback_down_ratio": down / (up + down) if up + down else None,
            "retrieval_score_drift_ks": drift,
            "index_refused_per_min": self.index_refused.per_min(now),
            "index_conflicts_per_min": self.index_conflicts.per_min(now),
        }

    def tick(self, now: float) -> list[Alert]:
        """Evaluate the alert rules and sample the history; returns the alert transitions."""
        values = self.values(now)
        alerts = self.evaluator.evaluate(values, now)
        for alert in alerts:
            self.m_alert.labels(alert.rule).set(1 if alert.state == "firing" else 0)
        self.history.append({"t": now, **{k: values.get(k) for k in HISTORY_FIGURES if k in values},
                             "cost_usd_total": self.totals["cost_usd"],
                             "input_tokens_total": float(self.totals["input_tokens"]),
                             "output_tokens_total": float(self.totals["output_tokens"])})
        return alerts

    def snapshot(self, now: float) -> dict[str, Any]:
        """JSON-ready state for the dashboard (``/api/state``)."""
        values = self.values(now)
        steps = []
        for (agent, step), window in sorted(self.steps.items()):
            durations = window.values(now)
            if durations:
                steps.append({"agent": agent, "step": step, "count": len(durations),
                              "p50_ms": round(percentile(durations, 50), 3),
                              "p95_ms": round(percentile(durations, 95), 3)})
        traces = []
        for trace_id, entry in reversed(self.traces.items()):
            spans = sorted(entry.spans.values(), key=lambda s: s["start_ns"])
            t0 = spans[0]["start_ns"] if spans else 0
            traces.append({"trace_id": trace_id, "spans": [
                {**{k: v for k, v in s.items() if k != "start_ns"}, "start_ms": round((s["start_ns"] - t0) / 1e6, 3)}
                for s in spans
            ]})
        stats = self.exporter_stats
        return {
            "now": now, "window_s": self.window_s,
            "figures": {k: (None if v is None else round(v, 4)) for k, v in values.items()},
            "totals": {k: round(v, 8) if isinstance(v, float) else v for k, v in self.totals.items()},
            "steps": steps,
            "consumer_lag": self.consumer_lag,
            "alerts": [a.model_dump(mode="json") for a in self.evaluator.firing.values()],
            "rules": [r.model_dump(mode="json") for r in self.evaluator.rules],
            "traces": traces,
            "history": {k: [h.get(k) for h in self.history] for k in ("t", *HISTORY_FIGURES)},
            "exporter": None if stats is None else {"queued": stats.queued, "delivered": stats.delivered,
                                                    "dropped": stats.dropped},
        }
