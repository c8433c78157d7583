"""Answerer agent: retrieval-augmented answers streamed token by token.

Consumes ``queries`` (Query, keyed by conversation_id). For each query: embed the text, search
the vector store with the ACL filter (a chunk is visible when its ACL is empty or shares a
group with the query's ``groups``), build the prompt from a versioned template, generate,
and produce on ``answers`` (keyed by query_id) ``delta`` records coalesced over
``delta_flush_ms`` then exactly one ``final`` (text, citations, usage, timings, model,
prompt and pipeline versions) — or one ``error`` with a reason.

Delivery: several queries are in flight at once (faust agent concurrency); model compute
runs in worker threads, so a long generation neither stalls the other queries nor the
consumer's heartbeats. A query's offset is acknowledged after its terminal event is
acknowledged by the broker: at-least-once; a crash mid-answer re-answers that query.

Failures: undecodable or invalid queries (malformed JSON, schema, empty text, too long) go
to ``dlq``; when the record still names a ``query_id`` an ``error`` answer is produced too.
Retrieval or generation failures produce an ``error`` answer; the agent keeps consuming.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass

import numpy as np

from components.base import Embedder, GenerationParams, GenerationStats, Generator, Hit, VectorStore
from components.prompts import PROMPT_V1, build_messages, fit_hits
from eddy.settings import Settings
from schemas import AnswerEvent, Citation, Query, Timings, Usage
from streams.codec import DecodeError, decode
from streams.dlq import DeadLetters
from streams.records import Publisher, RawRecord
from streams.retry import call_blocking

log = logging.getLogger(__name__)

PIPELINE_VERSION = "rag-dense-v1"
_CITE = re.compile(r"\[(\d{1,3})\]")


class Answerer:
    name = "answerer"

    def __init__(
        self, settings: Settings, embedder: Embedder, store: VectorStore, generator: Generator,
        publisher: Publisher, dead_letters: DeadLetters,
    ) -> None:
        self.settings = settings
        self.embedder = embedder
        self.store = store
        self.generator = generator
        self.publisher = publisher
        self.dead_letters = dead_letters
        self.template = PROMPT_V1
        self.answers_topic = settings.topic("answers")
        self._slots = asyncio.Semaphore(settings.generation_slots)

    async def handle(self, record: RawRecord) -> AnswerEvent | None:
        """Answer one ``queries`` record; returns the terminal event produced (None if there was no query_id)."""
        received = time.time()
        try:
            query = decode(Query, record.value, max_bytes=self.settings.max_query_chars * 4 + 256 * 1024, origin=record)
            if len(query.text) > self.settings.max_query_chars:
                raise DecodeError(
                    "oversized", f"query text is {len(query.text):,} characters, above the maximum of "
                    f"{self.settings.max_query_chars:,}", partial={"query_id": query.query_id},
                )
        except DecodeError as exc:
            await self.dead_letters.send(record, exc.error_type, exc.reason)
            query_id = (exc.partial or {}).get("query_id")
            if isinstance(query_id, str) and query_id:
                return await self._error(query_id, 0, f"invalid query: {exc.reason}")
            return None
        sent = _Sent()
        try:
            return await self._answer(query, received, sent)
        except Exception as exc:  # noqa: BLE001 - boundary: every query gets exactly one terminal event
            log.exception("query %s failed", query.query_id)
            return await self._error(query.query_id, sent.deltas, f"{type(exc).__name__}: {exc}")

    async def _error(self, query_id: str, seq: int, reason: str) -> AnswerEvent:
        event = AnswerEvent(query_id=query_id, kind="error", seq=seq, error=reason,
                            pipeline_version=PIPELINE_VERSION)
        await self.publisher.publish(self.answers_topic, query_id, event.to_bytes(), wait=True)
        return event

    async def _answer(self, query: Query, received: float, sent: _Sent) -> AnswerEvent:
        queue_ms = max(0.0, (received - query.occurred_at.timestamp()) * 1000.0)
        top_k = query.options.top_k or self.settings.top_k
        t0 = time.perf_counter()
        vector = await asyncio.to_thread(self.embedder.encode, [query.text])
        hits: list[Hit] = (await call_blocking(
            self.store.search, np.asarray(vector, dtype=np.float32), top_k, list(query.groups),
            what="vector search", deadline_s=10.0,
        ))[0]
        t1 = time.perf_counter()
        used = fit_hits(hits)
        messages = build_messages(self.template, query.text, hits, [(turn.role, turn.text) for turn in query.history])
        t2 = time.perf_counter()
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
        cited = sorted({int(n) for n in _CITE.findall(text) if 1 <= int(n) <= len(used)})
        final = AnswerEvent(
            query_id=query.query_id, kind="final", seq=sent.deltas, text=text,
            citations=[
                Citation(doc_id=h.doc_id, chunk_id=h.chunk_id, uri=_link(h), title=h.title,
                         section=h.section, score=round(h.score, 4))
                for h in used
            ],
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
        await self.publisher.publish(self.answers_topic, query.query_id, final.to_bytes(), wait=True)
        return final

    async def _delta(self, query_id: str, sent: _Sent, text: str) -> None:
        event = AnswerEvent(query_id=query_id, kind="delta", seq=sent.deltas, text=text)
        await self.publisher.publish(self.answers_topic, query_id, event.to_bytes())
        sent.deltas += 1


@dataclass
class _Sent:
    """Deltas published so far for one query: the ``seq`` of its next event."""

    deltas: int = 0


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 2)


def _link(hit: Hit) -> str:
    return f"{hit.uri}#{hit.anchor}" if hit.uri and hit.anchor else hit.uri
