"""Indexer logic with fakes (hash embedder, in-memory store, memory publisher): invariants 1, 2, 7."""

from __future__ import annotations

import json

import pytest

from agents.indexer import Indexer
from components.base import RetryableError
from components.chunking import StructureChunker
from components.collection_registry import Collections
from components.embedding import HashEmbedder
from components.memory_store import InMemoryVectorStore
from config.settings import Settings
from schemas import DeadLetter, DocumentChange, IndexEvent
from streams.dlq import DeadLetters
from streams.records import MemoryPublisher, RawRecord

DOC = """Title
=====

Intro paragraph about the document.

First
-----

{first}

Second
------

Second section text that stays the same across edits. It has a couple of sentences.
"""


@pytest.fixture
def env(tmp_path):
    settings = Settings(home=tmp_path, max_document_bytes=10_000)
    chunker = StructureChunker(200, 30)
    embedder = HashEmbedder(32)
    store = InMemoryVectorStore("c", 32, embedder.model_id, chunker.config_id)
    store.start()
    publisher = MemoryPublisher()
    collections = Collections(store, lambda name: InMemoryVectorStore(name, 32, embedder.model_id, chunker.config_id,
                                                                      server=store.server))
    indexer = Indexer(settings, chunker, embedder, collections, publisher,
                      DeadLetters(publisher, settings.topic("dlq"), "indexer"))
    return indexer, store, embedder, publisher, settings


_offset = iter(range(10**6))


def rec(change_or_bytes, key: str | None = None) -> RawRecord:
    if isinstance(change_or_bytes, DocumentChange):
        return RawRecord("eddy.docs.changes", 0, next(_offset), change_or_bytes.record_key().encode(),
                         change_or_bytes.to_bytes())
    return RawRecord("eddy.docs.changes", 0, next(_offset), key.encode() if key else None, change_or_bytes)


def up(doc_id, version, first="First section text.", **kw):
    return DocumentChange(op="upsert", doc_id=doc_id, version=version, text=DOC.format(first=first),
                          content_type="text/x-rst", title=kw.pop("title", "T"), **kw)


def stored_ids(store, doc_id):
    return {c.chunk_id for c in store.stored_chunks([doc_id]).get(doc_id, [])}


def expected_ids(indexer, change):
    return {c.chunk_id for c in indexer.chunker.chunk(change.doc_id, change.text, change.content_type, change.title)}


async def test_first_index_embeds_every_chunk_and_reindex_embeds_none(env):
    indexer, store, embedder, publisher, _ = env
    a = up("a", 1)
    [event] = await indexer.handle_batch([rec(a)])
    assert event.status == "indexed" and event.chunks_embedded == event.chunks_total > 0
    assert stored_ids(store, "a") == expected_ids(indexer, a)
    before = embedder.texts_embedded
    [event] = await indexer.handle_batch([rec(up("a", 2))])
    assert event.status == "unchanged" and event.chunks_embedded == 0
    assert embedder.texts_embedded == before
    # and redelivery of the same record is idempotent
    [event] = await indexer.handle_batch([rec(up("a", 2))])
    assert event.chunks_embedded == 0 and store.info().rows == event.chunks_total


async def test_edit_embeds_only_changed_chunks_and_deletes_stale(env):
    indexer, store, embedder, _, _ = env
    await indexer.handle_batch([rec(up("a", 1))])
    old = stored_ids(store, "a")
    edited = up("a", 2, first="A completely different first section.")
    before = embedder.texts_embedded
    [event] = await indexer.handle_batch([rec(edited)])
    new = expected_ids(indexer, edited)
    assert stored_ids(store, "a") == new
    assert event.chunks_embedded == len(new - old) == embedder.texts_embedded - before
    assert event.chunks_deleted == len(old - new) > 0
    assert event.chunks_unchanged == len(new & old) > 0


