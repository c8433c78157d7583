"""Which unit of retrieval, chunk size, overlap and embedded prefix rank sections best, on a BEIR-layout dataset.

    .venv/bin/python -m bench.eval_chunking --dataset DIR [--configs 1000/150/heading,1000/150/path] [--stored]

Side by side, in one run, with the pipeline's own embedder (same model and dtype) and exact
(brute-force cosine) search, so that only the unit of retrieval differs. Every corpus document is
one section here (so document = section); the questions are ranked against:

* ``sections``: one vector per section (``title`` + text, or ``text`` alone; the model reads the
  first 256 word pieces, all-MiniLM-L6-v2's ``max_seq_length``);
* for every chunker configuration ``MAX/OVERLAP/PREFIX`` (``components.chunking.StructureChunker``:
  ``heading`` embeds a chunk under its section's own heading only — for these headless documents
  the text alone; ``path`` the document title and heading path as ``structure-v1`` did), the corpus
  chunked as the indexer chunks it, then a section scored by
  - ``max``: its best chunk (what the answerer ranks by),
  - ``first``: its first chunk only,
  - ``centroid``: the normalised mean of its chunk vectors (a per-section vector built from the chunks),
  - ``max+centroid`` / ``max+first``: the mean of the best chunk's score and the centroid's / first chunk's;
* ``--stored``: the chunk vectors ``eddy eval`` wrote to ``eval_<name>`` in Milvus, section = best chunk;
  a configuration whose chunks are those of the index takes their vectors from it (after checking a
  sample against its own embedding) instead of embedding them again.

Embeddings are cached by text under ``$EDDY_HOME/bench/embed-cache/<embedder id>/`` (written as it
goes: a long run can be stopped and resumed), so a re-run ranks without re-embedding; the cache never
changes a vector, it only avoids recomputing one with the same model and dtype.

Prints nDCG@10, MRR@10 and Recall@1/10/100 per variant (ranx) and the chunk count of each configuration.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from components.base import Chunk
from components.chunking import StructureChunker
from components.embedding import SentenceTransformerEmbedder
from config.settings import Settings
from pipelines.datasets import Dataset, load_dataset
from pipelines.metrics import retrieval_metrics

METRICS = ("ndcg@10", "mrr@10", "recall@1", "recall@10", "recall@100")
DEFAULT_CONFIGS = "1000/150/path,1000/150/heading,1000/0/heading,1000/150/lead,600/100/lead"
AGGREGATIONS = ("max", "first", "centroid", "max+centroid", "max+first")


class EmbeddingCache:
    """Vectors by sha256 of the text for one embedder, stored as ``part-<n>.npz`` files (keys + vectors)."""

    def __init__(self, root: Path, embedder: SentenceTransformerEmbedder, part_size: int = 1024) -> None:
        self.dir = root / re.sub(r"[^A-Za-z0-9_.-]", "_", embedder.model_id)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.embedder, self.part_size = embedder, part_size
        self.vectors: dict[str, np.ndarray] = {}
        for part in sorted(self.dir.glob("part-*.npz")):
            with np.load(part) as data:
                self.vectors.update(zip(data["keys"].tolist(), data["vectors"], strict=True))
        self.embedded = 0

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def encode(self, texts: Sequence[str], what: str) -> np.ndarray:
        """``(len(texts), dim)`` float32, embedding (and storing) only texts not cached yet."""
        keys = [self.key(t) for t in texts]
        missing = list(dict.fromkeys(k for k in keys if k not in self.vectors))
        by_key = dict(zip(keys, texts, strict=True))
        t0 = time.perf_counter()
        for start in range(0, len(missing), self.part_size):
            batch = missing[start:start + self.part_size]
            vectors = np.asarray(self.embedder.encode([by_key[k] for k in batch]), dtype=np.float32)
            self.vectors.update(zip(batch, vectors, strict=True))
            n = len(list(self.dir.glob("part-*.npz")))
            np.savez(self.dir / f"part-{n:05d}.npz", keys=np.asarray(batch), vectors=vectors)
            done = start + len(batch)
            print(f"  {what}: embedded {done:,}/{len(missing):,} "
                  f"({done / (time.perf_counter() - t0):.1f}/s)", flush=True)
        self.embedded += len(missing)
        return np.stack([self.vectors[k] for k in keys]) if keys else np.zeros((0, self.embedder.dim), np.float32)


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


def rank_scores(scores: np.ndarray, ids: list[str], depth: int = 100) -> list[dict[str, float]]:
    """Per query, the top ``depth`` of one score per id (``scores``: queries x ids)."""
    out = []
    for row in scores:
        top = np.argsort(-row, kind="stable")[:depth]
        out.append({ids[i]: float(row[i]) for i in top})
    return out


def corpus_changes(dataset: Dataset) -> list[tuple[str, str, str]]:
    """``(doc_id, text, title)`` as ``eddy eval`` publishes them (blank text falls back to the title)."""
    return [(doc_id, d["text"] if d["text"].strip() else d["title"], d["title"])
            for doc_id, d in dataset.corpus.items() if (d["text"] or d["title"]).strip()]


def section_variants(
    queries: np.ndarray, chunks: list[Chunk], encode: Callable[[Sequence[str], str], np.ndarray], name: str,
) -> dict[str, list[dict[str, float]]]:
    """Rankings of the sections under each aggregation of ``chunks``' scores."""
    vectors = encode([c.embed_text for c in chunks], name)
    sections: dict[tuple[str, str, str], list[int]] = {}
    for i, c in enumerate(chunks):
        sections.setdefault((c.doc_id, c.section, c.anchor), []).append(i)
    keys = list(sections)
    ids = [k[0] for k in keys]  # document = section in a BEIR corpus
    chunk_scores = queries @ vectors.T
    best = np.stack([chunk_scores[:, rows].max(axis=1) for rows in sections.values()], axis=1)
    first = np.stack([chunk_scores[:, rows[0]] for rows in sections.values()], axis=1)
    centroids = np.stack([vectors[rows].mean(axis=0) for rows in sections.values()])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    centroid = queries @ centroids.T
    scored = {"max": best, "first": first, "centroid": centroid, "max+centroid": (best + centroid) / 2,
              "max+first": (best + first) / 2}
    return {f"{name} {agg}": rank_scores(scored[agg], ids) for agg in AGGREGATIONS}


