"""Freshness: single-section edits at a steady rate; ``lag_ms`` (published -> searchable) from index.events.

    .venv/bin/python -m bench.freshness [--rate 10] [--seconds 60]

Target: p99 <= 1 s at 10 edits/s on the 2-core machine.
"""

from __future__ import annotations

import argparse
import time

from bench.common import bench_stack, summary
from pipelines.ingest import ingest_source
from schemas import DocumentChange

SECTIONS = 6


def doc_text(doc: int, edits: dict[int, int]) -> str:
    parts = [f"Document {doc}\n{'=' * 20}\n"]
    for s in range(SECTIONS):
        parts.append(f"Section {s}\n{'-' * 12}\n")
        parts.append(f"Stable text of section {s} in document {doc}. " * 6
                     + f"Revision {edits.get(s, 0)} of this section.\n")
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=10.0, help="edits per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="duration of the steady load")
    parser.add_argument("--docs", type=int, default=20, help="documents the edits rotate over")
    args = parser.parse_args()
    with bench_stack("freshness", ("indexer",)) as (settings, stack, client):
        revisions = {d: {} for d in range(args.docs)}
        version = 1
        ingest_source(client, [DocumentChange(op="upsert", doc_id=f"fresh-{d}", version=version,
                                              text=doc_text(d, {}), content_type="text/x-rst")
                               for d in range(args.docs)], timeout_s=600)
        start = client.end_offsets("index.events")
        sent = []
        interval = 1.0 / args.rate
        t0 = time.perf_counter()
        n = int(args.rate * args.seconds)
        for i in range(n):
            target = t0 + i * interval
            delay = target - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            d, s = i % args.docs, (i // args.docs) % SECTIONS
            revisions[d][s] = revisions[d].get(s, 0) + 1
            version += 1
            sent.append(client.publish_change(DocumentChange(
                op="upsert", doc_id=f"fresh-{d}", version=version, text=doc_text(d, revisions[d]),
                content_type="text/x-rst")))
            client._producer.poll(0)
        client.flush()
        achieved = n / (time.perf_counter() - t0)
        events = client.wait_indexed([str(c.event_id) for c in sent], start, timeout_s=120)
    lags = [e.lag_ms for e in events]
    print(f"{n} edits at {achieved:.1f}/s over {args.seconds:.0f} s; embedded per edit: "
          f"{sum(e.chunks_embedded for e in events) / len(events):.2f} chunks; statuses "
          f"{ {s: sum(e.status == s for e in events) for s in {e.status for e in events}} }")
    print(f"lag_ms: {summary(lags)}  (target p99 <= 1000 ms)")


if __name__ == "__main__":
    main()
