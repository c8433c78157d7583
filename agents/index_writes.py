"""The indexer's write side under the version fence (issue 10, item 4): diff, embed and write one group of
documents so that an old owner of a partition finishing a batch late cannot leave an older version's chunks
(with its ACL) over a newer one, nor lower a document's recorded version.

Milvus has no transactions and no compare-and-set, so the fence is a check around each write (see
``IndexWrites._write``), with the document state (``<collection>_docs``: version, deleted) as the token:

1. right before writing a group's chunks (after embedding, the long step), re-read the states: a document
   that a newer version overtook is dropped (``stale``, nothing written); one that another writer touched
   since its diff (its state differs from the diff's base) is diffed again;
2. upsert the new and rewritten chunks, delete the stale ones;
3. re-read the states: a document whose newer version landed during step 2 gets this change's written rows
   deleted again (fail closed: a row of the newer version with the same content may go too) and ``conflict``;
   one that another, not newer, writer touched meanwhile is diffed and written again (at most
   ``_FENCE_ROUNDS`` rounds, then ``conflict``); the others' states are recorded (never a lower version
   over a higher one that step 3 saw).

What it guarantees: an older version never lands silently over a newer one — either its writer sees the
newer state (before or after writing) or the newer writer sees its state change and re-diffs. The window
left: two writers whose steps 3 and state writes interleave within one Milvus round trip (the older one
reads the state before the newer one records it, and records its own after). Re-publishing a document
(same version) repairs it; a ``conflict`` event says when that is needed. Revoked partitions (``owns``)
are dropped at each check. The version rule: a change's version may be at most the current time in
microseconds since the epoch plus ``version_skew_s`` (else ``refused``); a stored version above that bound
(written before the rule) never makes a change stale.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from opentelemetry import trace

from components.base import Chunk, Chunker, ChunkRecord, DocState, Embedder, StoredChunk, VectorStore
from config.settings import Settings
from schemas import DocumentChange, IndexEvent
from streams.records import RawRecord
from streams.retry import call_blocking
from streams.tracing import step

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("eddy.indexer")

#: Write-then-check rounds per group while other writers keep touching its documents (then: ``conflict``).
_FENCE_ROUNDS = 3


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
    base: DocState | None = None  # the document's state when the stored chunks were read (the diff's base)

    @property
    def written_ids(self) -> list[str]:
        return [c.chunk_id for c in self.to_embed + self.to_rewrite]


class IndexWrites:
    """The write side of :class:`agents.indexer.Indexer` (which sets these attributes and the two methods)."""

    settings: Settings
    chunker: Chunker
    embedder: Embedder
    owns: Callable[[RawRecord], bool] | None

    def _event(self, change: DocumentChange, status: str, **counts: object) -> IndexEvent:
        raise NotImplementedError

    async def _publish(self, events: list[IndexEvent]) -> None:
        raise NotImplementedError

    def _version_bound(self) -> int:
        """The largest version a change may carry now (docs: ARCHITECTURE.md, the version rule)."""
        return int((time.time() + self.settings.version_skew_s) * 1_000_000)

    async def _prepare(
        self, store: VectorStore, items: list[tuple[RawRecord, DocumentChange]], events: list[IndexEvent]
    ) -> list[list[_Plan]]:
        """Drop stale changes (their events are published at once), chunk and diff the rest, and
        group the plans so that each group embeds about ``embed_group_chunks`` chunks: a group's
        writes and IndexEvents land before the next group is embedded."""
        with step(_tracer, "version_check", **{"eddy.documents": len(items)}):
            states = await call_blocking(store.doc_states, [c.doc_id for _, c in items], what="read document states")
        bound = self._version_bound()
        stale: list[IndexEvent] = []
        live: list[tuple[RawRecord, DocumentChange]] = []
        for record, change in items:
            state = states.get(change.doc_id)
            if _newer(state, change, bound):
                stale.append(self._event(change, "stale"))
                continue
            if state is not None and state.version > bound:
                log.warning("document %s: stored version %d is out of bounds (written before the version rule); "
                            "version %d replaces it", change.doc_id, state.version, change.version)
            live.append((record, change))
        await self._publish(stale)
        events += stale
        if not live:
            return []
        plans = await self._diff(store, live, states)
        groups: list[list[_Plan]] = [[]]
        size = 0
        for plan in plans:
            if groups[-1] and size + len(plan.to_embed) > self.settings.embed_group_chunks:
                groups.append([])
                size = 0
            groups[-1].append(plan)
            size += len(plan.to_embed)
        return groups

    async def _diff(self, store: VectorStore, live: list[tuple[RawRecord, DocumentChange]],
                    states: dict[str, DocState]) -> list[_Plan]:
        with step(_tracer, "diff", **{"eddy.documents": len(live)}):  # the stored side of the chunk-id diff
            stored = await call_blocking(store.stored_chunks, [c.doc_id for _, c in live], what="read stored chunks")
        with step(_tracer, "chunk", **{"eddy.documents": len(live)}):  # chunk, then compare ids with ``stored``
            return await call_blocking(self._plan, live, stored, states, what="chunk documents")

    async def _write(self, store: VectorStore, plans: list[_Plan]) -> list[IndexEvent]:
        """Embed, then write under the version fence: re-read the document states right before writing the
        chunks (a newer version: ``stale``, nothing written; another writer since the diff: diff again), write
        new chunks, delete stale ones, re-read the states (a newer version landed meanwhile: undo this
        change's rows, ``conflict``; another writer: diff and write again), then record the states."""
        t0 = time.perf_counter()
        vectors = await self._vectors_for(store, plans, {})
        t1 = time.perf_counter()
        events: list[IndexEvent] = []
        done: list[_Plan] = []
        pending = plans
        for _ in range(_FENCE_ROUNDS):
            pending, moved = await self._check(store, pending, events, written=False)
            if moved:
                pending += await self._rediff(store, moved, vectors, events, written=False)
            if not pending:
                break
            await self._put(store, pending, vectors)
            pending, moved = await self._check(store, pending, events, written=True)
            if pending:
                await call_blocking(store.set_doc_states, [
                    DocState(p.change.doc_id, p.change.version, p.change.op == "delete", p.change.source)
                    for p in pending], what="write document states")
                done += pending
            pending = await self._rediff(store, moved, vectors, events, written=True) if moved else []
            if not pending:
                break
        for plan in pending:  # other writers kept writing these documents: reported, never looped on
            log.warning("document %s: other writers kept writing it; version %d not recorded", plan.change.doc_id,
                        plan.change.version)
            events.append(self._event(plan.change, "conflict"))
        searchable_at = time.time()
        log.info(
            "indexed %d documents into %s: %d chunks embedded, %d rewritten, %d deleted (embed %.0f ms, write %.0f ms)",
            len(done), store.collection, sum(len(p.to_embed) for p in done), sum(len(p.to_rewrite) for p in done),
            sum(len(p.stale_ids) for p in done), (t1 - t0) * 1e3, (time.perf_counter() - t1) * 1e3,
        )
        for plan in done:
            embedded = len(plan.to_embed)
            changed = embedded or plan.to_rewrite or plan.stale_ids
            status = "deleted" if plan.change.op == "delete" else ("indexed" if changed else "unchanged")
            events.append(self._event(
                plan.change, status, total=len(plan.chunks), embedded=embedded, deleted=len(plan.stale_ids),
                unchanged=plan.unchanged, searchable_at=searchable_at,
            ))
        return events

    async def _check(self, store: VectorStore, plans: list[_Plan], events: list[IndexEvent], *,
                     written: bool) -> tuple[list[_Plan], list[_Plan]]:
        """The fence: (plans to go on with, plans another writer touched since their diff). Plans whose
        partition was revoked are dropped (the new owner applies them); plans a newer version overtook get
        ``stale`` (before writing) or, once written, their rows deleted and ``conflict`` (fail closed)."""
        if self.owns is not None:
            for plan in [p for p in plans if not self.owns(p.record)]:
                log.info("partition of %s revoked: its new owner applies version %d", plan.change.doc_id,
                         plan.change.version)
            plans = [p for p in plans if self.owns(p.record)]
        if not plans:
            return [], []
        states = await call_blocking(store.doc_states, [p.change.doc_id for p in plans], what="read document states")
        plans = await self._drop_overtaken(store, plans, states, events, written=written)
        keep = [p for p in plans if states.get(p.change.doc_id) == p.base]
        return keep, [p for p in plans if states.get(p.change.doc_id) != p.base]

    async def _drop_overtaken(self, store: VectorStore, plans: list[_Plan], states: dict[str, DocState],
                              events: list[IndexEvent], *, written: bool) -> list[_Plan]:
        """The plans no newer version overtook; the others get ``stale`` or, once written, ``conflict``
        with their written rows deleted again."""
        bound = self._version_bound()
        live, undo = [], []
        for plan in plans:
            state = states.get(plan.change.doc_id)
            if not _newer(state, plan.change, bound):
                live.append(plan)
                continue
            log.warning("document %s: version %d landed while version %d was %s", plan.change.doc_id, state.version,
                        plan.change.version, "written: its rows are undone" if written else "prepared: nothing written")
            events.append(self._event(plan.change, "conflict" if written else "stale"))
            undo += plan.written_ids if written else []
        if undo:
            with step(_tracer, "delete", **{"eddy.chunks": len(undo)}):
                await call_blocking(store.delete_chunks, undo, what="undo overtaken chunks")
        return live

    async def _rediff(self, store: VectorStore, plans: list[_Plan], vectors: dict[str, np.ndarray],
                      events: list[IndexEvent], *, written: bool) -> list[_Plan]:
        """Diff ``plans`` again against what is stored now (another writer touched their documents)."""
        states = await call_blocking(store.doc_states, [p.change.doc_id for p in plans], what="read document states")
        plans = await self._drop_overtaken(store, plans, states, events, written=written)
        fresh = await self._diff(store, [(p.record, p.change) for p in plans], states) if plans else []
        vectors.update(await self._vectors_for(store, fresh, vectors))
        return fresh

    async def _put(self, store: VectorStore, plans: list[_Plan], vectors: dict[str, np.ndarray]) -> None:
        """Upsert the plans' new and rewritten chunks, then delete their stale ones."""
        records = [self._record(p.change, c, vectors[c.chunk_id]) for p in plans for c in p.to_embed + p.to_rewrite]
        if records:
            with step(_tracer, "upsert", **{"eddy.chunks": len(records)}):
                await call_blocking(store.upsert_chunks, records, what="upsert chunks")
        stale = [cid for plan in plans for cid in plan.stale_ids]
        if stale:
            with step(_tracer, "delete", **{"eddy.chunks": len(stale)}):
                await call_blocking(store.delete_chunks, stale, what="delete stale chunks")

    def _plan(
        self, live: list[tuple[RawRecord, DocumentChange]], stored: dict[str, list[StoredChunk]],
        states: dict[str, DocState],
    ) -> list[_Plan]:
        plans = []
        for record, change in live:
            have = {s.chunk_id: s.meta_hash for s in stored.get(change.doc_id, [])}
            base = states.get(change.doc_id)
            if change.op == "delete":
                plans.append(_Plan(record, change, [], [], [], 0, sorted(have), base))
                continue
            chunks = self.chunker.chunk(change.doc_id, change.text, change.content_type, change.title)
            wanted_meta = meta_hash(change)
            to_embed = [c for c in chunks if c.chunk_id not in have]
            to_rewrite = [c for c in chunks if c.chunk_id in have and have[c.chunk_id] != wanted_meta]
            wanted = {c.chunk_id for c in chunks}
            plans.append(_Plan(
                record, change, chunks, to_embed, to_rewrite,
                unchanged=len(chunks) - len(to_embed) - len(to_rewrite),
                stale_ids=sorted(set(have) - wanted), base=base,
            ))
        return plans

    async def _vectors_for(self, store: VectorStore, plans: list[_Plan],
                           have: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Vectors of the plans' chunks not in ``have``: stored ones of rewritten chunks, and embeddings of the
        rest (each distinct text once, one batched call)."""
        need = {c.chunk_id: c for p in plans for c in p.to_embed + p.to_rewrite if c.chunk_id not in have}
        rewrite = [c.chunk_id for p in plans for c in p.to_rewrite if c.chunk_id in need]
        vectors = await call_blocking(store.vectors, rewrite, what="read stored vectors") if rewrite else {}
        new = [c for cid, c in need.items() if cid not in vectors]  # a rewritten row deleted meanwhile: embedded
        if new:
            texts = list(dict.fromkeys(c.embed_text for c in new))
            with step(_tracer, "embed", **{"eddy.texts": len(texts), "eddy.embedder": self.embedder.model_id}):
                matrix = await call_blocking(self.embedder.encode, texts, what="embed chunks")
            by_text = dict(zip(texts, matrix, strict=True))
            vectors.update((c.chunk_id, by_text[c.embed_text]) for c in new)
        return vectors

    def _record(self, change: DocumentChange, chunk: Chunk, vector: np.ndarray) -> ChunkRecord:
        return ChunkRecord(
            chunk=chunk, source=change.source, uri=change.uri, title=change.title,
            acl=tuple(sorted(change.acl)), meta_hash=meta_hash(change), vector=vector,
        )


def _newer(state: DocState | None, change: DocumentChange, bound: int) -> bool:
    """Whether ``state`` holds a newer version than ``change`` (a stored version above ``bound``, written
    before the version rule, never counts: a valid change replaces it)."""
    return state is not None and change.version < state.version <= bound
