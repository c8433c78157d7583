"""The roles of Eddy's components as Protocols, the plain data they exchange and their errors.

Every role an agent or the worker depends on is here: Chunker, Embedder, VectorStore, Reranker,
Generator, Scrubber, VettedIndex. Agents import these, never a concrete backend; the worker
(``worker/components.py``) builds the backends the settings choose.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


class ComponentError(Exception):
    """Base of component errors."""


class RetryableError(ComponentError):
    """Transient failure (server unreachable, timeout): retry with backoff."""


class PermanentError(ComponentError):
    """Retrying cannot help (bad input, incompatible configuration)."""


class ConfigMismatchError(PermanentError):
    """A collection was built with another embedder or chunker than the one configured."""


# --------------------------------------------------------------------------- chunking
@dataclass(frozen=True, slots=True)
class Chunk:
    """One retrievable piece of a document.

    ``chunk_id`` = first 32 hex chars of sha256(doc_id, content_hash, occurrence), where
    ``content_hash`` = sha256 of ``embed_text`` and ``occurrence`` counts earlier chunks of
    the same document with the same content hash: deterministic, so redelivery is idempotent.
    ``embed_text`` is what the embedder sees (section path + text); ``text`` is what a
    prompt quotes. ``section`` is the heading path joined by " > "; ``anchor`` the HTML
    fragment id of the innermost section ("" when none).
    """

    chunk_id: str
    doc_id: str
    text: str
    embed_text: str
    section: str
    anchor: str
    content_hash: str
    ordinal: int  # position of the chunk within the document, from 0


@runtime_checkable
class Chunker(Protocol):
    @property
    def config_id(self) -> str:
        """Stable description of the chunker and its parameters, e.g. ``structure-v1:max=1000,overlap=150``."""
        ...

    def chunk(self, doc_id: str, text: str, content_type: str, title: str = "") -> list[Chunk]:
        """Split one document into chunks, in document order. Blank text gives ``[]``."""
        ...


# --------------------------------------------------------------------------- embedding
@runtime_checkable
class Embedder(Protocol):
    model_id: str
    dim: int

    def start(self) -> None:
        """Load the model (may take seconds)."""
        ...

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts: ``(len(texts), dim)`` float32, L2-normalised rows. Blocking; call off the event loop."""
        ...


# --------------------------------------------------------------------------- vector store
@dataclass(frozen=True, slots=True)
class ChunkRecord:
    """A chunk as stored: the chunk plus document metadata, its vector and ``meta_hash``.

    ``meta_hash`` covers the non-content fields (uri, title, acl, source, version-independent
    metadata) so that an ACL or title change rewrites rows without re-embedding them.
    """

    chunk: Chunk
    source: str
    uri: str
    title: str
    acl: tuple[str, ...]
    meta_hash: str
    vector: np.ndarray  # (dim,) float32


@dataclass(frozen=True, slots=True)
class DocState:
    """What the index holds for one document: newest applied version and whether it was deleted."""

    doc_id: str
    version: int
    deleted: bool
    source: str = ""


@dataclass(frozen=True, slots=True)
class StoredChunk:
    chunk_id: str
    meta_hash: str


@dataclass(frozen=True, slots=True)
class Hit:
    chunk_id: str
    doc_id: str
    text: str
    section: str
    anchor: str
    uri: str
    title: str
    score: float  # cosine similarity, higher is closer


@dataclass(frozen=True, slots=True)
class CollectionInfo:
    name: str
    rows: int
    embedder: str
    dim: int
    chunker: str


