"""Indexer against the real broker and the real Milvus Lite server (DESIGN.md invariants 1, 2, 3, 7)."""

from __future__ import annotations

import base64
import json
from collections import Counter

import pytest
from confluent_kafka import Consumer, TopicPartition

from infra.process import poll_until
from schemas import DocumentChange, IndexEvent
from tests.integration.helpers import (
    assert_index_matches,
    dead_letters,
    publish_and_wait,
    read_topic,
    section_doc,
    wait_consumed,
)

pytestmark = pytest.mark.integration


def upsert(doc_id, version, text, **kw):
    return DocumentChange(op="upsert", doc_id=doc_id, version=version, text=text, content_type="text/x-rst",
                          title=kw.pop("title", doc_id), **kw)


def test_index_holds_newest_versions_only_and_embeds_only_new_chunks(settings, client, stack):
    stack.start_worker(("indexer",))
    v1 = {f"doc-{i}": upsert(f"doc-{i}", 1, section_doc(f"doc-{i}", 4)) for i in range(6)}
    events = publish_and_wait(client, list(v1.values()))
    assert {e.status for e in events} == {"indexed"}
    first_embedded = sum(e.chunks_embedded for e in events)
    assert first_embedded == sum(e.chunks_total for e in events) > 0
    assert_index_matches(settings, v1)

    # Re-publishing the same documents (new versions, same content) embeds nothing.
    again = [upsert(d, 2, c.text) for d, c in v1.items()]
    events = publish_and_wait(client, again)
    assert sum(e.chunks_embedded for e in events) == 0
    assert {e.status for e in events} == {"unchanged"}

    # Edit one section of doc-0: only that section's chunks are embedded; stale ones deleted.
    text = v1["doc-0"].text.replace("Paragraph about topic 2 of doc-0", "Rewritten paragraph about topic 2 of doc-0")
    edit = upsert("doc-0", 3, text)
    # a late, older version of doc-1 and a delete of doc-2, plus two versions of doc-3 in one batch
    late = upsert("doc-1", 1, "Late older text that must never be indexed.\n\nSecond paragraph.")
    delete = DocumentChange(op="delete", doc_id="doc-2", version=5)
    d3a = upsert("doc-3", 7, section_doc("doc-3", 2, salt=" A"))
    d3b = upsert("doc-3", 8, section_doc("doc-3", 3, salt=" B"))
    events = {e.change_id: e for e in publish_and_wait(client, [edit, late, delete, d3a, d3b])}
    e_edit = events[str(edit.event_id)]
    assert e_edit.status == "indexed"
    assert e_edit.chunks_embedded == e_edit.chunks_deleted >= 1
    assert e_edit.chunks_embedded < e_edit.chunks_total
    assert events[str(late.event_id)].status == "stale"
    assert events[str(delete.event_id)].status == "deleted"
    assert events[str(delete.event_id)].chunks_deleted > 0
    assert events[str(d3b.event_id)].status == "indexed"
    assert events[str(d3a.event_id)].status in ("indexed", "superseded")

    latest = dict(v1)
    latest.update({"doc-0": edit, "doc-2": delete, "doc-3": d3b})
    latest["doc-1"] = again[1]
    assert_index_matches(settings, latest)

    # An upsert of a deleted doc with an older version than the delete stays deleted.
    events = publish_and_wait(client, [upsert("doc-2", 4, section_doc("doc-2", 1))])
    assert events[0].status == "stale"
    assert_index_matches(settings, latest)


def test_freshness_lag_is_reported(settings, client, stack):
    stack.start_worker(("indexer",))
    events = publish_and_wait(client, [upsert("fresh", 1, section_doc("fresh", 1))])
    assert 0 < events[0].lag_ms < 60_000
    assert events[0].collection == settings.collection
    assert events[0].embedder == "all-MiniLM-L6-v2@bf16"


