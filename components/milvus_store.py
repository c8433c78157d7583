"""``MilvusVectorStore``: the VectorStore of one Eddy collection in Milvus (or the Milvus Lite
server), through pymilvus ``MilvusClient`` and the helpers of ``components.milvus_client``.

Layout of one Eddy collection ``NAME`` in Milvus:

* ``NAME`` — one row per chunk: ``chunk_id`` (primary key), ``doc_id``, ``source``, ``uri``,
  ``title``, ``section``, ``anchor``, ``text``, ``acl`` (ARRAY of group names), ``acl_key``,
  ``meta_hash``, ``content_hash``, ``ordinal`` and ``embedding`` (FLOAT_VECTOR, COSINE, HNSW).
* ``NAME_docs`` — one row per document ever indexed: ``doc_id`` (primary key), ``version``,
  ``deleted``, ``source`` and a constant 2-d dummy vector (Milvus wants a vector field in
  every collection).

Both carry the collection properties ``eddy.embedder``, ``eddy.dim``, ``eddy.chunker`` and
``eddy.schema``; opening a collection built with another embedder, dimension or chunker raises
``ConfigMismatchError``.

Searches filter on ``acl_key`` (hashed group tokens, see ``components.milvus_client``); the ``acl``
ARRAY column keeps the readable group names (e.g. for ``array_contains_any`` on a full Milvus).

Writes use the collections' Strong consistency level and are visible to searches and queries as
soon as the call returns (milvus-lite applies them synchronously to its write-ahead log, which
survives a kill -9 of the server).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import numpy as np

from components.base import (
    Chunk,
    ChunkRecord,
    CollectionInfo,
    ConfigMismatchError,
    DocState,
    Hit,
    PermanentError,
    StoredChunk,
)
from components.milvus_client import (
    acl_filter,
    acl_key,
    call_milvus,
    classify_error,
    connect_milvus,
    in_expr,
    quote,
)
from components.store_checks import as_matrix, check_vector, mismatch_message

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA_VERSION = "1"
DOCS_SUFFIX = "_docs"
#: Ids per ``in [...]`` expression.
ID_BATCH = 500
#: Rows per query page (Milvus caps ``offset + limit`` of a plain query at 16,384).
QUERY_PAGE = 4096
#: Query vectors per search request.
SEARCH_BATCH = 256

_PROP_EMBEDDER = "eddy.embedder"
_PROP_DIM = "eddy.dim"
_PROP_CHUNKER = "eddy.chunker"
_PROP_SCHEMA = "eddy.schema"

_PK_MAX = 64
_DOC_ID_MAX = 1024
_SOURCE_MAX = 512
_URI_MAX = 4096
_TITLE_MAX = 2048
_SECTION_MAX = 4096
_ANCHOR_MAX = 1024
_TEXT_MAX = 65535
_HASH_MAX = 128
_GROUP_MAX = 256
_ACL_CAPACITY = 256
_ACL_KEY_MAX = 8192
_DUMMY_DIM = 2
_DUMMY_VECTOR = [1.0, 0.0]
_HNSW_BUILD = {"M": 16, "efConstruction": 100}
_HIT_FIELDS = ["doc_id", "text", "section", "anchor", "uri", "title"]


def _batches(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _truncate_utf8(value: str, max_bytes: int) -> str:
    raw = value.encode("utf-8")
    if len(raw) <= max_bytes:
        return value
    return raw[:max_bytes].decode("utf-8", errors="ignore")


class MilvusVectorStore:
    """Chunks and document states of one collection in Milvus, through ``pymilvus.MilvusClient``.

    ``uri``: e.g. ``http://127.0.0.1:19631`` (the Milvus Lite server of ``infra.milvus``) or any
    Milvus. ``collection``: chunk collection name (document states go to ``<collection>_docs``).
    ``dim``/``embedder_id``/``chunker_id``: the configuration the collection must have been built
    with. ``index_type``: vector index, ``"HNSW"`` (default) or ``"FLAT"``/``"AUTOINDEX"``;
    ``search_ef``: HNSW search breadth (at least ``top_k``; higher = better recall, slower).
    ``timeout_s``: limit of every RPC, pymilvus' own retries included. ``query_page``: rows per
    query page. Every method raises RetryableError when Milvus cannot be reached (or times out)
    and PermanentError for anything else it rejects; the pymilvus exception is the ``__cause__``.
    Thread-safe (one gRPC channel shared by the caller's threads).
    """

    def __init__(
        self, uri: str, collection: str, dim: int, embedder_id: str, chunker_id: str, *,
        index_type: str = "HNSW", search_ef: int = 128, timeout_s: float = 20.0, query_page: int = QUERY_PAGE,
    ) -> None:
        if dim <= 0:
            raise PermanentError(f"dim must be positive, got {dim}")
        self.uri = uri
        self.collection = collection
        self.docs_collection = collection + DOCS_SUFFIX
        self.dim = dim
        self.embedder_id = embedder_id
        self.chunker_id = chunker_id
        self.index_type = index_type
        self.search_ef = search_ef
        self.timeout_s = timeout_s
        self.query_page = query_page
        self._client: Any = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle
    @property
    def _config(self) -> dict[str, str]:
        return {"embedder": self.embedder_id, "dim": str(self.dim), "chunker": self.chunker_id}

    def exists(self) -> bool:
        """Whether the collection exists, chunks and document states (connects; creates nothing)."""
        client = self.connect()
        return all(self._call("check collection", client.has_collection, n) for n in (self.collection,
                                                                                       self.docs_collection))

    def list_collections(self) -> list[str]:
        """Names of the Eddy collections on the server: chunk collections beside their ``_docs`` companion."""
        names = set(self._call("list collections", self.connect().list_collections))
        return sorted(n for n in names if n + DOCS_SUFFIX in names)

    def start(self) -> None:
        """Connect, create both collections if missing, check their configuration and load them.

        Raises ConfigMismatchError (naming the stored and the configured embedder, dim and
        chunker) when the collection was built otherwise; RetryableError when unreachable.
        """
        client = self.connect()
        has_docs = self._call("check collection", client.has_collection, self.docs_collection)
        if has_docs and any(f.get("name") == "chunk_id" for f in self._call(
                "describe collection", client.describe_collection, self.docs_collection).get("fields", [])):
            raise PermanentError(f"collection {self.docs_collection!r} holds chunks, not the document states of "
                                 f"{self.collection!r} (names ending in _docs are reserved): use another name")
        if not self._call("check collection", client.has_collection, self.collection):
            if has_docs:  # a drop interrupted between the two collections
                log.warning("%s exists without %s; dropping the orphaned document states",
                            self.docs_collection, self.collection)
                self._call("drop collection", client.drop_collection, self.docs_collection)
            self._create(self.collection, self._chunk_schema(client), self._chunk_index(client))
        self._check_config(self.collection)
        if not self._call("check collection", client.has_collection, self.docs_collection):
            self._create(self.docs_collection, self._docs_schema(client), self._docs_index(client))
        self._check_config(self.docs_collection)
        for name in (self.collection, self.docs_collection):
            self._call("load collection", client.load_collection, name)
        log.info("vector store %s at %s ready (embedder %s, dim %d, chunker %s)", self.collection, self.uri,
                 self.embedder_id, self.dim, self.chunker_id)

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # closing is best effort
                log.debug("closing the Milvus client failed", exc_info=True)

    def connect(self) -> Any:
        """Open the gRPC channel only (no collection is created or checked): for read-only helpers.
        ``start()`` calls it. Raises RetryableError when Milvus cannot be reached."""
        with self._lock:
            if self._client is None:
                self._client = connect_milvus(self.uri, self.timeout_s)
            return self._client

    @property
    def _c(self) -> Any:
        if self._client is None:
            raise PermanentError("MilvusVectorStore used before start()")
        return self._client

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, timeout=..., **kwargs)`` with errors translated; reloads released collections once."""
        return call_milvus(self._c, (self.collection, self.docs_collection), what, fn, *args,
                           timeout_s=self.timeout_s, **kwargs)

    # ------------------------------------------------------------------ schema
    def _properties(self) -> dict[str, str]:
        return {_PROP_EMBEDDER: self.embedder_id, _PROP_DIM: str(self.dim), _PROP_CHUNKER: self.chunker_id,
                _PROP_SCHEMA: SCHEMA_VERSION}

    def _chunk_schema(self, client: Any) -> Any:
        from pymilvus import DataType

        s = client.create_schema(auto_id=False, enable_dynamic_field=False,
                                 description=json.dumps(self._properties(), sort_keys=True))
        s.add_field("chunk_id", DataType.VARCHAR, is_primary=True, max_length=_PK_MAX)
        s.add_field("doc_id", DataType.VARCHAR, max_length=_DOC_ID_MAX)
        s.add_field("source", DataType.VARCHAR, max_length=_SOURCE_MAX)
        s.add_field("uri", DataType.VARCHAR, max_length=_URI_MAX)
        s.add_field("title", DataType.VARCHAR, max_length=_TITLE_MAX)
        s.add_field("section", DataType.VARCHAR, max_length=_SECTION_MAX)
        s.add_field("anchor", DataType.VARCHAR, max_length=_ANCHOR_MAX)
        s.add_field("text", DataType.VARCHAR, max_length=_TEXT_MAX)
        s.add_field("acl", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=_ACL_CAPACITY,
                    max_length=_GROUP_MAX)
        s.add_field("acl_key", DataType.VARCHAR, max_length=_ACL_KEY_MAX)
        s.add_field("meta_hash", DataType.VARCHAR, max_length=_HASH_MAX)
        s.add_field("content_hash", DataType.VARCHAR, max_length=_HASH_MAX)
        s.add_field("ordinal", DataType.INT64)
        s.add_field("embedding", DataType.FLOAT_VECTOR, dim=self.dim)
        return s

    def _chunk_index(self, client: Any) -> Any:
        params = client.prepare_index_params()
        build = _HNSW_BUILD if self.index_type == "HNSW" else {}
        params.add_index(field_name="embedding", index_type=self.index_type, metric_type="COSINE", params=build)
        return params

    def _docs_schema(self, client: Any) -> Any:
        from pymilvus import DataType

        s = client.create_schema(auto_id=False, enable_dynamic_field=False,
                                 description=json.dumps(self._properties(), sort_keys=True))
        s.add_field("doc_id", DataType.VARCHAR, is_primary=True, max_length=_DOC_ID_MAX)
        s.add_field("version", DataType.INT64)
        s.add_field("deleted", DataType.BOOL)
        s.add_field("source", DataType.VARCHAR, max_length=_SOURCE_MAX)
        s.add_field("dummy", DataType.FLOAT_VECTOR, dim=_DUMMY_DIM)
        return s

    def _docs_index(self, client: Any) -> Any:
        params = client.prepare_index_params()
        params.add_index(field_name="dummy", index_type="FLAT", metric_type="L2")
        return params

    def _create(self, name: str, schema: Any, index_params: Any) -> None:
        client = self._c
        try:
            self._call(f"create collection {name}", client.create_collection, name, schema=schema,
                       index_params=index_params, consistency_level="Strong", properties=self._properties())
            log.info("created Milvus collection %s", name)
        except PermanentError:
            # Another process may have created it a moment ago; the config check decides.
            if not self._call("check collection", client.has_collection, name):
                raise

    def _check_config(self, name: str) -> None:
        desc = self._call(f"describe collection {name}", self._c.describe_collection, name)
        props = dict(desc.get("properties") or {})
        if _PROP_EMBEDDER not in props:
            try:  # servers that drop collection properties keep the description
                props.update(json.loads(desc.get("description") or "{}"))
            except (ValueError, TypeError):
                pass
        vector_dims = [int(f.get("params", {}).get("dim", 0)) for f in desc.get("fields", [])
                       if f.get("name") == "embedding"]
        if _PROP_EMBEDDER not in props:
            raise ConfigMismatchError(
                f"collection {name!r} at {self.uri} was not created by Eddy (it has no {_PROP_EMBEDDER} "
                f"property); set EDDY_COLLECTION to another name or drop it"
            )
        stored = {"embedder": str(props.get(_PROP_EMBEDDER)), "dim": str(props.get(_PROP_DIM)),
                  "chunker": str(props.get(_PROP_CHUNKER))}
        if vector_dims and str(vector_dims[0]) != stored["dim"]:
            stored["dim"] = str(vector_dims[0])
        if stored != self._config:
            raise ConfigMismatchError(mismatch_message(self.collection, stored, self._config))
        if str(props.get(_PROP_SCHEMA, SCHEMA_VERSION)) != SCHEMA_VERSION:
            raise ConfigMismatchError(
                f"collection {name!r} has Eddy schema version {props.get(_PROP_SCHEMA)}, this Eddy writes "
                f"version {SCHEMA_VERSION}; set EDDY_COLLECTION to another name or drop it and re-ingest"
            )

    # ------------------------------------------------------------------ queries
    def _query_all(self, collection: str, expr: str, fields: list[str]) -> list[dict]:
        """Every row matching ``expr``: one page when it fits, else ``query_iterator`` pages."""
        client = self._c
        rows = self._call(f"query {collection}", client.query, collection, filter=expr, output_fields=fields,
                          limit=self.query_page, consistency_level="Strong")
        if len(rows) < self.query_page:
            return list(rows)
        out: list[dict] = []
        iterator = self._call(f"query {collection}", client.query_iterator, collection,
                              batch_size=self.query_page, filter=expr, output_fields=fields)
        try:
            while True:
                try:
                    page = iterator.next()
                except Exception as exc:  # classified below
                    raise classify_error(exc, f"query {collection}") from exc
                if not page:
                    break
                out.extend(page)
        finally:
            try:
                iterator.close()  # type: ignore[attr-defined]
            except Exception:  # closing is best effort; the rows are already read
                log.debug("closing a Milvus query iterator failed", exc_info=True)
        return out

    def doc_states(self, doc_ids: Sequence[str]) -> dict[str, DocState]:
        """Newest applied state per document; documents never seen are absent."""
        out: dict[str, DocState] = {}
        for batch in _batches(_unique(doc_ids), ID_BATCH):
            for row in self._query_all(self.docs_collection, in_expr("doc_id", batch),
                                       ["doc_id", "version", "deleted", "source"]):
                out[row["doc_id"]] = DocState(row["doc_id"], int(row["version"]), bool(row["deleted"]),
                                              row.get("source") or "")
        return out

    def stored_chunks(self, doc_ids: Sequence[str]) -> dict[str, list[StoredChunk]]:
        """Chunk ids and meta hashes per document (ordered by ordinal); documents without chunks are absent."""
        rows: list[dict] = []
        for batch in _batches(_unique(doc_ids), ID_BATCH):
            rows += self._query_all(self.collection, in_expr("doc_id", batch),
                                    ["chunk_id", "doc_id", "meta_hash", "ordinal"])
        rows.sort(key=lambda r: (r["doc_id"], int(r["ordinal"]), r["chunk_id"]))
        out: dict[str, list[StoredChunk]] = {}
        for row in rows:
            out.setdefault(row["doc_id"], []).append(StoredChunk(row["chunk_id"], row["meta_hash"]))
        return out

    def vectors(self, chunk_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored vectors (``(dim,)`` float32) by chunk id; unknown ids are absent."""
        out: dict[str, np.ndarray] = {}
        for batch in _batches(_unique(chunk_ids), ID_BATCH):
            for row in self._query_all(self.collection, in_expr("chunk_id", batch), ["chunk_id", "embedding"]):
                out[row["chunk_id"]] = np.asarray(row["embedding"], dtype=np.float32)
        return out

    def live_doc_ids(self, source: str) -> list[str]:
        """Sorted ids of the documents of ``source`` that are indexed and not deleted."""
        rows = self._query_all(self.docs_collection, f"source == {quote(source)} and deleted == false", ["doc_id"])
        return sorted(row["doc_id"] for row in rows)

    def info(self) -> CollectionInfo:
        """Name, chunk rows (exact count), embedder, dim and chunker of the collection."""
        rows = self._call("count rows", self._c.query, self.collection, filter="", output_fields=["count(*)"],
                          consistency_level="Strong")
        return CollectionInfo(self.collection, int(rows[0]["count(*)"]) if rows else 0, self.embedder_id,
                              self.dim, self.chunker_id)

    # ------------------------------------------------------------------ writes
    def _row(self, record: ChunkRecord) -> dict[str, Any]:
        chunk: Chunk = record.chunk
        if len(chunk.chunk_id.encode()) > _PK_MAX:
            raise PermanentError(f"chunk id {chunk.chunk_id!r} is longer than {_PK_MAX} bytes")
        for field, value, limit in (("doc_id", chunk.doc_id, _DOC_ID_MAX), ("source", record.source, _SOURCE_MAX),
                                    ("uri", record.uri, _URI_MAX)):
            if len(value.encode()) > limit:
                raise PermanentError(f"{field} of {chunk.doc_id!r} is longer than {limit} bytes")
        acl = sorted(set(record.acl))
        if len(acl) > _ACL_CAPACITY:
            raise PermanentError(f"ACL of {chunk.doc_id!r} has {len(acl)} groups, at most {_ACL_CAPACITY}")
        for group in acl:
            if len(group.encode()) > _GROUP_MAX:
                raise PermanentError(f"ACL group {group[:40]!r}… of {chunk.doc_id!r} is longer than {_GROUP_MAX} bytes")
        text = _truncate_utf8(chunk.text, _TEXT_MAX)
        if text != chunk.text:
            log.warning("chunk %s of %s: text truncated to %d bytes", chunk.chunk_id, chunk.doc_id, _TEXT_MAX)
        return {
            "chunk_id": chunk.chunk_id, "doc_id": chunk.doc_id, "source": record.source, "uri": record.uri,
            "title": _truncate_utf8(record.title, _TITLE_MAX), "section": _truncate_utf8(chunk.section, _SECTION_MAX),
            "anchor": _truncate_utf8(chunk.anchor, _ANCHOR_MAX), "text": text, "acl": acl, "acl_key": acl_key(acl),
            "meta_hash": record.meta_hash, "content_hash": chunk.content_hash, "ordinal": int(chunk.ordinal),
            "embedding": check_vector(record, self.dim).tolist(),
        }

    def upsert_chunks(self, records: Sequence[ChunkRecord]) -> None:
        """Insert or replace chunk rows by chunk id; visible to search when this returns."""
        rows = [self._row(r) for r in records]
        for batch in _batches(rows, ID_BATCH):
            self._call("upsert chunks", self._c.upsert, self.collection, list(batch))

    def delete_chunks(self, chunk_ids: Sequence[str]) -> None:
        """Delete chunk rows by id (unknown ids are ignored)."""
        for batch in _batches(_unique(chunk_ids), ID_BATCH):
            self._call("delete chunks", self._c.delete, self.collection, filter=in_expr("chunk_id", batch))

    def set_doc_states(self, states: Sequence[DocState]) -> None:
        """Insert or replace the state row of each document (the last state of an id wins)."""
        newest = {s.doc_id: s for s in states}
        rows = []
        for s in newest.values():
            if len(s.doc_id.encode()) > _DOC_ID_MAX or len(s.source.encode()) > _SOURCE_MAX:
                raise PermanentError(f"document id or source of {s.doc_id[:80]!r} is too long")
            rows.append({"doc_id": s.doc_id, "version": int(s.version), "deleted": bool(s.deleted),
                         "source": s.source, "dummy": _DUMMY_VECTOR})
        for batch in _batches(rows, ID_BATCH):
            self._call("write document states", self._c.upsert, self.docs_collection, list(batch))

    # ------------------------------------------------------------------ search
    def search(self, vectors: np.ndarray, top_k: int, groups: Sequence[str]) -> list[list[Hit]]:
        """For each query vector (``(q, dim)`` or ``(dim,)`` float32, L2-normalised) the ``top_k``
        chunks visible to ``groups``, closest first; ``score`` is the cosine similarity."""
        matrix = as_matrix(vectors, self.dim)
        if top_k <= 0 or matrix.shape[0] == 0:
            return [[] for _ in range(matrix.shape[0])]
        expr = acl_filter(groups)
        params: dict[str, Any] = {"metric_type": "COSINE"}
        if self.index_type in ("HNSW", "AUTOINDEX"):
            params["params"] = {"ef": max(self.search_ef, top_k)}
        out: list[list[Hit]] = []
        for batch in _batches(matrix, SEARCH_BATCH):
            result = self._call("search", self._c.search, self.collection, data=[v.tolist() for v in batch],
                                limit=top_k, filter=expr, output_fields=_HIT_FIELDS, search_params=params,
                                anns_field="embedding", consistency_level="Strong")
            for hits in result:
                out.append([self._hit(h) for h in hits])
        return out

    @staticmethod
    def _hit(h: Any) -> Hit:
        entity = h.get("entity") or {}
        return Hit(chunk_id=h.get("chunk_id") or h.get("id"), doc_id=entity.get("doc_id", ""),
                   text=entity.get("text", ""), section=entity.get("section", ""), anchor=entity.get("anchor", ""),
                   uri=entity.get("uri", ""), title=entity.get("title", ""), score=float(h.get("distance")))
