"""Generation throughput through Eddy ÷ raw server throughput on the same prompts, and TTFT p50/p99.

    .venv/bin/python -m bench.gpu_throughput --generator-url http://127.0.0.1:8000/v1 --generator-model NAME
        [--queries 64] [--concurrency 32] [--max-tokens 128] [--server-wait-s 420]

Run by bench/gpu_check.sh against ``vllm serve`` (any OpenAI-compatible server works). The Python FAQ
pages are indexed into the benchmark's own collection; ``--queries`` FAQ questions (cycled when more
are asked than there are) then go through Kafka: ``queries`` → answerer (generator="openai" at the
server, ``--concurrency`` queries and generations in flight) → ``answers``. The raw run sends the very
prompts the answerer builds (same embedder, collection, top_k and prompt template; checked by
comparing prompt token counts) straight to the server with the same concurrency, greedy, same
``max_tokens``. Throughput = completion tokens / wall time of the whole batch (first send to last
final); the ratio Eddy ÷ raw (target ≥ 0.9) is taken against the mean of a raw run before and one
after Eddy's. TTFT: client-side, query published to its first answer event (deltas are coalesced over
``delta_flush_ms``) for Eddy,
request to first content chunk for raw; the answerer's own ``timings.ttft_ms`` is printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import urllib.request
import uuid

from confluent_kafka import Consumer

from bench.common import bench_stack, summary
from bench.query_path import faq_questions
from components.base import ChatMessage
from components.chunking import StructureChunker
from components.embedding import SentenceTransformerEmbedder
from components.milvus_store import MilvusVectorStore
from components.prompts import PROMPT_V1, build_messages
from config.settings import MAX_RECORD_BYTES, Settings
from pipelines.ingest import ingest_source, python_docs_files, read_text
from pipelines.python_docs import ensure_python_docs
from schemas import AnswerEvent, DocumentChange, Query, QueryOptions


def wait_for_server(url: str, timeout_s: float) -> float:
    """Seconds waited until ``GET {url}/models`` answers 200; RuntimeError after ``timeout_s``."""
    started = time.monotonic()
    while True:
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=5) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except OSError:
            pass
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"{url} not serving after {timeout_s:.0f} s")
        time.sleep(1.0)


def same_prompts(settings: Settings, questions: list[str]) -> list[list[ChatMessage]]:
    """The messages the answerer builds for each question (no history, default top_k, the default groups)."""
    embedder = SentenceTransformerEmbedder(settings.embedder_model, 1, settings.embedder_dtype)
    embedder.start()
    chunker = StructureChunker(settings.chunk_max_chars, settings.chunk_overlap_chars)
    store = MilvusVectorStore(settings.milvus_address, settings.collection, embedder.dim, embedder.model_id,
                              chunker.config_id)
    store.start()
    try:
        vectors = embedder.encode(questions)
        hits = store.search(vectors, settings.top_k, [])
        return [build_messages(PROMPT_V1, q, h) for q, h in zip(questions, hits, strict=True)]
    finally:
        store.close()


async def raw_run(url: str, model: str, prompts: list[list[ChatMessage]], concurrency: int, max_tokens: int,
                  api_key: str | None) -> dict:
    import openai

    client = openai.AsyncOpenAI(base_url=url, api_key=api_key or "EMPTY", max_retries=0, timeout=300)
    slots = asyncio.Semaphore(concurrency)
    ttft: list[float] = []
    completion: list[int] = []
    prompt_tokens: list[int] = []

    async def one(messages: list[ChatMessage]) -> None:
        async with slots:
            t0 = time.perf_counter()
            first = None
            stream = await client.chat.completions.create(
                model=model, messages=[{"role": m.role, "content": m.content} for m in messages], stream=True,
                max_tokens=max_tokens, temperature=0.0, stream_options={"include_usage": True})
            usage = None
            async for chunk in stream:
                if chunk.usage is not None:
                    usage = chunk.usage
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.perf_counter()
            ttft.append(((first or time.perf_counter()) - t0) * 1e3)
            completion.append(usage.completion_tokens if usage else 0)
            prompt_tokens.append(usage.prompt_tokens if usage else 0)

    started = time.perf_counter()
    await asyncio.gather(*[one(m) for m in prompts])
    wall = time.perf_counter() - started
    await client.close()
    return {"wall_s": wall, "tokens": sum(completion), "tps": sum(completion) / wall, "ttft": ttft,
            "prompt_tokens": sorted(prompt_tokens)}


def eddy_run(settings: Settings, client, questions: list[str], concurrency: int, max_tokens: int) -> dict:
    """Publish the questions on ``queries`` keeping ``concurrency`` unanswered, read ``answers`` with one
    consumer (one per ask would read every delta once per ask), time the first delta and the final."""
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": f"bench-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 5,
                         "fetch.message.max.bytes": MAX_RECORD_BYTES})
    consumer.assign(client.end_offsets("answers"))
    todo = list(questions)
    asked: dict[str, float] = {}
    first: dict[str, float] = {}
    finals: list[tuple[float, AnswerEvent]] = []
    started = time.perf_counter()
    deadline = time.monotonic() + 600
    try:
        while todo or len(finals) < len(asked):
            while todo and len(asked) - len(finals) < concurrency:
                query = Query(query_id=uuid.uuid4().hex, conversation_id=uuid.uuid4().hex, text=todo.pop(0),
                              options=QueryOptions(max_tokens=max_tokens))
                asked[query.query_id] = time.perf_counter()
                client.publish_query(query)
            client.flush(10)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(asked) - len(finals)} queries unanswered after 600 s")
            for msg in consumer.consume(1000, timeout=0.005):
                if msg.error() is not None:
                    continue
                event = AnswerEvent.model_validate_json(msg.value())
                if event.query_id not in asked:
                    continue
                now = time.perf_counter()
                first.setdefault(event.query_id, now)
                if event.terminal:
                    finals.append((now, event))
    finally:
        consumer.close()
    wall = time.perf_counter() - started
    done = [e for _, e in finals if e.kind == "final"]
    tokens = sum(e.usage.completion_tokens for e in done)
    return {"wall_s": wall, "tokens": tokens, "tps": tokens / wall,
            "ttft": [(first[e.query_id] - asked[e.query_id]) * 1e3 for _, e in finals if e.kind == "final"],
            "answerer_ttft": [e.timings.ttft_ms for e in done],
            "prompt_tokens": sorted(e.usage.prompt_tokens for e in done),
            "errors": [e.error or "" for _, e in finals if e.kind == "error"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator-url", required=True)
    parser.add_argument("--generator-model", required=True)
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--server-wait-s", type=float, default=420.0)
    args = parser.parse_args()
    url = args.generator_url.rstrip("/")
    base = Settings()
    key = base.generator_api_key.get_secret_value() if base.generator_api_key else None
    files = [f for f in python_docs_files(ensure_python_docs(base.home / "data")) if ":faq/" in f.doc_id]
    faq = faq_questions(files)
    questions = [faq[i % len(faq)] for i in range(args.queries)]
    overrides = {"generator": "openai", "generator_url": url, "generator_model": args.generator_model,
                 "generation_slots": args.concurrency, "answerer_concurrency": args.concurrency,
                 "generator_max_in_flight": args.concurrency}
    with bench_stack("gpu", ("indexer", "answerer"), **overrides) as (settings, _stack, client):
        t = time.perf_counter()
        ingest_source(client, [DocumentChange(op="upsert", doc_id=f.doc_id, version=1, title=f.title, uri=f.uri,
                                              text=read_text(f.path), content_type=f.content_type) for f in files],
                      timeout_s=300)
        prompts = same_prompts(settings, questions)
        print(f"[gpu] {len(files)} FAQ pages indexed, prompts built in {time.perf_counter() - t:.0f} s", flush=True)
        print(f"[gpu] server ready after {wait_for_server(url, args.server_wait_s):.0f} s more", flush=True)
        raw = lambda: asyncio.run(raw_run(url, args.generator_model, prompts, args.concurrency,  # noqa: E731
                                          args.max_tokens, key))
        asyncio.run(raw_run(url, args.generator_model, prompts[: args.concurrency], args.concurrency, 8, key))
        eddy_run(settings, client, questions[:2], 2, 8)  # warm-up: worker, connections
        print(f"model {args.generator_model} at {url}; {len(questions)} FAQ questions, concurrency "
              f"{args.concurrency}, max_tokens {args.max_tokens}, delta_flush_ms {settings.delta_flush_ms}", flush=True)
        raw_before = raw()
        show("raw (before)", raw_before)
        eddy = eddy_run(settings, client, questions, args.concurrency, args.max_tokens)
        show("through Eddy", eddy)
        same = sum(a == b for a, b in zip(eddy["prompt_tokens"], raw_before["prompt_tokens"], strict=False))
        print(f"same prompts: {same}/{len(questions)} prompt token counts equal (sorted); errors through Eddy: "
              f"{len(eddy['errors'])}{' ' + eddy['errors'][0] if eddy['errors'] else ''}")
        print(f"TTFT through Eddy (client, first answer event): {stats(eddy['ttft'])}")
        print(f"TTFT in the answerer (pick-up to first token):  {stats(eddy['answerer_ttft'])}")
        print(f"TTFT raw (request to first chunk, run 1):       {stats(raw_before['ttft'])}", flush=True)
        print(f"ratio against raw run 1 only: {eddy['tps'] / raw_before['tps']:.3f}", flush=True)
        raw_after = raw()
        show("raw (after)", raw_after)
    raw_tps = statistics.fmean([raw_before["tps"], raw_after["tps"]])
    print(f"THROUGHPUT RATIO Eddy / raw (mean of runs before and after) = {eddy['tps'] / raw_tps:.3f} (target >= 0.9)")


def show(name: str, run: dict) -> None:
    print(f"{name:13s} {run['tokens']} completion tokens in {run['wall_s']:.2f} s = {run['tps']:.1f} tok/s", flush=True)


def stats(values: list[float]) -> str:
    return summary(values) if values else "n/a (no answer)"


if __name__ == "__main__":
    main()
