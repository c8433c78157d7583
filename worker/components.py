"""The components a worker's agents share, built from the settings and started before the worker
joins its consumer group (models load in ``start``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from components.base import Chunker, Embedder, Generator, Reranker
from components.collection_registry import Collections
from config.settings import Settings


@dataclass
class Components:
    """Everything the agents need. ``generator`` is None in a worker without the answerer."""

    chunker: Chunker
    index_embedder: Embedder
    query_embedder: Embedder
    collections: Collections
    reranker: Reranker
    generator: Generator | None


def build_components(settings: Settings, *, agents: Sequence[str]) -> Components:
    """Real backends chosen by the settings; constructors are cheap, call :func:`start_components`."""
    from components.chunking import StructureChunker
    from components.embedding import SentenceTransformerEmbedder
    from components.generation import build_generator
    from components.milvus_store import MilvusVectorStore
    from components.reranking import KeepOrder

    chunker = StructureChunker(settings.chunk_max_chars, settings.chunk_overlap_chars, settings.chunk_prefix)
    index_embedder = SentenceTransformerEmbedder(settings.embedder_model, settings.embed_batch_size,
                                                 settings.embedder_dtype)
    # The answerer gets its own instance so query embedding never waits behind an indexing batch.
    query_embedder = (
        SentenceTransformerEmbedder(settings.embedder_model, 1, settings.embedder_dtype)
        if "answerer" in agents else index_embedder
    )

    def open_store(name: str) -> MilvusVectorStore:
        return MilvusVectorStore(settings.milvus_address, name, index_embedder.dim, index_embedder.model_id,
                                 chunker.config_id)

    default = open_store(settings.collection)
    collections = Collections(default, open_store, max_collections=settings.max_collections,
                              list_existing=default.list_collections)
    generator = (build_generator(settings.generator, settings.home / "models", settings=settings)
                 if "answerer" in agents else None)
    return Components(chunker, index_embedder, query_embedder, collections, KeepOrder(), generator)


def start_components(components: Components) -> None:
    """Load the models and open the default collection (seconds to minutes on a first run)."""
    for part in (components.index_embedder, components.query_embedder, components.generator):
        if part is not None:
            part.start()
    components.collections.default.start()
