"""Per-record isolation in every agent (issue 10, item 1): a record that fails for any reason goes to
``dlq`` with its error type and the agent's name, the other records of its batch are applied, and a
dead-letter topic that cannot be written stops the handler (``DeadLetterError``) instead of letting
the record be acknowledged. The publisher here behaves like the broker: it encodes keys as UTF-8 and
refuses records over ``MAX_RECORD_BYTES``."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence

import pytest

from agents.answerer import Answerer
from agents.curator import Curator
from agents.indexer import Indexer
from agents.monitor import Monitor
from components.base import ChunkRecord, Conversation, Scrubbed
from components.chunking import StructureChunker
from components.collection_registry import Collections
from components.curation import JunkRules, MemoryVettedIndex
from components.embedding import HashEmbedder
from components.generation import EchoGenerator
from components.memory_store import InMemoryVectorStore
from components.monitoring import MonitorState
from components.reranking import KeepOrder
from config.settings import MAX_RECORD_BYTES, Settings
from schemas import AnswerEvent, Citation, DeadLetter, DocumentChange, Feedback, IndexEvent, Query
from streams.dlq import DeadLetters
from streams.records import MemoryPublisher, RawRecord


class BrokerPublisher(MemoryPublisher):
    """A MemoryPublisher that fails like the broker and FaustPublisher do: the key must encode as UTF-8,
    key and value together must fit ``MAX_RECORD_BYTES``; ``fail(topic, key)`` makes chosen sends fail."""

    def __init__(self, fail: Callable[[str, str | None], bool] = lambda topic, key: False) -> None:
        super().__init__()
        self.fail = fail

    async def publish(self, topic: str, key: str | None, value: bytes, *, wait: bool = False) -> None:
        raw_key = key.encode() if key is not None else b""
        if len(raw_key) + len(value) > MAX_RECORD_BYTES:
            raise RuntimeError(f"MessageSizeTooLargeError: {len(raw_key) + len(value):,} bytes")
        if self.fail(topic, key):
            raise RuntimeError(f"KafkaError: cannot publish to {topic}")
        await super().publish(topic, key, value, wait=wait)


def letters(publisher: MemoryPublisher, settings: Settings) -> list[DeadLetter]:
    return [DeadLetter.model_validate_json(v) for v in publisher.on(settings.topic("dlq"))]


def nested(depth: int, **fields: object) -> bytes:
    """A JSON object with ``fields`` and a ``metadata`` nested ``depth`` arrays deep."""
    head = json.dumps(fields)[:-1].encode()
    return head + b', "metadata": ' + b"[" * depth + b"]" * depth + b"}"


# --------------------------------------------------------------------------- indexer
DOC = "Title\n=====\n\n{body}\n\nMore\n----\n\nA second section that stays the same.\n"


def indexer_env(tmp_path, publisher: MemoryPublisher, **settings_kw):
    settings = Settings(home=tmp_path, max_document_bytes=8_000_000, **settings_kw)
    chunker, embedder = StructureChunker(200, 30), HashEmbedder(32)
    store = InMemoryVectorStore("c", 32, embedder.model_id, chunker.config_id)
    store.start()
    collections = Collections(store, lambda name: InMemoryVectorStore(name, 32, embedder.model_id, chunker.config_id,
                                                                      server=store.server))
    indexer = Indexer(settings, chunker, embedder, collections, publisher,
                      DeadLetters(publisher, settings.topic("dlq"), "indexer"))
    return indexer, store, settings


def up(doc_id: str, version: int = 1, **kw) -> DocumentChange:
    return DocumentChange(op="upsert", doc_id=doc_id, version=version, text=DOC.format(body=f"About {doc_id}."),
                          content_type="text/x-rst", **kw)


def change_record(value: DocumentChange | bytes, offset: int, key: str | None = None) -> RawRecord:
    if isinstance(value, DocumentChange):
        return RawRecord("eddy.docs.changes", 0, offset, value.record_key().encode(), value.to_bytes())
    return RawRecord("eddy.docs.changes", 0, offset, key.encode() if key else None, value)


async def test_poisoned_changes_are_dead_lettered_and_the_rest_of_the_batch_is_applied(tmp_path):
    publisher = BrokerPublisher(fail=lambda topic, key: topic.endswith("index.events") and key == "no-event")
    indexer, store, settings = indexer_env(tmp_path, publisher)
    await indexer.handle_batch([change_record(up("gone"), 0)])
    surrogate = json.dumps({"op": "upsert", "doc_id": "s", "version": 1, "text": "x\ud83d"}).encode()
    deep = nested(1_000, op="upsert", doc_id="deep", version=1, text="t")
    batch = [
        change_record(up("a"), 1),
        change_record(surrogate, 2, key="s"),
        change_record(DocumentChange(op="delete", doc_id="gone", version=2), 3),
        change_record(deep, 4, key="deep"),
        change_record(up("no-event"), 5),  # its IndexEvent cannot be published
        change_record(up("b", collection="other"), 6),
    ]
    events = await indexer.handle_batch(batch)
    # The failed batch was redone one change at a time: what its first try wrote is "unchanged" then.
    assert sorted(e.doc_id for e in events) == ["a", "b", "gone"]
    assert {e.doc_id: e.status for e in events}["gone"] == "deleted"
    assert store.live_doc_ids("") == ["a", "no-event"]  # the delete applied; no-event's write is durable
    assert indexer.collections.get("other", create=False).live_doc_ids("") == ["b"]
    by_offset = {lt.offset: lt for lt in letters(publisher, settings)}
    assert sorted(by_offset) == [2, 4, 5]
    assert {lt.agent for lt in by_offset.values()} == {"indexer"}
    assert by_offset[2].error_type == by_offset[4].error_type == "malformed_json"
    assert by_offset[5].error_type == "processing" and "KafkaError" in by_offset[5].reason


async def test_an_unexpected_failure_while_decoding_dead_letters_only_that_record(tmp_path, monkeypatch):
    publisher = BrokerPublisher()
    indexer, store, settings = indexer_env(tmp_path, publisher)
    import agents.indexer as module

    real = module.decode

    def decode(schema, value, **kw):
        if b'"boom"' in value:
            raise LookupError("codec bug")
        return real(schema, value, **kw)

    monkeypatch.setattr(module, "decode", decode)
    events = await indexer.handle_batch([change_record(up("a"), 1), change_record(up("boom"), 2),
                                         change_record(up("b"), 3)])
    assert sorted(e.doc_id for e in events) == ["a", "b"]
    [letter] = letters(publisher, settings)
    assert (letter.offset, letter.error_type, letter.agent) == (2, "processing", "indexer")
    assert "LookupError: codec bug" in letter.reason


async def test_a_validation_reason_of_tens_of_megabytes_still_fits_in_a_dead_letter(tmp_path):
    publisher = BrokerPublisher()
    indexer, _, settings = indexer_env(tmp_path, publisher)
    fields = {"op": "upsert", "doc_id": "wide", "version": 1, "text": "t"}
    fields.update({f"f{i}": "v" * 20 for i in range(100_000)})
    wide = json.dumps(fields).encode()
    assert await indexer.handle_batch([change_record(wide, 7, key="wide"), change_record(up("a"), 8)]) != []
    [letter] = letters(publisher, settings)
    assert letter.offset == 7 and letter.error_type == "schema"
    assert "f0: Extra inputs are not permitted" in letter.reason
    assert base64.b64decode(letter.value_b64) == wide


async def test_a_dead_letter_topic_that_cannot_be_written_stops_the_indexer(tmp_path):
    from streams.dlq import DeadLetterError

    publisher = BrokerPublisher(fail=lambda topic, key: topic.endswith("dlq"))
    indexer, _, _ = indexer_env(tmp_path, publisher)
    with pytest.raises(DeadLetterError):
        await indexer.handle_batch([change_record(up("a"), 1), change_record(b"{nope", 2, key="x")])


# --------------------------------------------------------------------------- dead letters
async def test_every_dead_letter_fits_in_a_record():
    publisher = BrokerPublisher()
    settings = Settings()
    dead = DeadLetters(publisher, settings.topic("dlq"), "indexer")
    worst = RawRecord("eddy.docs.changes", 0, 1, b"\x01\xff" * (2 * 1024 * 1024), b"\x00" * (6 * 1024 * 1024))
    letter = await dead.send(worst, "schema", "\x01\ud83d reason " * 5_000_000)  # ~60 MB of reason
    [(_, key, value)] = publisher.sent
    assert len(key.encode()) + len(value) <= MAX_RECORD_BYTES
    assert letter.value_bytes == 6 * 1024 * 1024 and letter.value_truncated
    assert letter.reason.startswith("\x01\\ud83d reason") and "truncated" in letter.reason[-200:]


# --------------------------------------------------------------------------- answerer
def answerer_env(tmp_path, publisher: MemoryPublisher):
    settings = Settings(home=tmp_path, delta_flush_ms=0)
    embedder, chunker = HashEmbedder(32), StructureChunker(500, 50)
    store = InMemoryVectorStore("c", 32, embedder.model_id, chunker.config_id)
    store.start()
    [chunk] = chunker.chunk("copy", "Use shutil.copy to copy a file.", "text/plain")
    store.upsert_chunks([ChunkRecord(chunk, "t", "u", "copy", (), "m", embedder.encode([chunk.embed_text])[0])])
    answerer = Answerer(settings, embedder, Collections(store, lambda name: InMemoryVectorStore(name, 32)),
                        KeepOrder(), EchoGenerator(words=4), publisher,
                        DeadLetters(publisher, settings.topic("dlq"), "answerer"))
    return answerer, settings


def query_record(value: Query | bytes, offset: int) -> RawRecord:
    return RawRecord("eddy.queries", 0, offset, b"conv", value.to_bytes() if isinstance(value, Query) else value)


async def test_poisoned_queries_are_dead_lettered_and_the_answerer_goes_on(tmp_path):
    publisher = BrokerPublisher(fail=lambda topic, key: topic.endswith("answers") and key == "unanswerable")
    answerer, settings = answerer_env(tmp_path, publisher)
    surrogate = json.dumps({"query_id": "q\ud83d", "conversation_id": "c", "text": "copy x\ud83d"}).encode()
    deep = nested(1_000, query_id="deep", conversation_id="c", text="copy")
    assert await answerer.handle(query_record(surrogate, 1)) is None
    assert await answerer.handle(query_record(deep, 2)) is None
    assert await answerer.handle(query_record(Query(query_id="unanswerable", conversation_id="c", text="copy"), 3)) \
        is None
    final = await answerer.handle(query_record(Query(query_id="ok", conversation_id="c", text="copy a file"), 4))
    assert final.kind == "final"
    by_offset = {lt.offset: lt for lt in letters(publisher, settings)}
    assert sorted(by_offset) == [1, 2, 3] and {lt.agent for lt in by_offset.values()} == {"answerer"}
    assert by_offset[1].error_type == by_offset[2].error_type == "malformed_json"
    assert by_offset[3].error_type == "processing" and "KafkaError" in by_offset[3].reason


async def test_a_dead_letter_topic_that_cannot_be_written_stops_the_answerer(tmp_path):
    from streams.dlq import DeadLetterError

    answerer, _ = answerer_env(tmp_path, BrokerPublisher(fail=lambda topic, key: topic.endswith("dlq")))
    with pytest.raises(DeadLetterError):
        await answerer.handle(query_record(b"{nope", 1))


# --------------------------------------------------------------------------- curator
class IdentityScrubber:
    """Scrubs nothing (these tests are about delivery, not PII)."""

    version = "identity"

    def start(self) -> None:
        return None

    def scrub_batch(self, conversations: Sequence[Conversation]) -> list[Scrubbed]:
        return [Scrubbed(c.texts) for c in conversations]


def curator_env(tmp_path, publisher: MemoryPublisher):
    settings = Settings(home=tmp_path)
    curator = Curator(settings, IdentityScrubber(), JunkRules(), HashEmbedder(64), MemoryVettedIndex(), publisher,
                      DeadLetters(publisher, settings.topic("dlq"), "curator"), {})
    return curator, settings


def conversation_records(settings: Settings, qid: str, text: str, start: int) -> list[RawRecord]:
    query = Query(query_id=qid, conversation_id="c" + qid, user_id="u" + qid, text=text)
    answer = AnswerEvent(query_id=qid, kind="final", seq=0, text="Use shutil.copy2.", model="m",
                         citations=[Citation(doc_id="d", chunk_id="c", uri="u", title="t", score=0.9)])
    feedback = Feedback(query_id=qid, user_id="u" + qid, rating="up", share=True)
    topics = ("curator.queries", "answers", "feedback")
    return [RawRecord(settings.topic(t), 0, start + n, qid.encode(), e.to_bytes())
            for n, (t, e) in enumerate(zip(topics, (query, answer, feedback), strict=True))]


async def test_a_poisoned_record_or_a_failing_conversation_does_not_lose_the_curator_batch(tmp_path):
    publisher = BrokerPublisher(fail=lambda topic, key: topic.endswith("datasets.eval") and key == "q-fails")
    curator, settings = curator_env(tmp_path, publisher)
    surrogate = json.dumps({"query_id": "q\ud83d", "kind": "final", "seq": 0, "text": "a"}).encode()
    deep = nested(1_000, query_id="deep", rating="up", share=True)
    batch = [
        *conversation_records(settings, "q-ok", "How do I copy a file with its metadata?", 10),
        RawRecord(settings.topic("answers"), 0, 20, b"s", surrogate),
        RawRecord(settings.topic("feedback"), 0, 21, b"deep", deep),
        *conversation_records(settings, "q-fails", "How do I move a directory tree safely?", 30),
    ]
    await curator.handle_batch(batch)
    # q-ok is published by the batch's try and by its redo (at-least-once; datasets.eval is compacted by record id)
    assert {json.loads(v)["record_id"] for v in publisher.on(settings.topic("datasets.eval"))} == {"q-ok"}
    by_offset = {lt.offset: lt for lt in letters(publisher, settings)}
    assert {lt.agent for lt in by_offset.values()} == {"curator"}
    assert by_offset[20].error_type == by_offset[21].error_type == "malformed_json"
    [failed] = [lt for lt in by_offset.values() if lt.error_type == "processing"]
    assert failed.key == "q-fails" and "q-fails" in failed.reason
    assert curator.state[b"q-fails"]["pending"] == []  # dead-lettered: not curated again and again


async def test_rekey_dead_letters_a_query_it_cannot_copy(tmp_path):
    publisher = BrokerPublisher(fail=lambda topic, key: topic.endswith("curator.queries") and key == "q1")
    curator, settings = curator_env(tmp_path, publisher)
    query = Query(query_id="q1", conversation_id="c", text="copy a file")
    await curator.rekey(RawRecord(settings.topic("queries"), 0, 4, b"c", query.to_bytes()))
    [letter] = letters(publisher, settings)
    assert (letter.offset, letter.error_type, letter.agent) == (4, "processing", "curator")


async def test_a_dead_letter_topic_that_cannot_be_written_stops_the_curator(tmp_path):
    from streams.dlq import DeadLetterError

    curator, settings = curator_env(tmp_path, BrokerPublisher(fail=lambda topic, key: topic.endswith("dlq")))
    with pytest.raises(DeadLetterError):
        await curator.handle_batch([RawRecord(settings.topic("feedback"), 0, 1, b"q", b"{nope")])


# --------------------------------------------------------------------------- monitor
async def test_a_record_the_monitor_fails_on_is_dead_lettered(tmp_path):
    publisher = BrokerPublisher()
    settings = Settings(home=tmp_path)
    state = MonitorState(settings)
    real = state.on_index_event

    def on_index_event(event: IndexEvent) -> None:
        if event.doc_id == "bad":
            raise ZeroDivisionError("figure bug")
        real(event)

    state.on_index_event = on_index_event
    monitor = Monitor(settings, state, publisher, DeadLetters(publisher, settings.topic("dlq"), "monitor"))
    for offset, doc_id in enumerate(["a", "bad", "b"]):
        event = IndexEvent(doc_id=doc_id, version=1, change_id="x", status="indexed", chunks_total=1,
                           chunks_embedded=1, chunks_deleted=0, chunks_unchanged=0, collection="c", embedder="e",
                           chunker="k", lag_ms=5)
        await monitor.handle(RawRecord(settings.topic("index.events"), 0, offset, doc_id.encode(), event.to_bytes()))
    [letter] = letters(publisher, settings)
    assert (letter.offset, letter.error_type, letter.agent) == (1, "processing", "monitor")
    assert "ZeroDivisionError" in letter.reason


async def test_a_dead_letter_topic_that_cannot_be_written_stops_the_monitor(tmp_path):
    from streams.dlq import DeadLetterError

    settings = Settings(home=tmp_path)
    publisher = BrokerPublisher(fail=lambda topic, key: topic.endswith("dlq"))
    monitor = Monitor(settings, MonitorState(settings), publisher,
                      DeadLetters(publisher, settings.topic("dlq"), "monitor"))
    with pytest.raises(DeadLetterError):
        await monitor.handle(RawRecord(settings.topic("answers"), 0, 1, b"q", b"{nope"))
