"""Why chunked retrieval scores differently from whole-section retrieval on a BEIR-layout dataset.

    .venv/bin/eddy eval --dataset DIR                       # first: indexes DIR's corpus (eval_<name>)
    .venv/bin/python -m bench.eval_chunking --dataset DIR

Side by side, in one run, with the pipeline's own embedder (same model and dtype) and exact
(brute-force cosine) search so that only the unit of retrieval differs:

* ``sections``: one vector per corpus document (``title`` + text; the model reads its first 256
  word pieces, all-MiniLM-L6-v2's ``max_seq_length``) — how the ENVIRONMENT.md reference figures
  (nDCG@10 0.694 on the Python FAQ) were measured; ``sections, no title`` embeds the text alone and
  ``sections, fp32`` uses the float32 model instead of the pipeline's dtype;
* ``chunks``: the chunk vectors the indexer wrote to ``eval_<name>`` in Milvus, a document ranked
  by its best chunk — what ``eddy eval`` scores (there through HNSW);
* ``first chunks``: the same chunks, keeping only each document's first one (ordinal 0) — tells
  how much the later chunks of long sections compete with the relevant ones.

Prints nDCG@10, MRR@10 and Recall@1/10/100 per variant (ranx).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from components.embedding import SentenceTransformerEmbedder
from config.settings import Settings
from eddy.stack import Stack
from pipelines.datasets import load_dataset
from pipelines.evaluate import collection_name
from pipelines.metrics import retrieval_metrics

METRICS = ("ndcg@10", "mrr@10", "recall@1", "recall@10", "recall@100")


def rank(queries: np.ndarray, vectors: np.ndarray, doc_ids: list[str], depth: int = 100) -> list[dict[str, float]]:
    """Per query, documents by their best vector's cosine (vectors are L2-normalised), top ``depth``."""
    scores = queries @ vectors.T
    out = []
    for row in scores:
        best: dict[str, float] = {}
        for i in np.argsort(-row, kind="stable"):
            best.setdefault(doc_ids[i], float(row[i]))
            if len(best) == depth:
                break
        out.append(best)
    return out


def stored_chunks(uri: str, collection: str) -> tuple[np.ndarray, list[str], list[int]]:
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri)
    try:
        iterator = client.query_iterator(collection, batch_size=2000, filter="",
                                         output_fields=["doc_id", "ordinal", "embedding"])
        vectors, doc_ids, ordinals = [], [], []
        while batch := iterator.next():
            for row in batch:
                vectors.append(row["embedding"])
                doc_ids.append(row["doc_id"])
                ordinals.append(int(row["ordinal"]))
        iterator.close()
    finally:
        client.close()
    return np.asarray(vectors, dtype=np.float32), doc_ids, ordinals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True, help="BEIR-layout dataset directory")
    args = parser.parse_args()
    settings = Settings()
    Stack(settings).start_infra()
    dataset = load_dataset(args.dataset)
    collection = collection_name(dataset.name)
    chunk_vectors, chunk_docs, ordinals = stored_chunks(settings.milvus_address, collection)
    if not len(chunk_docs):
        raise SystemExit(f"collection {collection} is empty: run `eddy eval --dataset {args.dataset}` first")
    qids = list(dataset.queries)
    section_ids = list(dataset.corpus)
    titled = [f"{d['title']}\n{d['text']}" if d["title"] else d["text"] for d in dataset.corpus.values()]
    first = [i for i, o in enumerate(ordinals) if o == 0]
    variants: dict[str, list[dict[str, float]]] = {}
    for dtype in (settings.embedder_dtype, "float32"):
        embedder = SentenceTransformerEmbedder(settings.embedder_model, settings.embed_batch_size, dtype)
        embedder.start()
        queries = np.asarray(embedder.encode([dataset.queries[q] for q in qids]), dtype=np.float32)
        t = time.perf_counter()
        if dtype == settings.embedder_dtype:
            variants["sections"] = rank(queries, np.asarray(embedder.encode(titled), np.float32), section_ids)
            texts = [d["text"] for d in dataset.corpus.values()]
            variants["sections, no title"] = rank(queries, np.asarray(embedder.encode(texts), np.float32), section_ids)
            variants["chunks"] = rank(queries, chunk_vectors, chunk_docs)
            variants["first chunks"] = rank(queries, chunk_vectors[first], [chunk_docs[i] for i in first])
        else:
            variants["sections, fp32"] = rank(queries, np.asarray(embedder.encode(titled), np.float32), section_ids)
        print(f"{dataset.name} ({dtype}): {len(qids)} queries, sections embedded in {time.perf_counter() - t:.0f}s; "
              f"{len(chunk_docs):,} chunks read from {collection}")
    print(f"{'variant':<20}" + "".join(f"{m:>12}" for m in METRICS))
    for name, ranking in variants.items():
        means, _ = retrieval_metrics(dataset.qrels, dict(zip(qids, ranking, strict=True)), METRICS)
        print(f"{name:<20}" + "".join(f"{means[m]:>12.4f}" for m in METRICS))


if __name__ == "__main__":
    main()
