"""The in-memory fake passes the VectorStore contract (tests/vectorstore_contract.py)."""

from __future__ import annotations

import uuid

import pytest

from components.base import PermanentError
from components.memory_store import InMemoryVectorStore
from components.milvus_client import acl_filter, acl_key, group_token, quote
from tests.vectorstore_contract import CHUNKER, DIM, EMBEDDER, VectorStoreContract


class TestInMemoryVectorStore(VectorStoreContract):
    @pytest.fixture
    def collection_name(self) -> str:
        return f"c{uuid.uuid4().hex[:8]}"

    @pytest.fixture
    def make_store(self):
        server: dict = {}

        def make(collection=None, dim=DIM, embedder=EMBEDDER, chunker=CHUNKER):
            store = InMemoryVectorStore(collection or f"c{uuid.uuid4().hex[:8]}", dim, embedder, chunker,
                                        server=server)
            store.start()
            return store

        return make


def test_use_before_start_is_permanent():
    with pytest.raises(PermanentError, match=r"used before start\(\)"):
        InMemoryVectorStore("c", 4).info()


def test_acl_expression_helpers():
    assert acl_key([]) == "|*|"
    low, high = sorted((group_token("a"), group_token("b")))
    assert acl_key(["b", "a", "a"]) == f"|{low}|{high}|"
    assert len(group_token("anything")) == 16
    assert acl_filter([]) == 'acl_key == "|*|"'
    assert acl_filter(["g", "g"]) == f'acl_key == "|*|" or acl_key like "%|{group_token("g")}|%"'
    assert quote('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'
