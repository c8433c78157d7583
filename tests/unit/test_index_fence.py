"""Indexer under rebalance races and producer-controlled versions (issue 10, items 4 and 5), with fakes.

Two owners of one partition are two Indexer instances on one in-memory Milvus (a shared ``server``
dict): while one is between its steps, the other runs a whole batch (``run_other`` from a worker
thread of the first), the way an old owner with ``stream_wait_empty=False`` finishes a batch that
the new owner has already reprocessed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pytest

from agents.indexer import Indexer
from components.base import PermanentError
from components.chunking import StructureChunker
from components.collection_registry import Collections
from components.embedding import HashEmbedder
from components.memory_store import InMemoryVectorStore
from config.settings import Settings
from schemas import DeadLetter, DocumentChange, IndexEvent
from streams.dlq import DeadLetters
from streams.records import MemoryPublisher, RawRecord

DOC = """Title
=====

Intro paragraph about the document.

First
-----

{first}

Second
------

Second section text that stays the same across edits. It has a couple of sentences.
"""


@dataclass
class Owner:
    indexer: Indexer
    store: InMemoryVectorStore
    embedder: HashEmbedder
    publisher: MemoryPublisher
    settings: Settings

    def events(self) -> list[IndexEvent]:
        return [IndexEvent.model_validate_json(v) for v in self.publisher.on(self.settings.topic("index.events"))]


def owner(tmp_path, server: dict, **settings_kw) -> Owner:
    settings = Settings(home=tmp_path, **settings_kw)
    chunker, embedder = StructureChunker(200, 30), HashEmbedder(32)
    store = InMemoryVectorStore("c", 32, embedder.model_id, chunker.config_id, server=server)
    store.start()
    publisher = MemoryPublisher()
    collections = Collections(store, lambda name: InMemoryVectorStore(name, 32, embedder.model_id, chunker.config_id,
                                                                      server=server))
    indexer = Indexer(settings, chunker, embedder, collections, publisher,
                      DeadLetters(publisher, settings.topic("dlq"), "indexer"))
    return Owner(indexer, store, embedder, publisher, settings)


_offset = iter(range(10**6))


def rec(change: DocumentChange) -> RawRecord:
    return RawRecord("eddy.docs.changes", 0, next(_offset), change.record_key().encode(), change.to_bytes())


def up(doc_id: str, version: int, first: str, **kw) -> DocumentChange:
    return DocumentChange(op="upsert", doc_id=doc_id, version=version, text=DOC.format(first=first),
                          content_type="text/x-rst", title="T", **kw)


def stored(store, doc_id) -> set[str]:
    return {c.chunk_id for c in store.stored_chunks([doc_id]).get(doc_id, [])}


def expected(o: Owner, change: DocumentChange) -> set[str]:
    return {c.chunk_id for c in o.indexer.chunker.chunk(change.doc_id, change.text, change.content_type, change.title)}


def visible(o: Owner, doc_id: str, groups: list[str]) -> set[str]:
    """Chunk ids of ``doc_id`` a user of ``groups`` can retrieve."""
    vector = o.embedder.encode(["anything"])
    return {h.chunk_id for h in o.store.search(vector, 1000, groups)[0] if h.doc_id == doc_id}


def run_other(loop: asyncio.AbstractEventLoop, make_coro, done: list) -> None:
    """The first time only: run ``make_coro()`` to its end on ``loop`` from a worker thread (the first owner
    waits in its thread)."""
    if not done:
        done.append(asyncio.run_coroutine_threadsafe(make_coro(), loop).result(30))


# ---------------------------------------------------------------------------------------------- item 4
async def test_an_old_owner_finishing_late_never_writes_over_a_newer_version(tmp_path):
    server: dict = {}
    old, new = owner(tmp_path, server), owner(tmp_path, server)
    await new.indexer.handle_batch([rec(up("d", 1, "one", acl=["hr"]))])
    v2, v3 = up("d", 2, "two, public", acl=[]), up("d", 3, "three, hr only", acl=["hr"])
    loop, ran = asyncio.get_running_loop(), []
    real = old.embedder.encode

    def embed_while_the_new_owner_reprocesses(texts):
        vectors = real(texts)
        # the redelivered batch, then the next one
        run_other(loop, lambda: new.indexer.handle_batch([rec(v2), rec(v3)]), ran)
        return vectors

    old.embedder.encode = embed_while_the_new_owner_reprocesses
    [event] = await old.indexer.handle_batch([rec(v2)])
    assert event.status == "stale"
    assert stored(new.store, "d") == expected(new, v3)
    assert new.store.doc_states(["d"])["d"].version == 3
    assert visible(new, "d", []) == set()  # nothing of the public version 2


async def test_an_old_owner_whose_write_straddles_a_newer_version_undoes_it_failing_closed(tmp_path):
    server: dict = {}
    old, new = owner(tmp_path, server), owner(tmp_path, server)
    await new.indexer.handle_batch([rec(up("d", 1, "one", acl=["hr"]))])
    v2, v3 = up("d", 2, "two, public", acl=[]), up("d", 3, "three, hr only", acl=["hr"])
    loop, ran = asyncio.get_running_loop(), []
    real = old.store.upsert_chunks

    def upsert_after_the_new_owner_wrote(records):
        run_other(loop, lambda: new.indexer.handle_batch([rec(v2), rec(v3)]), ran)
        real(records)  # lands after version 3: its rows (ACL: public) clobber shared chunks

    old.store.upsert_chunks = upsert_after_the_new_owner_wrote
    [event] = await old.indexer.handle_batch([rec(v2)])
    assert event.status == "conflict"
    assert new.store.doc_states(["d"])["d"].version == 3  # never lowered
    assert visible(new, "d", []) == set()  # no row of the old owner's (wider) ACL survives
    assert stored(new.store, "d") <= expected(new, v3)  # nothing of version 2; some of 3 may be missing
    # republishing the newest version heals what the undo took
    [healed] = await new.indexer.handle_batch([rec(v3)])
    assert healed.status == "indexed" and stored(new.store, "d") == expected(new, v3)
    assert visible(new, "d", ["hr"]) == expected(new, v3)


async def test_a_newer_owner_that_an_older_write_overtook_reconciles_its_document(tmp_path):
    server: dict = {}
    old, new = owner(tmp_path, server), owner(tmp_path, server)
    await new.indexer.handle_batch([rec(up("d", 1, "one", acl=["hr"]))])
    v2, v3 = up("d", 2, "two, public", acl=[]), up("d", 3, "three, hr only", acl=["hr"])
    loop, ran = asyncio.get_running_loop(), []
    real = new.embedder.encode

    def embed_while_the_old_owner_writes(texts):
        vectors = real(texts)
        # lands after the new owner read the stored chunks
        run_other(loop, lambda: old.indexer.handle_batch([rec(v2)]), ran)
        return vectors

    new.embedder.encode = embed_while_the_old_owner_writes
    [event] = await new.indexer.handle_batch([rec(v3)])
    assert event.status == "indexed"
    assert stored(new.store, "d") == expected(new, v3)
    assert visible(new, "d", []) == set() and visible(new, "d", ["hr"]) == expected(new, v3)
    assert new.store.doc_states(["d"])["d"].version == 3


async def test_two_owners_of_the_same_batch_agree(tmp_path):
    server: dict = {}
    a, b = owner(tmp_path, server), owner(tmp_path, server)
    v1 = up("d", 1, "one")
    loop, ran = asyncio.get_running_loop(), []
    real = a.store.upsert_chunks

    def upsert_while_b_does_the_same(records):
        run_other(loop, lambda: b.indexer.handle_batch([rec(v1)]), ran)
        real(records)

    a.store.upsert_chunks = upsert_while_b_does_the_same
    [event] = await a.indexer.handle_batch([rec(v1)])
    assert event.status in ("indexed", "unchanged") and [e.status for e in b.events()] == ["indexed"]
    assert stored(a.store, "d") == expected(a, v1) and a.store.doc_states(["d"])["d"].version == 1


async def test_a_revoked_owner_stops_before_writing(tmp_path):
    server: dict = {}
    o = owner(tmp_path, server)
    owned = {"yes": True}
    o.indexer.owns = lambda record: owned["yes"]
    real = o.embedder.encode

    def embed_then_lose_the_partition(texts):
        owned["yes"] = False
        return real(texts)

    o.embedder.encode = embed_then_lose_the_partition
    assert await o.indexer.handle_batch([rec(up("d", 1, "one"))]) == []
    assert stored(o.store, "d") == set() and o.store.doc_states(["d"]) == {}
    assert o.publisher.on(o.settings.topic("dlq")) == []  # not a failure: the new owner applies it


# ---------------------------------------------------------------------------------------------- item 5
def now_us() -> int:
    return int(time.time() * 1_000_000)


async def test_a_nanosecond_version_is_refused_and_cannot_block_later_changes(tmp_path):
    o = owner(tmp_path, {})
    t = now_us()
    [first] = await o.indexer.handle_batch([rec(up("d", t, "microseconds"))])
    assert first.status == "indexed"
    [refused] = await o.indexer.handle_batch([rec(up("d", t * 1000, "nanoseconds", acl=[]))])
    assert refused.status == "refused" and refused.chunks_embedded == 0
    assert o.store.doc_states(["d"])["d"].version == t
    [deleted] = await o.indexer.handle_batch([rec(DocumentChange(op="delete", doc_id="d", version=t + 1))])
    assert deleted.status == "deleted" and stored(o.store, "d") == set()
    assert [e.status for e in o.events()] == ["indexed", "refused", "deleted"]


async def test_a_refused_change_does_not_supersede_the_valid_ones_of_its_batch(tmp_path):
    o = owner(tmp_path, {})
    t = now_us()
    good, bad = up("d", t, "good"), up("d", t * 1000, "nanoseconds")
    events = await o.indexer.handle_batch([rec(good), rec(bad)])
    assert sorted(e.status for e in events) == ["indexed", "refused"]
    assert stored(o.store, "d") == expected(o, good)


async def test_a_stored_version_out_of_bounds_is_replaced_by_a_valid_change(tmp_path):
    """A document blocked before the rule existed (its state holds a nanosecond version) is unblocked."""
    o = owner(tmp_path, {})
    t = now_us()
    await o.indexer.handle_batch([rec(up("d", 5, "legacy"))])
    from components.base import DocState
    o.store.set_doc_states([DocState("d", t * 1000, False, "")])
    [deleted] = await o.indexer.handle_batch([rec(DocumentChange(op="delete", doc_id="d", version=t))])
    assert deleted.status == "deleted" and stored(o.store, "d") == set()
    assert o.store.doc_states(["d"])["d"].version == t


async def test_the_version_skew_allowance_is_configurable(tmp_path):
    o = owner(tmp_path, {}, version_skew_s=10.0)
    [ok] = await o.indexer.handle_batch([rec(up("d", now_us() + 5_000_000, "five seconds ahead"))])
    [late] = await o.indexer.handle_batch([rec(up("e", now_us() + 60_000_000, "a minute ahead"))])
    assert (ok.status, late.status) == ("indexed", "refused")


async def test_a_failing_delete_is_retried_not_dead_lettered(tmp_path, monkeypatch):
    o = owner(tmp_path, {})
    await o.indexer.handle_batch([rec(up("d", 1, "one"))])
    real = o.store.delete_chunks
    failures = [PermanentError("delete rejected"), ValueError("bug"), PermanentError("again")]

    def flaky(ids):
        if failures:
            raise failures.pop(0)
        real(ids)

    sleeps: list[float] = []

    async def no_sleep(seconds):
        sleeps.append(seconds)

    monkeypatch.setattr(o.store, "delete_chunks", flaky)
    monkeypatch.setattr("agents.indexer.asyncio.sleep", no_sleep)
    [deleted] = await o.indexer.handle_batch([rec(DocumentChange(op="delete", doc_id="d", version=2))])
    assert deleted.status == "deleted" and failures == [] and len(sleeps) == 3
    assert stored(o.store, "d") == set()
    assert o.publisher.on(o.settings.topic("dlq")) == []


async def test_a_failing_delete_in_a_batch_does_not_hold_back_the_others(tmp_path, monkeypatch):
    o = owner(tmp_path, {})
    await o.indexer.handle_batch([rec(up("d", 1, "one"))])
    real = o.store.delete_chunks
    failures = [PermanentError("delete rejected")]

    def flaky(ids):
        if failures:
            raise failures.pop(0)
        real(ids)

    async def no_sleep(seconds):
        pass

    monkeypatch.setattr(o.store, "delete_chunks", flaky)
    monkeypatch.setattr("agents.indexer.asyncio.sleep", no_sleep)
    events = await o.indexer.handle_batch([rec(DocumentChange(op="delete", doc_id="d", version=2)),
                                           rec(up("e", 1, "e"))])
    assert {e.doc_id: e.status for e in events}["d"] == "deleted"
    assert stored(o.store, "e") == expected(o, up("e", 1, "e"))
    assert stored(o.store, "d") == set()
    assert [DeadLetter.model_validate_json(v) for v in o.publisher.on(o.settings.topic("dlq"))] == []


@pytest.mark.parametrize("status", ["refused", "conflict"])
def test_the_new_statuses_are_part_of_the_schema(status):
    event = IndexEvent(doc_id="d", version=1, change_id="c", status=status, chunks_total=0, chunks_embedded=0,
                       chunks_deleted=0, chunks_unchanged=0, collection="c", embedder="e", chunker="k", lag_ms=0)
    assert IndexEvent.model_validate_json(event.to_bytes()).status == status


async def test_a_newer_version_landing_while_a_document_is_diffed_again_wins(tmp_path):
    """The check finds an older writer's state (diff again); before that diff, a newer version lands."""
    server: dict = {}
    new, old, newest = owner(tmp_path, server), owner(tmp_path, server), owner(tmp_path, server)
    await new.indexer.handle_batch([rec(up("d", 1, "one", acl=["hr"]))])
    v2, v3, v4 = (up("d", 2, "two, public", acl=[]), up("d", 3, "three", acl=["hr"]),
                  up("d", 4, "four", acl=["hr"]))
    loop, ran_old, ran_newest = asyncio.get_running_loop(), [], []
    real, reads = new.store.doc_states, []

    def doc_states(doc_ids):
        reads.append(1)
        if len(reads) == 2:  # the check right before writing: an older owner wrote meanwhile
            run_other(loop, lambda: old.indexer.handle_batch([rec(v2)]), ran_old)
        if len(reads) == 3:  # the second diff: the newest version lands first
            run_other(loop, lambda: newest.indexer.handle_batch([rec(v4)]), ran_newest)
        return real(doc_ids)

    new.store.doc_states = doc_states
    [event] = await new.indexer.handle_batch([rec(v3)])
    assert event.status == "stale"
    assert new.store.doc_states(["d"])["d"].version == 4
    assert stored(new.store, "d") == expected(new, v4) and visible(new, "d", []) == set()
