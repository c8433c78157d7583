"""Issue 10 (items 3, 4, 5, 8) on the real broker and Milvus Lite server: the worker's rebalance fences
(the consumer's assignment) let a healthy worker's work through; the version rule refuses a nanosecond
version end to end and a later delete still applies; the curator's join table lives in RocksDB, expires
(a tombstone on its changelog) and the scrubber works from its child process."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from schemas import DocumentChange
from tests.conftest import TestStack
from tests.integration.helpers import open_store, publish_and_wait, read_topic, section_doc, wait_consumed
from tests.integration.test_curator import Conversations

pytestmark = pytest.mark.integration


def test_versions_out_of_bounds_are_refused_and_a_later_delete_applies(settings, client, stack):
    stack.start_worker(("indexer",))
    t = time.time_ns() // 1000
    doc = DocumentChange(op="upsert", doc_id="d", version=t, text=section_doc("d", 2), content_type="text/x-rst")
    nano = DocumentChange(op="upsert", doc_id="d", version=t * 1000, text=section_doc("d", 3, salt=" ns"),
                          content_type="text/x-rst")
    [indexed] = publish_and_wait(client, [doc])
    assert indexed.status == "indexed" and indexed.chunks_total > 0  # the assignment fence lets it through
    [refused] = publish_and_wait(client, [nano])
    assert refused.status == "refused" and refused.chunks_embedded == 0
    [deleted] = publish_and_wait(client, [DocumentChange(op="delete", doc_id="d", version=t + 1)])
    assert deleted.status == "deleted" and deleted.chunks_deleted == indexed.chunks_total
    store = open_store(settings)
    try:
        assert store.stored_chunks(["d"]) == {} and store.doc_states(["d"])["d"].version == t + 1
    finally:
        store.close()


def spawned_children(pid: int) -> list[int]:
    """Pids of the ``multiprocessing`` (spawn) children of process ``pid``."""
    out = []
    for proc in Path("/proc").iterdir():
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (proc / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and b"multiprocessing" in cmdline:
            out.append(int(proc.name))
    return out


def changelog_tombstone(settings, key: bytes, timeout_s: float) -> bool:
    """Whether the join table's changelog gets a tombstone (value None) for ``key`` within ``timeout_s``."""
    topic = f"{settings.group_id}-curator-joins-changelog"
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": f"read-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None and msg.key() == key and msg.value() is None:
                return True
        return False
    finally:
        consumer.close()


def test_the_join_table_is_on_disk_expires_survives_kill_9_and_the_scrubber_runs_apart(settings, client, stack,
                                                                                     tmp_path):
    fast = TestStack(settings.model_copy(update={"curator_join_ttl_s": 3.0, "curator_join_sweep_s": 1.0}))
    try:
        worker = fast.start_worker(("curator",))
        assert spawned_children(worker), "the scrubber is not in a child process of the worker"
        forgotten = Conversations(settings).publish("How do I list a directory with pathlib?")
        wait_consumed(settings, ("queries",))  # re-keyed onto curator.queries (published before the commit)
        assert wait_consumed(settings, ("curator.queries", "answers")) == {"curator.queries": 1, "answers": 2}
        assert list(tmp_path.rglob("curator-joins-*.db")), "the join table is not in RocksDB"
        assert changelog_tombstone(settings, forgotten.encode(), timeout_s=60.0), "the entry did not expire"
    finally:
        fast.stop_worker(kill=True)
    # default bounds: the entry stays; RocksDB reopened after a kill -9 (and the changelog) still has it
    stack.start_worker(("curator",))
    qid = Conversations(settings).publish("How do I copy a file with shutil and keep its metadata?")
    wait_consumed(settings, ("queries",))
    assert wait_consumed(settings, ("curator.queries", "answers")) == {"curator.queries": 2, "answers": 4}
    stack.stop_worker(kill=True)
    stack.start_worker(("curator",))
    client.publish_feedback(qid, "up", share=True, user_id="ada", comment="mail me at ada@example.com")
    client.flush()
    [record] = [json.loads(m.value()) for m in read_topic(settings, "datasets.eval", min_count=1, timeout_s=120)]
    assert record["query_id"] == qid and "ada@example.com" not in record["comment"]  # scrubbed in the child
