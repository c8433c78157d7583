"""Answerer agent: retrieval-augmented answers streamed token by token.

Consumes ``queries`` (Query, keyed by conversation_id). For each query: embed the text, search
the query's collection (the default one unless ``options.collection`` names another) with the ACL
filter (a chunk is visible when its ACL is empty or shares a group with the query's ``groups``),
rank the sections of the chunks found by their best chunk (:mod:`components.sections`: a section is
quoted, cited and listed once), build the prompt from a versioned template with the ``top_k`` best
sections, generate, and produce on ``answers`` (keyed by
query_id) ``delta`` records coalesced over ``delta_flush_ms`` then exactly one ``final`` (text,
citations, the ranked ``retrieved`` sections — each its best chunk —, usage, timings, model, prompt and
pipeline versions)
— or one ``error`` with a reason. ``options.generate=false`` skips generation (retrieval only,
for evaluation): the ``final`` carries ``retrieved`` and no text.

Delivery: several queries are in flight at once (faust agent concurrency); model compute
runs in worker threads, so a long generation neither stalls the other queries nor the
consumer's heartbeats. A query's offset is acknowledged after its terminal event is
acknowledged by the broker: at-least-once; a crash mid-answer re-answers that query.

Limits: a query over ``max_query_chars`` of text, ``max_query_groups`` groups or
``max_history_turns`` history turns is refused (``oversized``, below); every query has
``query_deadline_s`` from pick-up to its terminal event: past it the generation stops, its slot is
freed and the stream ends with an ``error`` answer.

Failures: undecodable or invalid queries (malformed JSON, schema, empty text, over a limit) go
to ``dlq``; when the record still names a ``query_id`` an ``error`` answer is produced too.
Retrieval or generation failures produce an ``error`` answer; the agent keeps consuming. A query
whose answer events cannot be published at all goes to ``dlq`` (``processing``). When the
dead-letter topic itself cannot be written, ``handle`` raises DeadLetterError: the query must not
be acknowledged (the worker stops; it is redelivered).

One terminal event per query record: once the terminal event's publication has begun, no other
terminal event follows — a final whose publish call raises (it may have been written) sends the
query to ``dlq`` (``processing``), never an error answer after it. The answerer remembers the last
``answerer_dedupe_queries`` query ids with their query's ``event_id``: the same query redelivered is
not answered again, and a query_id reused by another query gets one ``error`` answer (and ``dlq``,
``reused_id``) after the original's stream has ended, never a second stream. ``owns`` (the worker's
current partition assignment) fences a rebalance: an owner whose partition was revoked mid-answer stops
without publishing more (no terminal event: the new owner answers the redelivered query). Limits: the
memory is per worker and lost on restart, and a worker that lost its partition without noticing
(session expired, not yet rebalanced) can still finish its stream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from components.base import Embedder, GenerationParams, GenerationStats, Generator, Hit, Reranker
from components.collection_registry import Collections
from components.prompts import PROMPT_V1, build_messages, fit_hits
from components.sections import rank_sections
from config.settings import Settings
from schemas import AnswerEvent, Citation, Query, Retrieved, Timings, Usage
from streams.codec import DecodeError, decode
from streams.dlq import DeadLetterError, DeadLetters
from streams.records import Publisher, RawRecord
from streams.retry import call_blocking
from streams.topics import ANSWERS
from streams.tracing import STEP, consumer_span, messaging_attributes, record_step

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("eddy.answerer")

PIPELINE_VERSION = "rag-dense-sections-v1"
#: Most chunks one vector search may return (Milvus' largest ``limit``).
SEARCH_LIMIT = 16384
_CITE = re.compile(r"\[(\d{1,3})\]")


class Answerer:
    name = "answerer"

    def __init__(
        self, settings: Settings, embedder: Embedder, collections: Collections, reranker: Reranker,
        generator: Generator, publisher: Publisher, dead_letters: DeadLetters,
        owns: Callable[[RawRecord], bool] | None = None,
    ) -> None:
        self.settings = settings
        self.owns = owns  # whether this worker still owns a record's partition (None: always)
        self._seen: OrderedDict[str, _Seen] = OrderedDict()  # query_id -> its query's event, newest last
        self.embedder = embedder
        self.collections = collections
        self.reranker = reranker
        self.generator = generator
        self.publisher = publisher
        self.dead_letters = dead_letters
        self.template = PROMPT_V1
        self.answers_topic = ANSWERS.full_name(settings)
        self._slots = asyncio.Semaphore(settings.generation_slots)

    async def handle(self, record: RawRecord) -> AnswerEvent | None:
        """Answer one ``queries`` record; returns the terminal event produced (None if there was no query_id).

        Traced as a CONSUMER span ``process <queries topic>`` continuing the trace of the record's
        ``traceparent`` header, with child spans per step (retrieve, prompt, generate, validate,
        publish); every answer event carries that trace's context.
        """
        with consumer_span(_tracer, record, self.settings.group_id):
            try:
                return await self._handle(record)
            except DeadLetterError:
                raise
            except _Revoked:
                log.info("query at %s[%d]@%d: partition revoked; its new owner answers it", record.topic,
                         record.partition, record.offset)
                return None
            except Exception as exc:  # boundary: no answer could be published; the record goes to dlq
                log.exception("query at %s[%d]@%d failed", record.topic, record.partition, record.offset)
                await self.dead_letters.send(record, "processing",
                                             f"answering failed: {type(exc).__name__}: {exc}")
                return None

    def _check_limits(self, query: Query) -> None:
        """Raise DecodeError (``oversized``) for a query over a configured limit."""
        s = self.settings
        for count, unit, limit, setting in (
            (len(query.text), "characters of text", s.max_query_chars, "max_query_chars"),
            (len(query.groups), "groups", s.max_query_groups, "max_query_groups"),
            (len(query.history), "history turns", s.max_history_turns, "max_history_turns"),
        ):
            if count > limit:
                raise DecodeError("oversized", f"the query has {count:,} {unit}, above the maximum of {limit:,} "
                                  f"({setting})", partial={"query_id": query.query_id})

    async def _handle(self, record: RawRecord) -> AnswerEvent | None:
        received = time.time()
        try:
            query = decode(Query, record.value, max_bytes=self.settings.max_query_chars * 4 + 256 * 1024, origin=record)
            self._check_limits(query)
        except DecodeError as exc:
            await self.dead_letters.send(record, exc.error_type, exc.reason)
            query_id = (exc.partial or {}).get("query_id")
            if isinstance(query_id, str) and query_id:
                return await self._error(query_id, 0, f"invalid query: {exc.reason}")
            return None
        seen = self._seen.get(query.query_id)
        if seen is not None:
            return await self._seen_before(record, query, seen)
        seen = self._seen[query.query_id] = _Seen(str(query.event_id))
        while len(self._seen) > self.settings.answerer_dedupe_queries:
            self._seen.popitem(last=False)
        try:
            return await self._answer_once(record, query, received)
        except _Revoked:
            self._seen.pop(query.query_id, None)  # no terminal event here: a redelivery must be answered
            log.info("query %s: partition revoked mid-answer; its new owner answers it", query.query_id)
            return None
        finally:
            seen.done.set()

    async def _seen_before(self, record: RawRecord, query: Query, seen: _Seen) -> AnswerEvent | None:
        self._seen.move_to_end(query.query_id)
        if seen.event_id == str(query.event_id):
            log.info("query %s (event %s) redelivered: already answered here", query.query_id, seen.event_id)
            return None
        await seen.done.wait()  # the original's stream ends first: the error never lands inside it
        reason = (f"query_id {query.query_id!r} reused: event {query.event_id} names the query_id of event "
                  f"{seen.event_id}; query ids must be unique")
        await self.dead_letters.send(record, "reused_id", reason)
        return await self._error(query.query_id, 0, reason, _Sent(record=record))

    async def _answer_once(self, record: RawRecord, query: Query, received: float) -> AnswerEvent:
        deadline = asyncio.timeout(self.settings.query_deadline_s)
        sent = _Sent(deadline=deadline, record=record)
        span = trace.get_current_span()
        span.set_attribute("eddy.query_id", query.query_id)
        try:
            async with deadline:
                return await self._answer(query, received, sent)
        except _Revoked:
            raise
        except Exception as exc:  # boundary: every query gets exactly one terminal event
            if sent.terminal:  # its publication began: it may have been written; never a second terminal event
                raise TerminalPublishError(f"publishing the final answer failed ({type(exc).__name__}: {exc}); it "
                                           "may have been delivered, so no error answer follows") from exc
            reason = f"{type(exc).__name__}: {exc}"
            if deadline.expired():
                reason = (f"deadline exceeded: no answer within {self.settings.query_deadline_s:g} s "
                          "(query_deadline_s); the generation was stopped")
                log.warning("query %s: %s", query.query_id, reason)
            else:
                log.exception("query %s failed", query.query_id)
            span.record_exception(exc)
            span.set_status(trace.StatusCode.ERROR, reason)
            return await self._error(query.query_id, sent.deltas, reason, sent)

    async def _error(self, query_id: str, seq: int, reason: str, sent: _Sent | None = None) -> AnswerEvent:
        event = AnswerEvent(query_id=query_id, kind="error", seq=seq, error=reason,
                            pipeline_version=PIPELINE_VERSION)
        if sent is not None:
            self._fence(sent, terminal=True)
        await self.publisher.publish(self.answers_topic, query_id, event.to_bytes(), wait=True)
        return event

    def _fence(self, sent: _Sent, *, terminal: bool = False) -> None:
        """Raise _Revoked when this worker no longer owns the query's partition; mark a terminal event begun."""
        if self.owns is not None and sent.record is not None and not self.owns(sent.record):
            raise _Revoked()
        sent.terminal = sent.terminal or terminal

    async def _answer(self, query: Query, received: float, sent: _Sent) -> AnswerEvent:
        queue_ms = max(0.0, (received - query.occurred_at.timestamp()) * 1000.0)
        options = query.options
        top_k = options.top_k or self.settings.top_k
        t0 = time.perf_counter()
        store = await call_blocking(partial(self.collections.get, options.collection, create=False),
                                    what=f"open collection {options.collection}", deadline_s=10.0)
        vector = await asyncio.to_thread(self.embedder.encode, [query.text])
        # Sections, not fragments: chunks are searched, sections ranked (by their best chunk), quoted and cited.
        wanted = max(top_k, options.retrieval_depth or 0)
        ranked: list[Hit] = (await call_blocking(
            store.search, np.asarray(vector, dtype=np.float32),
            min(SEARCH_LIMIT, wanted * self.settings.search_chunks_per_section),
            list(query.groups), what="vector search", deadline_s=10.0,
        ))[0]
        sections = rank_sections(self.reranker.rerank(query.text, ranked))
        hits = sections[:top_k]
        retrieved = [Retrieved(doc_id=h.doc_id, chunk_id=h.chunk_id, score=round(h.score, 4))
                     for h in sections[:options.retrieval_depth or top_k]]
        t1 = time.perf_counter()
        record_step(_tracer, "retrieve", t0, t1, attributes={
            "eddy.collection": options.collection or self.settings.collection, "eddy.top_k": top_k,
            "eddy.hits": len(ranked), "eddy.sections": len(sections),
            "eddy.top_score": sections[0].score if sections else 0.0})
        if not options.generate:
            return await self._retrieval_only(query, retrieved, queue_ms, t1 - t0, sent)
        used = fit_hits(hits)
        messages = build_messages(self.template, query.text, hits, [(turn.role, turn.text) for turn in query.history])
        t2 = time.perf_counter()
        record_step(_tracer, "prompt", t1, t2, attributes={"eddy.prompt_version": self.template.version,
                                                           "eddy.passages": len(used)})
        params = GenerationParams(
            max_new_tokens=query.options.max_tokens or self.settings.max_new_tokens,
            temperature=query.options.temperature, seed=query.options.seed,
        )
        stats = GenerationStats()
        pieces: list[str] = []
        pending: list[str] = []
        first_token_at: float | None = None
        flush_every_s = self.settings.delta_flush_ms / 1000.0
        async with self._slots:
            t_gen = time.perf_counter()
            last_flush = t_gen
            async for piece in self.generator.stream(messages, params, stats):
                if not piece:
                    continue
                if first_token_at is None:
                    first_token_at = time.perf_counter()
                pieces.append(piece)
                pending.append(piece)
                now = time.perf_counter()
                if now - last_flush >= flush_every_s:
                    await self._delta(query.query_id, sent, "".join(pending))
                    pending.clear()
                    last_flush = now
            t_end = time.perf_counter()
        if pending:
            await self._delta(query.query_id, sent, "".join(pending))
        text = "".join(pieces).strip()
        record_step(_tracer, f"chat {self.generator.model_id}", t_gen, t_end, step_name="generate",
                    kind=SpanKind.CLIENT, attributes=self._generation_attributes(params, stats, messages, text, (
                        (first_token_at or t_end) - t0)))
        cited = sorted({int(n) for n in _CITE.findall(text) if 1 <= int(n) <= len(used)})
        final = AnswerEvent(
            query_id=query.query_id, kind="final", seq=sent.deltas, text=text,
            citations=[
                Citation(doc_id=h.doc_id, chunk_id=h.chunk_id, uri=_link(h), title=h.title,
                         section=h.section, score=round(h.score, 4))
                for h in used
            ],
            retrieved=retrieved,
            usage=Usage(prompt_tokens=stats.prompt_tokens, completion_tokens=stats.completion_tokens),
            timings=Timings(
                queue_ms=round(queue_ms, 2), retrieve_ms=_ms(t1 - t0), prompt_ms=_ms(t2 - t1),
                ttft_ms=_ms((first_token_at or t_end) - t0),
                generate_ms=_ms(t_end - t_gen), total_ms=_ms(time.perf_counter() - t0),
            ),
            model=self.generator.model_id, prompt_version=self.template.version,
            pipeline_version=PIPELINE_VERSION,
            validation={
                "passages": str(len(used)),
                "cited": ",".join(map(str, cited)),
                "finish_reason": stats.finish_reason or "stop",
                "grounded": "yes" if cited else "unknown",
            },
        )
        t_valid = time.perf_counter()
        record_step(_tracer, "validate", t_end, t_valid, attributes={"eddy.cited": len(cited),
                                                                      "eddy.grounded": bool(cited)})
        with _tracer.start_as_current_span(
            f"send {self.answers_topic}", kind=SpanKind.PRODUCER,
            attributes={**messaging_attributes(self.answers_topic, operation="send", key=query.query_id),
                        STEP: "publish"},
        ):
            sent.lift_deadline()
            self._fence(sent, terminal=True)
            await self.publisher.publish(self.answers_topic, query.query_id, final.to_bytes(), wait=True)
        return final

    def _generation_attributes(self, params: GenerationParams, stats: GenerationStats, messages: list,
                               text: str, ttft_s: float) -> dict[str, object]:
        """OpenTelemetry GenAI semantic-convention attributes of the generate span
        (https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/); prompt and completion
        text only when ``tracing_capture_content`` is on."""
        attrs: dict[str, object] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "eddy.in_process",
            "gen_ai.request.model": self.generator.model_id,
            "gen_ai.response.model": self.generator.model_id,
            "gen_ai.request.max_tokens": params.max_new_tokens,
            "gen_ai.request.temperature": params.temperature,
            "gen_ai.usage.input_tokens": stats.prompt_tokens,
            "gen_ai.usage.output_tokens": stats.completion_tokens,
            "gen_ai.response.finish_reasons": (stats.finish_reason or "stop",),
            "eddy.ttft_ms": _ms(ttft_s),
        }
        if params.seed is not None:
            attrs["gen_ai.request.seed"] = params.seed
        if self.settings.tracing_capture_content:
            attrs["gen_ai.input.messages"] = json.dumps(messages, default=str)
            attrs["gen_ai.output.messages"] = json.dumps([{"role": "assistant", "parts": [
                {"type": "text", "content": text}]}])
        return attrs

    async def _retrieval_only(
        self, query: Query, retrieved: list[Retrieved], queue_ms: float, retrieve_s: float, sent: _Sent,
    ) -> AnswerEvent:
        final = AnswerEvent(
            query_id=query.query_id, kind="final", seq=0, retrieved=retrieved, citations=[],
            timings=Timings(queue_ms=round(queue_ms, 2), retrieve_ms=_ms(retrieve_s), prompt_ms=0.0, ttft_ms=0.0,
                            generate_ms=0.0, total_ms=_ms(retrieve_s)),
            pipeline_version=PIPELINE_VERSION, validation={"generated": "no"},
        )
        sent.lift_deadline()
        self._fence(sent, terminal=True)
        await self.publisher.publish(self.answers_topic, query.query_id, final.to_bytes(), wait=True)
        return final

    async def _delta(self, query_id: str, sent: _Sent, text: str) -> None:
        event = AnswerEvent(query_id=query_id, kind="delta", seq=sent.deltas, text=text)
        self._fence(sent)
        await self.publisher.publish(self.answers_topic, query_id, event.to_bytes())
        sent.deltas += 1


@dataclass
class _Sent:
    """Deltas published so far for one query (the ``seq`` of its next event) and its deadline."""

    deltas: int = 0
    deadline: asyncio.Timeout | None = None
    record: RawRecord | None = None  # the query's record (its partition: ``Answerer.owns``)
    terminal: bool = False  # the terminal event's publication has begun

    def lift_deadline(self) -> None:
        """The terminal event is built: its publication is not cut short (a cancelled publish may still be
        delivered, and the error answer after it would be a second terminal event). RuntimeError when the
        deadline has already expired."""
        if self.deadline is not None:
            self.deadline.reschedule(None)


@dataclass
class _Seen:
    """A query id the answerer took: its query's event id; ``done`` once its stream has ended."""

    event_id: str
    done: asyncio.Event = field(default_factory=asyncio.Event)


class _Revoked(Exception):
    """This worker no longer owns the query's partition: stop, publish nothing more."""


class TerminalPublishError(Exception):
    """The terminal event's publish call raised after its publication began (it may have been written)."""


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 2)


def _link(hit: Hit) -> str:
    return f"{hit.uri}#{hit.anchor}" if hit.uri and hit.anchor else hit.uri
