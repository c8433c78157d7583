"""A dead-letter topic that cannot be written stops the worker without committing (issue 10, item 1):
the record that should have gone to ``dlq`` is redelivered after a restart, never skipped.

The hook is the broker's own: the test topic ``dlq`` gets ``max.message.bytes`` = 64, so every dead
letter is refused (MESSAGE_TOO_LARGE) until the override is removed."""

from __future__ import annotations

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from config.settings import Settings
from infra.process import poll_until, read_pid
from schemas import DocumentChange
from streams.admin import admin_client
from tests.conftest import time_left
from tests.integration.helpers import dead_letters, publish_and_wait, read_topic, section_doc, wait_consumed


def set_dlq_max_message_bytes(settings: Settings, value: str | None) -> None:
    """Override (``value``) or restore (None) the ``max.message.bytes`` of the test's ``dlq`` topic."""
    op = AlterConfigOpType.SET if value is not None else AlterConfigOpType.DELETE
    resource = ConfigResource(ResourceType.TOPIC, settings.topic("dlq"), incremental_configs=[
        ConfigEntry("max.message.bytes", value or "", incremental_operation=op)])
    admin = admin_client(settings)  # kept alive until the futures resolve
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)


def committed(settings: Settings, partition: int) -> int:
    """The worker group's committed offset on ``partition`` of ``docs.changes`` (0 when none)."""
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": settings.group_id,
                         "enable.auto.commit": False})  # never subscribes: reads the group's offsets only
    try:
        [tp] = consumer.committed([TopicPartition(settings.topic("docs.changes"), partition)], timeout=10)
        return max(tp.offset, 0)
    finally:
        consumer.close()


def upsert(doc_id: str) -> DocumentChange:
    return DocumentChange(op="upsert", doc_id=doc_id, version=1, text=section_doc(doc_id, 1),
                          content_type="text/x-rst", title=doc_id)


def test_a_record_whose_dead_letter_cannot_be_written_is_redelivered_not_skipped(settings, client, stack):
    set_dlq_max_message_bytes(settings, "64")
    stack.start_worker(("indexer",))
    assert publish_and_wait(client, [upsert("bad")])[0].status == "indexed"  # a record before, same partition
    pid = read_pid(stack.worker_pid_file)

    topic = settings.topic("docs.changes")
    client._producer.produce(topic, key=b"bad", value=b"{not json")  # one that must go to dlq
    client.flush()
    [_, bad] = [m for m in read_topic(settings, "docs.changes") if m.key() == b"bad"]

    # The dead letter is refused: the worker stops on its own, its offset not committed.
    assert poll_until(lambda: read_pid(stack.worker_pid_file) is None, timeout_s=time_left(120), interval_s=0.5), \
        "the worker went on after its dead letter was refused"
    log = stack.worker_log.read_text(errors="replace")
    assert "escaped the handler" in log and "DeadLetterError" in log
    # Committed up to it (the record before was), not past it (it was not acknowledged).
    assert committed(settings, bad.partition()) == bad.offset() > 0
    assert read_topic(settings, "dlq") == []

    # Once the topic takes dead letters again, the restarted worker dead-letters it and goes on.
    set_dlq_max_message_bytes(settings, None)
    stack.start_worker(("indexer",))
    assert read_pid(stack.worker_pid_file) != pid
    assert publish_and_wait(client, [upsert("after")])[0].status == "indexed"
    [letter] = dead_letters(settings, min_count=1)
    assert (letter["partition"], letter["offset"], letter["key"]) == (bad.partition(), bad.offset(), "bad")
    assert letter["error_type"] == "malformed_json" and letter["agent"] == "indexer"
    wait_consumed(settings, ("docs.changes",))
