"""The topic catalogue: every Eddy topic, its key, value schema, partitions and cleanup policy.

This table is the public API (DESIGN.md §2); ``eddy topics`` checks the cluster against it.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from config.settings import Settings
from schemas import (
    Alert,
    AnswerEvent,
    DeadLetter,
    DocumentChange,
    EvalRecord,
    Feedback,
    IndexEvent,
    Query,
    Rejection,
    ScrubAudit,
    TrainRecord,
)

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """One topic. ``partitions=None`` means "settings.partitions"; ``retention_ms=None`` = broker default."""

    name: str  # without prefix
    key: str
    schema: type[BaseModel] | None
    cleanup_policy: str  # "compact" | "delete"
    partitions: int | None = None
    retention_ms: int | None = None
    description: str = ""
    user_action: str = "receive"  # AsyncAPI operation of a user: "send" (publish to it) or "receive" (consume)
    protobuf: str | None = None  # full name of the protobuf message of a topic whose values are not JSON

    def full_name(self, settings: Settings) -> str:
        return settings.topic(self.name)

    def partition_count(self, settings: Settings) -> int:
        return self.partitions or settings.partitions

    def config(self) -> dict[str, str]:
        cfg = {"cleanup.policy": self.cleanup_policy}
        if self.retention_ms is not None:
            cfg["retention.ms"] = str(self.retention_ms)
        if self.cleanup_policy == "compact":
            # Keep tombstones a day so consumers that lag can still see deletes.
            cfg["delete.retention.ms"] = str(DAY_MS)
        return cfg


DOCS_CHANGES = TopicSpec("docs.changes", "doc_id", DocumentChange, "compact", user_action="send",
    description="the corpus of record: replaying it rebuilds any index")

INDEX_EVENTS = TopicSpec("index.events", "doc_id", IndexEvent, "delete", retention_ms=7 * DAY_MS,
    description="one per processed change: freshness, audit")

QUERIES = TopicSpec("queries", "conversation_id", Query, "delete", retention_ms=7 * DAY_MS, user_action="send",
    description="questions to answer")

ANSWERS = TopicSpec("answers", "query_id", AnswerEvent, "delete", retention_ms=7 * DAY_MS,
    description="answer streams: delta… then exactly one final or error per query")

FEEDBACK = TopicSpec("feedback", "query_id", Feedback, "delete", retention_ms=30 * DAY_MS, user_action="send",
    description="thumbs up/down on answers, optional comment and share flag")

DLQ = TopicSpec("dlq", "original key", DeadLetter, "delete", partitions=1, retention_ms=30 * DAY_MS,
    description="records an agent could not process, with the reason and original bytes")

TRACES = TopicSpec("traces", "trace_id", None, "delete", retention_ms=3 * DAY_MS,
    protobuf="opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest",
    description="OpenTelemetry spans of every step, OTLP protobuf (the Collector's Kafka receiver "
    "encoding otlp_proto), keyed by trace id in hex")

ALERTS = TopicSpec("alerts", "rule", Alert, "delete", retention_ms=30 * DAY_MS,
    description="alert rules of the monitor firing and resolving")

# --- feedback curation (agents/curator.py) ---
CURATOR_QUERIES = TopicSpec("curator.queries", "query_id", Query, "delete", retention_ms=7 * DAY_MS,
    description="internal: queries re-keyed by query_id, so the curator joins them with answers "
    "and feedback partition by partition")

DATASETS_EVAL = TopicSpec("datasets.eval", "record id", EvalRecord, "compact",
    description="vetted, PII-scrubbed rated conversations (query, answer, rating, comment, citations, versions)")

DATASETS_TRAIN = TopicSpec("datasets.train", "record id", TrainRecord, "compact",
    description="vetted, PII-scrubbed retrieval pairs: query with positive (up-voted) or negative "
    "(down-voted) cited chunks")

FEEDBACK_REJECTED = TopicSpec("feedback.rejected", "query_id", Rejection, "delete", retention_ms=30 * DAY_MS,
    description="shared conversations kept out of the datasets, with the reason; text already scrubbed")

FEEDBACK_AUDIT = TopicSpec("feedback.audit", "query_id", ScrubAudit, "delete", retention_ms=365 * DAY_MS,
    description="per curated conversation: entity types removed and how many, never the values")

CATALOGUE: tuple[TopicSpec, ...] = (
    DOCS_CHANGES,
    INDEX_EVENTS,
    QUERIES,
    ANSWERS,
    FEEDBACK,
    DLQ,
    TRACES,
    ALERTS,
    CURATOR_QUERIES,
    DATASETS_EVAL,
    DATASETS_TRAIN,
    FEEDBACK_REJECTED,
    FEEDBACK_AUDIT,
)
"""Every Eddy topic, in the order of DESIGN.md §2."""


def event_models() -> list[type[BaseModel]]:
    """The JSON event models of the catalogue's topics, each once, in catalogue order."""
    return list(dict.fromkeys(spec.schema for spec in CATALOGUE if spec.schema is not None))