def seed_from_index(cache: EmbeddingCache, chunks: list[Chunk], stored: dict[str, np.ndarray], check: int = 256) -> int:
    """Put the vectors the indexer stored for ``chunks`` (same chunk ids: same embed_text) into ``cache``
    (in memory only), after checking a sample of ``check`` against the bench's own embedding; returns
    how many were taken."""
    new = {cache.key(c.embed_text): (c.embed_text, stored[c.chunk_id]) for c in chunks
           if c.chunk_id in stored and cache.key(c.embed_text) not in cache.vectors}
    if not new:
        return 0
    sample = list(new.values())[:: max(1, len(new) // check)][:check]
    mine = np.asarray(cache.embedder.encode([t for t, _ in sample]), dtype=np.float32)
    cosine = np.sum(mine * np.stack([v for _, v in sample]), axis=1)
    print(f"  stored vs bench vectors, {len(sample)} of the same chunks: cosine min {cosine.min():.4f}, "
          f"mean {cosine.mean():.5f}", flush=True)
    if cosine.min() < 0.99:
        raise SystemExit("the stored vectors were not made by this embedder: not mixing them in")
    cache.vectors.update((k, v) for k, (_, v) in new.items())
    return len(new)


def stored_chunks(uri: str, collection: str) -> tuple[np.ndarray, list[str], list[str], str]:
    """Vectors, doc ids and chunk ids of every row of ``collection``, and its chunker id."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri)
    try:
        if not client.has_collection(collection):
            return np.zeros((0, 0), np.float32), [], [], ""
        described = client.describe_collection(collection)
        chunker = str((described.get("properties") or {}).get("eddy.chunker", ""))
        iterator = client.query_iterator(collection, batch_size=2000, filter="",
                                         output_fields=["doc_id", "chunk_id", "embedding"])
        vectors, doc_ids, chunk_ids = [], [], []
        while batch := iterator.next():
            for row in batch:
                vectors.append(row["embedding"])
                doc_ids.append(row["doc_id"])
                chunk_ids.append(row["chunk_id"])
        iterator.close()
    finally:
        client.close()
    return np.asarray(vectors, dtype=np.float32), doc_ids, chunk_ids, chunker


def parse_configs(spec: str) -> list[tuple[int, int, str]]:
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        max_chars, overlap, prefix = item.split("/")
        out.append((int(max_chars), int(overlap), prefix))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True, help="BEIR-layout dataset directory")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS,
                        help=f"chunker configurations MAX/OVERLAP/PREFIX, comma-separated (default {DEFAULT_CONFIGS})")
    parser.add_argument("--stored", action="store_true",
                        help="also rank the chunk vectors `eddy eval` stored in eval_<name> (starts the stack)")
    parser.add_argument("--no-sections", action="store_true", help="skip the whole-section variants")
    args = parser.parse_args()
    settings = Settings()
    dataset = load_dataset(args.dataset)
    qids = list(dataset.queries)
    embedder = SentenceTransformerEmbedder(settings.embedder_model, settings.embed_batch_size, settings.embedder_dtype)
    embedder.start()
    cache = EmbeddingCache(settings.home / "bench" / "embed-cache", embedder)
    print(f"{dataset.name}: {len(qids)} queries, {len(dataset.corpus):,} sections; embedder {embedder.model_id}; "
          f"{len(cache.vectors):,} cached vectors", flush=True)
    queries = np.asarray(embedder.encode([dataset.queries[q] for q in qids]), dtype=np.float32)
    docs = corpus_changes(dataset)
    section_ids = [d[0] for d in docs]
    variants: dict[str, list[dict[str, float]]] = {}
    counts: dict[str, int] = {}
    if not args.no_sections:
        titled = [f"{title}\n{text}" if title else text for _, text, title in docs]
        variants["sections, title + text"] = rank(queries, cache.encode(titled, "sections, title + text"), section_ids)
        variants["sections, text"] = rank(queries, cache.encode([t for _, t, _ in docs], "sections, text"), section_ids)
    stored: dict[str, np.ndarray] = {}
    if args.stored:
        from eddy.stack import Stack
        from pipelines.evaluate import collection_name

        Stack(settings).start_infra()
        collection = collection_name(dataset.name)
        vectors, doc_ids, chunk_ids, chunker_id = stored_chunks(settings.milvus_address, collection)
        if not doc_ids:
            raise SystemExit(f"collection {collection} is empty: run `eddy eval --dataset {args.dataset}` first")
        variants[f"index {chunker_id or collection}, max"] = rank(queries, vectors, doc_ids)
        counts[f"index {chunker_id or collection}"] = len(doc_ids)
        stored = dict(zip(chunk_ids, vectors, strict=True))
    for max_chars, overlap, prefix in parse_configs(args.configs):
        chunker = StructureChunker(max_chars, overlap, prefix)
        name = f"{max_chars}/{overlap}/{prefix}"
        chunks = [c for doc_id, text, title in docs for c in chunker.chunk(doc_id, text, "text/plain", title)]
        counts[name] = len(chunks)
        if stored and (seeded := seed_from_index(cache, chunks, stored)):
            print(f"  {name}: {seeded:,} vectors taken from the index (the chunks `eddy eval` embedded)")
        variants.update(section_variants(queries, chunks, cache.encode, name))
    print(f"embedded {cache.embedded:,} texts in this run; chunks per configuration: "
          + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    print(f"{'variant':<34}" + "".join(f"{m:>12}" for m in METRICS))
    for name, ranking in variants.items():
        means, _ = retrieval_metrics(dataset.qrels, dict(zip(qids, ranking, strict=True)), METRICS)
        print(f"{name:<34}" + "".join(f"{means[m]:>12.4f}" for m in METRICS), flush=True)


if __name__ == "__main__":
    main()
