"""Shared helpers of the integration tests: corpora, reading topics, checking the index."""

from __future__ import annotations

import json
import time
import uuid

from confluent_kafka import Consumer, TopicPartition

from components.chunking import StructureChunker
from components.embedding import embedder_id
from components.vectorstore import MilvusVectorStore
from config.settings import Settings
from schemas import DocumentChange


def section_doc(doc_id: str, sections: int, salt: str = "") -> str:
    """A reST document with ``sections`` sections of two paragraphs each; ``salt`` changes every section."""
    parts = [f"{doc_id} title\n{'=' * (len(doc_id) + 6)}\n"]
    for i in range(sections):
        title = f"Section {i}"
        parts.append(f"{title}\n{'-' * len(title)}\n")
        parts.append(f"Paragraph about topic {i} of {doc_id}{salt}. " * 8 + "\n")
        parts.append(f"Second paragraph {i} for {doc_id}{salt} with more words. " * 6 + "\n")
    return "\n".join(parts)


def publish_and_wait(client, changes, timeout_s: float = 180.0) -> list:
    """Publish DocumentChanges and return their IndexEvents once every one is indexed."""
    start = client.end_offsets("index.events")
    for change in changes:
        client.publish_change(change)
    client.flush()
    return client.wait_indexed([str(c.event_id) for c in changes], start, timeout_s=timeout_s)


def read_topic(settings: Settings, name: str, *, min_count: int = 0, timeout_s: float = 30.0) -> list:
    """Every record of a topic from the beginning (waits until ``min_count`` records were read)."""
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": f"read-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "fetch.message.max.bytes": 8 * 1024 * 1024})
    full = settings.topic(name)
    md = consumer.list_topics(full, timeout=10).topics[full]
    consumer.assign([TopicPartition(full, p, 0) for p in md.partitions])
    highs = sum(consumer.get_watermark_offsets(TopicPartition(full, p), timeout=10)[1] for p in md.partitions)
    out = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and len(out) < max(min_count, highs):
            out += [m for m in consumer.consume(500, timeout=0.2) if m.error() is None]
        return out
    finally:
        consumer.close()


def open_store(settings: Settings, dim: int = 384) -> MilvusVectorStore:
    chunker = StructureChunker(settings.chunk_max_chars, settings.chunk_overlap_chars)
    store = MilvusVectorStore(settings.milvus_address, settings.collection, dim,
                              embedder_id(settings.embedder_model, settings.embedder_dtype), chunker.config_id)
    store.start()
    return store


def expected_chunks(settings: Settings, latest: dict[str, DocumentChange]) -> dict[str, set[str]]:
    """Chunk ids the index must hold: the newest upsert of every live document."""
    chunker = StructureChunker(settings.chunk_max_chars, settings.chunk_overlap_chars)
    return {
        doc_id: {c.chunk_id for c in chunker.chunk(doc_id, ch.text, ch.content_type, ch.title)}
        for doc_id, ch in latest.items() if ch.op == "upsert"
    }


def assert_index_matches(settings: Settings, latest: dict[str, DocumentChange]) -> None:
    """Invariant 1: exactly the chunks of the newest version of every live doc, nothing else."""
    store = open_store(settings)
    try:
        expected = expected_chunks(settings, latest)
        stored = store.stored_chunks(sorted(latest))
        got = {doc_id: {c.chunk_id for c in chunks} for doc_id, chunks in stored.items() if chunks}
        assert got == expected
        assert store.info().rows == sum(len(v) for v in expected.values()), "duplicate or orphan rows"
    finally:
        store.close()


def dead_letters(settings: Settings, min_count: int) -> list[dict]:
    return [json.loads(m.value()) for m in read_topic(settings, "dlq", min_count=min_count)]
