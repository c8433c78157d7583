"""Event contracts of Eddy's topics (pydantic v2, ``extra="forbid"``, versioned).

The topics and these schemas are Eddy's public API; ``eddy schemas export DIR``
writes their JSON Schemas so that a client in any language can publish.
"""

from schemas.base import Event
from schemas.dlq import DeadLetter
from schemas.documents import DocumentChange, IndexEvent
from schemas.feedback import Feedback
from schemas.queries import AnswerEvent, Citation, HistoryTurn, Query, QueryOptions, Timings, Usage

__all__ = [
    "AnswerEvent",
    "Citation",
    "DeadLetter",
    "DocumentChange",
    "Event",
    "Feedback",
    "HistoryTurn",
    "IndexEvent",
    "Query",
    "QueryOptions",
    "Timings",
    "Usage",
]
