"""``datasets.eval`` / ``datasets.train`` (EvalRecord / TrainRecord), ``feedback.rejected`` (Rejection)
and ``feedback.audit`` (ScrubAudit): what the curator makes of shared feedback.

Every text field here has been through the PII scrubber: entities are replaced by keyed
pseudonyms such as ``<PERSON_3f9a2c1b>`` (components/scrubbing.py). Citations are corpus
metadata (document ids, titles, URIs), not user text, and are kept as the answer gave them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, Field

from schemas.base import Event
from schemas.queries import Citation, HistoryTurn


class DatasetRecord(Event):
    """Fields shared by the vetted records. Keyed by ``record_id`` on compacted topics: a newer
    rating of the same answer replaces the older record."""

    record_id: str = Field(description="stable id of the record: the query id")
    query_id: str
    query: str = Field(description="the user's question, scrubbed")
    history: list[HistoryTurn] = Field(default_factory=list, description="earlier turns, scrubbed")
    rating: Literal["up", "down"]
    model: str | None = None
    prompt_version: str | None = None
    pipeline_version: str | None = None
    pipeline: str = Field("default", description="the query's pipeline variant")
    answered_at: AwareDatetime | None = Field(None, description="occurred_at of the final answer")
    feedback_at: AwareDatetime = Field(description="occurred_at of the feedback")
    scrubber: str = Field(description="scrubber version (models and recognizers)")
    filters: str = Field(description="prank/duplicate filter version")


class EvalRecord(DatasetRecord):
    """``datasets.eval``: a rated conversation for evaluation."""

    answer: str = Field(description="the final answer, scrubbed")
    comment: str = Field("", description="the user's comment, scrubbed")
    citations: list[Citation] = Field(default_factory=list)


class TrainRecord(DatasetRecord):
    """``datasets.train``: retrieval training pairs. An up-voted answer's citations are positives,
    a down-voted answer's are negatives (one of the two lists is empty)."""

    positives: list[Citation] = Field(default_factory=list)
    negatives: list[Citation] = Field(default_factory=list)


RejectReason = Literal[
    "scrub_failed", "answer_error", "too_short", "gibberish", "profanity", "prompt_injection", "flood",
    "near_duplicate",
]


class Rejection(Event):
    """``feedback.rejected``: a shared conversation kept out of the datasets. Keyed by ``query_id``.

    ``reason`` is the first rule that fired; ``detail`` explains it for a human. When the scrubber
    failed (``scrub_failed``) no text is kept at all (fail closed).
    """

    query_id: str
    feedback_id: str = Field(description="event_id of the Feedback")
    reason: RejectReason
    detail: str
    rating: Literal["up", "down"]
    query: str = Field("", description="scrubbed; empty when the scrubber failed")
    answer: str = Field("", description="scrubbed; empty when the scrubber failed")
    comment: str = Field("", description="scrubbed; empty when the scrubber failed")
    scrubber: str
    filters: str


class ScrubAudit(Event):
    """``feedback.audit``: one per shared conversation the curator handled. Keyed by ``query_id``.

    Counts of the entities removed per type (e.g. ``{"PERSON": 2, "EMAIL_ADDRESS": 1}``), never
    their values.
    """

    query_id: str
    feedback_id: str
    outcome: Literal["vetted", "rejected"]
    reason: RejectReason | None = None
    entities: dict[str, int] = Field(default_factory=dict)
    scrubber: str
    scrub_ms: float = Field(ge=0, description="time the scrubber took for this record's batch, ms")
