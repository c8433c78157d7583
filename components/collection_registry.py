"""The vector stores of a worker by collection name (``Collections``), whatever their backend: typed
by the VectorStore Protocol of ``components.base``; the caller supplies how a store is opened.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from components.base import PermanentError, VectorStore

log = logging.getLogger(__name__)


class UnknownCollectionError(PermanentError):
    """A query named a collection that does not exist."""


class Collections:
    """A worker's vector stores by collection name (collections are namespaces of documents that
    changes and queries name; unset = the default collection).

    ``default``: the started store of the worker's default collection. ``open_store(name)``: an
    unstarted store for another collection (same embedder, dim and chunker). ``get`` is blocking
    (it may create and load a collection): call it from a worker thread. Thread-safe.
    """

    def __init__(self, default: VectorStore, open_store: Callable[[str], VectorStore]) -> None:
        self.default = default
        self._open = open_store
        self._stores: dict[str, VectorStore] = {default.collection: default}
        self._lock = threading.Lock()

    def get(self, name: str | None, *, create: bool) -> VectorStore:
        """The started store of ``name`` (None = default). ``create=False`` raises UnknownCollectionError
        for a collection that does not exist (queries never create collections); ConfigMismatchError
        when it was built with another embedder, dim or chunker."""
        if name is None:
            return self.default
        with self._lock:
            store = self._stores.get(name)
            if store is None:
                store = self._open(name)
                if not create and not store.exists():
                    raise UnknownCollectionError(f"collection {name!r} does not exist")
                store.start()
                self._stores[name] = store
                log.info("opened collection %s", name)
            return store

    def close(self) -> None:
        """Close every store it holds, the default one included."""
        with self._lock:
            stores, self._stores = list(self._stores.values()), {}
        for store in stores:
            store.close()
