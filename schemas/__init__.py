"""Event contracts of Eddy's topics (pydantic v2, ``extra="forbid"``, versioned).

The topics and these schemas are Eddy's public API; ``eddy schemas export DIR``
writes their JSON Schemas so that a client in any language can publish.
"""

from schemas.alerts import Alert, AlertRule, ModelPrice
from schemas.base import Event
from schemas.datasets import DatasetRecord, EvalRecord, Rejection, ScrubAudit, TrainRecord
from schemas.dlq import DeadLetter
from schemas.documents import DocumentChange, IndexEvent
from schemas.feedback import Feedback
from schemas.queries import AnswerEvent, Citation, HistoryTurn, Query, QueryOptions, Retrieved, Timings, Usage

__all__ = [
    "Alert",
    "AlertRule",
    "AnswerEvent",
    "Citation",
    "DatasetRecord",
    "DeadLetter",
    "DocumentChange",
    "EvalRecord",
    "Event",
    "Feedback",
    "HistoryTurn",
    "IndexEvent",
    "ModelPrice",
    "Query",
    "QueryOptions",
    "Rejection",
    "Retrieved",
    "ScrubAudit",
    "Timings",
    "TrainRecord",
    "Usage",
]
