"""The topic catalogue: every Eddy topic, its key, value schema, partitions and cleanup policy.

This table is the public API (DESIGN.md §2); ``eddy topics`` checks the cluster against it.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from eddy.settings import Settings
from schemas import AnswerEvent, DeadLetter, DocumentChange, Feedback, IndexEvent, Query

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


CATALOGUE: tuple[TopicSpec, ...] = (
    TopicSpec("docs.changes", "doc_id", DocumentChange, "compact", user_action="send",
              description="the corpus of record: replaying it rebuilds any index"),
    TopicSpec("index.events", "doc_id", IndexEvent, "delete", retention_ms=7 * DAY_MS,
              description="one per processed change: freshness, audit"),
    TopicSpec("queries", "conversation_id", Query, "delete", retention_ms=7 * DAY_MS, user_action="send",
              description="questions to answer"),
    TopicSpec("answers", "query_id", AnswerEvent, "delete", retention_ms=7 * DAY_MS,
              description="answer streams: delta… then exactly one final or error per query"),
    TopicSpec("feedback", "query_id", Feedback, "delete", retention_ms=30 * DAY_MS, user_action="send",
              description="thumbs up/down on answers, optional comment and share flag"),
    TopicSpec("dlq", "original key", DeadLetter, "delete", partitions=1, retention_ms=30 * DAY_MS,
              description="records an agent could not process, with the reason and original bytes"),
)