def test_bad_records_go_to_dlq_and_the_indexer_keeps_consuming(settings, client, stack, monkeypatch):
    stack.settings = settings.model_copy(update={"max_document_bytes": 50_000})
    stack.start_worker(("indexer",))
    producer = client._producer
    topic = settings.topic("docs.changes")
    bad = [
        (b"bad-json", b"{not json"),
        (b"bad-schema", json.dumps({"op": "upsert", "doc_id": "bad-schema"}).encode()),
        (b"bad-op", json.dumps({"op": "merge", "doc_id": "bad-op", "version": 1, "text": "x"}).encode()),
        (b"empty", json.dumps({"op": "upsert", "doc_id": "empty", "version": 1, "text": " \n "}).encode()),
        (b"big", upsert("big", 1, "word " * 20_000).to_bytes()),
    ]
    for key, value in bad:
        producer.produce(topic, key=key, value=value)
    good = upsert("after-bad", 1, section_doc("after-bad", 1))
    events = publish_and_wait(client, [good])
    assert events[0].status == "indexed"

    letters = {d["key"]: d for d in dead_letters(settings, min_count=len(bad))}
    assert set(letters) == {k.decode() for k, _ in bad}
    assert letters["bad-json"]["error_type"] == "malformed_json"
    assert letters["bad-schema"]["error_type"] == "schema"
    assert "version: Field required" in letters["bad-schema"]["reason"]
    assert "op: Input should be 'upsert' or 'delete'" in letters["bad-op"]["reason"]
    assert "empty document" in letters["empty"]["reason"]
    assert letters["big"]["error_type"] == "oversized" and "50,000 bytes" in letters["big"]["reason"]
    for key, value in bad:
        letter = letters[key.decode()]
        assert base64.b64decode(letter["value_b64"]) == value
        assert letter["source_topic"] == topic and letter["offset"] >= 0 and letter["partition"] >= 0
        assert letter["agent"] == "indexer"


def committed_offsets(settings, topic: str) -> dict[int, int]:
    """The worker group's committed offset per partition of ``topic`` (0 where none yet)."""
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": settings.group_id,
                         "enable.auto.commit": False})  # never subscribes: reads the group's offsets only
    try:
        full = settings.topic(topic)
        partitions = consumer.list_topics(full, timeout=10).topics[full].partitions
        return {tp.partition: max(tp.offset, 0)
                for tp in consumer.committed([TopicPartition(full, p) for p in partitions], timeout=10)}
    finally:
        consumer.close()


def test_kill_9_during_a_batch_loses_and_duplicates_nothing(settings, client, stack):
    """Invariant 3: kill -9 the worker in the middle of a batch, some of its documents written (their
    IndexEvents out), its offsets not committed; the restarted worker processes those changes again
    (their IndexEvents appear twice), and the index equals the newest versions, without duplicate or
    orphan rows. Groups of 4 new chunks: a batch of 8 documents is written one or two documents at a time."""
    stack.settings = settings.model_copy(update={"indexer_batch_max": 8, "embed_group_chunks": 4})
    stack.start_worker(("indexer",))
    latest: dict[str, DocumentChange] = {}
    changes = []
    for round_ in range(2):
        for i in range(40):
            doc_id = f"crash-{i}"
            change = upsert(doc_id, round_ + 1, section_doc(doc_id, 3, salt=f" r{round_}"))
            changes.append(change)
            latest[doc_id] = change
    for i in range(0, 40, 5):
        change = DocumentChange(op="delete", doc_id=f"crash-{i}", version=10)
        changes.append(change)
        latest[f"crash-{i}"] = change
    start = client.end_offsets("index.events")
    for change in changes:
        client.publish_change(change)
    client.flush()
    position = {json.loads(m.value())["event_id"]: (m.partition(), m.offset())
                for m in read_topic(settings, "docs.changes", min_count=len(changes))}

    def in_flight() -> bool:
        """Some changes' IndexEvents are out, their offsets not committed; changes are left to do."""
        events = len(read_topic(settings, "index.events"))  # first: events only grow, commits only follow them
        return sum(committed_offsets(settings, "docs.changes").values()) < events < len(changes)

    # A batch's IndexEvents go out group by group; its offsets are committed after the whole batch
    # (within 0.5 s): kill -9 inside that window. Should a commit land between the check and the
    # kill, restart and try again.
    for _ in range(5):
        assert poll_until(in_flight, timeout_s=120, interval_s=0.05), "no batch in flight to kill"
        stack.stop_worker(kill=True)
        committed = committed_offsets(settings, "docs.changes")  # final: the worker is dead
        before = [IndexEvent.model_validate_json(m.value()) for m in read_topic(settings, "index.events")]
        redo = {e.change_id for e in before if position[e.change_id][1] >= committed[position[e.change_id][0]]}
        stack.start_worker(("indexer",))
        if redo:
            break
    else:
        raise AssertionError("five kills never caught a batch whose IndexEvents were out and offsets not committed")
    assert len(before) < len(changes), "the kill must land mid-way through the changes"

    client.wait_indexed([str(c.event_id) for c in changes], start, timeout_s=300)
    wait_consumed(settings, ("docs.changes",), timeout_s=300)  # redelivered changes processed again too
    events = Counter(IndexEvent.model_validate_json(m.value()).change_id for m in read_topic(settings, "index.events"))
    assert set(events) == {str(c.event_id) for c in changes}  # nothing lost
    assert {change_id for change_id in redo if events[change_id] < 2} == set(), "not redelivered after the kill"
    assert_index_matches(settings, latest)  # nothing duplicated in the index
