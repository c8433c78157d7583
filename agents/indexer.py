"""Indexer agent: keeps Milvus equal to the newest version of every live document.

Consumes ``docs.changes`` (DocumentChange, keyed by doc_id, or ``collection:doc_id`` when it names a
collection) in batches. Produces ``index.events`` (one IndexEvent per processed change) and writes
chunks + vectors to the change's collection (the default one unless the change names another;
a named collection is created on first use with the worker's embedder and chunker).

Delivery: at-least-once with idempotent effects. A batch's offsets are committed only after
its Milvus writes returned (the store writes with strong consistency); chunk ids are
deterministic, so a redelivered change re-embeds nothing and rewrites the same rows. Per
document: new chunks are upserted before stale ones are deleted and the document state is
written last, so a crash at any point leaves a state that the redelivery completes.
Changes older than the newest applied version of their document are ignored (``stale``);
within a batch only the newest version of a document is applied (the others ``superseded``).

Failures, one record at a time: undecodable or invalid records (malformed JSON, schema, unknown
op, oversized, empty document, a reserved collection name) go to ``dlq`` with the reason and the
batch goes on. Vector-store outages (RetryableError) are retried with backoff without
acknowledging the batch. A change whose collection cannot be opened or created (past
``max_collections``: ``collection_limit``; another embedder or chunker) goes to ``dlq``, and so
does a record whose processing fails in any other way (``processing``, the exception type in the
reason): a failed batch is redone one change at a time, so the others are applied. When the
dead-letter topic itself cannot be written, ``handle_batch`` raises DeadLetterError and
acknowledges nothing (the worker stops; the batch is redelivered).

Tracing: the indexer batches many changes, each with its own trace (its ``traceparent``
header, set where it was published). So that each change stays ONE trace from publish to its
IndexEvent, every decoded change gets a CONSUMER span ``process <docs.changes>`` (child of the
change's publish context, from the batch's start until its IndexEvent is published — the event
carries that span's context), while the batch's step spans (``decode``, ``version_check``,
``diff``, ``chunk``, ``embed``, ``upsert``, ``delete``) belong to one batch span ``index batch``
that links to every change's context, and each change span links back to the batch span: a
step shared by 64 changes is recorded once, not 64 times, and stays one click away from each.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from components.base import (
    Chunk,
    Chunker,
    ChunkRecord,
    DocState,
    Embedder,
    PermanentError,
    StoredChunk,
    VectorStore,
)
from components.collection_registry import Collections
from config.settings import Settings
from schemas import DocumentChange, IndexEvent
from streams.codec import DecodeError, decode
from streams.dlq import DeadLetterError, DeadLetters
from streams.records import Publisher, RawRecord
from streams.retry import call_blocking
from streams.topics import INDEX_EVENTS
from streams.tracing import STEP, extract_context, messaging_attributes, step

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("eddy.indexer")

#: JSON overhead allowed above the text limit before a record is called oversized.
_ENVELOPE_BYTES = 64 * 1024


def meta_hash(change: DocumentChange) -> str:
    """Hash of the stored non-content fields of a document's chunks (source, uri, title, acl)."""
    h = hashlib.sha256()
    for part in (change.source, change.uri, change.title, "\x1f".join(sorted(change.acl))):
        h.update(part.encode())
        h.update(b"\x00")
    return h.hexdigest()[:32]


@dataclass
class _Plan:
    """What to do for one document of a batch."""

    record: RawRecord
    change: DocumentChange
    chunks: list[Chunk]
    to_embed: list[Chunk]
    to_rewrite: list[Chunk]
    unchanged: int
    stale_ids: list[str]


