"""Answerer logic with fakes (hash embedder, in-memory store, echo generator): invariants 4, 5, 7."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from agents.answerer import Answerer
from components.base import Chunk, ChunkRecord, Hit, PermanentError
from components.chunking import StructureChunker
from components.collection_registry import Collections
from components.embedding import HashEmbedder
from components.generation import EchoGenerator
from components.memory_store import InMemoryVectorStore
from components.reranking import KeepOrder
from components.sections import rank_sections
from config.settings import Settings
from schemas import AnswerEvent, DeadLetter, Query
from streams.dlq import DeadLetters
from streams.records import MemoryPublisher, RawRecord

DOCS = [
    ("copy", (), "Use shutil.copy to copy a file from src to dst."),
    ("hr-salary", ("hr",), "The salary bands are confidential salary information."),
    ("eng-deploy", ("eng", "ops"), "Deploy with the pipeline; salary unrelated."),
]


def make(tmp_path, reranker=None, **settings_kw):
    settings = Settings(home=tmp_path, delta_flush_ms=0, **settings_kw)
    embedder = HashEmbedder(32)
    chunker = StructureChunker(500, 50)
    store = InMemoryVectorStore("c", 32, embedder.model_id, chunker.config_id)
    store.start()
    records = []
    for doc_id, acl, text in DOCS:
        for chunk in chunker.chunk(doc_id, text, "text/plain", doc_id):
            records.append(ChunkRecord(chunk, "test", f"https://x/{doc_id}", doc_id, acl, "m",
                                       embedder.encode([chunk.embed_text])[0]))
    store.upsert_chunks(records)
    publisher = MemoryPublisher()
    generator = EchoGenerator(words=6)
    collections = Collections(store, lambda name: InMemoryVectorStore(name, 32, embedder.model_id, chunker.config_id,
                                                                      server=store.server))
    answerer = Answerer(settings, embedder, collections, reranker or KeepOrder(), generator, publisher,
                        DeadLetters(publisher, settings.topic("dlq"), "answerer"))
    return answerer, publisher, settings, generator


def qrec(query: Query | bytes, offset: int = 0) -> RawRecord:
    value = query.to_bytes() if isinstance(query, Query) else query
    return RawRecord("eddy.queries", 0, offset, b"conv", value)


def answers(publisher, settings) -> list[AnswerEvent]:
    return [AnswerEvent.model_validate_json(v) for v in publisher.on(settings.topic("answers"))]


async def test_deltas_then_exactly_one_final(tmp_path):
    answerer, publisher, settings, generator = make(tmp_path)
    final = await answerer.handle(qrec(Query(query_id="q1", conversation_id="c", text="copy a file")))
    events = answers(publisher, settings)
    assert [e.kind for e in events][-1] == "final" and sum(e.terminal for e in events) == 1
    assert [e.seq for e in events] == list(range(len(events)))
    assert "".join(e.text for e in events if e.kind == "delta").strip() == final.text
    assert final.citations[0].doc_id == "copy"
    assert final.citations[0].uri.startswith("https://x/copy")
    assert final.usage.completion_tokens == len(generator.answer_pieces(generator.requests[-1]))
    assert final.validation["cited"] == "1"
    assert final.model == "echo" and final.prompt_version == "rag-v1"
    assert final.timings.total_ms >= final.timings.ttft_ms >= final.timings.retrieve_ms >= 0


@pytest.mark.parametrize(
    ("groups", "visible"),
    [((), {"copy"}), (("hr",), {"copy", "hr-salary"}), (("ops", "x"), {"copy", "eng-deploy"}),
     (("hr", "eng"), {"copy", "hr-salary", "eng-deploy"})],
)
async def test_acl_filter(tmp_path, groups, visible):
    answerer, _, _, generator = make(tmp_path)
    final = await answerer.handle(qrec(Query(query_id="q", conversation_id="c", text="salary", groups=list(groups))))
    assert {c.doc_id for c in final.citations} == visible
    prompt = generator.requests[-1][-1].content
    for doc_id, _, text in DOCS:
        assert (text in prompt) == (doc_id in visible)


async def test_bad_queries_go_to_dlq_and_named_ones_get_an_error_answer(tmp_path):
    answerer, publisher, settings, _ = make(tmp_path, max_query_chars=50)
    assert await answerer.handle(qrec(b"{broken", 1)) is None
    empty = json.dumps({"query_id": "q-empty", "conversation_id": "c", "text": " "}).encode()
    err = await answerer.handle(qrec(empty, 2))
    assert err.kind == "error" and "empty query" in err.error
    err = await answerer.handle(qrec(Query(query_id="q-long", conversation_id="c", text="x" * 51), 3))
    assert err.kind == "error" and "above the maximum of 50" in err.error
    letters = [DeadLetter.model_validate_json(v) for v in publisher.on(settings.topic("dlq"))]
    assert [(lt.offset, lt.error_type) for lt in letters] == [(1, "malformed_json"), (2, "schema"), (3, "oversized")]
    assert [e.query_id for e in answers(publisher, settings)] == ["q-empty", "q-long"]


async def test_generation_failure_gives_one_error_event(tmp_path):
    answerer, publisher, settings, generator = make(tmp_path)
    generator.error = PermanentError("prompt too long for the model")
    generator.error_after = 2
    event = await answerer.handle(qrec(Query(query_id="q", conversation_id="c", text="copy")))
    events = answers(publisher, settings)
    assert event.kind == "error" and "prompt too long" in event.error
    assert sum(e.terminal for e in events) == 1 and events[-1].kind == "error"


async def test_slow_generation_does_not_stall_other_queries(tmp_path):
    answerer, publisher, settings, generator = make(tmp_path, generation_slots=4)
    generator.delay_s = 0.02
    real_stream = generator.stream
    opened = 0
    all_open = asyncio.Event()

    async def stream(messages, params, stats):
        """The real stream, once all four generations have begun: one after another, none would get there."""
        nonlocal opened
        opened += 1
        if opened == 4:
            all_open.set()
        await asyncio.wait_for(all_open.wait(), 10)
        async for piece in real_stream(messages, params, stats):
            yield piece

    generator.stream = stream
    await asyncio.gather(*[
        answerer.handle(qrec(Query(query_id=f"q{i}", conversation_id="c", text="copy a file"), i)) for i in range(4)
    ])
    assert all_open.is_set(), "the four answers must overlap, not run one after another"
    finals = [e for e in answers(publisher, settings) if e.kind == "final"]
    assert sorted(e.query_id for e in finals) == ["q0", "q1", "q2", "q3"]


async def test_deltas_are_coalesced(tmp_path):
    answerer, publisher, settings, generator = make(tmp_path)
    answerer.settings = settings.model_copy(update={"delta_flush_ms": 10_000})
    await answerer.handle(qrec(Query(query_id="q", conversation_id="c", text="copy a file")))
    kinds = [e.kind for e in answers(publisher, settings)]
    assert kinds == ["delta", "final"]  # eight pieces, one delta record


async def test_failure_after_deltas_ends_the_stream_with_an_error_in_sequence(tmp_path):
    answerer, publisher, settings, generator = make(tmp_path)
    generator.error = RuntimeError("model crashed")
    generator.error_after = 3
    event = await answerer.handle(qrec(Query(query_id="q", conversation_id="c", text="copy")))
    events = answers(publisher, settings)
    assert event.kind == "error" and "model crashed" in event.error
    assert [e.kind for e in events] == ["delta"] * (len(events) - 1) + ["error"] and len(events) > 1
    assert [e.seq for e in events] == list(range(len(events)))


async def test_retrieval_depth_reports_more_chunks_than_the_prompt_gets(tmp_path):
    answerer, _, _, generator = make(tmp_path)
    final = await answerer.handle(qrec(Query(query_id="q", conversation_id="c", text="salary", groups=["hr", "eng"],
                                             options={"top_k": 1, "retrieval_depth": 3})))
    assert [r.doc_id for r in final.retrieved][:1] == [c.doc_id for c in final.citations]
    assert len(final.retrieved) == 3 and len(final.citations) == 1
    assert [r.score for r in final.retrieved] == sorted((r.score for r in final.retrieved), reverse=True)
    assert len(generator.requests) == 1


class Reverse:
    """A reranker that puts the retrieval order upside down, to see the answerer follow it."""

    version = "reverse"

    def rerank(self, query, hits):
        return list(reversed(hits))


async def test_the_reranker_orders_the_prompt_and_the_citations(tmp_path):
    query = Query(query_id="q", conversation_id="c", text="salary", groups=["hr", "eng"], options={"top_k": 3})
    plain, _, _, _ = make(tmp_path / "plain")
    reranked, _, _, generator = make(tmp_path / "reranked", reranker=Reverse())
    retrieved = [r.doc_id for r in (await plain.handle(qrec(query))).retrieved]
    final = await reranked.handle(qrec(query))
    assert len(retrieved) == 3 and [r.doc_id for r in final.retrieved] == retrieved[::-1]
    prompt = generator.requests[-1][-1].content
    texts = {doc_id: text for doc_id, _, text in DOCS}
    assert prompt.index(texts[retrieved[-1]]) < prompt.index(texts[retrieved[0]])  # reranked first = passage [1]


async def test_retrieval_only_queries_skip_generation(tmp_path):
    answerer, publisher, settings, generator = make(tmp_path)
    final = await answerer.handle(qrec(Query(query_id="q", conversation_id="c", text="copy a file",
                                             groups=["hr"], options={"generate": False, "retrieval_depth": 2})))
    [event] = answers(publisher, settings)
    assert event.kind == "final" and event.seq == 0 and event.text == "" and generator.requests == []
    assert [r.doc_id for r in final.retrieved][0] == "copy" and len(final.retrieved) == 2


async def test_queries_search_the_collection_they_name_and_never_create_one(tmp_path):
    answerer, _, _, _ = make(tmp_path)
    embedder, chunker = answerer.embedder, StructureChunker(500, 50)
    other = answerer.collections.get("other", create=True)
    [chunk] = chunker.chunk("elsewhere", "Unrelated text in another collection.", "text/plain")
    other.upsert_chunks([ChunkRecord(chunk, "t", "", "", (), "m", embedder.encode([chunk.embed_text])[0])])
    final = await answerer.handle(qrec(Query(query_id="q", conversation_id="c", text="copy a file",
                                             options={"collection": "other"})))
    assert [c.doc_id for c in final.citations] == ["elsewhere"]
    err = await answerer.handle(qrec(Query(query_id="q2", conversation_id="c", text="copy",
                                           options={"collection": "missing"})))
    assert err.kind == "error" and "collection 'missing' does not exist" in err.error
    assert not answerer.collections.default.server.get("missing")


def _at_cosine(query: np.ndarray, cosine: float, seed: int) -> np.ndarray:
    """A unit vector whose cosine to the unit vector ``query`` is exactly ``cosine``."""
    other = np.random.default_rng(seed).standard_normal(query.shape[0]).astype(np.float32)
    other -= other.dot(query) * query
    other /= np.linalg.norm(other)
    return (cosine * query + np.sqrt(1 - cosine**2) * other).astype(np.float32)


# (chunk id, doc id, section, anchor, cosine to the query "install"): a long section matching with
# three chunks, a sibling section and another document.
SECTION_CHUNKS = [
    ("inst-2", "guide", "Guide > Install", "install", 0.80), ("inst-1", "guide", "Guide > Install", "install", 0.90),
    ("usage-1", "guide", "Guide > Usage", "usage", 0.75), ("inst-3", "guide", "Guide > Install", "install", 0.70),
    ("faq-1", "faq", "", "", 0.85),
]


def sectioned(tmp_path, **settings_kw):
    answerer, publisher, settings, generator = make(tmp_path, **settings_kw)
    store = answerer.collections.get("sections", create=True)
    query = answerer.embedder.encode(["install"])[0]
    store.upsert_chunks([
        ChunkRecord(Chunk(cid, doc, f"text of {cid}", f"text of {cid}", section, anchor, cid, i), "t",
                    f"https://x/{doc}", doc.title(), (), "m", _at_cosine(query, cosine, i))
        for i, (cid, doc, section, anchor, cosine) in enumerate(SECTION_CHUNKS)])
    return answerer, generator


async def test_sections_are_ranked_by_their_best_chunk_and_listed_once(tmp_path):
    answerer, _ = sectioned(tmp_path)
    final = await answerer.handle(qrec(Query(query_id="q", conversation_id="c", text="install", options={
        "collection": "sections", "generate": False, "retrieval_depth": 10})))
    # three sections, each once, as its best chunk, in the order of those chunks
    assert [(r.doc_id, r.chunk_id, r.score) for r in final.retrieved] == [
        ("guide", "inst-1", 0.9), ("faq", "faq-1", 0.85), ("guide", "usage-1", 0.75)]


async def test_citations_and_passages_name_each_section_once(tmp_path):
    answerer, generator = sectioned(tmp_path)
    final = await answerer.handle(qrec(Query(query_id="q", conversation_id="c", text="install", options={
        "collection": "sections", "top_k": 2})))
    assert [(c.doc_id, c.section, c.chunk_id) for c in final.citations] == [
        ("guide", "Guide > Install", "inst-1"), ("faq", "", "faq-1")]
    assert final.citations[0].uri == "https://x/guide#install"
    prompt = generator.requests[-1][-1].content
    assert "text of inst-1" in prompt and "text of faq-1" in prompt
    assert "inst-2" not in prompt and "inst-3" not in prompt and "usage-1" not in prompt  # top_k sections, not chunks


async def test_enough_chunks_are_searched_for_the_sections_asked(tmp_path):
    # one chunk per section searched: the three Install chunks would fill a search of 3 chunks with one section
    answerer, _ = sectioned(tmp_path, search_chunks_per_section=1)
    final = await answerer.handle(qrec(Query(query_id="q", conversation_id="c", text="install", options={
        "collection": "sections", "generate": False, "top_k": 1, "retrieval_depth": 3})))
    assert [r.chunk_id for r in final.retrieved] == ["inst-1", "faq-1"]  # inst-2 took the third place
    answerer, _ = sectioned(tmp_path / "default")
    final = await answerer.handle(qrec(Query(query_id="q", conversation_id="c", text="install", options={
        "collection": "sections", "generate": False, "top_k": 1, "retrieval_depth": 3})))
    assert [r.chunk_id for r in final.retrieved] == ["inst-1", "faq-1", "usage-1"]


def test_rank_sections_keeps_the_first_hit_of_each_section():
    def hit(cid, doc, section, anchor, score):
        return Hit(cid, doc, cid, section, anchor, "", "", score)

    hits = [hit("a1", "d", "S", "s", 0.9), hit("b1", "d", "S", "s2", 0.8), hit("a2", "d", "S", "s", 0.7),
            hit("c1", "e", "S", "s", 0.6)]
    # same path, other anchor = another section; same path and anchor in another document = another section
    assert [h.chunk_id for h in rank_sections(hits)] == ["a1", "b1", "c1"]
    assert rank_sections([]) == []
