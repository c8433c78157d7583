"""The vector stores of a worker by collection name (``Collections``), whatever their backend: typed
by the VectorStore Protocol of ``components.base``; the caller supplies how a store is opened.

Collection names: an Eddy collection ``X`` is stored as ``X`` (chunks) beside ``X_docs`` (document
states), and the curator keeps ``<EDDY_COLLECTION>_vetted``; names ending in one of
``RESERVED_SUFFIXES`` (any case; defined in ``schemas.documents``) are refused, so that no
collection can be another's companion. Queries never create a collection; changes create at
most ``max_collections`` in all.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from components.base import PermanentError, VectorStore
from schemas.documents import RESERVED_SUFFIXES, reserved_name_problem

__all__ = ["RESERVED_SUFFIXES", "CollectionRefusedError", "Collections", "UnknownCollectionError"]

log = logging.getLogger(__name__)


class UnknownCollectionError(PermanentError):
    """A query named a collection that does not exist."""


class CollectionRefusedError(PermanentError):
    """A collection that may not be created or opened. ``error_type`` is the dead-letter class."""

    def __init__(self, message: str, error_type: str) -> None:
        super().__init__(message)
        self.error_type = error_type


class Collections:
    """A worker's vector stores by collection name (collections are namespaces of documents that
    changes and queries name; unset = the default collection).

    ``default``: the started store of the worker's default collection. ``open_store(name)``: an
    unstarted store for another collection (same embedder, dim and chunker). ``max_collections``:
    the most collections (the default one included) there may be before ``get(create=True)``
    refuses to create another; ``list_existing()`` names the collections that exist (all servers'
    workers share the count; without it, the ones this registry opened). ``get`` is blocking (it may
    create and load a collection): call it from a worker thread. Thread-safe. Raises
    CollectionRefusedError when the default collection's name is reserved.
    """

    def __init__(self, default: VectorStore, open_store: Callable[[str], VectorStore], *,
                 max_collections: int | None = None, list_existing: Callable[[], Iterable[str]] | None = None) -> None:
        if (problem := reserved_name_problem(default.collection)) is not None:
            raise CollectionRefusedError(f"{problem}: set EDDY_COLLECTION to another name", "schema")
        self.default = default
        self._open = open_store
        self._stores: dict[str, VectorStore] = {default.collection: default}
        self._lock = threading.Lock()
        self.max_collections = max_collections
        self._list_existing = list_existing

    def get(self, name: str | None, *, create: bool) -> VectorStore:
        """The started store of ``name`` (None = default).

        Raises CollectionRefusedError for a reserved name (``schema``) and, with ``create=True``, for a
        new collection past ``max_collections`` (``collection_limit``); ``create=False`` raises
        UnknownCollectionError for a collection that does not exist (queries never create anything);
        ConfigMismatchError when it was built with another embedder, dim or chunker.
        """
        if name is None:
            return self.default
        problem = reserved_name_problem(name)
        if problem is not None:
            raise CollectionRefusedError(problem, "schema")
        with self._lock:
            store = self._stores.get(name)
            if store is None:
                store = self._open(name)
                if not store.exists():
                    if not create:
                        raise UnknownCollectionError(f"collection {name!r} does not exist")
                    self._check_limit(name)
                try:
                    store.start()
                except BaseException:
                    store.close()
                    raise
                self._stores[name] = store
                log.info("opened collection %s", name)
            return store

    def _check_limit(self, name: str) -> None:
        if self.max_collections is None:
            return
        existing = set(self._list_existing() if self._list_existing is not None else self._stores)
        existing.add(self.default.collection)
        if len(existing) >= self.max_collections:
            raise CollectionRefusedError(
                f"cannot create collection {name!r}: there are {len(existing):,} collections, the maximum of "
                f"{self.max_collections:,} collections (max_collections)", "collection_limit")

    def close(self) -> None:
        """Close every store it holds, the default one included."""
        with self._lock:
            stores, self._stores = list(self._stores.values()), {}
        for store in stores:
            store.close()
