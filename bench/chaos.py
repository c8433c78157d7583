"""Chaos: kill -9 the worker at a seeded random moment while it indexes and answers, restart it, check the invariants.

    .venv/bin/python -m bench.chaos [--trials 5] [--seed 1] [--docs 24] [--queries 3] [--max-delay 2.0]

Per trial: publish a batch of document changes (new documents, new versions of earlier ones, deletes)
and a few queries, kill -9 the worker after a seeded random delay, restart it, wait, and check
invariant 1 (Milvus holds exactly the chunks of the newest version of every live document, no duplicate
or orphan row), invariant 3 (every change has an IndexEvent: nothing lost) and invariant 4 (exactly
one terminal answer per query). Figures are printed; a violated invariant is counted, not raised.
"""

from __future__ import annotations

import argparse
import random
import time
import uuid
from collections import Counter

from confluent_kafka import Consumer, TopicPartition

from bench.common import bench_stack
from components.chunking import StructureChunker
from components.embedding import embedder_id
from components.milvus_store import MilvusVectorStore
from config.settings import MAX_RECORD_BYTES, Settings
from infra.process import poll_until
from schemas import AnswerEvent, DocumentChange, IndexEvent, Query


def doc_text(doc_id: str, sections: int, salt: str) -> str:
    parts = [f"{doc_id} title\n{'=' * (len(doc_id) + 6)}\n"]
    for i in range(sections):
        parts.append(f"Section {i}\n{'-' * 10}\n")
        parts.append(f"Paragraph about topic {i} of {doc_id}{salt}. " * 8 + "\n")
    return "\n".join(parts)


def read_all(settings: Settings, name: str, timeout_s: float = 60.0) -> list:
    """Every record of a topic, from the beginning to its end offsets at the call."""
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": f"read-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "fetch.message.max.bytes": MAX_RECORD_BYTES})
    full = settings.topic(name)
    try:
        partitions = sorted(consumer.list_topics(full, timeout=10).topics[full].partitions)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(full, p), timeout=10)[1] for p in partitions}
        consumer.assign([TopicPartition(full, p, 0) for p in partitions])
        out, pos = [], dict.fromkeys(partitions, 0)
        deadline = time.monotonic() + timeout_s
        while any(pos[p] < ends[p] for p in partitions):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{full}: read {len(out)} records in {timeout_s:.0f} s, not to the end")
            for m in consumer.consume(500, timeout=0.2):
                if m.error() is None and m.offset() < ends[m.partition()]:
                    out.append(m)
                    pos[m.partition()] = max(pos[m.partition()], m.offset() + 1)
            for tp in consumer.position([TopicPartition(full, p) for p in partitions]):
                pos[tp.partition] = max(pos[tp.partition], tp.offset)
        return out
    finally:
        consumer.close()


def wait_committed(settings: Settings, names: tuple[str, ...], timeout_s: float = 300.0) -> bool:
    """Until the worker's group has committed the end offsets (of the call) of every partition of ``names``."""
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": settings.group_id,
                         "enable.auto.commit": False})
    try:
        ends = {}
        for name in names:
            full = settings.topic(name)
            for p in consumer.list_topics(full, timeout=10).topics[full].partitions:
                ends[(full, p)] = consumer.get_watermark_offsets(TopicPartition(full, p), timeout=10)[1]

        def done() -> bool:
            committed = consumer.committed([TopicPartition(t, p) for t, p in ends], timeout=10)
            return all(max(tp.offset, 0) >= ends[(tp.topic, tp.partition)] for tp in committed)

        return poll_until(done, timeout_s=timeout_s, interval_s=0.5)
    finally:
        consumer.close()