async def test_versions_stale_superseded_and_delete(env):
    indexer, store, _, _, _ = env
    await indexer.handle_batch([rec(up("a", 5))])
    [stale] = await indexer.handle_batch([rec(up("a", 4, first="older"))])
    assert stale.status == "stale" and stale.chunks_embedded == 0
    events = await indexer.handle_batch([rec(up("b", 1, first="b one")), rec(up("b", 3, first="b three")),
                                         rec(up("b", 2, first="b two"))])
    by_version = {e.version: e.status for e in events}
    assert by_version == {1: "superseded", 2: "superseded", 3: "indexed"}
    assert stored_ids(store, "b") == expected_ids(indexer, up("b", 3, first="b three"))
    [deleted] = await indexer.handle_batch([rec(DocumentChange(op="delete", doc_id="a", version=6))])
    assert deleted.status == "deleted" and deleted.chunks_deleted > 0
    assert stored_ids(store, "a") == set()
    [again] = await indexer.handle_batch([rec(up("a", 5))])  # older than the delete
    assert again.status == "stale" and stored_ids(store, "a") == set()
    assert store.live_doc_ids("") == ["b"]


async def test_acl_change_rewrites_rows_without_reembedding(env):
    indexer, store, embedder, _, _ = env
    await indexer.handle_batch([rec(up("a", 1))])
    before = embedder.texts_embedded
    [event] = await indexer.handle_batch([rec(up("a", 2, acl=["hr"]))])
    assert embedder.texts_embedded == before and event.chunks_embedded == 0 and event.status == "indexed"
    vector = embedder.encode(["First section text."])
    assert all(h.doc_id != "a" for h in store.search(vector, 10, ["eng"])[0])
    assert any(h.doc_id == "a" for h in store.search(vector, 10, ["hr"])[0])


async def test_bad_records_go_to_dlq_and_good_ones_in_the_same_batch_are_indexed(env):
    indexer, store, _, publisher, settings = env
    bad = [
        rec(b"{nope", "x1"),
        rec(json.dumps({"op": "rename", "doc_id": "x2", "version": 1, "text": "t"}).encode(), "x2"),
        rec(json.dumps({"op": "upsert", "doc_id": "x3", "version": 1, "text": ""}).encode(), "x3"),
        rec(up("x4", 1, first="y" * 20_000)),
        rec(up("x5", 1).to_bytes(), key="other-key"),
    ]
    good = up("ok", 1)
    events = await indexer.handle_batch(bad + [rec(good)])
    assert [e.doc_id for e in events] == ["ok"]
    letters = [DeadLetter.model_validate_json(v) for v in publisher.on(settings.topic("dlq"))]
    assert [lt.error_type for lt in letters] == ["malformed_json", "schema", "schema", "oversized", "schema"]
    assert "op: Input should be 'upsert' or 'delete'" in letters[1].reason
    assert "empty document" in letters[2].reason
    assert "above the maximum of 10,000 bytes" in letters[3].reason
    assert [lt.offset for lt in letters] == [r.offset for r in bad]
    published = [IndexEvent.model_validate_json(v) for v in publisher.on(settings.topic("index.events"))]
    assert [e.doc_id for e in published] == ["ok"]
    assert stored_ids(store, "ok") == expected_ids(indexer, good)


async def test_vector_store_outage_is_retried_without_losing_the_batch(env, monkeypatch):
    indexer, store, _, _, _ = env
    real = store.upsert_chunks
    failures = [RetryableError("milvus down"), RetryableError("still down")]
    attempts: list[list[str]] = []  # the chunk ids of every upsert attempt

    def flaky(records):
        attempts.append([r.chunk.chunk_id for r in records])
        if failures:
            raise failures.pop(0)
        real(records)

    backoffs: list[float] = []

    async def no_sleep(seconds):
        backoffs.append(seconds)

    monkeypatch.setattr(store, "upsert_chunks", flaky)
    monkeypatch.setattr("streams.retry.asyncio.sleep", no_sleep)
    [event] = await indexer.handle_batch([rec(up("a", 1))])
    assert failures == [] and len(attempts) == 3  # both injected errors raised, then a third attempt
    assert attempts[0] == attempts[1] == attempts[2] and len(backoffs) == 2  # the same records, after a backoff each
    assert event.status == "indexed"
    assert stored_ids(store, "a") == expected_ids(indexer, up("a", 1))


async def test_identical_chunks_across_documents_are_embedded_once_per_batch(env):
    indexer, store, embedder, _, _ = env
    before = embedder.calls[:]
    await indexer.handle_batch([rec(up("a", 1, title="Same")), rec(up("b", 1, title="Same"))])
    batch_sizes = embedder.calls[len(before):]
    per_doc = len(expected_ids(indexer, up("a", 1, title="Same")))
    assert batch_sizes == [per_doc]  # one encode call, each distinct text once
    assert len(stored_ids(store, "a")) == len(stored_ids(store, "b")) == per_doc


