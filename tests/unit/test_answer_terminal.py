"""Exactly one terminal answer event per query (issue 10, item 4) with fakes: a final whose publish call
raises after the record was written, a redelivered query, a reused query_id, and two owners of one
``queries`` partition during a rebalance (the old one still streaming when the new one answers)."""

from __future__ import annotations

import asyncio

from agents.answerer import Answerer
from components.base import ChunkRecord
from components.chunking import StructureChunker
from components.collection_registry import Collections
from components.embedding import HashEmbedder
from components.generation import EchoGenerator
from components.memory_store import InMemoryVectorStore
from components.reranking import KeepOrder
from config.settings import Settings
from schemas import AnswerEvent, DeadLetter, Query
from streams.dlq import DeadLetters
from streams.records import MemoryPublisher, RawRecord


class WrittenThenRaises(MemoryPublisher):
    """The broker took the terminal record, then the publish call raised (an ack lost to a timeout)."""

    async def publish(self, topic, key, value, *, wait=False):
        await super().publish(topic, key, value, wait=wait)
        if topic.endswith("answers") and AnswerEvent.model_validate_json(value).terminal:
            raise TimeoutError("no acknowledgement within request_timeout_ms")


def make(tmp_path, publisher=None, store=None, **settings_kw):
    settings = Settings(home=tmp_path, delta_flush_ms=0, **settings_kw)
    embedder, chunker = HashEmbedder(32), StructureChunker(500, 50)
    if store is None:
        store = InMemoryVectorStore("c", 32, embedder.model_id, chunker.config_id)
        store.start()
        [chunk] = chunker.chunk("copy", "Use shutil.copy to copy a file from src to dst.", "text/plain", "copy")
        store.upsert_chunks([ChunkRecord(chunk, "t", "https://x/copy", "copy", (), "m",
                                         embedder.encode([chunk.embed_text])[0])])
    publisher = publisher if publisher is not None else MemoryPublisher()
    generator = EchoGenerator(words=6)
    collections = Collections(store, lambda name: InMemoryVectorStore(name, 32, embedder.model_id,
                                                                      chunker.config_id, server=store.server))
    answerer = Answerer(settings, embedder, collections, KeepOrder(), generator, publisher,
                        DeadLetters(publisher, settings.topic("dlq"), "answerer"))
    return answerer, publisher, settings, generator, store


def qrec(query: Query, offset: int = 0) -> RawRecord:
    return RawRecord("eddy.queries", 0, offset, query.conversation_id.encode(), query.to_bytes())


def answers(publisher, settings, query_id="q") -> list[AnswerEvent]:
    return [e for e in (AnswerEvent.model_validate_json(v) for v in publisher.on(settings.topic("answers")))
            if e.query_id == query_id]


def letters(publisher, settings) -> list[DeadLetter]:
    return [DeadLetter.model_validate_json(v) for v in publisher.on(settings.topic("dlq"))]


async def test_a_final_written_whose_publish_then_raises_gets_no_error_answer(tmp_path):
    answerer, publisher, settings, _, _ = make(tmp_path, WrittenThenRaises())
    assert await answerer.handle(qrec(Query(query_id="q", conversation_id="c", text="copy a file"))) is None
    events = answers(publisher, settings)
    assert [e.kind for e in events if e.terminal] == ["final"]
    [letter] = letters(publisher, settings)  # visible, not answered a second time
    assert letter.error_type == "processing" and "may have been delivered" in letter.reason


async def test_a_retrieval_only_final_whose_publish_raises_gets_no_error_answer(tmp_path):
    answerer, publisher, settings, _, _ = make(tmp_path, WrittenThenRaises())
    await answerer.handle(qrec(Query(query_id="q", conversation_id="c", text="copy", options={"generate": False})))
    assert [e.kind for e in answers(publisher, settings)] == ["final"]


async def test_a_redelivered_query_is_not_answered_twice(tmp_path):
    answerer, publisher, settings, generator, _ = make(tmp_path)
    query = Query(query_id="q", conversation_id="c", text="copy a file")
    first = await answerer.handle(qrec(query, 1))
    assert first.kind == "final"
    assert await answerer.handle(qrec(query, 1)) is None
    assert sum(e.terminal for e in answers(publisher, settings)) == 1 and len(generator.requests) == 1


async def test_a_reused_query_id_gets_an_error_answer_after_the_original_stream(tmp_path):
    answerer, publisher, settings, generator, _ = make(tmp_path)
    generator.delay_s = 0.01
    original = Query(query_id="q", conversation_id="c", text="copy a file")
    reused = Query(query_id="q", conversation_id="other", text="something else entirely")
    first = asyncio.create_task(answerer.handle(qrec(original, 1)))
    while not answers(publisher, settings):  # the original is streaming
        await asyncio.sleep(0.005)
    error = await answerer.handle(qrec(reused, 2))
    assert (await first).kind == "final"
    assert error.kind == "error" and "reused" in error.error
    events = answers(publisher, settings)
    finals = [n for n, e in enumerate(events) if e.kind == "final"]
    assert len(finals) == 1 and events[-1].kind == "error" and finals[0] < len(events) - 1  # after, not inside
    assert [e.seq for e in events[:-1]] == list(range(len(events) - 1))  # the original stream is intact
    assert len(generator.requests) == 1


async def test_an_old_owner_stops_streaming_when_its_partition_is_revoked(tmp_path):
    """A rebalance with stream_wait_empty=False: the old owner is mid-stream when the new one answers."""
    shared = MemoryPublisher()
    old, _, settings, old_generator, store = make(tmp_path, shared)
    new, _, _, _, _ = make(tmp_path, shared, store=store)
    owned = {"old": True}
    old.owns = lambda record: owned["old"]
    old_generator.delay_s = 0.01
    record = qrec(Query(query_id="q", conversation_id="c", text="copy a file"))
    streaming = asyncio.create_task(old.handle(record))
    while not answers(shared, settings):
        await asyncio.sleep(0.005)
    owned["old"] = False  # revoked: the new owner gets the partition and the uncommitted query
    by_new = await new.handle(record)
    assert await streaming is None
    terminals = [e for e in answers(shared, settings) if e.terminal]
    assert [e.event_id for e in terminals] == [by_new.event_id]
    assert letters(shared, settings) == []


async def test_a_revoked_owner_publishes_no_error_answer_either(tmp_path):
    answerer, publisher, settings, generator, _ = make(tmp_path)
    answerer.owns = lambda record: False
    generator.error = RuntimeError("model crashed")
    assert await answerer.handle(qrec(Query(query_id="q", conversation_id="c", text="copy"))) is None
    assert answers(publisher, settings) == [] and letters(publisher, settings) == []


async def test_the_dedupe_is_bounded(tmp_path):
    answerer, publisher, settings, _, _ = make(tmp_path, answerer_dedupe_queries=2)
    for n in range(5):
        await answerer.handle(qrec(Query(query_id=f"q{n}", conversation_id="c", text="copy", options={
            "generate": False}), n))
    assert len(answerer._seen) == 2
