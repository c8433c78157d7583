"""Curator agent: turns shared feedback into vetted, PII-scrubbed evaluation and training records.

Consumes ``feedback`` (Feedback), ``answers`` (AnswerEvent; only ``final`` and ``error`` matter)
and ``curator.queries`` (Query re-keyed by query_id: a second, stateless agent copies every record
of ``queries`` there, because ``queries`` is keyed by conversation_id). The three are keyed by
query_id with the same partition count, so one partition of each holds everything about a query.
The join state (query, terminal answer, feedback waiting for them) lives in a faust Table keyed
by query_id whose changelog is written with the same partitioner: it is restored after a
restart and a feedback that arrives before its query or answer waits there. The worker keeps it
in RocksDB on disk (``curator_join_store``), not in RAM. It is bounded: an entry holds only what
curation needs (no ``retrieved`` list, timings, usage or groups), keeps the first query and the first
terminal answer of its query_id (a reused id does not replace them), carries the time of its last
update, and goes when it is older than ``curator_join_ttl_s`` (swept every ``curator_join_sweep_s``
by :meth:`Curator.expire`) or when the worker holds more than ``curator_join_max_entries`` (the least
recently updated go first, on insert). The changelog itself expires after 7 days like its sources.

For each shared feedback (``share=True``) whose query and answer are known: scrub the question,
history, answer and comment together (conversation-scoped pseudonyms), apply the junk rules
(components/curation.py) and the near-duplicate check against the vetted questions (Milvus),
then produce either ``datasets.eval`` (EvalRecord) plus, when the answer cited chunks,
``datasets.train`` (TrainRecord), both keyed by record id (= query id), or ``feedback.rejected``
(Rejection, keyed by query id) with the reason. Every handled conversation also gets a
``feedback.audit`` record (ScrubAudit: entity types and counts, never values). Feedback without
``share`` is not curated.

Delivery: at-least-once. A batch's offsets are committed after its outputs were acknowledged and
the vetted vectors written; a redelivered feedback produces the same record ids (compacted
topics keep one) and may repeat a rejection or audit entry.

Failures, one record at a time: invalid feedback or answers go to ``dlq`` (invalid queries are
the answerer's to report: the re-keying agent skips them); so does any record whose join or
re-keying fails otherwise (``processing``). A batch whose curation fails is curated again one
conversation at a time; a conversation that still fails is dead-lettered (``processing``, as the
record of the batch that completed it, the reason naming the feedback and query ids and the
exception type, never its message: it may quote the text) and forgotten. When the dead-letter
topic itself cannot be written, the handler raises DeadLetterError and nothing is acknowledged
(the worker stops; the batch is redelivered). The scrubber runs apart from the other agents, with a
deadline of ``scrub_timeout_s``: in its child process when it has one (``scrub_async``, e.g.
components/scrub_process.py: killed and restarted on a timeout), else on a thread of its own (abandoned
and replaced on a timeout) — never on the loop's shared pool; if it raises or times out the
conversation is rejected with ``scrub_failed`` and no text at all (fail closed: nothing unscrubbed is
ever published).
Embedding or Milvus outages are retried with backoff without acknowledging the batch.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass

import numpy as np

from components.base import Conversation, Embedder, Scrubbed, Scrubber, VettedIndex
from components.curation import FILTERS_VERSION, JunkRules, Verdict
from config.settings import MAX_RECORD_BYTES, Settings
from schemas import AnswerEvent, Citation, EvalRecord, Feedback, HistoryTurn, Query, Rejection, ScrubAudit, TrainRecord
from streams.codec import DecodeError, decode
from streams.dlq import DeadLetterError, DeadLetters
from streams.records import Publisher, RawRecord
from streams.retry import OwnThread, call_blocking
from streams.topics import (
    ANSWERS,
    CURATOR_QUERIES,
    DATASETS_EVAL,
    DATASETS_TRAIN,
    DAY_MS,
    FEEDBACK,
    FEEDBACK_AUDIT,
    FEEDBACK_REJECTED,
)

log = logging.getLogger(__name__)

#: Retention of the join table's changelog: that of `queries` and `answers` (streams/topics.py).
JOIN_RETENTION_MS = 7 * DAY_MS
#: Fields of a Query / AnswerEvent that curation never reads: not kept in the join table.
_QUERY_UNUSED = {"groups"}
_ANSWER_UNUSED = {"retrieved", "usage", "timings", "validation"}
_PLACEHOLDER = re.compile(r"<([A-Z_]+)_[0-9a-f]{8}>")


@dataclass
class _Item:
    """One shared feedback ready to curate, with its query and terminal answer."""

    feedback: Feedback
    query: Query
    answer: AnswerEvent
    scrubbed: Scrubbed | None = None
    verdict: Verdict | None = None


class Curator:
    """The join and the curation steps, transport-neutral (faust in the worker, a dict and a
    MemoryPublisher in unit tests). ``state`` maps query_id (bytes) to a JSON-able dict."""

    name = "curator"

    def __init__(
        self, settings: Settings, scrubber: Scrubber, rules: JunkRules, embedder: Embedder, vetted: VettedIndex,
        publisher: Publisher, dead_letters: DeadLetters, state: MutableMapping,
    ) -> None:
        self.settings = settings
        self.scrubber = scrubber
        self.rules = rules
        self.embedder = embedder
        self.vetted = vetted
        self.publisher = publisher
        self.dead_letters = dead_letters
        self.state = state
        self.clock = time.time
        self._ages: OrderedDict[bytes, float] = OrderedDict()  # key -> last update, least recent first
        self._scrub_thread = OwnThread("eddy-scrub")
        self.topics = {spec.name: spec.full_name(settings) for spec in (
            CURATOR_QUERIES, ANSWERS, FEEDBACK, DATASETS_EVAL, DATASETS_TRAIN, FEEDBACK_REJECTED, FEEDBACK_AUDIT)}

    # ------------------------------------------------------------------ re-keying
    async def rekey(self, record: RawRecord) -> None:
        """Copy a ``queries`` record to ``curator.queries`` keyed by its query_id (re-encoded, with the
        ``event_id`` and ``occurred_at`` that decoding fills in when the producer left them out)."""
        try:
            query = decode(Query, record.value, max_bytes=MAX_RECORD_BYTES, origin=record)
        except DecodeError as exc:
            log.debug("not re-keying invalid query at %s/%d/%d: %s", record.topic, record.partition,
                      record.offset, exc.reason)
            return
        try:
            await self.publisher.publish(self.topics["curator.queries"], query.query_id, query.to_bytes(), wait=True)
        except Exception as exc:  # boundary: this record's failure is its own
            log.warning("re-keying query %s failed: %s", query.query_id, type(exc).__name__)
            await self.dead_letters.send(record, "processing", f"re-keying failed: {type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ join
    async def handle_batch(self, records: Sequence[RawRecord]) -> None:
        """Fold a batch of ``curator.queries`` / ``answers`` / ``feedback`` records into the join state
        and curate every shared feedback that became complete."""
        ready: dict[str, tuple[_Item, RawRecord]] = {}  # feedback id -> item, the record that completed it
        for record in records:
            try:
                joined = await self._join(record)
            except DeadLetterError:
                raise
            except Exception as exc:  # boundary: one record's failure is that record's alone
                log.warning("joining %s[%d]@%d failed: %s", record.topic, record.partition, record.offset,
                            type(exc).__name__)
                await self.dead_letters.send(record, "processing", f"joining failed: {type(exc).__name__}")
                continue
            for item in joined:
                ready[str(item.feedback.event_id)] = (item, record)
        if ready:
            await self._curate_isolated(list(ready.values()))
            for item, _ in ready.values():
                self._forget(item.feedback)

    async def _curate_isolated(self, pairs: list[tuple[_Item, RawRecord]]) -> None:
        """``curate`` the items; when that fails, one at a time, dead-lettering one that fails alone."""
        try:
            await self.curate([_Item(item.feedback, item.query, item.answer) for item, _ in pairs])
        except DeadLetterError:
            raise
        except Exception as exc:  # boundary; the message may quote a conversation: only its type is kept
            if len(pairs) > 1:
                log.warning("curating %d conversations failed (%s); one at a time", len(pairs), type(exc).__name__)
                for pair in pairs:
                    await self._curate_isolated([pair])
                return
            item, record = pairs[0]
            log.warning("curating feedback %s failed: %s", item.feedback.event_id, type(exc).__name__)
            await self.dead_letters.send(record, "processing", f"curating feedback {item.feedback.event_id} of "
                                         f"query {item.query.query_id} failed: {type(exc).__name__}")

    async def _join(self, record: RawRecord) -> list[_Item]:
        topic = record.topic
        try:
            if topic == self.topics["curator.queries"]:
                query = decode(Query, record.value, max_bytes=MAX_RECORD_BYTES, origin=record)
                return self._update(query.query_id, "query", query.model_dump(mode="json", exclude=_QUERY_UNUSED))
            if topic == self.topics["answers"]:
                answer = decode(AnswerEvent, record.value, max_bytes=MAX_RECORD_BYTES, origin=record)
                if not answer.terminal:
                    return []
                return self._update(answer.query_id, "answer", answer.model_dump(mode="json", exclude=_ANSWER_UNUSED))
            if topic == self.topics["feedback"]:
                feedback = decode(Feedback, record.value, max_bytes=MAX_RECORD_BYTES, origin=record)
                if not feedback.share:
                    log.debug("feedback %s on %s is not shared: not curated", feedback.event_id, feedback.query_id)
                    return []
                entry = self.state.get(feedback.query_id.encode()) or {}
                pending = [f for f in entry.get("pending", []) if f["event_id"] != str(feedback.event_id)]
                return self._update(feedback.query_id, "pending", [*pending, feedback.model_dump(mode="json")])
        except DecodeError as exc:
            if topic != self.topics["curator.queries"]:
                await self.dead_letters.send(record, exc.error_type, exc.reason)
            return []
        log.warning("curator got a record of unexpected topic %s", topic)
        return []

    def _update(self, query_id: str, field: str, value: object) -> list[_Item]:
        key = query_id.encode()
        entry = dict(self.state.get(key) or {})
        if field in ("query", "answer") and field in entry:  # the first stays: a reused query_id replaces nothing
            if entry[field].get("event_id") != value.get("event_id"):  # type: ignore[union-attr]
                log.info("query %s: another %s for this query_id is not joined (the first stays)", query_id, field)
        else:
            entry[field] = value
        entry["t"] = now = self.clock()
        self.state[key] = entry  # a new value, so the table writes its changelog
        self._touch(key, now)
        if "query" not in entry or "answer" not in entry:
            return []
        query = Query.model_validate(entry["query"])
        answer = AnswerEvent.model_validate(entry["answer"])
        return [_Item(Feedback.model_validate(f), query, answer) for f in entry.get("pending", [])]

    def _forget(self, feedback: Feedback) -> None:
        key = feedback.query_id.encode()
        entry = self.state.get(key)
        if entry is None:  # dropped meanwhile (count bound)
            return
        entry = dict(entry)
        entry["pending"] = [f for f in entry.get("pending", []) if f["event_id"] != str(feedback.event_id)]
        self.state[key] = entry

    # ------------------------------------------------------------------ bounds
    def _touch(self, key: bytes, now: float) -> None:
        """Record ``key``'s update; past ``curator_join_max_entries`` drop the least recently updated."""
        self._ages[key] = now
        self._ages.move_to_end(key)
        self._cap()

    def _cap(self) -> int:
        dropped = 0
        while len(self._ages) > self.settings.curator_join_max_entries:
            old, _ = self._ages.popitem(last=False)
            if old in self.state:
                del self.state[old]
                dropped += 1
        return dropped

    async def expire(self) -> int:
        """Sweep the whole table (also entries restored from the changelog, which this worker never wrote):
        drop entries not updated for ``curator_join_ttl_s``, then the least recently updated ones past
        ``curator_join_max_entries``. Yields to the event loop as it goes. Returns how many were dropped."""
        started = now = self.clock()
        ttl, dropped = self.settings.curator_join_ttl_s, 0
        ages: dict[bytes, float] = {}
        for n, key in enumerate(list(self.state.keys())):
            if n % 256 == 255:
                await asyncio.sleep(0)
            entry = self.state.get(key)
            if entry is None:
                continue
            t = entry.get("t")
            t = float(t) if isinstance(t, (int, float)) else self._ages.get(key, now)  # older entries: from first sight
            if now - t > ttl:
                del self.state[key]
                dropped += 1
            else:
                ages[key] = t
        for key, t in self._ages.items():  # updated while the sweep yielded
            if t >= started:
                ages[key] = t
        self._ages = OrderedDict(sorted(ages.items(), key=lambda kv: kv[1]))
        dropped += self._cap()
        (log.info if dropped else log.debug)("join table swept: %d entries kept, %d dropped", len(self._ages), dropped)
        return dropped

    # ------------------------------------------------------------------ curation
    async def curate(self, items: list[_Item]) -> None:
        """Scrub, filter, deduplicate and publish ``items``; returns when every output is acknowledged."""
        t0 = time.perf_counter()
        await self._scrub(items)
        scrub_ms = (time.perf_counter() - t0) * 1000.0
        for item in items:
            if item.verdict is None and item.answer.kind == "error":
                item.verdict = Verdict("answer_error", f"the query got no answer: {item.answer.error or 'error'}")
            if item.verdict is None:  # on scrubbed text: a rule's explanation may quote it
                question, _, _, comment = self._texts(item)
                item.verdict = self.rules.check(item.feedback.user_id, question, comment)
        candidates = [i for i in items if i.verdict is None]
        vectors = await self._deduplicate(candidates)
        vetted = [n for n, i in enumerate(candidates) if i.verdict is None]
        for item in items:
            await self._publish(item, scrub_ms)
        await self.publisher.flush()
        if vetted:
            await call_blocking(self.vetted.add, [candidates[n].query.query_id for n in vetted], vectors[vetted],
                                what="record vetted questions")
        log.info("curated %d shared conversations: %d vetted, %d rejected (scrub %.0f ms)",
                 len(items), len(vetted), len(items) - len(vetted), scrub_ms)

    async def _scrub(self, items: list[_Item]) -> None:
        """Scrub all items in one batch; on failure, one by one so that one bad record is rejected
        alone. A record the scrubber fails on gets the ``scrub_failed`` verdict and no text."""
        try:
            results = await self._scrub_call([self._conversation(i) for i in items])
        except Exception as exc:  # any scrubber failure fails closed
            if len(items) == 1:
                # The exception's message may quote the text: neither the record nor the log gets it.
                items[0].verdict = Verdict("scrub_failed", f"the PII scrubber failed ({type(exc).__name__}); "
                                                            "the conversation is not kept")
                log.warning("scrubber failed on feedback %s: %s", items[0].feedback.event_id, type(exc).__name__)
                return
            log.warning("scrubber failed on a batch of %d (%s); scrubbing one by one", len(items), type(exc).__name__)
            for item in items:
                await self._scrub([item])
            return
        for item, result in zip(items, results, strict=True):
            item.scrubbed = result

    async def _scrub_call(self, conversations: list[Conversation]) -> list[Scrubbed]:
        timeout_s = self.settings.scrub_timeout_s
        scrub_async = getattr(self.scrubber, "scrub_async", None)  # a scrubber in its own (killable) process
        try:
            if scrub_async is not None:
                results = await scrub_async(conversations, timeout_s)
            else:
                results = await self._scrub_thread.call(self.scrubber.scrub_batch, conversations, timeout_s=timeout_s)
        except TimeoutError as exc:
            raise TimeoutError(f"no result within {self.settings.scrub_timeout_s:g} s") from exc
        if len(results) != len(conversations) or any(
            len(r.texts) != len(c.texts) for r, c in zip(results, conversations, strict=False)
        ):
            raise ValueError("the scrubber returned a different number of texts than it was given")
        return results

    @staticmethod
    def _conversation(item: _Item) -> Conversation:
        """Texts in a fixed order: question, history turns, answer, comment (see ``_texts``)."""
        return Conversation(item.query.query_id, (
            item.query.text, *(turn.text for turn in item.query.history), item.answer.text, item.feedback.comment,
        ))

    @staticmethod
    def _texts(item: _Item) -> tuple[str, list[HistoryTurn], str, str]:
        texts = item.scrubbed.texts
        n = len(item.query.history)
        history = [HistoryTurn(role=turn.role, text=text) for turn, text in zip(item.query.history, texts[1:1 + n],
                                                                                 strict=True)]
        return texts[0], history, texts[1 + n], texts[2 + n]

    async def _deduplicate(self, items: list[_Item]) -> np.ndarray:
        """Near-duplicate verdicts: cosine of the scrubbed question to a vetted one (or to an earlier
        item of this batch) at or above ``curator_duplicate_similarity``. Returns the questions'
        embeddings, ``(len(items), dim)``."""
        if not items:
            return np.zeros((0, self.embedder.dim), dtype=np.float32)
        threshold = self.settings.curator_duplicate_similarity
        # Pseudonyms differ between conversations: compare questions with their placeholders' types only.
        questions = [_PLACEHOLDER.sub(r"<\1>", self._texts(i)[0]) for i in items]
        vectors = await call_blocking(self.embedder.encode, questions, what="embed questions")
        nearest = await call_blocking(self.vetted.nearest, vectors, [i.query.query_id for i in items],
                                      what="search vetted questions")
        kept: list[int] = []
        for n, (item, best) in enumerate(zip(items, nearest, strict=True)):
            if best is not None and best[1] >= threshold:
                item.verdict = Verdict("near_duplicate", f"cosine {best[1]:.3f} to vetted record {best[0]} "
                                                         f"(threshold {threshold:g})")
                continue
            for k in kept:
                similarity = float(vectors[k] @ vectors[n])
                if similarity >= threshold and items[k].query.query_id != item.query.query_id:
                    item.verdict = Verdict("near_duplicate", f"cosine {similarity:.3f} to record "
                                                             f"{items[k].query.query_id} of the same batch")
                    break
            if item.verdict is None:
                kept.append(n)
        return vectors

    async def _publish(self, item: _Item, scrub_ms: float) -> None:
        feedback, query, answer = item.feedback, item.query, item.answer
        version = self.scrubber.version
        audit = ScrubAudit(
            query_id=query.query_id, feedback_id=str(feedback.event_id),
            outcome="vetted" if item.verdict is None else "rejected",
            reason=item.verdict.reason if item.verdict is not None else None,
            entities=item.scrubbed.entities if item.scrubbed is not None else {}, scrubber=version,
            scrub_ms=round(scrub_ms, 3),
        )
        if item.verdict is not None:
            texts = self._texts(item) if item.scrubbed is not None else ("", [], "", "")
            rejection = Rejection(
                query_id=query.query_id, feedback_id=str(feedback.event_id), reason=item.verdict.reason,
                detail=item.verdict.detail, rating=feedback.rating, query=texts[0], answer=texts[2],
                comment=texts[3], scrubber=version, filters=FILTERS_VERSION,
            )
            await self.publisher.publish(self.topics["feedback.rejected"], query.query_id, rejection.to_bytes())
        else:
            text, history, answer_text, comment = self._texts(item)
            common = dict(
                record_id=query.query_id, query_id=query.query_id, query=text, history=history, rating=feedback.rating,
                model=answer.model, prompt_version=answer.prompt_version, pipeline_version=answer.pipeline_version,
                pipeline=query.options.pipeline, answered_at=answer.occurred_at, feedback_at=feedback.occurred_at,
                scrubber=version, filters=FILTERS_VERSION,
            )
            citations: list[Citation] = list(answer.citations or [])
            record = EvalRecord(**common, answer=answer_text, comment=comment, citations=citations)
            await self.publisher.publish(self.topics["datasets.eval"], record.record_id, record.to_bytes())
            if citations:
                up = feedback.rating == "up"
                train = TrainRecord(**common, positives=citations if up else [], negatives=[] if up else citations)
                await self.publisher.publish(self.topics["datasets.train"], train.record_id, train.to_bytes())
        await self.publisher.publish(self.topics["feedback.audit"], query.query_id, audit.to_bytes())
