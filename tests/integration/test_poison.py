"""Issue 10: a poison corpus mixed into a stream of valid document changes and queries, against the real
broker, the Milvus Lite server and one worker (indexer + answerer, echo generator). Every poison record
ends in ``dlq`` (matched by its source topic/partition/offset) or, for a nanosecond version, as a
``refused`` IndexEvent (the version rule, ARCHITECTURE.md §3); every valid change is applied (invariant 1);
every valid query gets exactly one terminal answer (invariant 4); the worker is the same live process
from start to end (invariants 3, 7)."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import Counter

import pytest
from confluent_kafka import Producer

from config.settings import MAX_RECORD_BYTES
from schemas import AnswerEvent, DocumentChange, IndexEvent, Query
from tests.integration.helpers import assert_index_matches, read_topic, section_doc, wait_consumed

pytestmark = pytest.mark.integration

DOC_LIMIT = 200_000


def upsert(doc_id: str, version: int, text: str) -> DocumentChange:
    return DocumentChange(op="upsert", doc_id=doc_id, version=version, text=text, content_type="text/x-rst",
                          title=doc_id)


def poison_changes() -> list[tuple[str, bytes | None, bytes]]:
    """(label, key, value) of records no indexer may apply, each bound for ``dlq``."""
    ok = {"op": "upsert", "doc_id": "p", "version": 1, "text": "fine text"}

    def js(obj: dict) -> bytes:
        return json.dumps(obj).encode()

    nested = b"[" * 2000 + b"]" * 2000
    deep = b'{"op": "upsert", "doc_id": "deep", "version": 1, "text": "t", "metadata": ' + nested + b"}"
    return [
        ("invalid-utf8", b"p-utf8", b'{"op": "upsert", "doc_id": "p-utf8", "version": 1, "text": "\xff\xfe\xc3("}'),
        ("nul-bytes", b"p-nul", b'{"op": "upsert", "doc_id": "p-\x00nul", "version": 1, "text": "a\x00b"}'),
        ("lone-surrogate", b"p-sur", b'{"op": "upsert", "doc_id": "p-sur", "version": 1, "text": "x\\ud83d"}'),
        ("nested-2000", b"deep", deep),
        ("oversized", b"p-big", upsert("p-big", 1, "word " * (DOC_LIMIT // 5 + 100)).to_bytes()),
        ("huge-key", b"k" * 100_000, js(ok)),
        ("unknown-fields", b"p", js({**ok, "colour": "red", "nested": {"a": 1}})),
        ("wrong-types", b"p", js({"op": "upsert", "doc_id": ["p"], "version": "one", "text": 5, "acl": "all"})),
        ("unknown-op", b"p", js({**ok, "op": "merge"})),
        ("not-an-object", b"p", b"[1, 2, 3]"),
        ("not-json", b"p", b"{not json"),
        ("empty-value", b"p", b""),
        ("negative-version", b"p", js({**ok, "version": -1})),
    ]


def poison_queries() -> list[tuple[str, bytes | None, bytes]]:
    return [
        ("q-invalid-utf8", b"qc1", b'{"query_id": "pq1", "conversation_id": "qc1", "text": "\xff\xfe"}'),
        ("q-lone-surrogate", b"qc2", b'{"query_id": "pq2", "conversation_id": "qc2", "text": "x\\ud83d"}'),
        ("q-nested", b"qc3", b'{"query_id": "pq3", "text": ' + b"[" * 2000 + b"]" * 2000 + b"}"),
        ("q-unknown-field", b"qc4", json.dumps({"query_id": "pq4", "conversation_id": "qc4", "text": "hi",
                                                "colour": "red"}).encode()),
        ("q-wrong-types", b"qc5", json.dumps({"query_id": 5, "conversation_id": None, "text": ["hi"]}).encode()),
    ]


class RawProducer:
    """A raw confluent_kafka producer that notes where each record landed (partition, offset)."""

    def __init__(self, bootstrap: str) -> None:
        self.producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": MAX_RECORD_BYTES,
                                  "linger.ms": 5})
        self.landed: dict[str, tuple[str, int, int]] = {}
        self.errors: list[str] = []

    def produce(self, topic: str, label: str, key: bytes | None, value: bytes) -> None:
        def done(err, msg, label=label) -> None:
            if err is not None:
                self.errors.append(f"{label}: {err}")
            else:
                self.landed[label] = (msg.topic(), msg.partition(), msg.offset())

        self.producer.produce(topic, key=key, value=value, on_delivery=done)
        self.producer.poll(0)

    def flush(self) -> None:
        assert self.producer.flush(30) == 0
        assert not self.errors, self.errors


def test_a_poison_corpus_is_dead_lettered_and_everything_valid_still_applies(settings, client, stack):
    stack.settings = settings.model_copy(update={"generator": "echo", "max_document_bytes": DOC_LIMIT,
                                                 "indexer_batch_max": 8})
    pid = stack.start_worker(("indexer", "answerer"))
    changes_topic, queries_topic = settings.topic("docs.changes"), settings.topic("queries")
    raw = RawProducer(settings.bootstrap_servers)
    poison = {label: (key, value) for label, key, value in poison_changes()}
    bad_queries = {label: (key, value) for label, key, value in poison_queries()}
    now_us = time.time_ns() // 1000
    nano = upsert("nano", now_us * 1000, section_doc("nano", 1))  # refused by the version rule, not dead-lettered

    latest: dict[str, DocumentChange] = {}
    valid: list[DocumentChange] = []
    queries: list[Query] = []
    poison_items, query_items = list(poison.items()), list(bad_queries.items())
    for round_ in range(3):
        for i in range(6):
            doc_id = f"ok-{i}"
            change = upsert(doc_id, round_ + 1, section_doc(doc_id, 2, salt=f" r{round_}"))
            valid.append(change)
            latest[doc_id] = change
            raw.produce(changes_topic, f"valid-{round_}-{i}", change.record_key().encode(), change.to_bytes())
            if poison_items:  # poison interleaved with the valid changes, in the same batches
                label, (key, value) = poison_items.pop()
                raw.produce(changes_topic, label, key, value)
        query = Query(query_id=f"q-{round_}-{uuid.uuid4().hex[:6]}", conversation_id=f"conv-{round_}",
                      text=f"What is topic {round_} of ok-{round_}?")
        queries.append(query)
        raw.produce(queries_topic, query.query_id, query.conversation_id.encode(), query.to_bytes())
        if query_items:
            label, (key, value) = query_items.pop()
            raw.produce(queries_topic, label, key, value)
    for label, (key, value) in poison_items + [(k, v) for k, v in query_items]:
        raw.produce(changes_topic if label in poison else queries_topic, label, key, value)
    delete = DocumentChange(op="delete", doc_id="ok-5", version=10)
    valid.append(delete)
    latest["ok-5"] = delete
    raw.produce(changes_topic, "valid-delete", delete.record_key().encode(), delete.to_bytes())
    raw.produce(changes_topic, "nano", nano.record_key().encode(), nano.to_bytes())
    raw.flush()

    wait_consumed(settings, ("docs.changes", "queries"), timeout_s=150)  # every record handled, outputs written

    # 100 % of the poison is in dlq, matched by source topic/partition/offset; nothing valid is.
    letters = [json.loads(m.value()) for m in read_topic(settings, "dlq")]
    lettered = Counter((d["source_topic"], d["partition"], d["offset"]) for d in letters)
    expected = {raw.landed[label] for label in [*poison, *bad_queries]}
    missing = sorted(label for label in [*poison, *bad_queries] if raw.landed[label] not in lettered)
    assert missing == [], f"poison not dead-lettered: {missing}"
    assert set(lettered) == expected, "a valid record was dead-lettered"
    assert max(lettered.values()) == 1, "a record was dead-lettered twice"
    by_position = {(d["source_topic"], d["partition"], d["offset"]): d for d in letters}
    assert by_position[raw.landed["oversized"]]["error_type"] == "oversized"
    assert by_position[raw.landed["invalid-utf8"]]["error_type"] == "malformed_json"
    assert by_position[raw.landed["lone-surrogate"]]["error_type"] == "malformed_json"
    assert by_position[raw.landed["nested-2000"]]["error_type"] == "malformed_json"
    assert by_position[raw.landed["unknown-op"]]["error_type"] == "schema"
    assert len(by_position[raw.landed["huge-key"]]["key"]) < 100_000  # the dead letter fits: key truncated

    # The nanosecond version is refused (the version rule), every valid change has its IndexEvent.
    events = [IndexEvent.model_validate_json(m.value()) for m in read_topic(settings, "index.events")]
    by_change = {e.change_id: e for e in events}
    assert by_change[str(nano.event_id)].status == "refused"
    assert {str(c.event_id) for c in valid} <= set(by_change), "a valid change has no IndexEvent"
    assert {e.change_id for e in events} == {str(c.event_id) for c in [*valid, nano]}
    assert_index_matches(settings, latest)

    # Every valid query: exactly one terminal answer.
    answers = [AnswerEvent.model_validate_json(m.value()) for m in read_topic(settings, "answers")]
    terminal = Counter(a.query_id for a in answers if a.terminal)
    assert {q.query_id: terminal[q.query_id] for q in queries} == {q.query_id: 1 for q in queries}
    assert all(n == 1 for n in terminal.values()), f"a query with more than one terminal answer: {terminal}"

    # The same worker process, alive, from the first record to the last.
    assert stack.worker_status()["pid"] == pid
    os.kill(pid, 0)
    with open(f"/proc/{pid}/stat") as f:
        assert f.read().rsplit(")", 1)[1].split()[0] != "Z", "the worker is a zombie"
