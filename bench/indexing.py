"""Indexing throughput through Kafka -> indexer -> Milvus, relative to raw ``encode`` of the same chunks.

    .venv/bin/python -m bench.indexing [--docs 60]

Prints: chunks, raw encode chunks/s (same embedder, same chunks, this process), pipeline
chunks/s (publish of the first change -> IndexEvent of the last), their ratio (target >= 0.8),
and the worker's peak RSS.
"""

from __future__ import annotations

import argparse
import time

from bench.common import bench_stack, peak_rss_mb, publish_wait
from components.chunking import StructureChunker
from components.embedding import SentenceTransformerEmbedder
from eddy.ingest import python_docs_files, read_text
from eddy.python_docs import ensure_python_docs
from config.settings import Settings
from schemas import DocumentChange


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=60, help="Python docs files to index (sorted by path)")
    args = parser.parse_args()
    base = Settings()
    files = python_docs_files(ensure_python_docs(base.home / "data"))[: args.docs]
    changes = [DocumentChange(op="upsert", doc_id=f.doc_id, version=1, title=f.title, uri=f.uri,
                              text=read_text(f.path), content_type=f.content_type, source="bench") for f in files]
    chunker = StructureChunker(base.chunk_max_chars, base.chunk_overlap_chars)
    texts = [c.embed_text for ch in changes for c in chunker.chunk(ch.doc_id, ch.text, ch.content_type, ch.title)]
    unique = len(set(texts))

    with bench_stack("indexing", ("indexer",)) as (settings, stack, client):
        embedder = SentenceTransformerEmbedder(base.embedder_model, base.embed_batch_size, base.embedder_dtype)
        embedder.start()
        embedder.encode(texts[:64])  # warm-up
        t = time.perf_counter()
        embedder.encode(list(dict.fromkeys(texts)))
        raw_s = time.perf_counter() - t
        del embedder
        events, pipe_s = publish_wait(client, changes)
        embedded = sum(e.chunks_embedded for e in events)
        rss = peak_rss_mb(stack.worker_status()["pid"])

    raw_rate = unique / raw_s
    pipe_rate = embedded / pipe_s
    print(f"documents {len(changes)}, chunks {len(texts)} ({unique} distinct), embedded by the pipeline {embedded}")
    print(f"raw encode:  {raw_rate:7.1f} chunks/s ({raw_s:.1f} s)")
    print(f"pipeline:    {pipe_rate:7.1f} chunks/s ({pipe_s:.1f} s, Kafka -> indexer -> Milvus -> index.events)")
    print(f"ratio pipeline/raw: {pipe_rate / raw_rate:.2f} (target >= 0.8)")
    print(f"worker peak RSS (indexer only, embedder loaded): {rss:.0f} MiB")


if __name__ == "__main__":
    main()
