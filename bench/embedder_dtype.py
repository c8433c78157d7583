"""Embedder compute type: float32 vs bf16 throughput and agreement on the same Python-docs chunks.

    .venv/bin/python -m bench.embedder_dtype [--chunks 256]

Prints chunks/s for each dtype (same model, same chunks, batch 64, this process, one after the
other) and the cosine similarity of the bf16 vectors to the float32 ones (min / mean).
"""

from __future__ import annotations

import argparse
import time

from components.chunking import StructureChunker
from components.embedding import SentenceTransformerEmbedder
from eddy.ingest import python_docs_files, read_text
from eddy.python_docs import ensure_python_docs
from config.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=256, help="chunks to embed (from the first docs pages)")
    args = parser.parse_args()
    base = Settings()
    chunker = StructureChunker(base.chunk_max_chars, base.chunk_overlap_chars)
    texts: list[str] = []
    for f in python_docs_files(ensure_python_docs(base.home / "data")):
        texts += [c.embed_text for c in chunker.chunk(f.doc_id, read_text(f.path), f.content_type, f.title)]
        if len(texts) >= args.chunks:
            break
    texts = texts[: args.chunks]
    vectors, rates = {}, {}
    for dtype in ("float32", "bfloat16"):
        embedder = SentenceTransformerEmbedder(base.embedder_model, base.embed_batch_size, dtype)
        embedder.start()
        embedder.encode(texts[:32])  # warm-up
        t = time.perf_counter()
        vectors[dtype] = embedder.encode(texts)
        rates[dtype] = len(texts) / (time.perf_counter() - t)
        print(f"{dtype:9s} {rates[dtype]:6.1f} chunks/s ({len(texts)} chunks)")
    cosine = (vectors["float32"] * vectors["bfloat16"]).sum(axis=1)
    print(f"cosine bf16 vs float32: min {cosine.min():.4f}, mean {cosine.mean():.4f}")
    print(f"speed-up bf16 / float32: {rates['bfloat16'] / rates['float32']:.2f}x")


if __name__ == "__main__":
    main()
