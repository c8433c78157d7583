"""The monitor agent against the real broker: Prometheus metrics from live traffic, and an alert
rule that fires and then resolves, published on ``alerts``."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest
from confluent_kafka import Producer

from infra.process import poll_until
from schemas import Alert, AlertRule, DocumentChange, Feedback
from tests.integration.helpers import publish_and_wait, read_topic

pytestmark = pytest.mark.integration


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def wait_metrics(url: str, lines: list[str], timeout_s: float = 60.0) -> str:
    text = ""

    def shows_all() -> bool:
        nonlocal text
        try:
            text = get(url)
        except OSError:
            text = ""
        return all(line in text for line in lines)

    if not poll_until(shows_all, timeout_s=timeout_s, interval_s=0.5):
        raise AssertionError(f"/metrics never showed {[line for line in lines if line not in text]}")
    return text


@pytest.fixture
def monitored(obs_settings, obs_stack):
    rules = [AlertRule(name="dlq_growth", metric="dlq_per_min", threshold=0, for_s=1, severity="warning"),
             AlertRule(name="ttft_slo", metric="ttft_p95_ms", threshold=1e9, for_s=0)]
    settings = obs_settings.model_copy(update={"alert_rules": rules, "monitor_window_s": 10.0})
    obs_stack.settings = settings
    obs_stack.start_worker(("indexer", "answerer", "monitor"))
    return settings


def test_metrics_and_alert_fire_then_resolve(monitored, client):
    s = monitored
    base = f"http://127.0.0.1:{s.monitor_port}"
    publish_and_wait(client, [DocumentChange(op="upsert", doc_id="d1", version=1, title="Copying",
                                             text="Use shutil.copy(src, dst) to copy a file.",
                                             content_type="text/plain")], timeout_s=120)

    async def ask():
        return [e async for e in client.ask("How do I copy a file?", timeout_s=120)]

    final = asyncio.run(ask())[-1]
    assert final.kind == "final"
    producer = Producer({"bootstrap.servers": s.bootstrap_servers})
    producer.produce(s.topic("feedback"), key=final.query_id.encode(),
                     value=Feedback(query_id=final.query_id, rating="up").to_bytes())
    producer.produce(s.topic("queries"), key=b"c-bad", value=b"{this is not json")  # -> dlq -> alert
    producer.flush(10)

    wait_metrics(f"{base}/metrics", ['eddy_alert_firing{rule="dlq_growth"} 1.0'])
    text = wait_metrics(f"{base}/metrics", [
        'eddy_answers_total{kind="final"} 1.0',
        'eddy_feedback_total{rating="up"} 1.0',
        'eddy_dead_letters_total{agent="answerer",error_type="malformed_json"} 1.0',
        'eddy_index_events_total{status="indexed"} 1.0',
        'eddy_step_duration_seconds_count{agent="answerer",step="retrieve"} 1.0',
        f'eddy_consumer_lag_records{{group="{s.group_id}"',
    ])
    assert f'eddy_tokens_total{{model="echo",type="output"}} {float(final.usage.completion_tokens)}' in text
    assert "eddy_trace_spans_delivered_total" in text
    # The DLQ record leaves the 10 s window: the rule resolves.
    wait_metrics(f"{base}/metrics", ['eddy_alert_firing{rule="dlq_growth"} 0.0'], timeout_s=40)
    alerts = [Alert.model_validate_json(m.value()) for m in read_topic(s, "alerts", min_count=2)]
    assert [(a.rule, a.state) for a in alerts] == [("dlq_growth", "firing"), ("dlq_growth", "resolved")]
    assert all(m.key() == b"dlq_growth" for m in read_topic(s, "alerts", min_count=2))
    assert alerts[0].value > 0 and alerts[0].threshold == 0 and alerts[1].value == 0
