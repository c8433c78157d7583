"""One contract for every ``VectorStore``: subclass ``VectorStoreContract`` and provide a
``make_store`` fixture, a factory ``make_store(collection=None, dim=DIM, embedder=..., chunker=...)``
returning a *started* store; the same ``collection`` name must reach the same stored data
(``None`` = a fresh collection per call)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from components.base import (
    Chunk,
    ChunkRecord,
    CollectionInfo,
    ConfigMismatchError,
    DocState,
    Hit,
    PermanentError,
    StoredChunk,
    VectorStore,
)

DIM = 8
EMBEDDER = "test-embedder-a"
CHUNKER = "test-chunker:max=100"


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def basis(i: int, dim: int = DIM) -> np.ndarray:
    v = np.zeros(dim, dtype=np.float32)
    v[i] = 1.0
    return v


def rand_vectors(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    m = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def chunk_id(doc_id: str, ordinal: int, salt: str = "") -> str:
    return hashlib.sha256(f"{doc_id}\x00{ordinal}\x00{salt}".encode()).hexdigest()[:32]


def record(doc_id: str, ordinal: int, vector, *, acl=(), title=None, meta_hash="m1", source="src",
           salt: str = "", text: str | None = None) -> ChunkRecord:
    text = text if text is not None else f"text {ordinal} of {doc_id}"
    chunk = Chunk(
        chunk_id=chunk_id(doc_id, ordinal, salt), doc_id=doc_id, text=text, embed_text=f"S > {text}",
        section=f"Intro > Part {ordinal}", anchor=f"part-{ordinal}",
        content_hash=hashlib.sha256(text.encode()).hexdigest(), ordinal=ordinal,
    )
    return ChunkRecord(chunk=chunk, source=source, uri=f"https://example.org/{doc_id}",
                       title=title or f"Title {doc_id}",
                       acl=tuple(acl), meta_hash=meta_hash, vector=np.asarray(vector, dtype=np.float32))


def ids(hits: list[Hit]) -> list[str]:
    return [h.chunk_id for h in hits]


class VectorStoreContract:
    """The behaviour every VectorStore implementation must show."""

    def test_is_a_vector_store(self, make_store):
        assert isinstance(make_store(), VectorStore)

    def test_round_trip(self, make_store):
        store = make_store()
        vecs = rand_vectors(5, seed=1)
        recs = [record("doc-a", i, vecs[i]) for i in range(3)] + [record("doc-b", i, vecs[3 + i]) for i in range(2)]
        store.upsert_chunks(recs)

        stored = store.stored_chunks(["doc-a", "doc-b", "doc-none"])
        assert set(stored) == {"doc-a", "doc-b"}
        assert stored["doc-a"] == [StoredChunk(r.chunk.chunk_id, "m1") for r in recs[:3]]  # ordered by ordinal
        assert [s.chunk_id for s in stored["doc-b"]] == [r.chunk.chunk_id for r in recs[3:]]

        got = store.vectors([r.chunk.chunk_id for r in recs] + ["0" * 32])
        assert set(got) == {r.chunk.chunk_id for r in recs}
        for r in recs:
            assert got[r.chunk.chunk_id].dtype == np.float32
            np.testing.assert_allclose(got[r.chunk.chunk_id], r.vector, atol=1e-6)

        store.delete_chunks([recs[0].chunk.chunk_id, recs[3].chunk.chunk_id, "unknown-id"])
        stored = store.stored_chunks(["doc-a", "doc-b"])
        assert [s.chunk_id for s in stored["doc-a"]] == [r.chunk.chunk_id for r in recs[1:3]]
        assert [s.chunk_id for s in stored["doc-b"]] == [recs[4].chunk.chunk_id]
        store.delete_chunks([recs[4].chunk.chunk_id])
        assert "doc-b" not in store.stored_chunks(["doc-a", "doc-b"])
        assert store.info().rows == 2

        assert store.doc_states(["doc-a"]) == {}
        store.set_doc_states([DocState("doc-a", 3, False, "src"), DocState("doc-b", 7, True, "other")])
        assert store.doc_states(["doc-a", "doc-b", "doc-c"]) == {
            "doc-a": DocState("doc-a", 3, False, "src"), "doc-b": DocState("doc-b", 7, True, "other"),
        }
        store.set_doc_states([DocState("doc-a", 4, True, "src")])
        assert store.doc_states(["doc-a"])["doc-a"] == DocState("doc-a", 4, True, "src")

    def test_empty_inputs(self, make_store):
        store = make_store()
        store.upsert_chunks([])
        store.delete_chunks([])
        store.set_doc_states([])
        assert store.stored_chunks([]) == {}
        assert store.doc_states([]) == {}
        assert store.vectors([]) == {}
        assert store.search(basis(0).reshape(1, -1), 5, []) == [[]]
        assert store.info().rows == 0

    def test_upsert_same_ids_twice_has_no_duplicates(self, make_store):
        store = make_store()
        vecs = rand_vectors(4, seed=2)
        store.upsert_chunks([record("d", i, vecs[i]) for i in range(4)])
        store.upsert_chunks([record("d", i, vecs[i], title="New title", meta_hash="m2") for i in range(4)])
        assert store.info().rows == 4
        assert [s.meta_hash for s in store.stored_chunks(["d"])["d"]] == ["m2"] * 4
        hits = store.search(vecs[:1], 10, [])[0]
        assert len(hits) == 4 and len(set(ids(hits))) == 4
        assert {h.title for h in hits} == {"New title"}

    def test_search_order_scores_and_fields(self, make_store):
        store = make_store()
        q = basis(0)
        angles = [0.0, 0.3, 0.6, 0.9, 1.2]
        recs = [record("d", i, unit(np.cos(a) * basis(0) + np.sin(a) * basis(1))) for i, a in enumerate(angles)]
        other = [record("e", i, unit(basis(2) + 0.1 * i * basis(3))) for i in range(3)]
        store.upsert_chunks(list(reversed(recs)) + other)

        [hits] = store.search(q.reshape(1, -1), 3, [])
        assert ids(hits) == [r.chunk.chunk_id for r in recs[:3]]
        np.testing.assert_allclose([h.score for h in hits], np.cos(angles[:3]), atol=1e-4)
        h = hits[0]
        r = recs[0]
        assert (h.doc_id, h.text, h.section, h.anchor, h.uri, h.title) == (
            "d", r.chunk.text, r.chunk.section, r.chunk.anchor, r.uri, r.title)

        # several queries in one call, and a 1-d query vector
        both = store.search(np.stack([q, unit(basis(2))]), 2, [])
        assert len(both) == 2
        assert ids(both[0]) == [r.chunk.chunk_id for r in recs[:2]]
        assert ids(both[1]) == [other[0].chunk.chunk_id, other[1].chunk.chunk_id]
        assert both[1][0].score == pytest.approx(1.0, abs=1e-4)
        assert ids(store.search(q, 1, [])[0]) == [recs[0].chunk.chunk_id]

    def test_top_k(self, make_store):
        store = make_store()
        vecs = rand_vectors(30, seed=3)
        store.upsert_chunks([record("d", i, vecs[i]) for i in range(30)])
        assert len(store.search(vecs[:1], 1, [])[0]) == 1
        assert len(store.search(vecs[:1], 7, [])[0]) == 7
        hits = store.search(vecs[:1], 100, [])[0]
        assert len(hits) == 30
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)
        assert hits[0].chunk_id == chunk_id("d", 0) and hits[0].score == pytest.approx(1.0, abs=1e-4)
        exact = np.sort(vecs @ vecs[0])[::-1]
        np.testing.assert_allclose(scores, exact, atol=1e-4)

    def test_acl_visibility(self, make_store):
        store = make_store()
        weird = 'we"ird\\ group %_|*'
        acls = {"public": (), "eng": ("eng",), "eng-hr": ("hr", "eng"), "hr": ("hr",), "weird": (weird,)}
        vecs = rand_vectors(len(acls), seed=4)
        recs = {name: record(f"doc-{name}", 0, vecs[i], acl=acl) for i, (name, acl) in enumerate(acls.items())}
        store.upsert_chunks(list(recs.values()))

        def visible(groups):
            hits = store.search(vecs, 10, groups)
            assert all(set(ids(h)) == set(ids(hits[0])) for h in hits)
            return {h.doc_id.removeprefix("doc-") for h in hits[0]}

        assert visible([]) == {"public"}
        assert visible(["eng"]) == {"public", "eng", "eng-hr"}
        assert visible(["hr"]) == {"public", "eng-hr", "hr"}
        assert visible(["hr", "eng"]) == {"public", "eng", "eng-hr", "hr"}
        assert visible(["nobody"]) == {"public"}
        assert visible(["Eng"]) == {"public"}  # case-sensitive
        assert visible(["eng-hr"]) == {"public"}  # a group name is not a prefix match
        assert visible([weird]) == {"public", "weird"}
        assert visible(["we"]) == {"public"}

        # an ACL change rewrites the row
        store.upsert_chunks([record("doc-public", 0, vecs[0], acl=("eng",), meta_hash="m2")])
        assert visible([]) == set()
        assert visible(["eng"]) == {"public", "eng", "eng-hr"}

    def test_restrictive_acl_still_fills_top_k(self, make_store):
        store = make_store()
        secret = rand_vectors(300, seed=5)
        q = secret[0]
        store.upsert_chunks([record("secret", i, secret[i], acl=("vault",)) for i in range(300)])
        far = [record("public", i, unit(-q + 0.05 * basis(i))) for i in range(3)]
        store.upsert_chunks(far)
        [hits] = store.search(q.reshape(1, -1), 5, [])
        assert sorted(ids(hits)) == sorted(r.chunk.chunk_id for r in far)
        [hits] = store.search(q.reshape(1, -1), 5, ["vault"])
        assert hits[0].chunk_id == chunk_id("secret", 0) and len(hits) == 5

    def test_document_with_many_chunks(self, make_store):
        store = make_store()
        n = 1200
        vecs = rand_vectors(n, seed=6)
        recs = [record("big", i, vecs[i]) for i in range(n)]
        small = [record(f"small-{j}", 0, vecs[j]) for j in range(700)]
        store.upsert_chunks(recs + small)
        assert store.info().rows == n + 700

        stored = store.stored_chunks(["big"])
        assert [s.chunk_id for s in stored["big"]] == [r.chunk.chunk_id for r in recs]
        many = store.stored_chunks(["big"] + [f"small-{j}" for j in range(700)] + ["absent"])
        assert len(many) == 701 and sum(len(v) for v in many.values()) == n + 700

        got = store.vectors([r.chunk.chunk_id for r in recs])
        assert len(got) == n
        np.testing.assert_allclose(got[recs[999].chunk.chunk_id], vecs[999], atol=1e-6)

        store.set_doc_states([DocState(f"small-{j}", j, j % 2 == 0, "many") for j in range(700)])
        states = store.doc_states([f"small-{j}" for j in range(700)])
        assert len(states) == 700 and states["small-699"] == DocState("small-699", 699, False, "many")
        assert len(store.live_doc_ids("many")) == 350

        store.delete_chunks([r.chunk.chunk_id for r in recs])
        assert store.stored_chunks(["big"]) == {}
        assert store.info().rows == 700

    def test_live_doc_ids(self, make_store):
        store = make_store()
        assert store.live_doc_ids("a") == []
        store.set_doc_states([
            DocState("d2", 1, False, "a"), DocState("d1", 1, False, "a"), DocState("d3", 2, True, "a"),
            DocState("d4", 1, False, "b"), DocState('d"5', 1, False, 'a"q'),
        ])
        assert store.live_doc_ids("a") == ["d1", "d2"]
        assert store.live_doc_ids("b") == ["d4"]
        assert store.live_doc_ids('a"q') == ['d"5']
        store.set_doc_states([DocState("d3", 3, False, "a"), DocState("d1", 2, True, "a")])
        assert store.live_doc_ids("a") == ["d2", "d3"]
        assert store.live_doc_ids("none") == []

    def test_wrong_vector_dimension_is_permanent(self, make_store):
        store = make_store()
        with pytest.raises(PermanentError, match=f"has a {DIM + 1}-d vector, the collection holds {DIM}-d vectors"):
            store.upsert_chunks([record("d", 0, np.ones(DIM + 1, dtype=np.float32))])
        with pytest.raises(PermanentError, match=rf"query vectors have shape \(1, {DIM + 1}\), expected \(q, {DIM}\)"):
            store.search(np.ones((1, DIM + 1), dtype=np.float32), 3, [])

    def test_info_and_reopen_keeps_data(self, make_store, collection_name):
        store = make_store(collection_name)
        store.upsert_chunks([record("d", i, v) for i, v in enumerate(rand_vectors(3, seed=7))])
        store.set_doc_states([DocState("d", 1, False, "src")])
        assert store.info() == CollectionInfo(collection_name, 3, EMBEDDER, DIM, CHUNKER)
        store.close()
        again = make_store(collection_name)
        assert again.info().rows == 3
        assert again.live_doc_ids("src") == ["d"]

    @pytest.mark.parametrize("change", ["dim", "embedder", "chunker"])
    def test_reopen_with_other_config_raises(self, make_store, collection_name, change):
        make_store(collection_name).close()
        kwargs = {"dim": DIM, "embedder": EMBEDDER, "chunker": CHUNKER}
        kwargs[change] = {"dim": DIM * 2, "embedder": "other-embedder", "chunker": "other-chunker:max=5"}[change]
        with pytest.raises(ConfigMismatchError) as err:
            make_store(collection_name, **kwargs)
        message = str(err.value)
        assert collection_name in message
        stored_value, configured_value = {
            "dim": (str(DIM), str(DIM * 2)), "embedder": (EMBEDDER, "other-embedder"),
            "chunker": (CHUNKER, "other-chunker:max=5"),
        }[change]
        assert stored_value in message and configured_value in message
        assert "EDDY_COLLECTION" in message and "drop" in message
