"""``InMemoryVectorStore``: the deterministic in-process fake of ``MilvusVectorStore`` for unit
tests, with the same semantics (the same input checks, from ``components.store_checks``) and
brute-force cosine search.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from components.base import (
    ChunkRecord,
    CollectionInfo,
    ConfigMismatchError,
    DocState,
    Hit,
    PermanentError,
    StoredChunk,
)
from components.store_checks import as_matrix, check_vector, mismatch_message


@dataclass
class _MemCollection:
    embedder: str
    dim: int
    chunker: str
    rows: dict[str, dict[str, Any]]
    docs: dict[str, DocState]


class InMemoryVectorStore:
    """In-process fake of ``MilvusVectorStore`` for unit tests: same semantics, brute-force cosine.

    ``server`` plays the Milvus server: a dict of collections shared by the stores given the same
    dict (each store gets a private one by default), so a reopened collection keeps its rows and
    its configuration (ConfigMismatchError on another embedder, dim or chunker). Ties in score are
    broken by chunk id, so results are deterministic. Thread-safe.
    """

    def __init__(
        self, collection: str = "eddy_chunks", dim: int = 384, embedder_id: str = "fake-embedder",
        chunker_id: str = "fake-chunker", *, server: dict[str, Any] | None = None,
    ) -> None:
        self.collection = collection
        self.dim = dim
        self.embedder_id = embedder_id
        self.chunker_id = chunker_id
        self.server: dict[str, Any] = server if server is not None else {}
        self._col: _MemCollection | None = None
        self._lock = threading.RLock()
        self.calls: dict[str, int] = {}

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    @property
    def _c(self) -> _MemCollection:
        if self._col is None:
            raise PermanentError("InMemoryVectorStore used before start()")
        return self._col

    def exists(self) -> bool:
        return self.collection in self.server

    def start(self) -> None:
        with self._lock:
            col = self.server.get(self.collection)
            if col is None:
                col = _MemCollection(self.embedder_id, self.dim, self.chunker_id, {}, {})
                self.server[self.collection] = col
            stored = {"embedder": col.embedder, "dim": str(col.dim), "chunker": col.chunker}
            configured = {"embedder": self.embedder_id, "dim": str(self.dim), "chunker": self.chunker_id}
            if stored != configured:
                raise ConfigMismatchError(mismatch_message(self.collection, stored, configured))
            self._col = col

    def close(self) -> None:
        self._col = None

    def doc_states(self, doc_ids: Sequence[str]) -> dict[str, DocState]:
        self._count("doc_states")
        with self._lock:
            return {d: self._c.docs[d] for d in doc_ids if d in self._c.docs}

    def stored_chunks(self, doc_ids: Sequence[str]) -> dict[str, list[StoredChunk]]:
        self._count("stored_chunks")
        wanted = set(doc_ids)
        with self._lock:
            rows = [r for r in self._c.rows.values() if r["doc_id"] in wanted]
        rows.sort(key=lambda r: (r["doc_id"], r["ordinal"], r["chunk_id"]))
        out: dict[str, list[StoredChunk]] = {}
        for r in rows:
            out.setdefault(r["doc_id"], []).append(StoredChunk(r["chunk_id"], r["meta_hash"]))
        return out

    def vectors(self, chunk_ids: Sequence[str]) -> dict[str, np.ndarray]:
        self._count("vectors")
        with self._lock:
            return {c: self._c.rows[c]["embedding"].copy() for c in chunk_ids if c in self._c.rows}

    def upsert_chunks(self, records: Sequence[ChunkRecord]) -> None:
        self._count("upsert_chunks")
        rows = []
        for record in records:
            chunk = record.chunk
            rows.append({
                "chunk_id": chunk.chunk_id, "doc_id": chunk.doc_id, "source": record.source, "uri": record.uri,
                "title": record.title, "section": chunk.section, "anchor": chunk.anchor, "text": chunk.text,
                "acl": frozenset(record.acl), "meta_hash": record.meta_hash, "content_hash": chunk.content_hash,
                "ordinal": int(chunk.ordinal), "embedding": check_vector(record, self.dim).copy(),
            })
        with self._lock:
            for row in rows:
                self._c.rows[row["chunk_id"]] = row

    def delete_chunks(self, chunk_ids: Sequence[str]) -> None:
        self._count("delete_chunks")
        with self._lock:
            for c in chunk_ids:
                self._c.rows.pop(c, None)

    def set_doc_states(self, states: Sequence[DocState]) -> None:
        self._count("set_doc_states")
        with self._lock:
            for s in states:
                self._c.docs[s.doc_id] = s

    def live_doc_ids(self, source: str) -> list[str]:
        with self._lock:
            return sorted(d for d, s in self._c.docs.items() if s.source == source and not s.deleted)

    def search(self, vectors: np.ndarray, top_k: int, groups: Sequence[str]) -> list[list[Hit]]:
        self._count("search")
        matrix = as_matrix(vectors, self.dim)
        if top_k <= 0 or matrix.shape[0] == 0:
            return [[] for _ in range(matrix.shape[0])]
        mine = set(groups)
        with self._lock:
            visible = [r for r in self._c.rows.values() if not r["acl"] or r["acl"] & mine]
        if not visible:
            return [[] for _ in range(matrix.shape[0])]
        visible.sort(key=lambda r: r["chunk_id"])
        stored = np.stack([r["embedding"] for r in visible])
        stored_norm = stored / np.maximum(np.linalg.norm(stored, axis=1, keepdims=True), 1e-12)
        queries = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
        scores = queries @ stored_norm.T
        out = []
        for q in range(matrix.shape[0]):
            order = np.argsort(-scores[q], kind="stable")[:top_k]
            out.append([
                Hit(chunk_id=visible[i]["chunk_id"], doc_id=visible[i]["doc_id"], text=visible[i]["text"],
                    section=visible[i]["section"], anchor=visible[i]["anchor"], uri=visible[i]["uri"],
                    title=visible[i]["title"], score=float(scores[q, i]))
                for i in order
            ])
        return out

    def info(self) -> CollectionInfo:
        with self._lock:
            return CollectionInfo(self.collection, len(self._c.rows), self.embedder_id, self.dim, self.chunker_id)
