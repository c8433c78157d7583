"""``queries`` (Query) and ``answers`` (AnswerEvent)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.base import Event
from schemas.documents import COLLECTION_PATTERN, CollectionName


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HistoryTurn(_Part):
    role: Literal["user", "assistant"]
    text: str


class QueryOptions(_Part):
    top_k: int | None = Field(None, ge=1, le=100, description="chunks given to the prompt; default from settings")
    collection: CollectionName = Field(
        None, pattern=COLLECTION_PATTERN, description="collection to search; unset = the worker's default collection "
        "(names ending in _docs or _vetted are reserved)",
    )
    retrieval_depth: int | None = Field(
        None, ge=1, le=1000,
        description="chunks to retrieve and report, ranked, in the final event's `retrieved` (for evaluation); "
                    "default top_k; the prompt still gets the best top_k",
    )
    generate: bool = Field(True, description="false = retrieval only: the final event carries `retrieved`, no text")
    pipeline: str = Field("default", description="pipeline variant")
    max_tokens: int | None = Field(None, ge=1, le=4096, description="max new tokens; default from settings")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 = greedy decoding")
    seed: int | None = None


class Query(Event):
    """A user's question. Keyed by ``conversation_id``. ``groups`` drive the ACL filter."""

    query_id: str = Field(min_length=1, max_length=256)
    conversation_id: str = Field(min_length=1, max_length=256)
    user_id: str = Field("", max_length=256)
    groups: list[str] = Field(default_factory=list)
    text: str
    history: list[HistoryTurn] = Field(default_factory=list)
    options: QueryOptions = Field(default_factory=QueryOptions)

    @model_validator(mode="after")
    def _check_text(self) -> Query:
        if not self.text.strip():
            raise ValueError("empty query: text is blank")
        return self


class Citation(_Part):
    doc_id: str
    chunk_id: str
    uri: str
    title: str
    section: str = Field("", description="section path inside the document, ' > '-separated")
    score: float = Field(description="similarity of the chunk to the query (cosine, higher is closer)")


class Retrieved(_Part):
    """One retrieved chunk, in rank order (before any prompt-budget cut)."""

    doc_id: str
    chunk_id: str
    score: float = Field(description="similarity to the query (cosine, higher is closer)")


class Usage(_Part):
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)


class Timings(_Part):
    """Milliseconds spent per step of one answer."""

    queue_ms: float = Field(description="query published -> answerer picked it up")
    retrieve_ms: float = Field(description="embed query + vector search")
    prompt_ms: float
    ttft_ms: float = Field(description="query picked up -> first token generated")
    generate_ms: float
    total_ms: float = Field(description="query picked up -> final event built")


class AnswerEvent(Event):
    """One record of an answer stream. Keyed by ``query_id``.

    A stream is ``delta``* then exactly one ``final`` or one ``error``. ``seq`` counts from 0
    within the stream. Deltas carry new text only (concatenate them in ``seq`` order);
    ``final`` carries the whole answer text and the metadata fields.
    """

    query_id: str
    kind: Literal["delta", "final", "error"]
    seq: int = Field(ge=0)
    text: str = ""
    citations: list[Citation] | None = None
    retrieved: list[Retrieved] | None = Field(
        None, description="on final: every chunk retrieved (retrieval_depth of them at most), best first"
    )
    usage: Usage | None = None
    timings: Timings | None = None
    model: str | None = None
    prompt_version: str | None = None
    pipeline_version: str | None = None
    validation: dict[str, str] | None = None
    error: str | None = Field(None, description="reason, on kind=error")

    @property
    def terminal(self) -> bool:
        return self.kind in ("final", "error")
