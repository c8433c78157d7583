"""MilvusVectorStore against a real Milvus Lite server (started by infra.milvus): the VectorStore
contract, error classification, durability across kill -9, and the launcher itself."""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pytest

from components.base import ConfigMismatchError, DocState, RetryableError
from components.milvus_admin import collection_rows, drop_collection, read_live_doc_ids
from components.milvus_store import MilvusVectorStore
from infra.milvus import MilvusLiteServer
from infra.process import LaunchError
from tests.conftest import free_port
from tests.vectorstore_contract import CHUNKER, DIM, EMBEDDER, VectorStoreContract, ids, rand_vectors, record

pytestmark = pytest.mark.integration


def new_name() -> str:
    return f"vs_{uuid.uuid4().hex[:10]}"


def open_store(uri: str, name: str, **kw) -> MilvusVectorStore:
    store = MilvusVectorStore(uri, name, kw.pop("dim", DIM), kw.pop("embedder", EMBEDDER),
                              kw.pop("chunker", CHUNKER), **kw)
    store.start()
    return store


class TestMilvusVectorStore(VectorStoreContract):
    @pytest.fixture
    def collection_name(self, milvus) -> str:
        return new_name()

    @pytest.fixture
    def make_store(self, milvus):
        stores: list[MilvusVectorStore] = []
        names: set[str] = set()

        def make(collection=None, dim=DIM, embedder=EMBEDDER, chunker=CHUNKER):
            name = collection or new_name()
            names.add(name)
            # a small query page so that the 1,200-chunk document goes through the paging path
            store = MilvusVectorStore(milvus.uri, name, dim, embedder, chunker, query_page=500)
            stores.append(store)
            store.start()
            return store

        yield make
        for store in stores:
            store.close()
        for name in names:
            drop_collection(milvus.uri, name)


def test_flat_index_gives_exact_results(milvus):
    name = new_name()
    store = open_store(milvus.uri, name, index_type="FLAT")
    try:
        vecs = rand_vectors(50, seed=11)
        store.upsert_chunks([record("d", i, vecs[i]) for i in range(50)])
        hits = store.search(vecs[:2], 10, [])
        for q in range(2):
            np.testing.assert_allclose([h.score for h in hits[q]], np.sort(vecs @ vecs[q])[::-1][:10], atol=1e-4)
    finally:
        store.close()
        drop_collection(milvus.uri, name)


def test_foreign_collection_is_a_config_mismatch(milvus):
    from pymilvus import MilvusClient

    name = new_name()
    client = MilvusClient(milvus.uri)
    client.create_collection(name, dimension=DIM)
    try:
        with pytest.raises(ConfigMismatchError, match="not created by Eddy"):
            open_store(milvus.uri, name)
    finally:
        client.close()
        drop_collection(milvus.uri, name)


def test_module_helpers(milvus):
    name = new_name()
    store = open_store(milvus.uri, name)
    store.upsert_chunks([record("d", i, v) for i, v in enumerate(rand_vectors(4, seed=12))])
    store.set_doc_states([DocState("d", 1, False, "s"), DocState("e", 1, True, "s")])
    store.close()
    rows = collection_rows(milvus.uri)
    assert rows[name] == 4 and rows[name + "_docs"] == 2
    assert read_live_doc_ids(milvus.uri, name, "s") == ["d"]
    assert read_live_doc_ids(milvus.uri, "no_such_collection", "s") == []
    assert drop_collection(milvus.uri, name) is True
    assert drop_collection(milvus.uri, name) is False
    assert name not in collection_rows(milvus.uri)


def test_overwrites_and_deletes_across_flushed_segments(tiny_buffer_milvus):
    """Upserts and deletes of rows already flushed to segments leave exactly one live row per chunk id."""
    store = open_store(tiny_buffer_milvus.uri, new_name(), query_page=300)
    n = 1500
    vecs = rand_vectors(n, seed=14)
    for b in range(0, n, 64):
        store.upsert_chunks([record("d", i, vecs[i]) for i in range(b, min(n, b + 64))])
    store.upsert_chunks([record("d", i, vecs[i], meta_hash="m2", title="v2") for i in range(n)])
    store.delete_chunks([record("d", i, vecs[i]).chunk.chunk_id for i in range(0, n, 10)])
    assert store.info().rows == n - n // 10
    stored = store.stored_chunks(["d"])["d"]
    assert len(stored) == n - n // 10 and {s.meta_hash for s in stored} == {"m2"}
    hits = store.search(vecs[1:4], 20, [])
    for q, row in enumerate(hits):
        assert len(set(ids(row))) == 20 and {h.title for h in row} == {"v2"}
        assert row[0].chunk_id == record("d", q + 1, vecs[q + 1]).chunk.chunk_id
    store.close()


def test_unreachable_server_is_retryable():
    store = MilvusVectorStore(f"http://127.0.0.1:{free_port()}", new_name(), DIM, EMBEDDER, CHUNKER, timeout_s=3)
    started = time.monotonic()
    with pytest.raises(RetryableError) as err:
        store.start()
    assert time.monotonic() - started < 30
    assert err.value.__cause__ is not None


def test_writes_survive_kill_9_and_the_store_recovers(private_milvus):
    """Several writers at once, kill -9 right after their upserts returned, restart: every row is there,
    and the store that was open across the crash works again (RetryableError while the server is down)."""
    uri = private_milvus.uri
    name = new_name()
    store = open_store(uri, name, timeout_s=5)
    writers, batches, per_batch = 4, 8, 64
    vecs = rand_vectors(writers * batches * per_batch, seed=13)
    errors: list[BaseException] = []

    def write(w: int) -> None:
        own = open_store(uri, name)
        try:
            for b in range(batches):
                base = (w * batches + b) * per_batch
                own.upsert_chunks([record(f"w{w}", base + i, vecs[base + i]) for i in range(per_batch)])
            own.set_doc_states([DocState(f"w{w}", 1, False, "crash")])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    total = writers * batches * per_batch
    assert store.info().rows == total

    assert private_milvus.stop(kill=True)
    assert not private_milvus.running
    with pytest.raises(RetryableError):
        store.search(vecs[:1], 3, [])

    private_milvus.start()
    assert store.info().rows == total  # same store object: reconnects and reloads the collections
    assert store.live_doc_ids("crash") == [f"w{w}" for w in range(writers)]
    [hits] = store.search(vecs[100:101], 1, [])
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    stored = store.stored_chunks([f"w{w}" for w in range(writers)])
    assert sum(len(v) for v in stored.values()) == total
    store.upsert_chunks([record("after", 0, vecs[0])])
    assert store.info().rows == total + 1
    store.close()


# --------------------------------------------------------------------------- launcher
def test_launcher_is_idempotent_and_refuses_a_taken_port(tmp_path, milvus):
    assert milvus.running
    assert milvus.uri == f"http://127.0.0.1:{milvus.port}"
    started = time.monotonic()
    milvus.start()  # already running: returns at once
    assert time.monotonic() - started < 5
    other = MilvusLiteServer(tmp_path / "data", milvus.port, tmp_path / "log", tmp_path / "pid")
    with pytest.raises(LaunchError, match="already in use"):
        other.start()
    assert not other.running
    assert other.stop() is False


def test_launcher_reports_a_locked_data_dir(tmp_path, milvus):
    twin = MilvusLiteServer(milvus.data_dir, free_port(), tmp_path / "log", tmp_path / "pid")
    with pytest.raises(LaunchError) as err:
        twin.start(timeout_s=30)
    assert "lock" in str(err.value).lower() and str(tmp_path / "log") in str(err.value)
    assert not twin.running
