"""Collection names on a real Milvus Lite server (issue 10, item 6): a collection never drops nor adopts
another collection named like its ``_docs`` companion, queries create nothing, and ``max_collections``
counts the Eddy collections the server holds."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from components.base import PermanentError
from components.collection_registry import Collections, UnknownCollectionError
from components.milvus_admin import drop_collection
from components.milvus_store import MilvusVectorStore
from tests.vectorstore_contract import CHUNKER, DIM, EMBEDDER, basis, record


@pytest.fixture
def names(milvus) -> Iterator[list[str]]:
    """Collection names for the test (each dropped after it, with its ``_docs``)."""
    created: list[str] = []
    yield created
    for name in created:
        drop_collection(milvus.uri, name)


def new_store(uri: str, name: str) -> MilvusVectorStore:
    return MilvusVectorStore(uri, name, DIM, EMBEDDER, CHUNKER)


def server_names(uri: str) -> set[str]:
    store = new_store(uri, "probe")
    try:
        return set(store.connect().list_collections())
    finally:
        store.close()


def test_a_collection_never_drops_or_adopts_a_chunk_collection_named_like_its_companion(milvus, names):
    tag = uuid.uuid4().hex[:8]
    legacy_name, name = f"c{tag}_docs", f"c{tag}"  # legacy_name: created before the suffix was reserved
    names += [legacy_name, name]
    legacy = new_store(milvus.uri, legacy_name)
    legacy.start()
    legacy.upsert_chunks([record("d", 0, basis(0))])
    store = new_store(milvus.uri, name)
    with pytest.raises(PermanentError, match="holds chunks"):
        store.start()
    store.close()
    assert legacy.info().rows == 1 and name not in server_names(milvus.uri)  # not dropped, nothing created
    default = new_store(milvus.uri, f"c{tag}_default")
    names.append(default.collection)
    default.start()
    collections = Collections(default, lambda n: new_store(milvus.uri, n))
    with pytest.raises(UnknownCollectionError):  # a query names it: nothing is created or dropped
        collections.get(name, create=False)
    with pytest.raises(PermanentError):  # a change names it: refused, the legacy collection kept
        collections.get(name, create=True)
    assert legacy.info().rows == 1 and name not in server_names(milvus.uri)
    legacy.close()
    collections.close()


def test_queries_create_nothing_and_orphaned_states_are_still_dropped(milvus, names):
    tag = uuid.uuid4().hex[:8]
    default, half = f"d{tag}", f"h{tag}"
    names += [default, half]
    store = new_store(milvus.uri, default)
    store.start()
    collections = Collections(store, lambda n: new_store(milvus.uri, n))
    before = server_names(milvus.uri)
    with pytest.raises(PermanentError, match="reserved"):
        collections.get(f"{default}_docs", create=False)
    # A collection left without its _docs (dropped by hand): a query does not complete it.
    other = new_store(milvus.uri, half)
    other.start()
    other.connect().drop_collection(f"{half}_docs")
    other.close()
    with pytest.raises(UnknownCollectionError):
        collections.get(half, create=False)
    assert server_names(milvus.uri) == before | {half}
    # _docs left without its collection (a drop interrupted between the two): a change starts afresh.
    orphan = new_store(milvus.uri, half)
    orphan.start()
    orphan.connect().drop_collection(half)
    orphan.close()
    again = collections.get(half, create=True)
    assert again.info().rows == 0 and again.doc_states(["d"]) == {}
    collections.close()


def test_max_collections_counts_the_eddy_collections_of_the_server(milvus, names):
    tag = uuid.uuid4().hex[:8]
    default = new_store(milvus.uri, f"m{tag}")
    names += [f"m{tag}", f"m{tag}_a", f"m{tag}_b"]
    default.start()
    existing = default.list_collections()
    assert f"m{tag}" in existing and not any(n.endswith("_docs") for n in existing)
    collections = Collections(default, lambda n: new_store(milvus.uri, n), max_collections=len(existing) + 1,
                              list_existing=default.list_collections)
    collections.get(f"m{tag}_a", create=True)
    with pytest.raises(PermanentError, match="max_collections"):
        collections.get(f"m{tag}_b", create=True)
    assert f"m{tag}_b" not in server_names(milvus.uri)
    collections.close()
