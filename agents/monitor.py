"""Monitor agent: live metrics, alerts and the dashboard's state, computed from the topics.

Consumes ``traces`` (OTLP ``ExportTraceServiceRequest`` protobuf), ``index.events``,
``answers``, ``feedback`` and ``dlq``; polls consumer lag per group every
``monitor_lag_interval_s``. Maintains request rate, latency percentiles per step (from the
spans' ``eddy.step``), TTFT, generation tokens/s, token usage and cost (``model_prices``),
error and DLQ rates, freshness lag, consumer lag, feedback (up/down) and retrieval-score drift,
kept in a :class:`components.monitoring.MonitorState` that the worker serves on
``monitor_host:monitor_port``: ``/metrics`` (Prometheus text format, ``prometheus-client``) and
``/api/state`` (JSON, what ``eddy dashboard`` draws). Produces
``alerts`` (Alert, keyed by rule name) when a rule of ``alert_rules`` fires and when it resolves.

Delivery: the figures are in-memory views. Windowed figures (rates, percentiles over the last
``monitor_window_s``) place each event at its own time (``occurred_at``, span end), so records
replayed after a restart count in the totals but not in the current window; Prometheus
counters restart from 0 with the process, as Prometheus expects. Alerts are published with
acks=all at each transition; after a restart a condition that still holds fires again once it
has held ``for_s`` seconds.

Scale: the monitor sees the partitions its consumer group assigns it, so run ONE monitor per
cluster (``eddy worker --agents monitor`` with a group of its own, ``EDDY_GROUP_ID``): several
would each compute windowed figures and alerts over a share of the traffic.

Failures: an undecodable record (malformed protobuf on ``traces``; malformed JSON or schema on
the JSON topics) goes to ``dlq`` (except records of ``dlq`` itself, which are counted and
logged: re-dead-lettering them could loop) and the monitor goes on; so does a record whose state
update fails in any other way (``processing``). When the dead-letter topic itself cannot be
written, ``handle`` raises DeadLetterError and the record is not acknowledged (the worker stops).
The monitor creates no spans: its input is the trace topic, so spans of its own would feed back
into it.
"""

from __future__ import annotations

import asyncio
import logging
import time

from confluent_kafka import KafkaException

from components.monitoring import MonitorState
from config.settings import MAX_RECORD_BYTES, Settings
from schemas import Alert, AnswerEvent, DeadLetter, Feedback, IndexEvent
from streams.admin import consumer_lag
from streams.codec import DecodeError, decode, decode_traces
from streams.dlq import DeadLetterError, DeadLetters
from streams.records import Publisher, RawRecord
from streams.topics import ALERTS, ANSWERS, DLQ, FEEDBACK, INDEX_EVENTS, TRACES, TopicSpec

log = logging.getLogger(__name__)

#: Topics the monitor consumes.
MONITORED: tuple[TopicSpec, ...] = (TRACES, INDEX_EVENTS, ANSWERS, FEEDBACK, DLQ)


class Monitor:
    """The agent's record handling around a :class:`MonitorState`: decode → state, failures → DLQ."""

    name = "monitor"

    def __init__(self, settings: Settings, state: MonitorState, publisher: Publisher,
                 dead_letters: DeadLetters) -> None:
        self.settings = settings
        self.state = state
        self.publisher = publisher
        self.dead_letters = dead_letters
        self.alerts_topic = ALERTS.full_name(settings)
        self.dlq_topic = DLQ.full_name(settings)
        self._traces_topic = TRACES.full_name(settings)
        self._routes = {  # JSON topic -> (schema, state update)
            ANSWERS.full_name(settings): (AnswerEvent, state.on_answer),
            INDEX_EVENTS.full_name(settings): (IndexEvent, state.on_index_event),
            FEEDBACK.full_name(settings): (Feedback, state.on_feedback),
            self.dlq_topic: (DeadLetter, state.on_dead_letter),
        }

    async def handle(self, record: RawRecord) -> None:
        """Feed one record of any of the monitored topics into the state (records of other topics are ignored)."""
        try:
            if record.topic == self._traces_topic:
                self.state.on_traces(decode_traces(record.value))
            elif (route := self._routes.get(record.topic)) is not None:
                schema, update = route
                update(decode(schema, record.value, max_bytes=MAX_RECORD_BYTES, origin=record))
        except DecodeError as exc:
            await self._reject(record, exc.error_type, exc.reason)
        except DeadLetterError:
            raise
        except Exception as exc:  # boundary: one record's failure is that record's alone
            log.exception("monitoring %s[%d]@%d failed", record.topic, record.partition, record.offset)
            await self._reject(record, "processing", f"monitoring failed: {type(exc).__name__}: {exc}")

    async def _reject(self, record: RawRecord, error_type: str, reason: str) -> None:
        if record.topic == self.dlq_topic:
            log.warning("unreadable dead letter at %s[%d]@%d: %s", record.topic, record.partition,
                        record.offset, reason)
            return
        await self.dead_letters.send(record, error_type, reason)

    async def tick(self, now: float | None = None) -> list[Alert]:
        """Evaluate rules; publish each transition on ``alerts`` (acks=all)."""
        alerts = self.state.tick(time.time() if now is None else now)
        for alert in alerts:
            log.warning("alert %s %s: %s %s %s (value %s)", alert.rule, alert.state, alert.metric, alert.op,
                        alert.threshold, alert.value)
            await self.publisher.publish(self.alerts_topic, alert.rule, alert.to_bytes(), wait=True)
        return alerts

    async def poll_consumer_lag(self) -> None:
        """Poll every consumer group's lag (``streams.admin.consumer_lag``) into the state; a failed poll is logged."""
        try:
            self.state.on_consumer_lag(await asyncio.to_thread(consumer_lag, self.settings))
        except KafkaException as exc:
            log.warning("consumer lag poll failed: %s", exc)
