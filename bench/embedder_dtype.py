"""Embedder compute type: float32 vs bf16 throughput and agreement on the same Python-docs chunks.

    .venv/bin/python -m bench.embedder_dtype [--chunks 256] [--rounds 4]

Both embedders are loaded in this process (same model, same chunks, batch 64) and timed in
``--rounds`` rounds that alternate which dtype goes first (float32 then bf16, then bf16 then
float32, ...), so that a change of the machine's load during the run hits both alike. Prints
chunks/s per dtype (all rounds together, and the slowest and fastest round) and the cosine
similarity of each chunk's bf16 vector to its float32 one, computed in float64 on the float32
copies: the bf16 model normalises its vectors in bf16, so their norms are off 1 by up to ~1 %
and a plain dot product is not a cosine (it gave a "mean 1.0005" before).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from components.chunking import StructureChunker
from components.embedding import SentenceTransformerEmbedder
from config.settings import Settings
from pipelines.ingest import python_docs_files, read_text
from pipelines.python_docs import ensure_python_docs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=256, help="chunks to embed (from the first docs pages)")
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds per dtype, alternating which goes first")
    args = parser.parse_args()
    base = Settings()
    chunker = StructureChunker(base.chunk_max_chars, base.chunk_overlap_chars, base.chunk_prefix)
    texts: list[str] = []
    for f in python_docs_files(ensure_python_docs(base.home / "data")):
        texts += [c.embed_text for c in chunker.chunk(f.doc_id, read_text(f.path), f.content_type, f.title)]
        if len(texts) >= args.chunks:
            break
    texts = texts[: args.chunks]
    dtypes = ("float32", "bfloat16")
    embedders = {}
    for dtype in dtypes:
        embedders[dtype] = SentenceTransformerEmbedder(base.embedder_model, base.embed_batch_size, dtype)
        embedders[dtype].start()
        embedders[dtype].encode(texts[:32])  # warm-up
    vectors: dict[str, np.ndarray] = {}
    seconds: dict[str, list[float]] = {dtype: [] for dtype in dtypes}
    for r in range(args.rounds):
        for dtype in dtypes if r % 2 == 0 else dtypes[::-1]:
            t = time.perf_counter()
            vectors[dtype] = embedders[dtype].encode(texts)
            seconds[dtype].append(time.perf_counter() - t)
    rates = {}
    for dtype in dtypes:
        rates[dtype] = len(texts) * args.rounds / sum(seconds[dtype])
        per_round = sorted(len(texts) / x for x in seconds[dtype])
        print(f"{dtype:9s} {rates[dtype]:6.1f} chunks/s ({len(texts)} chunks x {args.rounds} rounds; "
              f"rounds {per_round[0]:.1f}-{per_round[-1]:.1f})")
    a, b = (vectors[dtype].astype(np.float64) for dtype in dtypes)
    cosine = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    norms = np.linalg.norm(b, axis=1)
    print(f"cosine bf16 vs float32 (float64 arithmetic): min {cosine.min():.5f}, mean {cosine.mean():.5f}")
    print(f"norms of the bf16 vectors: {norms.min():.4f}-{norms.max():.4f}; "
          f"their plain dot product with the float32 ones: mean {(a * b).sum(axis=1).mean():.4f}")
    print(f"speed-up bf16 / float32: {rates['bfloat16'] / rates['float32']:.2f}x")


if __name__ == "__main__":
    main()
