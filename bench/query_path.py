"""Query path: TTFT and total latency for real Python FAQ questions, and the overhead of the path.

    .venv/bin/python -m bench.query_path [--queries 20] [--max-tokens 64]
        [--generator openai --generator-url http://127.0.0.1:8000/v1 --generator-model NAME]

The FAQ pages (faq/*.rst.txt of Debian's python3.11-doc) are indexed into the benchmark's own
collection; questions are their headings ending in '?', asked one after another through
``queries`` -> answerer -> ``answers``. TTFT and total are measured by the client (from just
before the ask to the first delta / the final event). Overhead = everything but model compute:
query publish -> pickup (``queue_ms``) + answerer time outside generation (``total_ms -
generate_ms``: query embedding, vector search, prompt, publishing) + final event -> client.
Target: overhead p50 <= 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench.common import bench_stack, peak_rss_mb, summary
from components.parsing import parse_sections
from config.settings import Settings
from pipelines.ingest import ingest_source, python_docs_files, read_text
from pipelines.python_docs import ensure_python_docs
from schemas import DocumentChange


def faq_questions(files) -> list[str]:
    questions = []
    for f in files:
        for section in parse_sections(read_text(f.path), "text/x-rst"):
            if section.path and section.path[-1].endswith("?"):
                questions.append(section.path[-1])
    return list(dict.fromkeys(questions))


async def ask_one(client, question: str, max_tokens: int):
    t0 = time.time()
    first = None
    async for event in client.ask(question, max_tokens=max_tokens, timeout_s=600):
        now = time.time()
        if event.kind == "delta" and first is None:
            first = now
        if event.terminal:
            return event, t0, first or now, now, now - event.occurred_at.timestamp()
    raise RuntimeError("no terminal event")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--generator", default=None, help="the generator setting (default: EDDY_GENERATOR)")
    parser.add_argument("--generator-url", default=None, help="'openai': base URL of the server, up to /v1")
    parser.add_argument("--generator-model", default=None, help="'openai': served model or LoRA adapter name")
    args = parser.parse_args()
    overrides = {name: value for name, value in (("generator", args.generator), ("generator_url", args.generator_url),
                                                 ("generator_model", args.generator_model)) if value is not None}
    base = Settings()
    files = [f for f in python_docs_files(ensure_python_docs(base.home / "data")) if ":faq/" in f.doc_id]
    questions = faq_questions(files)[: args.queries]
    with bench_stack("query", ("indexer", "answerer"), **overrides) as (settings, stack, client):
        ingest_source(client, [DocumentChange(op="upsert", doc_id=f.doc_id, version=1, title=f.title, uri=f.uri,
                                              text=read_text(f.path), content_type=f.content_type) for f in files],
                      timeout_s=600)
        asyncio.run(ask_one(client, "warm-up: what is Python?", 4))
        ttft, total, overhead, retrieve, tps, queue, inside, back = [], [], [], [], [], [], [], []
        for q in questions:
            final, t0, first, end, hop_back_s = asyncio.run(ask_one(client, q, args.max_tokens))
            if final.kind != "final":
                print(f"error for {q!r}: {final.error}")
                continue
            t = final.timings
            ttft.append((first - t0) * 1e3)
            total.append((end - t0) * 1e3)
            retrieve.append(t.retrieve_ms)
            overhead.append(t.queue_ms + (t.total_ms - t.generate_ms) + hop_back_s * 1e3)
            queue.append(t.queue_ms)
            inside.append(t.total_ms - t.generate_ms)
            back.append(hop_back_s * 1e3)
            if t.generate_ms > 0:
                tps.append(final.usage.completion_tokens / (t.generate_ms / 1e3))
        rss = peak_rss_mb(stack.worker_status()["pid"])
        model = final.model
    print(f"model {model}, {len(total)} FAQ questions, max_tokens {args.max_tokens}")
    print(f"TTFT (client):     {summary(ttft)}")
    print(f"total (client):    {summary(total)}")
    print(f"retrieve:          {summary(retrieve)}")
    print(f"overhead of path:  {summary(overhead)}  (target p50 <= 50 ms)")
    print(f"  query -> answerer: {summary(queue)}")
    print(f"  answerer, not generating (embed query, search, prompt, publish): {summary(inside)}")
    print(f"  final event -> client: {summary(back)}")
    print(f"generation (tokens / generate_ms, prefill included): {summary(tps, 'tok/s')}")
    print(f"worker peak RSS (indexer + answerer, embedders and generator loaded): {rss:.0f} MiB")


if __name__ == "__main__":
    main()
