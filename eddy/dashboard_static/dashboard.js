// Eddy dashboard: polls /api/state (the monitor's state, relayed) and draws it with Plotly.js.
"use strict";

const POLL_MS = Number(document.body.dataset.pollMs || 1000);
const LAYOUT = {margin: {l: 45, r: 10, t: 8, b: 30}, showlegend: true, legend: {orientation: "h", y: -0.25},
                font: {size: 10}, paper_bgcolor: "#fff", plot_bgcolor: "#fff"};
const CONFIG = {displayModeBar: false, responsive: true, staticPlot: false};

function fmt(v, digits = 1) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (Math.abs(v) >= 1000) return Math.round(v).toLocaleString("en-US");
  return Number(v).toFixed(digits).replace(/\.0+$/, "");
}

function tile(id, value, text) {
  const el = document.getElementById("tile-" + id);
  el.dataset.value = value === null || value === undefined ? "" : String(value);
  el.textContent = text;
}

function times(state) {
  return state.history.t.map((t) => new Date(t * 1000));
}

function line(el, x, series) {
  Plotly.react(el, series.map(([name, y, axis]) => ({x, y, name, type: "scatter", mode: "lines", yaxis: axis || "y"})),
               {...LAYOUT, margin: {...LAYOUT.margin, r: series.some((s) => s[2]) ? 55 : 10},
                yaxis2: {overlaying: "y", side: "right", showgrid: false}}, CONFIG);
}

function render(state) {
  const f = state.figures, tot = state.totals;
  tile("queries_per_min", f.queries_per_min, fmt(f.queries_per_min));
  tile("ttft_p95_ms", f.ttft_p95_ms, f.ttft_p95_ms === null ? "–" : fmt(f.ttft_p95_ms, 0) + " ms");
  tile("tokens_per_s_p50", f.tokens_per_s_p50, fmt(f.tokens_per_s_p50));
  tile("tokens", tot.input_tokens + "/" + tot.output_tokens, fmt(tot.input_tokens, 0) + " / " + fmt(tot.output_tokens, 0));
  tile("cost_usd", tot.cost_usd, "$" + Number(tot.cost_usd).toFixed(6));
  tile("freshness_lag_p95_ms", f.freshness_lag_p95_ms,
       f.freshness_lag_p95_ms === null ? "–" : fmt(f.freshness_lag_p95_ms, 0) + " ms");
  tile("consumer_lag_max", f.consumer_lag_max, fmt(f.consumer_lag_max, 0));
  tile("errors_per_min", f.errors_per_min, fmt(f.errors_per_min, 2));
  tile("dlq_per_min", f.dlq_per_min, fmt(f.dlq_per_min, 2));
  tile("feedback", tot.feedback_up + "/" + tot.feedback_down, tot.feedback_up + " / " + tot.feedback_down);
  tile("answers", tot.answers, String(tot.answers));
  tile("alerts", state.alerts.length, String(state.alerts.length));

  const x = times(state), h = state.history;
  line("chart-throughput", x, [["queries/min", h.queries_per_min], ["index events/min", h.index_events_per_min]]);
  line("chart-ttft", x, [["p50 ms", h.ttft_p50_ms], ["p95 ms", h.ttft_p95_ms]]);
  line("chart-tokens", x, [["input tokens", h.input_tokens_total], ["output tokens", h.output_tokens_total],
                           ["cost USD", h.cost_usd_total, "y2"]]);
  line("chart-freshness", x, [["p95 lag ms", h.freshness_lag_p95_ms]]);
  line("chart-errors", x, [["errors/min", h.errors_per_min], ["dead letters/min", h.dlq_per_min]]);

  const steps = state.steps.map((s) => s.agent + " · " + s.step);
  Plotly.react("chart-steps", [
    {type: "bar", orientation: "h", y: steps, x: state.steps.map((s) => s.p50_ms), name: "p50 ms"},
    {type: "bar", orientation: "h", y: steps, x: state.steps.map((s) => s.p95_ms), name: "p95 ms"},
  ], {...LAYOUT, margin: {...LAYOUT.margin, l: 130}, barmode: "group"}, CONFIG);

  const lagNames = [], lagValues = [];
  for (const [group, topics] of Object.entries(state.consumer_lag)) {
    for (const [topic, lag] of Object.entries(topics)) { lagNames.push(group + " · " + topic); lagValues.push(lag); }
  }
  Plotly.react("chart-lag", [{type: "bar", orientation: "h", y: lagNames, x: lagValues, name: "records"}],
               {...LAYOUT, margin: {...LAYOUT.margin, l: 280}, showlegend: false}, CONFIG);
  Plotly.react("chart-feedback", [{type: "bar", x: ["up", "down"], y: [tot.feedback_up, tot.feedback_down],
                                   marker: {color: ["#2e7d32", "#c62828"]}}],
               {...LAYOUT, showlegend: false}, CONFIG);

  const body = document.querySelector("#alerts tbody");
  body.replaceChildren(...state.alerts.map((a) => {
    const tr = document.createElement("tr");
    tr.className = a.severity;
    for (const cell of [a.rule, a.severity, `${a.metric} ${a.op} ${a.threshold} for ${a.for_s} s`, fmt(a.value, 2),
                        new Date(a.since).toLocaleTimeString()]) {
      const td = document.createElement("td");
      td.textContent = cell;
      tr.appendChild(td);
    }
    return tr;
  }));

  renderTraces(state.traces.slice(0, 5));
}

function renderTraces(traces) {
  const box = document.getElementById("traces");
  const wanted = traces.map((t) => "trace-" + t.trace_id);
  for (const el of [...box.children]) if (!wanted.includes(el.id)) el.remove();
  traces.forEach((t, i) => {
    let el = document.getElementById("trace-" + t.trace_id);
    if (!el) {
      el = document.createElement("div");
      el.id = "trace-" + t.trace_id;
      el.className = "waterfall";
      box.appendChild(el);
    }
    if (box.children[i] !== el) box.insertBefore(el, box.children[i]);
    el.dataset.spans = String(t.spans.length);
    const labels = t.spans.map((s, k) => `${s.service}: ${s.name} #${k}`);
    Plotly.react(el, [{
      type: "bar", orientation: "h", y: labels, base: t.spans.map((s) => s.start_ms),
      x: t.spans.map((s) => Math.max(s.duration_ms, 0.05)),
      marker: {color: t.spans.map((s) => (s.error ? "#c62828" : "#3f6fb5"))},
      hovertemplate: "%{y}<br>start %{base:.1f} ms, %{x:.1f} ms<extra></extra>",
    }], {...LAYOUT, showlegend: false, margin: {l: 260, r: 10, t: 18, b: 25},
         title: {text: "trace " + t.trace_id, font: {size: 10}},
         yaxis: {autorange: "reversed", tickfont: {size: 9}}, xaxis: {title: {text: "ms"}}}, CONFIG);
  });
}

async function poll() {
  const status = document.getElementById("status");
  try {
    const response = await fetch("/api/state", {cache: "no-store"});
    const state = await response.json();
    if (!response.ok) throw new Error(state.error || response.statusText);
    render(state);
    status.textContent = "live";
    status.className = "status ok";
    document.getElementById("updated").textContent = "updated " + new Date(state.now * 1000).toLocaleTimeString();
    document.body.dataset.stateNow = String(state.now);
  } catch (err) {
    status.textContent = "monitor unreachable: " + err.message;
    status.className = "status down";
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
