"""Collection names (issue 10, item 6): the suffixes of Eddy's companion collections are reserved,
queries never create a collection, and producers can create at most ``max_collections``."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from agents.indexer import Indexer
from components.base import PermanentError
from components.chunking import StructureChunker
from components.collection_registry import Collections
from components.embedding import HashEmbedder
from components.memory_store import InMemoryVectorStore
from config.settings import Settings
from schemas import DeadLetter, DocumentChange, Query
from streams.dlq import DeadLetters
from streams.records import MemoryPublisher, RawRecord


def registry(**kw) -> tuple[Collections, dict]:
    store = InMemoryVectorStore("eddy_chunks", 8)
    store.start()
    collections = Collections(store, lambda name: InMemoryVectorStore(name, 8, server=store.server), **kw)
    return collections, store.server


@pytest.mark.parametrize("name", ["eddy_chunks_docs", "x_docs", "eddy_chunks_vetted", "X_DOCS"])
def test_reserved_suffixes_are_refused_by_the_schemas(name):
    with pytest.raises(ValidationError, match="reserved"):
        DocumentChange(op="upsert", doc_id="d", version=1, text="t", collection=name)
    with pytest.raises(ValidationError, match="reserved"):
        Query(query_id="q", conversation_id="c", text="t", options={"collection": name})
    DocumentChange(op="upsert", doc_id="d", version=1, text="t", collection="docs_x")  # only the suffix is


@pytest.mark.parametrize("create", [True, False])
def test_reserved_suffixes_are_refused_by_the_registry_and_nothing_is_created(create):
    collections, server = registry()
    before = set(server)
    with pytest.raises(PermanentError, match="reserved"):
        collections.get("eddy_chunks_docs", create=create)
    assert set(server) == before


def test_a_query_never_creates_a_collection():
    collections, server = registry()
    with pytest.raises(PermanentError, match="does not exist"):
        collections.get("missing", create=False)
    assert set(server) == {"eddy_chunks"}


def test_producers_create_at_most_max_collections():
    collections, server = registry(max_collections=3, list_existing=lambda: list(server))
    collections.get("a", create=True)
    collections.get("b", create=True)
    with pytest.raises(PermanentError, match="maximum of 3 collections") as info:
        collections.get("c", create=True)
    assert info.value.error_type == "collection_limit"
    assert set(server) == {"eddy_chunks", "a", "b"}
    other, other_server = registry(max_collections=3, list_existing=lambda: list(server))
    other_server.update(server)
    assert other.get("a", create=True).collection == "a"  # existing collections still open past the cap


async def test_changes_naming_a_collection_past_the_cap_are_dead_lettered_and_the_rest_applied(tmp_path):
    settings = Settings(home=tmp_path, collection="c")
    chunker, embedder = StructureChunker(200, 30), HashEmbedder(32)
    store = InMemoryVectorStore("c", 32, embedder.model_id, chunker.config_id)
    store.start()
    collections = Collections(
        store, lambda name: InMemoryVectorStore(name, 32, embedder.model_id, chunker.config_id, server=store.server),
        max_collections=2, list_existing=lambda: list(store.server),
    )
    publisher = MemoryPublisher()
    indexer = Indexer(settings, chunker, embedder, collections, publisher,
                      DeadLetters(publisher, settings.topic("dlq"), "indexer"))

    def rec(offset: int, doc_id: str, collection: str | None) -> RawRecord:
        change = DocumentChange(op="upsert", doc_id=doc_id, version=1, text=f"Text of {doc_id}.", collection=collection)
        return RawRecord("eddy.docs.changes", 0, offset, change.record_key().encode(), change.to_bytes())

    events = await indexer.handle_batch([rec(0, "a", None), rec(1, "b", "first"), rec(2, "c", "second"),
                                         rec(3, "d", "first")])
    assert sorted((e.collection, e.doc_id) for e in events) == [("c", "a"), ("first", "b"), ("first", "d")]
    [letter] = [DeadLetter.model_validate_json(v) for v in publisher.on(settings.topic("dlq"))]
    assert (letter.offset, letter.error_type, letter.agent) == (2, "collection_limit", "indexer")
    assert "max_collections" in letter.reason
    assert "second" not in store.server
    reserved = json.loads(rec(4, "e", None).value)
    reserved["collection"] = "c_docs"
    reserved_record = RawRecord("eddy.docs.changes", 0, 4, b"c_docs:e", json.dumps(reserved).encode())
    assert await indexer.handle_batch([reserved_record]) == []
    assert "reserved" in DeadLetter.model_validate_json(publisher.on(settings.topic("dlq"))[-1]).reason
