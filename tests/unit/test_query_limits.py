"""Resource limits per query (issue 10, item 7): configured caps on ``groups`` and ``history`` give a
clear ``error`` answer, and every query has a deadline that stops its generation and frees its slot."""

from __future__ import annotations

import asyncio
import time

from agents.answerer import Answerer
from components.base import ChunkRecord
from components.chunking import StructureChunker
from components.collection_registry import Collections
from components.embedding import HashEmbedder
from components.generation import EchoGenerator
from components.memory_store import InMemoryVectorStore
from components.reranking import KeepOrder
from config.settings import Settings
from schemas import AnswerEvent, DeadLetter, HistoryTurn, Query
from streams.dlq import DeadLetters
from streams.records import MemoryPublisher, RawRecord


def make(tmp_path, generator: EchoGenerator | None = None, **settings_kw):
    settings = Settings(home=tmp_path, delta_flush_ms=0, **settings_kw)
    embedder, chunker = HashEmbedder(32), StructureChunker(500, 50)
    store = InMemoryVectorStore("c", 32, embedder.model_id, chunker.config_id)
    store.start()
    [chunk] = chunker.chunk("copy", "Use shutil.copy to copy a file.", "text/plain")
    store.upsert_chunks([ChunkRecord(chunk, "t", "u", "copy", (), "m", embedder.encode([chunk.embed_text])[0])])
    publisher = MemoryPublisher()
    generator = generator or EchoGenerator(words=4)
    answerer = Answerer(settings, embedder, Collections(store, lambda name: InMemoryVectorStore(name, 32)),
                        KeepOrder(), generator, publisher, DeadLetters(publisher, settings.topic("dlq"), "answerer"))
    return answerer, publisher, settings, generator


def record(query: Query, offset: int = 0) -> RawRecord:
    return RawRecord("eddy.queries", 0, offset, b"conv", query.to_bytes())


def answers(publisher: MemoryPublisher, settings: Settings) -> list[AnswerEvent]:
    return [AnswerEvent.model_validate_json(v) for v in publisher.on(settings.topic("answers"))]


async def test_too_many_groups_get_an_error_answer(tmp_path):
    answerer, publisher, settings, generator = make(tmp_path, max_query_groups=3)
    ok = await answerer.handle(record(Query(query_id="ok", conversation_id="c", text="copy", groups=["a", "b", "c"])))
    assert ok.kind == "final"
    many = [f"g{i}" for i in range(20_000)]
    err = await answerer.handle(record(Query(query_id="many", conversation_id="c", text="copy", groups=many), 1))
    assert err.kind == "error" and err.query_id == "many"
    assert "20,000 groups" in err.error and "maximum of 3" in err.error and "max_query_groups" in err.error
    assert len(generator.requests) == 1  # the refused query never reached generation
    [letter] = [DeadLetter.model_validate_json(v) for v in publisher.on(settings.topic("dlq"))]
    assert letter.offset == 1 and letter.error_type == "oversized"


async def test_too_much_history_gets_an_error_answer(tmp_path):
    answerer, publisher, settings, generator = make(tmp_path, max_history_turns=2)
    turns = [HistoryTurn(role="user" if i % 2 == 0 else "assistant", text=f"turn {i}") for i in range(3)]
    ok = await answerer.handle(record(Query(query_id="ok", conversation_id="c", text="copy", history=turns[:2])))
    assert ok.kind == "final"
    err = await answerer.handle(record(Query(query_id="long", conversation_id="c", text="copy", history=turns), 1))
    assert err.kind == "error" and "3 history turns" in err.error and "maximum of 2" in err.error
    assert "max_history_turns" in err.error and len(generator.requests) == 1


async def test_a_query_past_its_deadline_ends_with_an_error_and_frees_its_generation_slot(tmp_path):
    generator = EchoGenerator(words=1_000, delay_s=0.05)
    answerer, publisher, settings, _ = make(tmp_path, generator, query_deadline_s=0.5, generation_slots=1)
    long_question = "copy " * 500
    started = time.perf_counter()
    err = await answerer.handle(record(Query(query_id="slow", conversation_id="c", text=long_question,
                                             options={"max_tokens": 4096, "temperature": 2.0})))
    assert time.perf_counter() - started < 3.0
    assert err.kind == "error" and "deadline" in err.error and "0.5 s" in err.error
    events = [e for e in answers(publisher, settings) if e.query_id == "slow"]
    assert events[-1] == err and err.seq == sum(e.kind == "delta" for e in events) > 0
    await asyncio.sleep(0.1)
    assert generator.active_streams == 0  # the generation stopped, not just the wait for it
    generator.words, generator.delay_s = 3, 0.0
    nxt = await asyncio.wait_for(answerer.handle(record(Query(query_id="next", conversation_id="c", text="copy"), 1)),
                                 2)
    assert nxt.kind == "final"  # the only slot is free again