async def test_a_document_that_fails_processing_goes_to_dlq_alone(env, monkeypatch):
    indexer, store, _, publisher, settings = env
    real = indexer.chunker.chunk

    def chunk(doc_id, *args, **kwargs):
        if doc_id == "poison":
            raise ValueError("chunker cannot handle this document")
        return real(doc_id, *args, **kwargs)

    monkeypatch.setattr(indexer.chunker, "chunk", chunk)
    events = await indexer.handle_batch([rec(up("a", 1)), rec(up("poison", 1)), rec(up("b", 1))])
    assert sorted(e.doc_id for e in events if e.status == "indexed") == ["a", "b"]
    [letter] = [DeadLetter.model_validate_json(v) for v in publisher.on(settings.topic("dlq"))]
    assert letter.key == "poison" and letter.error_type == "processing"
    assert "chunker cannot handle this document" in letter.reason
    assert store.live_doc_ids("") == ["a", "b"]


async def test_large_batches_are_written_in_groups(env, monkeypatch):
    indexer, store, _, publisher, settings = env
    changes = [up(f"d{i}", 1, first=f"doc {i} words") for i in range(5)]
    [n] = {len(expected_ids(indexer, c)) for c in changes}  # chunks per document
    indexer.settings = settings.model_copy(update={"embed_group_chunks": 2 * n})  # two documents per group
    writes: list[tuple[int, int]] = []  # (chunks upserted, IndexEvents published before the upsert)
    states: list[list[str]] = []
    real_upsert, real_states = store.upsert_chunks, store.set_doc_states

    def upsert(records):
        writes.append((len(records), len(publisher.on(settings.topic("index.events")))))
        real_upsert(records)

    def set_doc_states(doc_states):
        states.append([s.doc_id for s in doc_states])
        real_states(doc_states)

    monkeypatch.setattr(store, "upsert_chunks", upsert)
    monkeypatch.setattr(store, "set_doc_states", set_doc_states)
    events = await indexer.handle_batch([rec(c) for c in changes])
    assert len(events) == 5 and all(e.status == "indexed" for e in events)
    assert states == [["d0", "d1"], ["d2", "d3"], ["d4"]]
    # each group's IndexEvents are out before the next group is written
    assert writes == [(2 * n, 0), (2 * n, 2), (n, 4)]


async def test_changes_naming_a_collection_are_indexed_there_apart_from_the_default(env):
    indexer, store, _, publisher, settings = env
    default_a, other_a = up("a", 1), up("a", 1, first="Other text entirely.", collection="other")
    events = await indexer.handle_batch([rec(default_a), rec(other_a)])
    assert sorted((e.collection, e.status) for e in events) == [("c", "indexed"), ("other", "indexed")]
    other = indexer.collections.get("other", create=False)
    assert stored_ids(store, "a") == expected_ids(indexer, default_a)
    assert stored_ids(other, "a") == expected_ids(indexer, other_a)
    # deleting the doc in one collection leaves the other alone
    [event] = await indexer.handle_batch([rec(DocumentChange(op="delete", doc_id="a", version=2, collection="other"))])
    assert event.status == "deleted" and stored_ids(other, "a") == set()
    assert stored_ids(store, "a") == expected_ids(indexer, default_a)


async def test_a_collection_change_must_be_keyed_by_collection_and_doc_id(env):
    indexer, _, _, publisher, settings = env
    change = up("a", 1, collection="other")
    assert change.record_key() == "other:a"
    assert await indexer.handle_batch([rec(change.to_bytes(), key="a")]) == []
    [letter] = [DeadLetter.model_validate_json(v) for v in publisher.on(settings.topic("dlq"))]
    assert letter.error_type == "schema" and "'other:a'" in letter.reason
    bad = json.loads(change.to_bytes())
    bad["collection"] = "no-dashes"
    assert await indexer.handle_batch([rec(json.dumps(bad).encode(), key="no-dashes:a")]) == []
    assert "collection" in DeadLetter.model_validate_json(publisher.on(settings.topic("dlq"))[-1]).reason
