"""Scale-out: indexer containers in one consumer group on six partitions while documents flow; one is
killed (SIGKILL) and one added mid-stream. Afterwards invariant 1 (Milvus holds exactly the chunks of the
newest version of every live document: no duplicate, no orphan) and invariant 3 (nothing lost: every
change has its IndexEvent, redelivered ones processed again) hold.
"""

from __future__ import annotations

from collections import Counter

import pytest

from infra.process import poll_until
from schemas import DocumentChange, IndexEvent
from streams.admin import ensure_topics
from streams.client import EddyClient
from tests.conftest import time_left
from tests.containers.workers import WorkerContainer, container_name
from tests.integration.helpers import assert_index_matches, read_topic, section_doc, wait_consumed

pytestmark = [pytest.mark.containers, pytest.mark.slow]

PARTITIONS = 6


def upsert(doc_id: str, version: int, salt: str = "") -> DocumentChange:
    return DocumentChange(op="upsert", doc_id=doc_id, version=version, text=section_doc(doc_id, 4, salt=salt),
                          content_type="text/x-rst", title=doc_id)


def test_indexers_scale_out_and_a_killed_one_loses_and_duplicates_nothing(settings, eddy_image, host_packages,
                                                                          tmp_path):
    # Own topics with six partitions (the session's settings made two); small batches so work is in flight.
    s = settings.model_copy(update={"partitions": PARTITIONS, "topic_prefix": f"{settings.topic_prefix}six.",
                                    "indexer_batch_max": 8, "embed_group_chunks": 8})
    ensure_topics(s)
    client = EddyClient.from_settings(s)
    workers: list[WorkerContainer] = []

    def add_worker(i: int) -> WorkerContainer:
        worker = WorkerContainer(eddy_image, s, tmp_path / f"indexer-{i}", ("indexer",),
                                 container_name(f"eddy-test-indexer{i}"), host_packages=host_packages)
        workers.append(worker.start())
        return worker

    latest: dict[str, DocumentChange] = {}
    published: list[DocumentChange] = []

    def publish(changes: list[DocumentChange]) -> None:
        for change in changes:
            client.publish_change(change)
            published.append(change)
            if change.doc_id not in latest or change.version > latest[change.doc_id].version:
                latest[change.doc_id] = change  # an older version published later is stale: ignored
        client.flush()

    def events_out() -> int:
        return sum(tp.offset for tp in client.end_offsets("index.events"))

    try:
        first = [add_worker(i) for i in range(3)]
        for worker in first:
            worker.wait_ready(time_left(300))
        assert poll_until(lambda: all(w.assigned() >= 1 for w in first), timeout_s=time_left(60), interval_s=0.5), \
            f"partitions per indexer: {[w.assigned() for w in first]}"
        start = client.end_offsets("index.events")

        publish([upsert(f"doc-{i}", 1) for i in range(60)])
        assert poll_until(lambda: events_out() >= 8, timeout_s=time_left(120), interval_s=0.1), "nothing indexed"
        in_flight = events_out()
        victim = first[0]
        victim.kill()  # mid-stream: documents of its partitions are in flight or waiting
        newcomer = add_worker(3)
        publish([upsert(f"doc-{i}", 2, salt=" v2") for i in range(0, 60, 3)] +
                [upsert(f"doc-{i}", 1) for i in range(60, 80)])
        newcomer.wait_ready(time_left(300))
        assert poll_until(lambda: newcomer.assigned() >= 1, timeout_s=time_left(90), interval_s=0.5), \
            "the added indexer got no partition"
        publish([DocumentChange(op="delete", doc_id=f"doc-{i}", version=9) for i in range(1, 60, 7)] +
                [upsert(f"doc-{i}", 3, salt=" v3") for i in range(0, 80, 5)])

        client.wait_indexed([str(c.event_id) for c in published], start, timeout_s=time_left(240))
        wait_consumed(s, ("docs.changes",), timeout_s=time_left(120))  # redelivered changes processed too
        assert in_flight < 60, "the kill must land while the first 60 documents are still being indexed"
        events = Counter(IndexEvent.model_validate_json(m.value()).change_id
                         for m in read_topic(s, "index.events"))
        assert set(events) == {str(c.event_id) for c in published}, "a change was lost"  # invariant 3
        print(f"{len(published)} changes, {in_flight} indexed at the kill, "
              f"{sum(n > 1 for n in events.values())} processed twice (redelivered after it)")
        assert_index_matches(s, latest)  # invariant 1: newest versions only, no duplicate or orphan rows
        assert all(w.running() for w in workers if w is not victim)
    finally:
        client.close()
        for worker in workers:
            worker.remove(tmp_path / "logs")
