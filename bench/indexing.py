"""Indexing throughput through Kafka -> indexer -> Milvus, relative to raw ``encode`` of the same chunks.

    .venv/bin/python -m bench.indexing [--docs 60] [--rounds 2]

Both sides count the same thing, the chunks of the documents: raw ``encode`` embeds every chunk's
text (same embedder and dtype, batch 64, in this process), the pipeline indexes every document
into an empty index (publish of the first change -> IndexEvent of the last; its sum of
``chunks_embedded`` must equal the chunk count). The runs are interleaved: ``--rounds`` rounds,
each a raw encode and a pipeline run, alternating which goes first (the pipeline's documents get
new ids each round, so each round embeds everything again). Prints chunks/s of each side (all rounds
together, and per round), their ratio (target >= 0.8), and the worker's peak RSS.
"""

from __future__ import annotations

import argparse
import time

from bench.common import bench_stack, peak_rss_mb
from components.chunking import StructureChunker
from components.embedding import SentenceTransformerEmbedder
from config.settings import Settings
from pipelines.ingest import ingest_source, python_docs_files, read_text
from pipelines.python_docs import ensure_python_docs
from schemas import DocumentChange


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=60, help="Python docs files to index (sorted by path)")
    parser.add_argument("--rounds", type=int, default=2, help="raw and pipeline runs each, interleaved")
    args = parser.parse_args()
    base = Settings()
    files = python_docs_files(ensure_python_docs(base.home / "data"))[: args.docs]
    pages = [(f, read_text(f.path)) for f in files]

    def documents(prefix: str = "") -> list[DocumentChange]:
        """One upsert per page (new event ids and timestamps on every call)."""
        return [DocumentChange(op="upsert", doc_id=prefix + f.doc_id, version=1, title=f.title, uri=f.uri, text=text,
                               content_type=f.content_type, source="bench") for f, text in pages]

    changes = documents()
    chunker = StructureChunker(base.chunk_max_chars, base.chunk_overlap_chars, base.chunk_prefix)
    texts = [c.embed_text for ch in changes for c in chunker.chunk(ch.doc_id, ch.text, ch.content_type, ch.title)]
    unique = len(set(texts))

    raw_s: list[float] = []
    pipe_s: list[float] = []
    with bench_stack("indexing", ("indexer",)) as (settings, stack, client):
        embedder = SentenceTransformerEmbedder(base.embedder_model, base.embed_batch_size, base.embedder_dtype)
        embedder.start()
        embedder.encode(texts[:64])  # warm-up

        def raw() -> None:
            t = time.perf_counter()
            embedder.encode(texts)
            raw_s.append(time.perf_counter() - t)

        def pipeline(round_: int) -> None:
            result = ingest_source(client, documents(f"r{round_}-"), timeout_s=600)
            embedded = sum(e.chunks_embedded for e in result.indexed)
            assert embedded == len(texts), f"the pipeline embedded {embedded} chunks of {len(texts)}"
            pipe_s.append(result.seconds)

        for r in range(args.rounds):
            if r % 2 == 0:
                raw()
                pipeline(r)
            else:
                pipeline(r)
                raw()
        rss = peak_rss_mb(stack.worker_status()["pid"])

    raw_rate = len(texts) * args.rounds / sum(raw_s)
    pipe_rate = len(texts) * args.rounds / sum(pipe_s)
    print(f"documents {len(changes)}, chunks {len(texts)} ({unique} distinct texts), {args.rounds} rounds")
    print(f"raw encode:  {raw_rate:7.1f} chunks/s (rounds: {', '.join(f'{len(texts) / x:.1f}' for x in raw_s)})")
    print(f"pipeline:    {pipe_rate:7.1f} chunks/s (rounds: {', '.join(f'{len(texts) / x:.1f}' for x in pipe_s)}; "
          "Kafka -> indexer -> Milvus -> index.events)")
    print(f"ratio pipeline/raw: {pipe_rate / raw_rate:.2f} (target >= 0.8)")
    print(f"worker peak RSS (indexer only, embedder loaded): {rss:.0f} MiB")


if __name__ == "__main__":
    main()
