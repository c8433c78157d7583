"""The curator's join table stays bounded (issue 10, item 3): entries expire by age and by count, hold only
what curation needs, a reused query_id does not replace the first conversation, memory stays flat over a
long run, and the worker keeps the table in faust's RocksDB store (rocksdict) under ``home/faust``."""

from __future__ import annotations

import gc
import json
import tracemalloc
import uuid

import pytest

from agents.curator import Curator
from components.curation import JunkRules, MemoryVettedIndex
from components.embedding import HashEmbedder
from components.scrubbing import PresidioScrubber
from config.settings import Settings
from schemas import AnswerEvent, Citation, Feedback, Query, Retrieved
from streams.dlq import DeadLetters
from streams.records import MemoryPublisher, RawRecord

CITATION = Citation(doc_id="d1", chunk_id="c1", uri="https://docs.test/shutil#copy", title="shutil", score=0.8)


@pytest.fixture(scope="module")
def presidio() -> PresidioScrubber:
    s = PresidioScrubber(b"unit-test-key-0123456789abcdef")
    s.start()
    return s


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def build(tmp_path, scrubber, **overrides):
    settings = Settings(home=tmp_path, **overrides)
    publisher = MemoryPublisher()
    curator = Curator(settings, scrubber, JunkRules(), HashEmbedder(64), MemoryVettedIndex(), publisher,
                      DeadLetters(publisher, settings.topic("dlq"), "curator"), {})
    curator.clock = Clock()
    return curator, publisher, settings


_offset = iter(range(10**7))


def records(settings, *events) -> list[RawRecord]:
    out = []
    for event in events:
        topic = ("curator.queries" if isinstance(event, Query) else "answers" if isinstance(event, AnswerEvent)
                 else "feedback")
        out.append(RawRecord(settings.topic(topic), 0, next(_offset), event.query_id.encode(), event.to_bytes()))
    return out


def conversation(qid=None, text="How do I copy a file and keep its metadata?", retrieved=5):
    qid = qid or uuid.uuid4().hex
    query = Query(query_id=qid, conversation_id="c-" + qid, user_id="u1", text=text, groups=["g"] * 20)
    final = AnswerEvent(query_id=qid, kind="final", seq=0, text="Use shutil.copy2(src, dst).", citations=[CITATION],
                        retrieved=[Retrieved(doc_id=f"d{n}", chunk_id=f"c{n}", score=0.5) for n in range(retrieved)],
                        model="m", prompt_version="p1", pipeline_version="rag-v1")
    return query, final


def on(publisher, settings, name) -> list[dict]:
    return [json.loads(v) for v in publisher.on(settings.topic(name))]


async def test_entries_not_updated_within_the_ttl_expire(tmp_path, presidio):
    curator, _, settings = build(tmp_path, presidio, curator_join_ttl_s=60)
    old, recent = conversation(), conversation()
    await curator.handle_batch(records(settings, *old))
    curator.clock.t += 30
    await curator.handle_batch(records(settings, *recent))
    curator.clock.t += 40  # old: 70 s, recent: 40 s
    assert await curator.expire() == 1
    assert set(curator.state) == {recent[0].query_id.encode()}


async def test_the_count_bound_drops_the_least_recently_updated(tmp_path, presidio):
    curator, _, settings = build(tmp_path, presidio, curator_join_max_entries=3)
    conversations = [conversation() for _ in range(5)]
    for query, _ in conversations:
        await curator.handle_batch(records(settings, query))
        curator.clock.t += 1
    await curator.handle_batch(records(settings, conversations[2][1]))  # its answer: updated last
    assert len(curator.state) == 3
    assert set(curator.state) == {conversations[n][0].query_id.encode() for n in (2, 3, 4)}


async def test_the_sweep_covers_entries_restored_from_the_changelog(tmp_path, presidio):
    curator, _, settings = build(tmp_path, presidio, curator_join_ttl_s=60, curator_join_max_entries=2)
    now = curator.clock.t
    curator.state.update({b"old": {"t": now - 120, "pending": []}, b"a": {"t": now - 10, "pending": []},
                          b"b": {"t": now - 5, "pending": []}, b"c": {"t": now - 1, "pending": []},
                          b"legacy": {"pending": []}})  # written before entries had a time: a full ttl from now
    assert await curator.expire() == 3
    assert set(curator.state) == {b"c", b"legacy"}


async def test_entries_keep_only_what_curation_needs(tmp_path, presidio):
    curator, publisher, settings = build(tmp_path, presidio)
    query, final = conversation(retrieved=1000)
    await curator.handle_batch(records(settings, query, final))
    entry = curator.state[query.query_id.encode()]
    assert "retrieved" not in entry["answer"] and "groups" not in entry["query"]
    assert len(json.dumps(entry)) < 2_000 < len(final.to_bytes())
    await curator.handle_batch(records(settings, Feedback(query_id=query.query_id, user_id="u1", rating="up",
                                                          share=True)))
    [record] = on(publisher, settings, "datasets.eval")
    assert record["citations"][0]["chunk_id"] == "c1" and record["model"] == "m"


async def test_a_reused_query_id_does_not_replace_the_first_conversation(tmp_path, presidio):
    curator, publisher, settings = build(tmp_path, presidio)
    query, final = conversation(text="How do I copy a file and keep its metadata?")
    reused = Query(query_id=query.query_id, conversation_id="other", user_id="u2", text="What is the capital of Peru?")
    error = AnswerEvent(query_id=query.query_id, kind="error", seq=0, error="query_id reused")
    await curator.handle_batch(records(settings, query, final, reused, error))
    await curator.handle_batch(records(settings, Feedback(query_id=query.query_id, user_id="u1", rating="up",
                                                          share=True)))
    [record] = on(publisher, settings, "datasets.eval")
    assert record["query"] == "How do I copy a file and keep its metadata?" and record["answer"].startswith("Use")


async def test_memory_stays_flat_while_conversations_stream_through(tmp_path, presidio):
    """The soak: thousands of answered queries (a few with shared feedback) and a bounded table."""
    curator, publisher, settings = build(tmp_path, presidio, curator_join_max_entries=150)

    async def run(n: int) -> None:
        for i in range(n):
            query, final = conversation(retrieved=200)
            events = [query, final]
            if i % 100 == 0:
                events.append(Feedback(query_id=query.query_id, user_id=f"u{i}", rating="up", share=True))
            await curator.handle_batch(records(settings, *events))
            curator.clock.t += 0.01
            assert len(curator.state) <= 150
        publisher.sent.clear()

    tracemalloc.start()
    try:
        await run(300)  # the table is full
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        await run(1200)
        gc.collect()
        growth = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert growth < 512 * 1024, f"memory grew by {growth:,} bytes over 1,200 conversations"


def test_the_worker_keeps_the_join_table_in_rocksdb_under_its_home(tmp_path):
    from faust.stores.rocksdb import Store

    from streams.faust_adapter import build_app, join_table

    settings = Settings(home=tmp_path)
    table = join_table(build_app(settings), settings, "curator-joins", retention_ms=1000)
    store = table.data
    assert isinstance(store, Store) and store.use_rocksdict
    assert store.path.is_relative_to(tmp_path / "faust")
    memory = join_table(build_app(settings), settings.model_copy(update={"curator_join_store": "memory"}),
                        "curator-joins", retention_ms=1000)
    assert not isinstance(memory.data, Store)
