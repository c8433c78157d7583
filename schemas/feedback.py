"""``feedback`` (Feedback): a user's rating of one answer, optionally sharing the conversation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.base import Event


class Feedback(Event):
    """Thumbs up/down on the answer to ``query_id``. Keyed by ``query_id``.

    ``share=True`` lets the curator consider the conversation (query, answer, citations) for the
    evaluation and training datasets, after PII scrubbing and prank filtering.
    """

    query_id: str = Field(min_length=1, max_length=256, description="the query whose answer is rated")
    user_id: str = Field("", max_length=256, description="who rated (empty = anonymous)")
    rating: Literal["up", "down"]
    comment: str = Field("", max_length=4000, description="free text from the user (may hold personal data)")
    share: bool = Field(False, description="the user agrees to share the conversation for analysis")
