"""Checks every VectorStore implementation applies alike (``MilvusVectorStore`` and the in-memory
fake), so that both reject the same inputs with the same errors: the shape of query vectors, the
vector of a chunk record, and the message of a configuration mismatch.
"""

from __future__ import annotations

import numpy as np

from components.base import ChunkRecord, PermanentError


def as_matrix(vectors: np.ndarray, dim: int) -> np.ndarray:
    """Query vectors (``(q, dim)`` or one ``(dim,)``) as a ``(q, dim)`` float32 matrix; PermanentError
    for any other shape."""
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix.reshape(1, -1)
    if matrix.ndim != 2 or matrix.shape[1] != dim:
        raise PermanentError(f"query vectors have shape {matrix.shape}, expected (q, {dim})")
    return matrix


def check_vector(record: ChunkRecord, dim: int) -> np.ndarray:
    """The vector of ``record`` as a ``(dim,)`` float32 array; PermanentError when it has another
    length or a non-finite value."""
    vector = np.asarray(record.vector, dtype=np.float32).reshape(-1)
    if vector.shape[0] != dim:
        raise PermanentError(
            f"chunk {record.chunk.chunk_id} of {record.chunk.doc_id!r} has a {vector.shape[0]}-d vector, "
            f"the collection holds {dim}-d vectors"
        )
    if not np.all(np.isfinite(vector)):
        raise PermanentError(f"chunk {record.chunk.chunk_id} of {record.chunk.doc_id!r} has a non-finite vector")
    return vector


def mismatch_message(collection: str, stored: dict[str, str], configured: dict[str, str]) -> str:
    """The ConfigMismatchError message for ``collection``; ``stored`` and ``configured`` map
    ``embedder``, ``dim`` and ``chunker`` to strings."""
    def describe(cfg: dict[str, str]) -> str:
        return f"embedder {cfg['embedder']!r} (dim {cfg['dim']}), chunker {cfg['chunker']!r}"

    return (
        f"collection {collection!r} was built with {describe(stored)}, but Eddy is configured with "
        f"{describe(configured)}; its vectors and chunk ids would not match. Use another collection "
        f"(set EDDY_COLLECTION to a new name; it is created on start and filled by re-ingesting) or drop "
        f"this one (components.milvus_admin.drop_collection(uri, {collection!r})) and re-ingest."
    )
