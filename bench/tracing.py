"""Cost of tracing: indexing throughput and query TTFT with tracing off, then on, in one run.

    .venv/bin/python -m bench.tracing [--docs 40] [--rounds 4] [--queries 20] [--generator echo] [--max-tokens 32]

Two workers of their own on the embedded stack, identical but for ``EDDY_TRACING``, both up at
once and used in alternation (each indexing round and each question goes to one then the other,
the order flipping every time, so background load on a shared machine hits both alike): both
index the same Python docs pages into collections of their own (throughput = chunks embedded /
seconds from the first publish of a round to its last IndexEvent, summed over the rounds) and
answer the same Python FAQ questions one at a time (TTFT = client-side, ask → first delta). The default generator
is ``echo`` (the deterministic fake) so model compute does not drown the few milliseconds being
measured; tracing does no work during generation (the generate span is recorded afterwards).
Targets: tracing costs <= 5 % throughput and <= 5 ms TTFT (p50).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics

from bench.common import bench_stack, summary
from bench.query_path import ask_one, faq_questions
from components.stats import percentile
from config.settings import Settings
from pipelines.ingest import ingest_source, python_docs_files, read_text
from pipelines.python_docs import ensure_python_docs
from schemas import DocumentChange


def measure(clients: dict[str, object], changes: list[DocumentChange], questions: list[str], rounds: int,
            max_tokens: int) -> dict[str, dict]:
    """Alternate the two workers: each indexing round and each question goes to both, the order
    flipping every time, so that drifts in the machine's background load hit both alike."""
    out = {mode: {"embedded": 0, "seconds": 0.0, "ttft": []} for mode in clients}
    size = -(-len(changes) // rounds)
    for i in range(rounds):
        part = changes[i * size:(i + 1) * size]
        for mode in (list(clients) if i % 2 == 0 else list(reversed(clients))):
            result = ingest_source(clients[mode], part, timeout_s=600)
            out[mode]["embedded"] += sum(e.chunks_embedded for e in result.indexed)
            out[mode]["seconds"] += result.seconds
    for client in clients.values():
        asyncio.run(ask_one(client, "warm-up: what is Python?", 4))
    for i, question in enumerate(questions):
        for mode in (list(clients) if i % 2 == 0 else list(reversed(clients))):
            final, t0, first, _end, _back = asyncio.run(ask_one(clients[mode], question, max_tokens))
            if final.kind != "final":
                raise RuntimeError(f"error answer for {question!r}: {final.error}")
            out[mode]["ttft"].append((first - t0) * 1e3)
    for r in out.values():
        r["rate"] = r["embedded"] / r["seconds"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=40, help="Python docs pages to index (sorted by path)")
    parser.add_argument("--queries", type=int, default=20, help="FAQ questions to ask")
    parser.add_argument("--generator", default="echo", help="EDDY_GENERATOR of both workers")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4, help="indexing rounds (the docs split between them)")
    args = parser.parse_args()
    files = python_docs_files(ensure_python_docs(Settings().home / "data"))
    faq = [f for f in files if ":faq/" in f.doc_id]
    questions = faq_questions(faq)[: args.queries]
    changes = [DocumentChange(op="upsert", doc_id=f.doc_id, version=1, title=f.title, uri=f.uri,
                              text=read_text(f.path), content_type=f.content_type, source="bench")
               for f in files[: args.docs]]
    agents = ("indexer", "answerer")
    with bench_stack("tracing-off", agents, tracing=False, generator=args.generator) as (_s0, _w0, off_client), \
            bench_stack("tracing-on", agents, tracing=True, generator=args.generator) as (_s1, _w1, on_client):
        result = measure({"off": off_client, "on": on_client}, changes, questions, args.rounds, args.max_tokens)
        records = sum(tp.offset for tp in on_client.end_offsets("traces"))
    off, on = result["off"], result["on"]
    print(f"{len(changes)} documents, {off['embedded']} chunks embedded per run; {len(questions)} questions, "
          f"generator {args.generator}, max_tokens {args.max_tokens}")
    for label, r in (("off", off), ("on", on)):
        print(f"tracing {label:3}: indexing {r['rate']:6.1f} chunks/s ({r['seconds']:.1f} s); "
              f"TTFT {summary(r['ttft'])}")
    cost = 1 - on["rate"] / off["rate"]
    print(f"throughput cost of tracing: {cost * 100:+.1f} % (target <= 5 %)")
    paired = [a - b for a, b in zip(on["ttft"], off["ttft"], strict=True)]  # same question, back to back
    print(f"TTFT cost of tracing: p50 {percentile(on['ttft'], 50) - percentile(off['ttft'], 50):+.2f} ms, "
          f"mean {statistics.fmean(on['ttft']) - statistics.fmean(off['ttft']):+.2f} ms, "
          f"median of the paired differences {statistics.median(paired):+.2f} ms (target <= 5 ms)")
    print(f"trace records (OTLP batches) written by the traced worker: {records}")


if __name__ == "__main__":
    main()
