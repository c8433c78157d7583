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
Versions follow the version rule: at most the current time in microseconds since the epoch plus
``version_skew_s`` (a nanosecond version would make every later change stale); a change above it is
``refused`` (nothing written). Writes are fenced on the document state version, so that two owners of a
partition during a rebalance cannot leave an older version over a newer one (agents/index_writes.py:
the guarantee and its limits); an owner drops the changes of a partition it no longer owns (``owns``).

Failures, one record at a time: undecodable or invalid records (malformed JSON, schema, unknown
op, oversized, empty document, a reserved collection name) go to ``dlq`` with the reason and the
batch goes on. Vector-store outages (RetryableError) are retried with backoff without
acknowledging the batch. A change whose collection cannot be opened or created (past
``max_collections``: ``collection_limit``; another embedder or chunker) goes to ``dlq``, and so
does a record whose processing fails in any other way (``processing``, the exception type in the
reason): a failed batch is redone one change at a time, so the others are applied — except a
delete, which is retried with backoff until it is applied (dead-lettering it would leave the
document searchable). When the
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

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from functools import partial

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from agents.index_writes import IndexWrites
from components.base import Chunker, Embedder, PermanentError
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
#: Longest wait between two attempts of a failing delete, seconds.
_DELETE_RETRY_MAX_S = 30.0


class Indexer(IndexWrites):
    name = "indexer"

    def __init__(
        self, settings: Settings, chunker: Chunker, embedder: Embedder, collections: Collections,
        publisher: Publisher, dead_letters: DeadLetters, owns: Callable[[RawRecord], bool] | None = None,
    ) -> None:
        self.settings = settings
        self.owns = owns  # whether this worker still owns a record's partition (None: always)
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
            if len(decoded) == 1 and decoded[0][1].op == "delete":
                return await self._retry_delete(decoded[0], exc)
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

    async def _retry_delete(self, item: tuple[RawRecord, DocumentChange], exc: Exception) -> list[IndexEvent]:
        """A delete that failed is retried with backoff until it is applied (or its partition is revoked): it is
        never dead-lettered, which would leave the document's chunks searchable."""
        record, change = item
        delay = 0.5
        while True:
            log.error("deleting %s (version %d) failed (%s: %s); retrying in %.1f s", change.doc_id, change.version,
                      type(exc).__name__, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _DELETE_RETRY_MAX_S)
            if self.owns is not None and not self.owns(record):
                log.info("partition of the delete of %s revoked: its new owner applies it", change.doc_id)
                return []
            try:
                return await self._apply([item])
            except DeadLetterError:
                raise
            except Exception as again:  # retried
                exc = again

    async def _apply(self, decoded: list[tuple[RawRecord, DocumentChange]]) -> list[IndexEvent]:
        events: list[IndexEvent] = []
        newest: dict[tuple[str | None, str], tuple[RawRecord, DocumentChange]] = {}
        bound = self._version_bound()
        for record, change in decoded:
            if change.version > bound:  # e.g. nanoseconds: it would make every later change stale
                log.warning("change %s of %s refused: version %d is above the bound %d (microseconds since the "
                            "epoch + version_skew_s)", change.event_id, change.doc_id, change.version, bound)
                events.append(self._event(change, "refused"))
                continue
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