@runtime_checkable
class VectorStore(Protocol):
    """Chunks, vectors and per-document state of one collection (Milvus in production)."""

    collection: str

    def exists(self) -> bool:
        """Whether the collection exists (without creating it). RetryableError when unreachable."""
        ...

    def start(self) -> None:
        """Connect and create the collections if missing.

        Raises ConfigMismatchError when the collection exists with another embedder,
        dimension or chunker; RetryableError when the server cannot be reached.
        """
        ...

    def doc_states(self, doc_ids: Sequence[str]) -> dict[str, DocState]:
        """Newest applied state per document; documents never seen are absent."""
        ...

    def stored_chunks(self, doc_ids: Sequence[str]) -> dict[str, list[StoredChunk]]:
        """Chunk ids (and meta hashes) currently stored, per document; absent = none."""
        ...

    def vectors(self, chunk_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored vectors by chunk id (to rewrite metadata without re-embedding)."""
        ...

    def upsert_chunks(self, records: Sequence[ChunkRecord]) -> None: ...

    def delete_chunks(self, chunk_ids: Sequence[str]) -> None: ...

    def set_doc_states(self, states: Sequence[DocState]) -> None: ...

    def live_doc_ids(self, source: str) -> list[str]:
        """Ids of the documents of ``source`` that are indexed and not deleted."""
        ...

    def search(self, vectors: np.ndarray, top_k: int, groups: Sequence[str]) -> list[list[Hit]]:
        """For each query vector (``(q, dim)`` float32), the ``top_k`` closest chunks visible to ``groups``.

        A chunk is visible when its ACL is empty or shares a group with ``groups``.
        """
        ...

    def info(self) -> CollectionInfo: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- reranking
@runtime_checkable
class Reranker(Protocol):
    version: str

    def rerank(self, query: str, hits: Sequence[Hit]) -> list[Hit]:
        """Reorder retrieved ``hits`` (best first) for ``query``; returns the same hits, scores may change.
        Blocking CPU work for a learned model: callers run it off the event loop."""
        ...


# --------------------------------------------------------------------------- generation
@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str  # "system" | "user" | "assistant"
    content: str


CHAT_ROLES = ("system", "user", "assistant")


def check_messages(messages: Sequence[ChatMessage]) -> None:
    """Raise PermanentError for an empty conversation or a role outside :data:`CHAT_ROLES`
    (every generator backend checks its input the same way)."""
    if not messages:
        raise PermanentError("no messages to answer")
    for m in messages:
        if m.role not in CHAT_ROLES:
            raise PermanentError(f"unknown chat role {m.role!r}")


@dataclass(slots=True)
class GenerationStats:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float | None = None  # generation start -> first token text, ms
    finish_reason: str = ""  # "stop" | "length"


@dataclass(frozen=True, slots=True)
class GenerationParams:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    seed: int | None = None


@runtime_checkable
class Generator(Protocol):
    model_id: str

    def start(self) -> None:
        """Load the model (may take seconds)."""
        ...

    def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams, stats: GenerationStats
    ) -> AsyncIterator[str]:
        """Stream the completion as text pieces; fills ``stats`` as it goes.

        Runs model compute off the event loop: the caller's loop stays responsive.
        Raises PermanentError for a prompt the model cannot take, RetryableError otherwise.
        """
        ...


@dataclass(frozen=True, slots=True)
class PromptTemplate:
    version: str
    system: str
    user: str  # str.format template with {context} and {question}
    extra: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- PII scrubbing
class ScrubError(PermanentError):
    """The scrubber failed or timed out: the record must be rejected, never stored raw."""


@dataclass(frozen=True, slots=True)
class Conversation:
    """Texts of one conversation to scrub together. ``scope`` (e.g. the query id) keys the pseudonyms."""

    scope: str
    texts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Scrubbed:
    """``texts`` in the order given, every entity replaced; ``entities``: how many of each type were removed."""

    texts: tuple[str, ...]
    entities: dict[str, int] = field(default_factory=dict)


@runtime_checkable
class Scrubber(Protocol):
    version: str

    def start(self) -> None:
        """Load models (seconds)."""
        ...

    def scrub_batch(self, conversations: Sequence[Conversation]) -> list[Scrubbed]:
        """Scrub each conversation; blocking CPU work. Raises ScrubError (or anything) on failure:
        callers must then reject the conversations, never store them."""
        ...


# --------------------------------------------------------------------------- curation
@runtime_checkable
class VettedIndex(Protocol):
    """Embeddings of the vetted records' questions, by record id."""

    def start(self) -> None:
        """Connect and create the collection if missing. Raises RetryableError when unreachable."""
        ...

    def nearest(self, vectors: np.ndarray, exclude_ids: Sequence[str]) -> list[tuple[str, float] | None]:
        """For each row of ``vectors`` (``(n, dim)`` float32, L2-normalised), the closest vetted record
        other than ``exclude_ids[i]`` as ``(record_id, cosine)``, or None when there is none."""
        ...

    def add(self, record_ids: Sequence[str], vectors: np.ndarray) -> None:
        """Upsert the vectors of vetted records (idempotent)."""
        ...

    def close(self) -> None: ...
