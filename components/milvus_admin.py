"""Admin helpers over a Milvus server for the CLI, pipelines and benchmarks: list collections with
their row counts, drop an Eddy collection, read the live documents of a source. Each opens its
own short-lived client; none checks the collection's embedder or chunker.
"""

from __future__ import annotations

import logging
from typing import Any

from components.milvus_client import is_not_loaded, milvus_session
from components.milvus_store import DOCS_SUFFIX, MilvusVectorStore

log = logging.getLogger(__name__)


def _count_rows(client: Any, name: str) -> int:
    """Exact row count of one collection, loading it first when a restarted server left it released."""
    try:
        rows = client.query(name, filter="", output_fields=["count(*)"], consistency_level="Strong")
    except Exception as exc:  # noqa: BLE001 - a released collection: load it and count again
        if not is_not_loaded(exc):
            raise
        client.load_collection(name)
        rows = client.query(name, filter="", output_fields=["count(*)"], consistency_level="Strong")
    return int(rows[0]["count(*)"]) if rows else 0


def drop_collection(uri: str, collection: str) -> bool:
    """Drop ``collection`` and ``collection_docs`` (those that exist). True when something was dropped.
    RetryableError when the Milvus at ``uri`` cannot be reached, PermanentError when it refuses."""
    with milvus_session(uri, f"drop collection {collection}") as client:
        dropped = False
        for name in (collection, collection + DOCS_SUFFIX):
            if client.has_collection(name):
                client.drop_collection(name)
                dropped = True
        if dropped:
            log.info("dropped Milvus collection %s (and %s)", collection, collection + DOCS_SUFFIX)
        return dropped


def collection_rows(uri: str) -> dict[str, int]:
    """Rows per collection of the Milvus at ``uri``, by name in sorted order (for ``eddy status``).
    RetryableError when it cannot be reached, PermanentError when it refuses."""
    with milvus_session(uri, "count rows per collection") as client:
        return {name: _count_rows(client, name) for name in sorted(client.list_collections())}


def read_live_doc_ids(uri: str, collection: str, source: str) -> list[str]:
    """Live document ids of ``source`` in ``collection``, sorted, without checking its embedder/chunker
    (``eddy ingest`` uses it to publish deletes of vanished files); ``[]`` when the collection is absent.
    RetryableError when the Milvus at ``uri`` cannot be reached, PermanentError when it refuses."""
    with milvus_session(uri, "read live documents") as client:
        if not client.has_collection(collection + DOCS_SUFFIX):
            return []
        # A restarted server starts with collections released; loading first avoids a failed query.
        client.load_collection(collection + DOCS_SUFFIX)
    store = MilvusVectorStore(uri, collection, 1, "", "")
    store.connect()
    try:
        return store.live_doc_ids(source)
    finally:
        store.close()
