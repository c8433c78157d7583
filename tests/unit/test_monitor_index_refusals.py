"""The monitor counts refused and conflicting changes (issue 10, items 4 and 5): a windowed figure an
alert rule can name, a total, and the Prometheus counter by status."""

from __future__ import annotations

import time

from prometheus_client import generate_latest

from components.monitoring import FIGURES, MonitorState
from config.settings import Settings
from schemas import AlertRule, IndexEvent


def event(status: str) -> IndexEvent:
    return IndexEvent(doc_id="d", version=1, change_id="c", status=status, chunks_total=0, chunks_embedded=0,
                      chunks_deleted=0, chunks_unchanged=0, collection="c", embedder="e", chunker="k", lag_ms=0)


def test_refused_and_conflicting_changes_are_counted_and_can_alert():
    assert {"index_refused_per_min", "index_conflicts_per_min"} <= set(FIGURES)
    rule = AlertRule(name="index_refused", metric="index_refused_per_min", threshold=0, for_s=0)
    state = MonitorState(Settings(alert_rules=[rule], monitor_window_s=60))
    for status in ("indexed", "refused", "refused", "conflict", "stale"):
        state.on_index_event(event(status))
    now = time.time()
    values = state.values(now)
    assert values["index_refused_per_min"] == 2 and values["index_conflicts_per_min"] == 1
    assert state.totals["index_refused"] == 2 and state.totals["index_conflicts"] == 1
    [alert] = state.tick(now)
    assert alert.rule == "index_refused" and alert.state == "firing"
    assert 'eddy_index_events_total{status="refused"} 2.0' in generate_latest(state.registry).decode()
