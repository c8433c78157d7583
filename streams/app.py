"""The faust app, built in one place: settings -> app, components, agents registered explicitly.

``run_worker(settings, agents)`` is what ``eddy worker`` (and ``eddy up``) runs: it loads the
models, creates missing topics, registers the agents and hands control to the faust Worker.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import faust

from components.vectorstore import Collections
from config.settings import Settings
from streams.admin import ensure_topics
from streams.dlq import DeadLetters
from streams.records import RawRecord
from streams.tracing import Tracing, configure_tracing, inject_headers

log = logging.getLogger(__name__)

AGENTS = ("indexer", "answerer", "monitor", "curator")
MAX_RECORD_BYTES = 8 * 1024 * 1024


class FaustPublisher:
    """Publisher on the app's producer (aiokafka, acks=all). ``wait`` awaits the broker's ack.

    Every record carries the W3C trace context of the span current at ``publish`` in its
    ``traceparent`` header (none when no span is recording), so output joins its input's trace.
    """

    def __init__(self, app: faust.App) -> None:
        self.app = app

    async def publish(self, topic: str, key: str | None, value: bytes, *, wait: bool = False) -> None:
        future = await self.app.send(
            topic, key=key.encode() if key is not None else None, value=value,
            key_serializer="raw", value_serializer="raw", headers=inject_headers() or None,
        )
        if wait:
            await future

    async def flush(self) -> None:
        await self.app.producer.flush()


def to_raw(event: faust.types.EventT) -> RawRecord:
    """The consumed record behind a faust event, bytes untouched."""
    message = event.message
    return RawRecord(
        topic=message.topic, partition=message.partition, offset=message.offset, key=message.key,
        value=message.value, timestamp_ms=int(message.timestamp * 1000) if message.timestamp else None,
        headers=tuple((k, v) for k, v in (message.headers or ())),
    )


def build_app(settings: Settings) -> faust.App:
    """The faust app: aiokafka transport, no web server, commits every 0.5 s, 8 MiB records."""
    servers = ";".join(f"kafka://{server}" for server in settings.bootstrap_servers.split(","))
    return faust.App(
        settings.group_id,
        broker=servers,
        web_enabled=False,
        topic_partitions=settings.partitions,
        topic_allow_declare=True,  # faust creates its internal leader topic; ours come from ensure_topics
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=0.5,
        broker_session_timeout=30.0,
        broker_heartbeat_interval=3.0,
        broker_max_poll_interval=600.0,
        consumer_max_fetch_size=MAX_RECORD_BYTES,
        producer_max_request_size=MAX_RECORD_BYTES,
        producer_acks=-1,
        producer_linger=0.002,
        stream_wait_empty=False,
        stream_buffer_maxsize=512,
    )


@dataclass
class Components:
    """Everything the agents need, started (models loaded) before the worker joins its group."""

    chunker: object
    index_embedder: object
    query_embedder: object
    collections: Collections
    generator: object


def build_components(settings: Settings, *, agents: Sequence[str]) -> Components:
    """Real backends chosen by the settings; constructors are cheap, call ``start_components``."""
    from components.chunking import StructureChunker
    from components.embedding import SentenceTransformerEmbedder
    from components.generation import build_generator
    from components.vectorstore import MilvusVectorStore

    chunker = StructureChunker(settings.chunk_max_chars, settings.chunk_overlap_chars)
    index_embedder = SentenceTransformerEmbedder(settings.embedder_model, settings.embed_batch_size,
                                                 settings.embedder_dtype)
    # The answerer gets its own instance so query embedding never waits behind an indexing batch.
    query_embedder = (
        SentenceTransformerEmbedder(settings.embedder_model, 1, settings.embedder_dtype)
        if "answerer" in agents else index_embedder
    )
    def open_store(name: str) -> MilvusVectorStore:
        return MilvusVectorStore(settings.milvus_address, name, index_embedder.dim, index_embedder.model_id,
                                 chunker.config_id)

    collections = Collections(open_store(settings.collection), open_store)
    generator = build_generator(settings.generator, settings.home / "models") if "answerer" in agents else None
    return Components(chunker, index_embedder, query_embedder, collections, generator)


def start_components(components: Components) -> None:
    for part in (components.index_embedder, components.query_embedder, components.generator):
        if part is not None:
            part.start()
    components.collections.default.start()


def register_agents(app: faust.App, settings: Settings, components: Components | None, agents: Sequence[str],
                    tracing: Tracing | None = None) -> None:
    """Register the chosen agents on ``app``, each on its input topic (raw bytes in, raw bytes out).

    ``components`` may be None for a worker hosting only the monitor. ``tracing`` (this process's
    set-up) lets the monitor expose the span exporter's drop counts.
    """
    from agents.answerer import Answerer
    from agents.indexer import Indexer

    unknown = set(agents) - set(AGENTS)
    if unknown:
        raise ValueError(f"unknown agents {sorted(unknown)}; choose from {', '.join(AGENTS)}")
    publisher = FaustPublisher(app)
    dlq_topic = settings.topic("dlq")

    def topic(name: str) -> faust.TopicT:
        return app.topic(settings.topic(name), key_serializer="raw", value_serializer="raw",
                         partitions=None, internal=False)

    if "indexer" in agents:
        indexer = Indexer(settings, components.chunker, components.index_embedder, components.collections,
                          publisher, DeadLetters(publisher, dlq_topic, "indexer"))

        async def index(stream: faust.StreamT) -> None:
            async for events in stream.take_events(settings.indexer_batch_max, within=settings.indexer_batch_within_s):
                await indexer.handle_batch([to_raw(e) for e in events])

        app.agent(topic("docs.changes"), name="eddy.indexer")(index)

    if "answerer" in agents:
        answerer = Answerer(settings, components.query_embedder, components.collections, components.generator,
                            publisher, DeadLetters(publisher, dlq_topic, "answerer"))

        async def answer(stream: faust.StreamT) -> None:
            async for event in stream.events():
                await answerer.handle(to_raw(event))

        app.agent(topic("queries"), name="eddy.answerer", concurrency=settings.answerer_concurrency)(answer)

    if "monitor" in agents:
        from agents.monitor import register_monitor

        register_monitor(app, settings, publisher, DeadLetters(publisher, dlq_topic, "monitor"),
                         tracing.exporter.stats if tracing is not None and tracing.exporter is not None else None)

    if "curator" in agents:
        from agents.curator import register_curator

        register_curator(app, settings, publisher, DeadLetters(publisher, dlq_topic, "curator"),
                         components.index_embedder)


def ready_file(settings: Settings) -> Path:
    return settings.home / "run" / "worker.ready"


def run_worker(settings: Settings, agents: Sequence[str] = AGENTS) -> None:
    """Load models, create topics, register agents and run the faust Worker until SIGTERM/SIGINT."""
    ready = ready_file(settings)
    ready.unlink(missing_ok=True)
    # The monitor alone loads no model and needs no Milvus: a monitor-only worker starts in seconds.
    components = build_components(settings, agents=agents) if set(agents) - {"monitor"} else None
    if components is not None:
        start_components(components)
    ensure_topics(settings)
    app = build_app(settings)
    tracing = configure_tracing(settings, "eddy-worker", **{"eddy.agents": ",".join(agents)})
    register_agents(app, settings, components, agents, tracing)

    @app.on_partitions_assigned.connect
    async def _assigned(sender: object, assigned: set, **_: object) -> None:
        ready.parent.mkdir(parents=True, exist_ok=True)
        ready.write_text(f"{os.getpid()}\n{len(assigned)}\n")
        log.info("worker ready: %d partitions assigned (agents: %s)", len(assigned), ", ".join(agents))

    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True, override_logging=True)
    try:
        worker.execute_from_commandline()
    finally:
        ready.unlink(missing_ok=True)
        tracing.shutdown()
        if components is not None:
            components.collections.close()
