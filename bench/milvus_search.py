"""Milvus Lite server: search latency at N rows with Eddy's ACL filter, side by side with the
alternatives it replaced (``array_contains_any`` on the ACL array; the 128 MiB default write buffer).

    .venv/bin/python -m bench.milvus_search [--rows 15000]

Starts two Milvus Lite servers of its own in a temporary directory (write buffer 2 MiB, Eddy's
default, and 128 MiB, milvus-lite's), upserts the same N rows of 384-d unit vectors (20 % of
them with an ACL) into each through ``MilvusVectorStore``, and times 50 single-vector searches
(top_k 5) per variant.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from components.base import Chunk, ChunkRecord
from components.milvus_client import acl_filter
from components.milvus_store import MilvusVectorStore
from infra.milvus import MilvusLiteServer

DIM = 384


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def records(n: int, rng: np.random.Generator) -> list[ChunkRecord]:
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    out = []
    for i in range(n):
        chunk = Chunk(f"c{i:08d}", f"d{i // 20}", f"text {i}", f"text {i}", "s", "a", f"h{i}", i % 20)
        acl = ("hr",) if i % 5 == 0 else ()
        out.append(ChunkRecord(chunk, "bench", "u", "t", acl, "m", vectors[i]))
    return out


def timed(fn, queries) -> float:
    times = []
    for q in queries:
        t = time.perf_counter()
        fn(q)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=15_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = records(args.rows, rng)
    queries = [r.vector for r in rows[:50]]
    with tempfile.TemporaryDirectory() as tmp:
        for label, buffer in (("write buffer 2 MiB (Eddy)", 2 * 1024 * 1024),
                              ("write buffer 128 MiB (milvus-lite default)", 128 * 1024 * 1024)):
            root = Path(tmp) / str(buffer)
            server = MilvusLiteServer(root / "milvus", free_port(), root / "milvus.log", root / "milvus.pid",
                                      memtable_limit_bytes=buffer)
            server.start()
            try:
                store = MilvusVectorStore(server.uri, "bench", DIM, "bench-embedder", "bench-chunker")
                store.start()
                t = time.perf_counter()
                for i in range(0, len(rows), 64):
                    store.upsert_chunks(rows[i:i + 64])
                upsert_rate = len(rows) / (time.perf_counter() - t)
                eddy_ms = timed(lambda q, store=store: store.search(q[None, :], 5, ["eng"]), queries)
                client = store.connect()
                array_expr = 'array_length(acl) == 0 or array_contains_any(acl, ["eng"])'

                def array_search(q, client=client, array_expr=array_expr):
                    client.search("bench", data=[q.tolist()], limit=5, filter=array_expr, anns_field="embedding",
                                  search_params={"metric_type": "COSINE"}, consistency_level="Strong")

                array_ms = timed(array_search, queries)
                print(f"{label}: {args.rows} rows, upsert {upsert_rate:.0f} rows/s (batches of 64)")
                print(f"  search p50, Eddy's filter ({acl_filter(['eng'])[:40]}…): {eddy_ms:.1f} ms")
                print(f"  search p50, array_contains_any on the acl array:          {array_ms:.1f} ms")
                store.close()
            finally:
                server.stop()


if __name__ == "__main__":
    main()