class Indexer:
    name = "indexer"

    def __init__(
        self, settings: Settings, chunker: Chunker, embedder: Embedder, collections: Collections,
        publisher: Publisher, dead_letters: DeadLetters,
    ) -> None:
        self.settings = settings
        self.chunker = chunker
        self.embedder = embedder
        self.collections = collections
        self.publisher = publisher
        self.dead_letters = dead_letters
        self.index_topic = INDEX_EVENTS.full_name(settings)
        self._change_spans: dict[str, Span] = {}  # change id -> its open ``process`` span

    # ------------------------------------------------------------------ decoding
    async def _decode(self, record: RawRecord) -> DocumentChange | None:
        """The record's change, or None when it went to ``dlq`` (for any reason but DeadLetterError)."""
        try:
            return await self._decode_or_dead_letter(record)
        except DeadLetterError:
            raise
        except Exception as exc:  # boundary: one record's failure is that record's alone
            log.exception("decoding %s[%d]@%d failed", record.topic, record.partition, record.offset)
            await self._fail(record, exc, "decoding")
            return None

    async def _fail(self, record: RawRecord, exc: Exception, what: str) -> None:
        error_type = getattr(exc, "error_type", None)
        await self.dead_letters.send(record, error_type if isinstance(error_type, str) else "processing",
                                     f"{what} failed: {type(exc).__name__}: {exc}")

    async def _decode_or_dead_letter(self, record: RawRecord) -> DocumentChange | None:
        limit = self.settings.max_document_bytes
        try:
            change = decode(DocumentChange, record.value, max_bytes=limit + _ENVELOPE_BYTES, origin=record)
            size = len(change.text.encode())
            if size > limit:
                raise DecodeError("oversized", f"document text is {size:,} bytes, above the maximum of {limit:,} bytes")
            if record.key is not None and record.key.decode("utf-8", "replace") != change.record_key():
                raise DecodeError("schema", f"record key {record.key!r} differs from {change.record_key()!r} "
                                  "(doc_id, or collection:doc_id when the change names a collection)")
        except DecodeError as exc:
            await self.dead_letters.send(record, exc.error_type, exc.reason)
            return None
        return change

    # ------------------------------------------------------------------ batch
    async def handle_batch(self, records: Sequence[RawRecord]) -> list[IndexEvent]:
        """Apply a batch of ``docs.changes`` records; returns the IndexEvents published (in order).

        Traced as described in the module docstring.
        """
        links = [trace.Link(ctx) for r in records
                 if (ctx := trace.get_current_span(extract_context(r.headers)).get_span_context()).is_valid]
        opened: list[str] = []
        with _tracer.start_as_current_span("index batch", links=links, attributes={
            STEP: "batch", "messaging.system": "kafka", "messaging.batch.message_count": len(records),
        }):
            try:
                return await self._handle_batch(records, opened)
            finally:
                for change_id in opened:  # changes whose IndexEvent was not published (DLQ, failure)
                    if (span := self._change_spans.pop(change_id, None)) is not None:
                        span.end()

    async def _handle_batch(self, records: Sequence[RawRecord], opened: list[str]) -> list[IndexEvent]:
        decoded: list[tuple[RawRecord, DocumentChange]] = []
        with step(_tracer, "decode", **{"messaging.batch.message_count": len(records)}):
            for record in records:
                change = await self._decode(record)
                if change is not None:
                    decoded.append((record, change))
                    self._open_change_span(record, change, opened)
        if not decoded:
            return []
        try:
            return await self._apply(decoded)
        except DeadLetterError:
            raise
        except Exception as exc:  # boundary: a batch is never acknowledged half-done
            if len(decoded) == 1:
                log.exception("indexing %s failed", decoded[0][1].doc_id)
                await self._fail(decoded[0][0], exc, "indexing")
                return []
            # Effects are idempotent: redo the batch one change at a time so one bad document
            # lands in the DLQ alone.
            log.warning("batch of %d changes failed (%s: %s); applying them one by one",
                        len(decoded), type(exc).__name__, exc)
            events: list[IndexEvent] = []
            for item in decoded:
                events += await self.handle_batch([item[0]])
            return events

    async def _apply(self, decoded: list[tuple[RawRecord, DocumentChange]]) -> list[IndexEvent]:
        events: list[IndexEvent] = []
        newest: dict[tuple[str | None, str], tuple[RawRecord, DocumentChange]] = {}
        for record, change in decoded:
            key = (change.collection, change.doc_id)
            current = newest.get(key)
            if current is None or change.version >= current[1].version:
                if current is not None:
                    events.append(self._event(current[1], "superseded"))
                newest[key] = (record, change)
            else:
                events.append(self._event(change, "superseded"))
        await self._publish(events)
        by_collection: dict[str | None, list[tuple[RawRecord, DocumentChange]]] = {}
        for item in newest.values():
            by_collection.setdefault(item[1].collection, []).append(item)
        for name, items in by_collection.items():
            try:
                store = await call_blocking(partial(self.collections.get, name, create=True),
                                            what=f"open collection {name}")
            except PermanentError as exc:  # refused (limit, reserved name) or unusable: its changes alone
                log.warning("collection %s refused for %d changes: %s", name, len(items), exc)
                for record, _ in items:
                    await self._fail(record, exc, f"opening collection {name}")
                continue
            for group in await self._prepare(store, items, events):
                done = await self._write(store, group)
                await self._publish(done)
                events += done
        return events

    def _open_change_span(self, record: RawRecord, change: DocumentChange, opened: list[str]) -> None:
        change_id = str(change.event_id)
        if change_id in self._change_spans:  # a batch retried one change at a time: keep the first span
            return
        self._change_spans[change_id] = _tracer.start_span(
            f"process {record.topic}", context=extract_context(record.headers), kind=SpanKind.CONSUMER,
            links=[trace.Link(trace.get_current_span().get_span_context())],
            attributes={**messaging_attributes(record.topic, operation="process", partition=record.partition,
                                               offset=record.offset, key=record.key, group=self.settings.group_id),
                        STEP: "process", "eddy.doc_id": change.doc_id, "eddy.version": change.version},
        )
        opened.append(change_id)

    async def _publish(self, events: list[IndexEvent]) -> None:
        for event in events:
            span = self._change_spans.pop(event.change_id, None)
            if span is None:
                await self.publisher.publish(self.index_topic, event.doc_id, event.to_bytes())
                continue
            span.set_attributes({"eddy.index.status": event.status, "eddy.chunks_embedded": event.chunks_embedded,
                                 "eddy.chunks_deleted": event.chunks_deleted, "eddy.lag_ms": event.lag_ms})
            with trace.use_span(span, end_on_exit=True):  # the IndexEvent carries the change's trace
                await self.publisher.publish(self.index_topic, event.doc_id, event.to_bytes())
        await self.publisher.flush()

    async def _prepare(
        self, store: VectorStore, items: list[tuple[RawRecord, DocumentChange]], events: list[IndexEvent]
    ) -> list[list[_Plan]]:
        """Drop stale changes (their events are published at once), chunk and diff the rest, and
        group the plans so that each group embeds about ``embed_group_chunks`` chunks: a group's
        writes and IndexEvents land before the next group is embedded."""
        with step(_tracer, "version_check", **{"eddy.documents": len(items)}):
            states = await call_blocking(store.doc_states, [c.doc_id for _, c in items], what="read document states")
        stale: list[IndexEvent] = []
        live: list[tuple[RawRecord, DocumentChange]] = []
        for record, change in items:
            state = states.get(change.doc_id)
            if state is not None and change.version < state.version:
                stale.append(self._event(change, "stale"))
            else:
                live.append((record, change))
        await self._publish(stale)
        events += stale
        if not live:
            return []
        with step(_tracer, "diff", **{"eddy.documents": len(live)}):  # the stored side of the chunk-id diff
            stored = await call_blocking(store.stored_chunks, [c.doc_id for _, c in live], what="read stored chunks")
        with step(_tracer, "chunk", **{"eddy.documents": len(live)}):  # chunk, then compare ids with ``stored``
            plans = await call_blocking(self._plan, live, stored, what="chunk documents")
        groups: list[list[_Plan]] = [[]]
        size = 0
        for plan in plans:
            if groups[-1] and size + len(plan.to_embed) > self.settings.embed_group_chunks:
                groups.append([])
                size = 0
            groups[-1].append(plan)
            size += len(plan.to_embed)
        return groups

    async def _write(self, store: VectorStore, plans: list[_Plan]) -> list[IndexEvent]:
        """Embed, upsert new chunks, delete stale ones, then record the document states (in that order)."""
        t0 = time.perf_counter()
        vectors = await self._vectors_for(store, plans)
        t1 = time.perf_counter()
        records = [
            self._record(plan.change, chunk, vectors[chunk.chunk_id])
            for plan in plans for chunk in plan.to_embed + plan.to_rewrite
        ]
        if records:
            with step(_tracer, "upsert", **{"eddy.chunks": len(records)}):
                await call_blocking(store.upsert_chunks, records, what="upsert chunks")
        stale = [cid for plan in plans for cid in plan.stale_ids]
        if stale:
            with step(_tracer, "delete", **{"eddy.chunks": len(stale)}):
                await call_blocking(store.delete_chunks, stale, what="delete stale chunks")
        await call_blocking(
            store.set_doc_states,
            [DocState(p.change.doc_id, p.change.version, p.change.op == "delete", p.change.source) for p in plans],
            what="write document states",
        )
        searchable_at = time.time()
        log.info(
            "indexed %d documents into %s: %d chunks embedded, %d rewritten, %d deleted (embed %.0f ms, write %.0f ms)",
            len(plans), store.collection, sum(len(p.to_embed) for p in plans),
            sum(len(p.to_rewrite) for p in plans), len(stale),
            (t1 - t0) * 1e3, (time.perf_counter() - t1) * 1e3,
        )
        events = []
        for plan in plans:
            embedded = len(plan.to_embed)
            changed = embedded or plan.to_rewrite or plan.stale_ids
            status = "deleted" if plan.change.op == "delete" else ("indexed" if changed else "unchanged")
            events.append(self._event(
                plan.change, status, total=len(plan.chunks), embedded=embedded, deleted=len(plan.stale_ids),
                unchanged=plan.unchanged, searchable_at=searchable_at,
            ))
        return events

    def _plan(
        self, live: list[tuple[RawRecord, DocumentChange]], stored: dict[str, list[StoredChunk]]
    ) -> list[_Plan]:
        plans = []
        for record, change in live:
            have = {s.chunk_id: s.meta_hash for s in stored.get(change.doc_id, [])}
            if change.op == "delete":
                plans.append(_Plan(record, change, [], [], [], 0, sorted(have)))
                continue
            chunks = self.chunker.chunk(change.doc_id, change.text, change.content_type, change.title)
            wanted_meta = meta_hash(change)
            to_embed = [c for c in chunks if c.chunk_id not in have]
            to_rewrite = [c for c in chunks if c.chunk_id in have and have[c.chunk_id] != wanted_meta]
            wanted = {c.chunk_id for c in chunks}
            plans.append(_Plan(
                record, change, chunks, to_embed, to_rewrite,
                unchanged=len(chunks) - len(to_embed) - len(to_rewrite),
                stale_ids=sorted(set(have) - wanted),
            ))
        return plans

    async def _vectors_for(self, store: VectorStore, plans: list[_Plan]) -> dict[str, np.ndarray]:
        """Embed new chunks (each distinct text once, one batched call) and fetch stored vectors of rewritten ones."""
        vectors: dict[str, np.ndarray] = {}
        new = [c for p in plans for c in p.to_embed]
        if new:
            texts = list(dict.fromkeys(c.embed_text for c in new))
            with step(_tracer, "embed", **{"eddy.texts": len(texts), "eddy.embedder": self.embedder.model_id}):
                matrix = await call_blocking(self.embedder.encode, texts, what="embed chunks")
            by_text = dict(zip(texts, matrix, strict=True))
            vectors.update((c.chunk_id, by_text[c.embed_text]) for c in new)
        rewrite = [c.chunk_id for p in plans for c in p.to_rewrite]
        if rewrite:
            vectors.update(await call_blocking(store.vectors, rewrite, what="read stored vectors"))
        return vectors

    def _record(self, change: DocumentChange, chunk: Chunk, vector: np.ndarray) -> ChunkRecord:
        return ChunkRecord(
            chunk=chunk, source=change.source, uri=change.uri, title=change.title,
            acl=tuple(sorted(change.acl)), meta_hash=meta_hash(change), vector=vector,
        )

    def _event(
        self, change: DocumentChange, status: str, *, total: int = 0, embedded: int = 0,
        deleted: int = 0, unchanged: int = 0, searchable_at: float | None = None,
    ) -> IndexEvent:
        now = searchable_at if searchable_at is not None else time.time()
        return IndexEvent(
            doc_id=change.doc_id, version=change.version, change_id=str(change.event_id), status=status,
            chunks_total=total, chunks_embedded=embedded, chunks_deleted=deleted, chunks_unchanged=unchanged,
            collection=change.collection or self.collections.default.collection,
            embedder=self.embedder.model_id, chunker=self.chunker.config_id,
            lag_ms=max(0.0, (now - change.occurred_at.timestamp()) * 1000.0),
        )