def index_mismatches(settings: Settings, latest: dict[str, DocumentChange]) -> tuple[int, int]:
    """Invariant 1: (documents whose stored chunk ids differ from their newest version's, extra rows)."""
    chunker = StructureChunker(settings.chunk_max_chars, settings.chunk_overlap_chars)
    store = MilvusVectorStore(settings.milvus_address, settings.collection, 384,
                              embedder_id(settings.embedder_model, settings.embedder_dtype), chunker.config_id)
    store.start()
    try:
        expected = {d: {c.chunk_id for c in chunker.chunk(d, ch.text, ch.content_type, ch.title)}
                    for d, ch in latest.items() if ch.op == "upsert"}
        found = store.stored_chunks(sorted(latest))
        stored = {d: {c.chunk_id for c in chunks} for d, chunks in found.items() if chunks}
        wrong = sum(1 for d in set(expected) | set(stored) if expected.get(d) != stored.get(d))
        extra = store.info().rows - sum(len(v) for v in expected.values())
        return wrong, extra
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--docs", type=int, default=24, help="document changes per trial (plus a few deletes)")
    parser.add_argument("--queries", type=int, default=3, help="queries per trial")
    parser.add_argument("--max-delay", type=float, default=2.0, help="kill -9 at a random delay in [0.05, this] s")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    agents = ("indexer", "answerer")
    overrides = {"generator": "echo", "indexer_batch_max": 8, "embed_group_chunks": 4}
    totals = Counter()
    with bench_stack("chaos", agents, **overrides) as (settings, stack, client):
        latest: dict[str, DocumentChange] = {}
        version = 0
        events_total = 0  # IndexEvents on the topic after the previous trial
        for trial in range(1, args.trials + 1):
            version += 1
            changes: list[DocumentChange] = []
            for i in range(args.docs):
                doc_id = f"doc-{rng.randrange(args.docs * 2)}"  # new documents and new versions of earlier ones
                changes.append(DocumentChange(op="upsert", doc_id=doc_id, version=version * 100 + i,
                                              text=doc_text(doc_id, rng.randint(1, 4), f" t{trial}.{i}"),
                                              content_type="text/x-rst", title=doc_id))
            for doc_id in rng.sample(sorted(latest), min(2, len(latest))):
                changes.append(DocumentChange(op="delete", doc_id=doc_id, version=version * 100 + 99))
            queries = [Query(query_id=f"chaos-{trial}-{q}-{uuid.uuid4().hex[:6]}", conversation_id=f"c{trial}-{q}",
                             text=f"What is topic {q} of doc-{q}?") for q in range(args.queries)]
            index_start, answer_start = client.end_offsets("index.events"), client.end_offsets("answers")
            delay = rng.uniform(0.05, args.max_delay)
            t0 = time.perf_counter()
            every = max(1, len(changes) // max(1, len(queries)))
            pending = list(queries)
            for n, change in enumerate(changes):  # versions grow in publish order: the last change is the newest
                client.publish_change(change)
                latest[change.doc_id] = change
                if n % every == every - 1 and pending:
                    client.publish_query(pending.pop(0))
            for query in pending:
                client.publish_query(query)
            client.flush()
            time.sleep(max(0.0, delay - (time.perf_counter() - t0)))
            events_before = len(read_all(settings, "index.events")) - events_total
            pid = stack.worker_status()["pid"]
            stack.stop_worker(kill=True)
            killed_at = time.perf_counter() - t0
            totals["kills"] += 1
            totals["mid_work"] += events_before < len(changes)  # the kill landed before every IndexEvent was out
            t1 = time.perf_counter()
            stack.start_worker(agents, timeout_s=300)
            restart_s = time.perf_counter() - t1
            ids = [str(c.event_id) for c in changes]
            client.wait_indexed(ids, index_start, timeout_s=300)
            client.wait_answers([q.query_id for q in queries], answer_start, timeout_s=300)
            settled = wait_committed(settings, ("docs.changes", "queries"))
            recover_s = time.perf_counter() - t1

            events = Counter(IndexEvent.model_validate_json(m.value()).change_id
                             for m in read_all(settings, "index.events"))
            events_total = sum(events.values())
            lost = sum(1 for i in ids if events[i] == 0)
            redone = sum(1 for i in ids if events[i] > 1)
            answers = [AnswerEvent.model_validate_json(m.value()) for m in read_all(settings, "answers")]
            terminal = Counter(a.query_id for a in answers if a.terminal)
            bad_answers = sum(1 for q in queries if terminal[q.query_id] != 1)
            wrong_docs, extra_rows = index_mismatches(settings, latest)
            ok = lost == 0 and bad_answers == 0 and wrong_docs == 0 and extra_rows == 0 and settled
            totals["trials"] += 1
            totals["survived"] += ok
            totals["lost"] += lost
            totals["redelivered"] += redone
            totals["bad_answers"] += bad_answers
            totals["index_mismatch"] += wrong_docs + abs(extra_rows)
            print(f"trial {trial}: {len(changes)} changes, {len(queries)} queries; kill -9 of pid {pid} at "
                  f"{killed_at:.2f} s (seeded delay {delay:.2f} s, {events_before} IndexEvents out before it); "
                  f"restart {restart_s:.1f} s, recovered in {recover_s:.1f} s; inv1 docs wrong {wrong_docs}, "
                  f"extra rows {extra_rows}; inv3 lost {lost}, processed twice {redone}; inv4 queries without "
                  f"exactly one terminal {bad_answers}; offsets settled {settled} -> {'OK' if ok else 'FAIL'}",
                  flush=True)
    print(f"summary: trials {totals['trials']}, kills {totals['kills']} ({totals['mid_work']} before the trial's "
          f"last IndexEvent was out), faults survived "
          f"{totals['survived']}/{totals['kills']}, records lost {totals['lost']}, changes processed twice "
          f"{totals['redelivered']}, queries without exactly one terminal answer {totals['bad_answers']}, "
          f"index mismatches {totals['index_mismatch']}")


if __name__ == "__main__":
    main()
