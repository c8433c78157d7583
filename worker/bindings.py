"""Every agent of a worker bound to the faust app: its handler on its catalogue topics, its timers
and HTTP servers. Handlers are transport-neutral (``agents/``); this module is their only faust glue.

| agent | consumes | handler | extra |
|---|---|---|---|
| indexer | ``docs.changes`` | ``Indexer.handle_batch`` (``indexer_batch_max`` at a time) | |
| answerer | ``queries`` | ``Answerer.handle`` (``answerer_concurrency`` at once) | |
| monitor | ``traces``, ``index.events``, ``answers``, ``feedback``, ``dlq`` | ``Monitor.handle`` | timers, HTTP |
| curator | ``queries`` → ``curator.queries``; ``curator.queries`` + ``answers`` + ``feedback`` | \
``Curator.rekey``, ``Curator.handle_batch`` (one partition at a time) | join Table (RocksDB), sweep timer |

The indexer and the answerer get the consumer's assignment as their rebalance fence (``owns``).

Handlers isolate failures per record (a failing record goes to ``dlq``); what still escapes one —
the dead-letter topic cannot be written — must not be acknowledged, yet faust 0.15 acknowledges a
stream's events in a ``finally`` even when the agent raised (and then restarts the agent). So
:func:`_stop_on_escape` keeps the events it was handling from ever being acknowledged (their
offsets stay uncommitted: commits stop at the first unacknowledged offset of a partition) and
crashes the app, which stops the worker (exit status 1): after a restart the records are
redelivered, never skipped.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

import faust

from agents.answerer import Answerer
from agents.curator import JOIN_RETENTION_MS, Curator
from agents.indexer import Indexer
from agents.monitor import MONITORED, Monitor
from components.base import Embedder
from components.monitoring import MonitorState
from config.settings import Settings
from streams.dlq import DeadLetters
from streams.faust_adapter import FaustPublisher, assignment_fence, event_context, join_table, raw_topic, to_raw
from streams.topics import ANSWERS, CURATOR_QUERIES, DLQ, DOCS_CHANGES, FEEDBACK, QUERIES
from worker.components import Components
from worker.http import serve_http

log = logging.getLogger(__name__)

#: Agents a worker can host, in start-up order.
AGENTS = ("indexer", "answerer", "monitor", "curator")
#: After crashing the app, how long an agent waits for the worker to stop before it ends the process.
CRASH_GRACE_S = 60.0


async def _stop_on_escape(app: faust.App, agent: str, events: Sequence[faust.types.EventT],
                          handle: Callable[[], Awaitable[object]]) -> None:
    """Run ``handle()``; if an exception escapes it, stop the worker without acknowledging ``events``.

    The events are marked acknowledged on their message without telling the consumer (faust's
    ``Message.ack`` then does nothing), so no commit passes their offsets; then the app crashes,
    which stops the worker, and this agent waits for that (it is cancelled by the stop). Should the
    worker not stop within ``CRASH_GRACE_S``, the process ends (``os._exit``) — nothing is committed.
    """
    try:
        await handle()
    except Exception as exc:  # whatever escaped, its records must not be acknowledged
        for event in events:
            event.message.acked = True  # held: the consumer never counts it acknowledged
        positions = ", ".join(f"{e.message.topic}[{e.message.partition}]@{e.message.offset}" for e in events[:8])
        log.critical("%s: %s: %s escaped the handler; stopping the worker without acknowledging %d records (%s); "
                     "they are redelivered after a restart", agent, type(exc).__name__, exc, len(events), positions)
        await app.crash(exc)
        await asyncio.sleep(CRASH_GRACE_S)
        log.critical("the worker did not stop within %.0f s of the crash; ending the process", CRASH_GRACE_S)
        os._exit(70)


def bind_agents(app: faust.App, settings: Settings, components: Components | None, agents: Sequence[str],
                exporter_stats: object | None = None) -> None:
    """Bind the chosen ``agents`` to ``app``. ``components`` may be None for a worker hosting only the
    monitor; ``exporter_stats`` (this process's span exporter counters) is exposed by the monitor.

    Raises ValueError for an unknown agent name.
    """
    unknown = set(agents) - set(AGENTS)
    if unknown:
        raise ValueError(f"unknown agents {sorted(unknown)}; choose from {', '.join(AGENTS)}")
    publisher = FaustPublisher(app)
    dlq_topic = DLQ.full_name(settings)

    def dead_letters(agent: str) -> DeadLetters:
        return DeadLetters(publisher, dlq_topic, agent)

    if "indexer" in agents:
        indexer = Indexer(settings, components.chunker, components.index_embedder, components.collections,
                          publisher, dead_letters("indexer"), owns=assignment_fence(app))

        async def index(stream: faust.StreamT) -> None:
            async for events in stream.take_events(settings.indexer_batch_max, within=settings.indexer_batch_within_s):
                await _stop_on_escape(app, "indexer", events,
                                      partial(indexer.handle_batch, [to_raw(e) for e in events]))

        app.agent(raw_topic(app, settings, DOCS_CHANGES), name="eddy.indexer")(index)

    if "answerer" in agents:
        answerer = Answerer(settings, components.query_embedder, components.collections, components.reranker,
                            components.generator,
                            publisher, dead_letters("answerer"), owns=assignment_fence(app))

        async def answer(stream: faust.StreamT) -> None:
            async for event in stream.events():
                await _stop_on_escape(app, "answerer", [event], partial(answerer.handle, to_raw(event)))

        app.agent(raw_topic(app, settings, QUERIES), name="eddy.answerer",
                  concurrency=settings.answerer_concurrency)(answer)

    if "monitor" in agents:
        _bind_monitor(app, settings, Monitor(settings, MonitorState(settings, exporter_stats=exporter_stats),
                                             publisher, dead_letters("monitor")))

    if "curator" in agents:
        _bind_curator(app, settings, publisher, dead_letters("curator"), components.index_embedder)


def _bind_monitor(app: faust.App, settings: Settings, monitor: Monitor) -> None:
    """One agent per monitored topic, the tick and consumer-lag timers, the HTTP server (started with the app)."""
    for spec in MONITORED:
        async def consume(stream: faust.StreamT) -> None:
            async for event in stream.events():
                await _stop_on_escape(app, "monitor", [event], partial(monitor.handle, to_raw(event)))

        app.agent(raw_topic(app, settings, spec), name=f"eddy.monitor.{spec.name}")(consume)

    async def start_http() -> None:
        try:
            await serve_http(settings, monitor.state)
        except OSError as exc:
            log.error("monitor cannot serve on %s:%d: %s (set EDDY_MONITOR_PORT)", settings.monitor_host,
                      settings.monitor_port, exc)

    async def tick() -> None:
        await monitor.tick()

    async def poll_lag() -> None:
        await monitor.poll_consumer_lag()

    app.task(start_http)
    app.timer(settings.monitor_tick_s, name="eddy.monitor.tick")(tick)
    app.timer(settings.monitor_lag_interval_s, name="eddy.monitor.lag")(poll_lag)


def _bind_curator(app: faust.App, settings: Settings, publisher: FaustPublisher, dead_letters: DeadLetters,
                  embedder: Embedder) -> None:
    """The curator's scrubber (loads the spaCy model, in a child process with ``scrub_isolation=process``),
    vetted index (connects to Milvus), join Table, its two agents and the table's sweep timer; ``embedder``
    must be started."""
    from components.curation import JunkRules, MilvusVettedIndex
    from components.scrub_process import ProcessScrubber
    from components.scrubbing import SCRUBBER_VERSION, PresidioScrubber, load_scrub_key

    presidio = partial(
        PresidioScrubber,
        load_scrub_key(settings.scrub_key.get_secret_value() if settings.scrub_key else None, settings.home),
        internal_domains=[d.strip() for d in settings.scrub_internal_domains.split(",") if d.strip()],
    )
    scrubber = ProcessScrubber(presidio, SCRUBBER_VERSION) if settings.scrub_isolation == "process" else presidio()
    scrubber.start()
    vetted = MilvusVettedIndex(settings.milvus_address, f"{settings.collection}_vetted", embedder.dim)
    vetted.start()
    # Keys are the query ids' UTF-8 bytes and the producer's partitioner picks the changelog
    # partition, so table partition p holds the queries of partition p of the three sources.
    # The changelog holds raw conversations, like `queries` and `answers`: it expires with them
    # (compact + delete after JOIN_RETENTION_MS) instead of keeping them for ever.
    table = join_table(app, settings, "curator-joins", retention_ms=JOIN_RETENTION_MS)
    curator = Curator(settings, scrubber, JunkRules(min_query_chars=settings.curator_min_query_chars,
                                                    flood_per_hour=settings.curator_flood_per_hour),
                      embedder, vetted, publisher, dead_letters, table)

    async def rekey(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await _stop_on_escape(app, "curator", [event], partial(curator.rekey, to_raw(event)))

    async def by_partition(events: Sequence[faust.types.EventT]) -> None:
        """A partition's records at a time, each batch as faust's current event, so that the RocksDB store
        files the keys they write under their own partition (the three topics and the table's changelog are
        co-partitioned by query_id)."""
        groups: dict[int, list[faust.types.EventT]] = {}
        for event in events:
            groups.setdefault(event.message.partition, []).append(event)
        for group in groups.values():
            with event_context(group[-1]):
                await curator.handle_batch([to_raw(e) for e in group])

    async def curate(stream: faust.StreamT) -> None:
        async for events in stream.take_events(settings.curator_batch_max, within=settings.curator_batch_within_s):
            await _stop_on_escape(app, "curator", events, partial(by_partition, events))

    async def sweep() -> None:
        try:
            await curator.expire()
        except Exception:  # the next sweep tries again; entries are also bounded on insert
            log.exception("sweeping the curator's join table failed")

    app.agent(raw_topic(app, settings, QUERIES), name="eddy.curator-rekey")(rekey)
    app.agent(raw_topic(app, settings, CURATOR_QUERIES, ANSWERS, FEEDBACK), name="eddy.curator")(curate)
    app.timer(settings.curator_join_sweep_s, name="eddy.curator.sweep")(sweep)
