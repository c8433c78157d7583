"""Shared helpers of the integration tests: corpora, reading topics, checking the index."""

from __future__ import annotations

import json
import time
import uuid

from confluent_kafka import Consumer, TopicPartition

from components.chunking import StructureChunker
from components.embedding import embedder_id
from components.milvus_store import MilvusVectorStore
from config.settings import MAX_RECORD_BYTES, Settings
from infra.process import poll_until
from pipelines.ingest import ingest_source
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
    return ingest_source(client, changes, timeout_s=timeout_s).indexed


def read_topic(settings: Settings, name: str, *, min_count: int | None = None, timeout_s: float = 30.0) -> list:
    """Every record of a topic, from the beginning to its end offsets.

    Without ``min_count``: the end offsets at the call. With ``min_count``: waits until the topic
    holds at least that many records, then reads to the end offsets of that moment (so a check of
    the exact set sees any extra record written by then). Either way, a read that does not get
    there within ``timeout_s`` raises AssertionError saying how many records it got: a negative
    check built on this never passes on records that did not arrive.
    """
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": f"read-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "fetch.message.max.bytes": MAX_RECORD_BYTES})
    full = settings.topic(name)
    md = consumer.list_topics(full, timeout=10).topics[full]
    partitions = sorted(md.partitions)
    consumer.assign([TopicPartition(full, p, 0) for p in partitions])
    out: list = []
    next_offset = dict.fromkeys(partitions, 0)  # per partition: past the last record read
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            ends = {p: consumer.get_watermark_offsets(TopicPartition(full, p), timeout=10)[1] for p in partitions}
            if min_count is None or sum(ends.values()) >= min_count:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"{full} holds {sum(ends.values())} records after {timeout_s:.0f} s; "
                                     f"waited for {min_count}")
            time.sleep(0.2)
        while any(next_offset[p] < ends[p] for p in partitions):
            if time.monotonic() > deadline:
                got = {p: f"{next_offset[p]}/{ends[p]}" for p in partitions}
                raise AssertionError(f"{full}: read {len(out)} records in {timeout_s:.0f} s, not to the end "
                                     f"offsets (per partition, read/end: {got})")
            for m in consumer.consume(500, timeout=0.2):
                if m.error() is None:
                    out.append(m)
                    next_offset[m.partition()] = max(next_offset[m.partition()], m.offset() + 1)
            for tp in consumer.position([TopicPartition(full, p) for p in partitions]):
                next_offset[tp.partition] = max(next_offset[tp.partition], tp.offset)  # past gaps (compaction)
        if min_count is not None and len(out) < min_count:
            raise AssertionError(f"{full}: read {len(out)} records, waited for {min_count}")
        return out
    finally:
        consumer.close()


def wait_consumed(settings: Settings, topics: tuple[str, ...], timeout_s: float = 120.0) -> dict[str, int]:
    """Until the worker's group has committed, on every partition of ``topics``, the end offset of the
    moment of the call: every record there consumed, and (the agents publish before their offsets are
    committed) its outputs written. Returns the records per topic; a topic without any record fails
    (a wait on nothing proves nothing). The positive control of a check that something did NOT happen.
    """
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": settings.group_id,
                         "enable.auto.commit": False})  # never subscribes: reads the group's offsets only
    try:
        ends: dict[tuple[str, int], int] = {}
        for name in topics:
            full = settings.topic(name)
            for p in consumer.list_topics(full, timeout=10).topics[full].partitions:
                ends[(full, p)] = consumer.get_watermark_offsets(TopicPartition(full, p), timeout=10)[1]
        counts = {name: sum(n for (t, _), n in ends.items() if t == settings.topic(name)) for name in topics}
        assert all(counts.values()), f"nothing to consume: records per topic {counts}"
        behind: dict[str, str] = {}

        def consumed() -> bool:
            committed = consumer.committed([TopicPartition(t, p) for t, p in ends], timeout=10)
            behind.clear()
            behind.update({f"{tp.topic}[{tp.partition}]": f"{max(tp.offset, 0)}/{ends[(tp.topic, tp.partition)]}"
                           for tp in committed if max(tp.offset, 0) < ends[(tp.topic, tp.partition)]})
            return not behind

        if not poll_until(consumed, timeout_s=timeout_s, interval_s=0.5):
            raise AssertionError(f"group {settings.group_id} did not consume {list(topics)} in {timeout_s:.0f} s: "
                                 f"committed/end {behind}")
        return counts
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
